"""Frozen configuration: mel presets, frame geometry and the reshape modes.

``SYNCTALK_2D`` reproduces SyncTalk_2D with librosa 0.10.1 (zero STFT padding) and is the
default everywhere. ``WAV2LIP`` is the same recipe with reflect padding, as librosa < 0.10 did.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from types import MappingProxyType
from typing import Mapping

from .errors import ConfigError

__all__ = [
    "MelConfig",
    "FrameConfig",
    "SYNCTALK_2D",
    "WAV2LIP",
    "PRESETS",
    "MODES",
    "MODE_FPS",
    "CONTEXT_MODES",
    "FEATURE_DIM",
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


@dataclass(frozen=True)
class FrameConfig:
    """Video-frame geometry: ``fps`` video frames per second, ``mel_step`` mel frames per window,
    ``mel_fps`` mel frames per second (80 = 16000 / 200), ``radius`` context rows each side.
    """

    fps: float = 25
    mel_step: int = 16
    mel_fps: float = 80.0
    radius: int = 8

    def __post_init__(self) -> None:
        check_fps(self.fps)
        if not isinstance(self.mel_step, int) or self.mel_step <= 0:
            raise ConfigError(f"FrameConfig.mel_step must be a positive integer, got {self.mel_step!r}")
        _positive("FrameConfig.mel_fps", self.mel_fps)
        if not isinstance(self.radius, int) or self.radius < 0:
            raise ConfigError(f"FrameConfig.radius must be a non-negative integer, got {self.radius!r}")


#: Width of one encoder feature row (the conv AudioEncoder's output).
FEATURE_DIM = 512
#: Per-frame tensor shape for each mode (row-major reshape of the 16-row context window).
MODES: Mapping[str, tuple[int, ...]] = MappingProxyType(
    {"ave": (32, 16, 16), "hubert": (32, 32, 32), "wenet": (256, 16, 32)}
)
#: The video frame rate each mode's U-Net was trained at.
MODE_FPS: Mapping[str, int] = MappingProxyType({"ave": 25, "hubert": 25, "wenet": 20})
#: How rows outside the padded feature range are filled: upstream zeros, or the edge-hold fork.
CONTEXT_MODES = ("zeros", "edge")


def check_mode(mode: str) -> str:
    """Return ``mode`` if it is one of :data:`MODES`, else raise :class:`ConfigError`."""
    if mode not in MODES:
        raise ConfigError(f"unknown mode {mode!r}; expected one of {', '.join(MODES)}")
    return mode


def check_fps(fps: float) -> float:
    """Return ``fps`` if it is a positive finite number, else raise :class:`ConfigError`."""
    if isinstance(fps, bool) or not isinstance(fps, numbers.Real) or not math.isfinite(fps) or fps <= 0:
        raise ConfigError(f"fps must be a positive finite number, got {fps!r}")
    return fps


def check_context(context: str) -> str:
    """Return ``context`` if it is one of :data:`CONTEXT_MODES`, else raise :class:`ConfigError`."""
    if context not in CONTEXT_MODES:
        raise ConfigError(f"unknown context {context!r}; expected one of {', '.join(CONTEXT_MODES)}")
    return context


def mode_shape(mode: str) -> tuple[int, ...]:
    """Per-frame shape of ``mode``: ave (32,16,16), hubert (32,32,32), wenet (256,16,32)."""
    return MODES[check_mode(mode)]
