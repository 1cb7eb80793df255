"""Frozen configuration: mel presets, frame geometry and the reshape modes.

``SYNCTALK_2D`` reproduces SyncTalk_2D with librosa 0.10.1 (zero STFT padding) and is the
default everywhere. ``WAV2LIP`` is the same recipe with reflect padding, as librosa < 0.10 did.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Mapping

import numpy as np

from .errors import ConfigError

__all__ = [
    "MelConfig",
    "SYNCTALK_2D",
    "WAV2LIP",
    "PRESETS",
    "MODES",
    "MODE_FPS",
    "CONTEXT_MODES",
    "FEATURE_DIM",
    "MEL_FPS",
    "MEL_STEP",
    "WINDOW_SHAPE",
    "ENCODER_LAYOUT",
    "RADII",
    "DEFAULT_RADIUS",
    "ROW_SHAPES",
    "FRAME_SPLIT",
    "check_radius",
    "mode_shape",
    "check_fps",
    "check_mode",
    "check_context",
]

_PAD_MODES = ("constant", "reflect")


def _positive(name: str, value: float) -> None:
    if not isinstance(value, numbers.Real) or isinstance(value, bool) or not math.isfinite(value) or value <= 0:
        raise ConfigError(f"{name} must be a positive finite number, got {value!r}")


@dataclass(frozen=True)
class MelConfig:
    """Mel-spectrogram parameters (hparams of the upstream recipe).

    Defaults are SyncTalk_2D's: 16 kHz, n_fft 800, hop 200, 80 Slaney mels in 55–7600 Hz,
    pre-emphasis 0.97, ref 20 dB, floor −100 dB, symmetric output clipped to [−4, 4].

    Examples
    --------
    >>> MelConfig().n_mels
    80
    >>> MelConfig(pad_mode="reflect") == WAV2LIP
    True
    """

    sample_rate: int = 16000
    n_fft: int = 800
    hop_length: int = 200
    win_length: int = 800
    n_mels: int = 80
    fmin: float = 55.0
    fmax: float = 7600.0
    preemphasis: float = 0.97
    ref_level_db: float = 20.0
    min_level_db: float = -100.0
    max_abs_value: float = 4.0
    symmetric: bool = True
    clip: bool = True
    pad_mode: str = "constant"
    htk: bool = False

    def __post_init__(self) -> None:
        for name in ("sample_rate", "n_fft", "hop_length", "win_length", "n_mels"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ConfigError(f"MelConfig.{name} must be a positive integer, got {value!r}")
        if self.n_fft % 2:
            raise ConfigError(f"MelConfig.n_fft must be even (centre padding of n_fft // 2 each side), got {self.n_fft}")
        if self.win_length > self.n_fft:
            raise ConfigError(f"MelConfig.win_length ({self.win_length}) must be <= n_fft ({self.n_fft})")
        _positive("MelConfig.fmax", self.fmax)
        if not (0 <= self.fmin < self.fmax <= self.sample_rate / 2):
            raise ConfigError(
                f"MelConfig needs 0 <= fmin < fmax <= sample_rate/2, got fmin={self.fmin!r}, "
                f"fmax={self.fmax!r}, sample_rate={self.sample_rate}"
            )
        if not (0.0 <= self.preemphasis < 1.0):
            raise ConfigError(f"MelConfig.preemphasis must be in [0, 1), got {self.preemphasis!r}")
        if not (self.min_level_db < 0 and math.isfinite(self.min_level_db)):
            raise ConfigError(f"MelConfig.min_level_db must be negative, got {self.min_level_db!r}")
        _positive("MelConfig.max_abs_value", self.max_abs_value)
        if self.pad_mode not in _PAD_MODES:
            raise ConfigError(f"MelConfig.pad_mode must be one of {_PAD_MODES}, got {self.pad_mode!r}")

    @property
    def n_freqs(self) -> int:
        """Number of rfft bins, ``1 + n_fft // 2`` (401 by default)."""
        return 1 + self.n_fft // 2

    @property
    def frames_per_second(self) -> float:
        """Mel frames per second, ``sample_rate / hop_length`` (80.0 by default)."""
        return self.sample_rate / self.hop_length


SYNCTALK_2D = MelConfig()
WAV2LIP = MelConfig(pad_mode="reflect")
PRESETS: Mapping[str, MelConfig] = MappingProxyType({"synctalk_2d": SYNCTALK_2D, "wav2lip": WAV2LIP})


#: Mel frames per second of the ave recipe (16000 Hz / hop 200).
MEL_FPS = 80.0
#: Mel columns in one encoder window (0.2 s).
MEL_STEP = 16
#: One encoder input: (channels, mel bands, columns).
WINDOW_SHAPE = (1, 80, MEL_STEP)
#: Width of one conv-encoder feature row.
FEATURE_DIM = 512
#: (in_channels, out_channels, kernel, stride, padding, residual) of the AudioEncoder's 13 blocks.
ENCODER_LAYOUT: tuple[tuple[int, int, int, tuple[int, int], int, bool], ...] = (
    (1, 32, 3, (1, 1), 1, False),
    (32, 32, 3, (1, 1), 1, True),
    (32, 32, 3, (1, 1), 1, True),
    (32, 64, 3, (3, 1), 1, False),
    (64, 64, 3, (1, 1), 1, True),
    (64, 64, 3, (1, 1), 1, True),
    (64, 128, 3, (3, 3), 1, False),
    (128, 128, 3, (1, 1), 1, True),
    (128, 128, 3, (1, 1), 1, True),
    (128, 256, 3, (3, 2), 1, False),
    (256, 256, 3, (1, 1), 1, True),
    (256, 512, 3, (1, 1), 0, False),
    (512, 512, 1, (1, 1), 0, False),
)
#: Context rows each side of a frame: 8 (SyncTalk_2D, the seed, Ultralight until mid-2025) or
#: 4 (Ultralight since mid-2025, LiveTalking). Frame i sees rows [i - r, i + r).
RADII = (8, 4)
DEFAULT_RADIUS = 8
#: One feature row per mode: ave (512,) from the conv encoder, hubert (2, 1024) pairs of
#: HuBERT rows, wenet (16, 512) rows of the wenet encoder.
ROW_SHAPES: Mapping[str, tuple[int, ...]] = MappingProxyType({"ave": (FEATURE_DIM,), "hubert": (2, 1024), "wenet": (16, 512)})
#: How each mode splits one context row into the U-Net's (s·2r, h, w) tensor: (s, h, w).
FRAME_SPLIT: Mapping[str, tuple[int, int, int]] = MappingProxyType({"ave": (2, 16, 16), "hubert": (2, 32, 32), "wenet": (16, 16, 32)})
#: Per-frame tensor shape for each mode at the default radius 8.
MODES: Mapping[str, tuple[int, ...]] = MappingProxyType(
    {mode: (2 * DEFAULT_RADIUS * s, h, w) for mode, (s, h, w) in FRAME_SPLIT.items()}
)
#: The video frame rate each mode's U-Net was trained at.
MODE_FPS: Mapping[str, int] = MappingProxyType({"ave": 25, "hubert": 25, "wenet": 20})
#: Accepted video frame rates (inclusive).
FPS_RANGE = (1.0, 1000.0)
#: How rows outside the padded feature range are filled: upstream zeros, or the edge-hold fork.
CONTEXT_MODES = ("zeros", "edge")


def check_radius(radius: int) -> int:
    """Return ``radius`` if it is one of :data:`RADII` (8 or 4), else raise :class:`ConfigError`."""
    if isinstance(radius, bool) or radius not in RADII:
        raise ConfigError(f"radius must be 8 (SyncTalk_2D, the seed) or 4 (Ultralight since mid-2025), got {radius!r}")
    return int(radius)


def check_mode(mode: str) -> str:
    """Return ``mode`` if it is one of :data:`MODES`, else raise :class:`ConfigError`."""
    if not isinstance(mode, str) or mode not in MODES:
        raise ConfigError(f"unknown mode {mode!r}; expected one of {', '.join(MODES)}")
    return mode


def check_mode_fps(mode: str, fps: "float | None") -> float:
    """The video frame rate of ``mode``: ``fps`` (any rate for ave; None: the mode's own), else
    ConfigError — hubert and wenet features are one row per frame at 25 / 20 fps."""
    check_mode(mode)
    if mode != "ave" and fps is not None and fps != MODE_FPS[mode]:
        raise ConfigError(f"fps for {mode} is fixed at {MODE_FPS[mode]} by its features (one row per video frame), "
                          f"got {fps!r}")
    return check_fps(MODE_FPS[mode] if fps is None else fps)


def check_fps(fps: float) -> float:
    """Return ``fps`` if it is a finite number in [1, 1000], else raise :class:`ConfigError`.

    The range keeps the window arithmetic (``int(80·i/fps)``) far from overflow and covers
    every video rate in use (the U-Nets train at 25 or 20).
    """
    if isinstance(fps, bool) or not isinstance(fps, numbers.Real) or not math.isfinite(fps) or fps <= 0:
        raise ConfigError(f"fps must be a positive finite number, got {fps!r}")
    if not FPS_RANGE[0] <= fps <= FPS_RANGE[1]:
        raise ConfigError(f"fps must lie in [{FPS_RANGE[0]:g}, {FPS_RANGE[1]:g}] video frames per second, got {fps!r}")
    return fps


def check_context(context: str) -> str:
    """Return ``context`` if it is one of :data:`CONTEXT_MODES`, else raise :class:`ConfigError`."""
    if not isinstance(context, str) or context not in CONTEXT_MODES:
        raise ConfigError(f"unknown context {context!r}; expected one of {', '.join(CONTEXT_MODES)}")
    return context


def check_mel_config(config: Any) -> MelConfig:
    """Return ``config`` if it is a :class:`MelConfig`, else one ConfigError."""
    if not isinstance(config, MelConfig):
        raise ConfigError(f"config must be a MelConfig (e.g. SYNCTALK_2D), got {type(config).__name__}")
    return config


def check_encoder_config(config: Any) -> MelConfig:
    """Return ``config`` if the ave encoder can take its mel: a :class:`MelConfig` with 80 bands at
    80 columns per second (``sample_rate / hop_length``: the windows are 16 columns = 0.2 s, a
    video frame every 80 / fps columns); else one ConfigError."""
    check_mel_config(config)
    if config.n_mels != WINDOW_SHAPE[1] or config.frames_per_second != MEL_FPS:
        raise ConfigError(f"the ave encoder takes {WINDOW_SHAPE[1]} mel bands at {MEL_FPS:g} columns per second "
                          f"(sample_rate / hop_length); this MelConfig gives {config.n_mels} bands at "
                          f"{config.frames_per_second:g} ({config.sample_rate} / {config.hop_length})")
    return config


def _bound(value: float) -> str:
    return str(value) if isinstance(value, int) else f"{value:g}"


def check_number(name: str, value: Any, *, lo: "float | None" = None, hi: "float | None" = None,
                 lo_open: bool = False, hi_open: bool = False, integer: bool = False, note: str = "") -> Any:
    """``value`` if it is a finite real number (an integer if ``integer``) within the bounds, else
    one :class:`ConfigError` naming ``name``, the value and the interval expected.

    Plain Python, no numpy call: cheap enough for the keyword scalars of per-call functions.
    Bools, strings, None, arrays and NaN/Inf are refused; NumPy scalars are accepted. Returns
    an int for ``integer`` (a NumPy integer converted), else the value itself (unchanged, so a
    checked coefficient computes exactly what it did before the check). ``note`` ends the
    message (why the bounds are what they are).
    """
    cls = type(value)  # int and float first: the ABC isinstance costs more than the rest of the check
    if (cls is int or (cls is float and not integer)
            or (isinstance(value, numbers.Integral if integer else numbers.Real) and cls is not bool)) \
            and (integer or math.isfinite(value)) \
            and (lo is None or (value > lo if lo_open else value >= lo)) \
            and (hi is None or (value < hi if hi_open else value <= hi)):
        return int(value) if integer else value
    kind = "an integer" if integer else "a finite number"
    if lo is not None and hi is not None:
        where = f" in {'(' if lo_open else '['}{_bound(lo)}, {_bound(hi)}{')' if hi_open else ']'}"
    elif lo is not None:
        where = f" {'>' if lo_open else '>='} {_bound(lo)}"
    elif hi is not None:
        where = f" {'<' if hi_open else '<='} {_bound(hi)}"
    else:
        where = ""
    raise ConfigError(f"{name} must be {kind}{where}, got {value!r:.80}" + (f" ({note})" if note else ""))


def check_flag(name: str, value: Any) -> bool:
    """Return ``value`` as a bool if it is one (Python or NumPy), else raise :class:`ConfigError`:
    a flag like ``overwrite`` is never guessed from a truthy string such as ``"no"``."""
    if not isinstance(value, (bool, np.bool_)):
        raise ConfigError(f"{name} must be True or False, got {value!r}")
    return bool(value)


def mode_shape(mode: str, radius: int = DEFAULT_RADIUS) -> tuple[int, ...]:
    """Per-frame shape of ``mode`` with ``radius`` context rows each side.

    r = 8: ave (32, 16, 16), hubert (32, 32, 32), wenet (256, 16, 32);
    r = 4: ave (16, 16, 16), hubert (16, 32, 32), wenet (128, 16, 32).

    Examples
    --------
    >>> mode_shape("wenet", 4)
    (128, 16, 32)
    """
    s, h, w = FRAME_SPLIT[check_mode(mode)]
    return (2 * check_radius(radius) * s, h, w)
