"""Audio → per-frame U-Net tensors: :func:`pipeline`, its result :class:`Features`, and the
seed's :class:`AudioPipeline` API as a thin facade over it.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from types import MappingProxyType
from typing import Any, Mapping

import numpy as np

from . import __version__
from .audio import check_waveform, load_audio
from .batches import check_positive_int
from .config import FEATURE_DIM, MODE_FPS, SYNCTALK_2D, MelConfig, check_context, check_fps, check_mode, mode_shape
from .context import context_window, reshape_for_mode, window_view
from .dsp import melspectrogram
from .errors import ConfigError
from .frames import gather_windows, window, window_starts

__all__ = ["Features", "pipeline", "encode_mel", "AudioPipeline", "PRECISIONS", "Precision"]

_ENCODER_MODE = "ave"  # the conv AudioEncoder's 512-d rows fit ave frames (16 × 512 = 32·16·16)
_RADIUS = 8  # context rows each side of a frame (upstream get_audio_features: rows [i-8, i+8))


@dataclass(frozen=True)
class Precision:
    """A ``precision=`` choice and its documented error bound against the upstream recipe.

    Attributes
    ----------
    name : str
    max_rel : float
        Bound on ``max|features − upstream| / max|upstream features|`` (features, padded
        features and every frame alike).
    max_abs : float or None
        Absolute bound, where one is promised.
    description : str
    """

    name: str
    max_rel: float
    max_abs: "float | None"
    description: str


#: The precisions :func:`pipeline` accepts, with their bounds. "fast" was measured on real
#: speech (the 9 golden clips + a 45 s clip) with the seeded weights: max |fast − exact| /
#: max |exact| = 0.68–0.94 % (bfloat16, AMX; 2e-6 in float32 on CPUs without bfloat16); the
#: documented bound leaves a factor of 2. "onnx" is what an .onnx checkpoint runs (see
#: :mod:`synctalk_audio.runtime`); the other two need the PyTorch checkpoint.
PRECISIONS: Mapping[str, Precision] = MappingProxyType({
    "exact": Precision("exact", 1e-7, 1e-5,
                       "the upstream recipe's float32 operations in its order: bit-identical on CPU "
                       "(oneDNN) for any batch size and thread count; <= 1e-5 absolute"),
    "fast": Precision("fast", 2e-2, None,
                      "BatchNorm folded, channels-last, conv+residual+ReLU fused in oneDNN, bfloat16 on "
                      "CPUs with AVX512-BF16/AMX (float32 elsewhere), float16 on CUDA; <= 2 % of max|features|"),
    "onnx": Precision("onnx", 5e-6, None,
                      "float32 in onnxruntime from an exported .onnx encoder, torch never imported; "
                      "<= 5e-6 of max|features| from exact (measured <= 1e-6)"),
})


def _readonly(arr: np.ndarray) -> np.ndarray:
    if arr.flags.writeable and arr.base is None:
        arr.setflags(write=False)
    elif arr.flags.writeable:
        arr = arr.view()
        arr.setflags(write=False)
    return arr


@dataclass(frozen=True)
class Features:
    """Everything :func:`pipeline` computed for one audio clip (arrays are read-only).

    Attributes
    ----------
    mel : float64 (80, T)
    features : float32 (N, 512) — one encoder row per video frame window
    padded : float32 (N + 2, 512) — first/last row repeated; one row per output video frame
    frames : float32 (N + 2, *mode_shape) — zero-copy view, the U-Net's audio input per frame
    mode, fps, context : the settings used
    metadata : read-only mapping (versions, config, shapes, value ranges)
    """

    mel: np.ndarray
    features: np.ndarray
    padded: np.ndarray
    frames: np.ndarray
    mode: str
    fps: float
    context: str
    metadata: Mapping[str, Any] = field(default_factory=dict)

    @property
    def starts(self) -> np.ndarray:
        """int64 (N,): first mel column of every window."""
        return window_starts(self.mel.shape[1], self.fps)

    @property
    def windows(self) -> np.ndarray:
        """float32 (N, 80, 16): the encoder inputs, recomputed from ``mel`` on each access."""
        return window(self.mel, self.fps)

    @property
    def n_frames(self) -> int:
        """N + 2, the number of output video frames."""
        return int(self.padded.shape[0])

    def frame(self, index: int, *, reshape: bool = True) -> np.ndarray:
        """Frame ``index``'s context window: (16, 512), or the mode shape when ``reshape``."""
        win = context_window(self.padded, index, context=self.context)
        return reshape_for_mode(win, self.mode) if reshape else win


def _resolve_encoder(checkpoint: Any, device: str, threads: "int | None" = None):
    """checkpoint → AudioEncoder / PreparedEncoder (PyTorch) or OnnxEncoder (onnxruntime).

    An .onnx path or an OnnxEncoder never imports torch.
    """
    from .runtime import OnnxEncoder, is_onnx_model, load_onnx_encoder

    if checkpoint is None:
        raise ConfigError("checkpoint is required: a path to audio_visual_encoder.pth (or an exported .onnx), "
                          "a state dict or an AudioEncoder")
    if isinstance(checkpoint, OnnxEncoder):
        if threads is not None and checkpoint.device == "cpu" and threads != checkpoint.threads:
            raise ConfigError(f"the ONNX encoder was loaded with {checkpoint.threads} threads, not {threads}: "
                              f"load_onnx_encoder(path, threads={threads})")
        return checkpoint
    if is_onnx_model(checkpoint):
        return load_onnx_encoder(checkpoint, device=device, threads=threads)
    from .encoder import AudioEncoder, PreparedEncoder, load_encoder

    if isinstance(checkpoint, PreparedEncoder):
        return checkpoint
    if isinstance(checkpoint, AudioEncoder):
        return checkpoint.eval()
    return load_encoder(checkpoint, device=device)


def _prepare(checkpoint: Any, *, precision: "str | None", device: str, threads: "int | None" = None) -> Any:
    """checkpoint + precision → a ready backend: PreparedEncoder (exact/fast) or OnnxEncoder (onnx).

    ``precision=None`` means the checkpoint's own: "exact" for PyTorch weights, "onnx" for an
    .onnx model. Asking an .onnx model for exact/fast (or PyTorch weights for onnx) is a
    ConfigError rather than a silent change of the numbers.
    """
    if precision is not None and precision not in PRECISIONS:
        raise ConfigError(f"unknown precision {precision!r}; expected one of {', '.join(PRECISIONS)}")
    from .runtime import OnnxEncoder

    encoder = _resolve_encoder(checkpoint, device, threads)
    if isinstance(encoder, OnnxEncoder):
        if precision not in (None, "onnx"):
            raise ConfigError(f"precision {precision!r} needs the PyTorch checkpoint (.pth); an .onnx encoder "
                              "runs precision 'onnx' (float32 in onnxruntime)")
        return encoder
    if precision == "onnx":
        raise ConfigError("precision 'onnx' needs an exported .onnx encoder as checkpoint "
                          "(synctalk-audio export --format onnx)")
    from .encoder import PreparedEncoder, prepare_encoder

    if precision is None:
        precision = encoder.precision if isinstance(encoder, PreparedEncoder) else "exact"
    return prepare_encoder(encoder, precision=precision, device=device)


def encode_mel(
    mel: np.ndarray,
    encoder: Any,
    *,
    fps: float = 25,
    batch_size: "int | None" = None,
    device: str = "auto",
    progress: bool = False,
    precision: "str | None" = None,
    threads: "int | None" = None,
    out: "np.ndarray | None" = None,
) -> np.ndarray:
    """Encode every window of ``mel`` without materialising all windows at once.

    Windows are cut batch by batch (float32, zero-copy view → one gather per batch) inside
    the encoder's workers, so memory stays at a few batches whatever the audio length.

    Parameters
    ----------
    mel : float64 (80, T)
    encoder : AudioEncoder, PreparedEncoder, OnnxEncoder, or anything :func:`pipeline`
        takes as ``checkpoint``
    batch_size : int, optional
        Windows per forward pass; default the device's best (features do not depend on it).
    precision : "exact", "fast" or "onnx" (see :data:`PRECISIONS`); default the encoder's own
    threads : int, optional
        CPU threads (default ``torch.get_num_threads()``; onnxruntime: the usable cores).
    out : float32 ndarray (N, 512), optional
        Written in place.

    Returns
    -------
    ndarray, float32, shape (N, 512)
    """
    starts = window_starts(mel.shape[1], fps)
    n = starts.shape[0]
    mel32 = np.ascontiguousarray(mel, dtype=np.float32)
    prepared = _prepare(encoder, precision=precision, device=device, threads=threads)
    encode_windows = _windows_encoder(prepared, threads)
    if out is None:
        out = np.empty((n, FEATURE_DIM), dtype=np.float32)
    # Windows of one constant value (digital silence: every mel value at the -4 floor) give
    # one feature row: run each distinct one once. Only where results do not depend on the
    # batch (exact on oneDNN: bit for bit), so the copies equal what the encoder would give.
    varying, constant, values = (_constant_windows(mel32, starts) if prepared.batch_invariant
                                 else (None, np.empty(0, np.intp), None))
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=n, unit="frame", desc="encoding", leave=False)
    update = bar.update if bar is not None else None
    try:
        if constant.size:
            distinct, which = np.unique(values, return_inverse=True)
            reps = np.broadcast_to(distinct[:, None, None], (distinct.shape[0], mel32.shape[0], 16))
            rows = encode_windows(distinct.shape[0], lambda lo, hi: reps[lo:hi], prepared, batch_size=batch_size)
            out[constant] = rows[which]
            if update is not None:
                update(constant.shape[0])
        if varying is None:
            encode_windows(n, lambda lo, hi: gather_windows(mel32, starts[lo:hi]), prepared,
                           batch_size=batch_size, out=out, progress=update)
        elif varying.size:
            encode_windows(varying.shape[0], lambda lo, hi: gather_windows(mel32, starts[varying[lo:hi]]), prepared,
                           batch_size=batch_size, out=out, rows=varying, progress=update)
        return out
    finally:
        if bar is not None:
            bar.close()


def _windows_encoder(prepared: Any, threads: "int | None") -> Any:
    """The ``encode_windows``-style function of ``prepared``'s backend (torch or onnxruntime)."""
    from .runtime import OnnxEncoder, encode_windows_onnx

    if isinstance(prepared, OnnxEncoder):
        return encode_windows_onnx
    from functools import partial

    from .encoder import encode_windows

    return partial(encode_windows, threads=threads)


def _constant_windows(mel32: np.ndarray, starts: np.ndarray) -> tuple["np.ndarray | None", np.ndarray, np.ndarray]:
    """Split windows into varying ones and those holding one value everywhere.

    Returns (varying indices or None when every window varies, constant indices, their values).
    """
    lo, hi = mel32.min(axis=0), mel32.max(axis=0)
    flat = np.lib.stride_tricks.sliding_window_view(lo == hi, 16)[starts].all(axis=1)
    if not flat.any():
        return None, np.empty(0, np.intp), np.empty(0, mel32.dtype)
    vals = np.lib.stride_tricks.sliding_window_view(lo, 16)[starts]
    const = flat & (vals == vals[:, :1]).all(axis=1)
    return np.flatnonzero(~const), np.flatnonzero(const), vals[const, 0]


def _context_buffer(n: int, dim: int) -> np.ndarray:
    """float32 zeros (radius + N + 2 + radius, dim): features go at rows radius+1 … radius+N."""
    return np.zeros((n + 2 + 2 * _RADIUS, dim), dtype=np.float32)


def _fill_context(buf: np.ndarray, n: int, context: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Finish ``buf`` around the features in place; return (features, padded, windows) views.

    ``padded`` (N+2, D) repeats the first/last feature row (:func:`pad_context`); the rows
    outside it are zeros (upstream) or the edge rows (``context="edge"``), so the context
    windows (N+2, 16, D) are one zero-copy view, equal to ``context_windows(padded)``.
    """
    r = _RADIUS
    buf[r] = buf[r + 1]
    buf[r + n + 1] = buf[r + n]
    if context == "edge":
        buf[:r] = buf[r]
        buf[r + n + 2:] = buf[r + n + 1]
    return buf[r + 1: r + 1 + n], buf[r: r + n + 2], window_view(buf, n + 2, r)


def _value_range(arr: np.ndarray) -> list[float]:
    return [float(arr.min()), float(arr.max())] if arr.size else [0.0, 0.0]


def pipeline(
    audio: "str | os.PathLike | np.ndarray",
    *,
    checkpoint: Any,
    mode: str = "ave",
    fps: float | None = None,
    precision: "str | None" = None,
    device: str = "auto",
    context: str = "zeros",
    config: MelConfig = SYNCTALK_2D,
    batch_size: "int | None" = None,
    progress: bool = False,
    threads: "int | None" = None,
) -> Features:
    """Audio → mel → windows → encoder → padded features → per-frame U-Net tensors.

    Parameters
    ----------
    audio : path or ndarray (n,)
        An audio file (any rate/channels; loaded like ``librosa.load(sr=16000)``) or 16 kHz
        mono samples.
    checkpoint : path, state dict, AudioEncoder or OnnxEncoder
        ``audio_visual_encoder.pth`` (with or without the ``audio_encoder.`` prefix), or an
        exported ``.onnx`` encoder: then onnxruntime runs it and torch is never imported.
    mode : "ave"
        The conv encoder's features feed ave frames (32, 16, 16). For hubert/wenet, pass
        precomputed features to :func:`frames_for_mode`.
    fps : float, optional
        Video frame rate; default the mode's (25 for ave).
    precision : "exact", "fast" or "onnx"; default the checkpoint's own
        "exact" (default for PyTorch weights) is bit-identical to the upstream recipe on CPU
        (≤ 1e-5); "fast" trades precision for speed within its bound in :data:`PRECISIONS`
        (≤ 2 % of max|features|); "onnx" is what an .onnx checkpoint runs (≤ 5e-6 of
        max|features|).
    device : "auto", "cpu", "cuda", …
    context : "zeros" (upstream) or "edge"
    config : MelConfig
        ``SYNCTALK_2D`` (default) or ``WAV2LIP``.
    batch_size : int, optional
        Encoder windows per forward pass; default the device's best (32 per CPU thread,
        1024+ on CUDA). The features do not depend on it.
    threads : int, optional
        CPU threads for the encoder (default ``torch.get_num_threads()``, or the usable
        cores for onnxruntime); the features do not depend on it.

    Returns
    -------
    Features with ``mel`` (80, T), ``features`` (N, 512), ``padded`` (N+2, 512),
    ``frames`` (N+2, 32, 16, 16).

    Examples
    --------
    >>> from synctalk_audio import pipeline, seeded_state_dict
    >>> out = pipeline("speech.wav", checkpoint=seeded_state_dict())   # doctest: +SKIP
    >>> out.frames.shape                                                # doctest: +SKIP
    (77, 32, 16, 16)
    """
    check_mode(mode)
    if mode != _ENCODER_MODE:
        raise ConfigError(
            f"mode {mode!r} takes precomputed features (e.g. aud_hu.npy); the conv encoder only "
            f"feeds 'ave' — use frames_for_mode(features, {mode!r})"
        )
    fps = check_fps(MODE_FPS[mode] if fps is None else fps)
    check_context(context)
    if precision is not None and precision not in PRECISIONS:
        raise ConfigError(f"unknown precision {precision!r}; expected one of {', '.join(PRECISIONS)}")
    check_positive_int("batch_size", batch_size)
    check_positive_int("threads", threads)
    if isinstance(audio, (str, os.PathLike)):
        wav = load_audio(audio, sr=config.sample_rate)
        source = str(audio)
    else:
        wav = check_waveform(audio)
        source = "<array>"
    encoder = _prepare(checkpoint, precision=precision, device=device, threads=threads)
    mel = melspectrogram(wav, config)
    n_samples = int(wav.shape[0])
    del wav  # a decoded file is not needed past the mel (1 hour: 230 MB freed before encoding)
    n = len(window_starts(mel.shape[1], fps))
    # One buffer holds zeros | padded (N + 2 rows, features in the middle) | zeros: features,
    # padded and every frame are views of it (a 1-hour clip: 184 MB once, no per-frame copies).
    buf = _context_buffer(n, FEATURE_DIM)
    encode_mel(mel, encoder, fps=fps, batch_size=batch_size, device=device, progress=progress,
               threads=threads, out=buf[_RADIUS + 1: _RADIUS + 1 + n])
    features, padded, windows = _fill_context(buf, n, context)
    frames = reshape_for_mode(windows, mode)
    metadata = {
        "library": "synctalk-audio",
        "version": __version__,
        "source": source,
        "sample_rate": config.sample_rate,
        "n_samples": n_samples,
        "duration_s": n_samples / config.sample_rate,
        "mel_config": asdict(config),
        "mode": mode,
        "fps": fps,
        "context": context,
        "precision": encoder.precision,
        "encoder_compute": encoder.compute,
        "n_mel_frames": int(mel.shape[1]),
        "n_windows": int(n),
        "n_frames": int(n + 2),
        "shapes": {
            "mel_spectrogram": list(mel.shape),
            "mel_windows": [int(n), int(mel.shape[0]), 16],
            "audio_features_raw": list(features.shape),
            "audio_features_padded": list(padded.shape),
            "frame_window": [16, int(padded.shape[1])],
            "frame_reshaped": list(mode_shape(mode)),
        },
        "value_ranges": {
            "mel_spectrogram": _value_range(mel),
            "audio_features_raw": _value_range(features),
        },
    }
    return Features(
        mel=_readonly(mel),
        features=_readonly(features),
        padded=_readonly(padded),
        frames=frames,
        mode=mode,
        fps=fps,
        context=context,
        metadata=MappingProxyType(metadata),
    )


class AudioPipeline:
    """The seed document's API, kept name for name, as a thin facade over :func:`pipeline`.

    Parameters
    ----------
    checkpoint_path : path or state dict
        ``model/checkpoints/audio_visual_encoder.pth``.
    device : str, optional
        None/"auto" → CUDA when available.
    mode : "ave"
    fps : float
        25 for ave.

    Examples
    --------
    >>> p = AudioPipeline("audio_visual_encoder.pth", mode="ave", fps=25)   # doctest: +SKIP
    >>> padded, meta = p.process_audio_file("talk.wav")                      # doctest: +SKIP
    >>> p.get_frame_features(padded, 10).shape                               # doctest: +SKIP
    (32, 16, 16)
    """

    def __init__(self, checkpoint_path: Any, device: str | None = None, mode: str = "ave", fps: float = 25):
        self.mode = check_mode(mode)
        self.fps = check_fps(fps)
        self.checkpoint_path = checkpoint_path if isinstance(checkpoint_path, (str, os.PathLike)) else None
        self.encoder = _resolve_encoder(checkpoint_path, "auto" if device is None else device)
        if hasattr(self.encoder, "device"):  # OnnxEncoder, PreparedEncoder
            self.device = str(self.encoder.device)
        else:
            from .encoder import resolve_device

            self.device = str(resolve_device(device))

    def run(self, audio: "str | os.PathLike | np.ndarray", **kwargs: Any) -> Features:
        """:func:`pipeline` with this instance's encoder, mode, fps and device."""
        return pipeline(audio, checkpoint=self.encoder, mode=self.mode, fps=self.fps, device=self.device, **kwargs)

    def process_audio_file(
        self, audio_path: "str | os.PathLike", save_intermediates: bool = False, output_dir: "str | os.PathLike | None" = None
    ) -> tuple[np.ndarray, dict]:
        """Audio file → (padded features (N+2, 512) float32, metadata dict).

        With ``save_intermediates`` the mel, windows, raw and padded features and
        ``metadata.json`` are written (atomically) to ``output_dir``.
        """
        result = self.run(audio_path)
        if save_intermediates:
            if output_dir is None:
                raise ConfigError("save_intermediates=True needs an output_dir")
            from .dataset import write_reference

            write_reference(result, output_dir, frames=False, checkpoint=self._weights_source())
        return result.padded, dict(result.metadata)

    def get_frame_features(self, features: np.ndarray, frame_idx: int, reshape: bool = True) -> np.ndarray:
        """Frame ``frame_idx``'s ±8 context of padded ``features``: (16, D), or the mode shape."""
        win = context_window(features, frame_idx)
        return reshape_for_mode(win, self.mode) if reshape else win

    def process_and_save_all_frames(self, audio_path: "str | os.PathLike", output_dir: "str | os.PathLike") -> dict:
        """Write the complete reference dataset for ``audio_path`` to ``output_dir``; return its metadata."""
        from .dataset import write_reference

        result = self.run(audio_path)
        return write_reference(result, output_dir, frames=True, checkpoint=self._weights_source())

    def _weights_source(self) -> Any:
        """What metadata.json records the weights from: the checkpoint path, else the encoder."""
        return self.checkpoint_path if self.checkpoint_path is not None else self.encoder
