"""Audio → per-frame U-Net tensors: :func:`pipeline`, its result :class:`Features`, and the
seed's :class:`AudioPipeline` API as a thin facade over it.

Each mode's branch of :func:`pipeline` is the literal composition of the public stages::

    ave:     load_audio → melspectrogram → window → encode_batch → pad_context ─┐
    hubert:  load_channel → hubert_features (normalize, 20 s chunks, HuBERT, pairs) ─┤
    wenet:   load_channel → wenet_features (int16 PCM, fbank, 67-frame windows, ONNX) ─┤
                                           context_windows(radius) → reshape_for_mode
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from types import MappingProxyType
from typing import Any, Mapping

import numpy as np
from einops import rearrange

from . import __version__
from .audio import CHANNEL0_HINT, MIX_HINT, check_waveform, load_audio, load_channel
from .batches import check_positive_int
from .config import DEFAULT_RADIUS, SYNCTALK_2D, MelConfig, check_context, check_encoder_config, \
    check_mode, check_mode_fps, check_radius, mode_shape
from .context import context_window, context_windows, pad_context, reshape_for_mode
from .dsp import melspectrogram
from .engines import PRECISIONS, Precision, encode_batch, resolve_encoder
from .errors import ConfigError
from .frames import window, window_starts

__all__ = ["Features", "pipeline", "AudioPipeline", "PRECISIONS", "Precision"]

_HUBERT_ODD = ("drop", "pad")


@dataclass(frozen=True, eq=False)
class Features:
    """Everything :func:`pipeline` computed for one audio clip (arrays are read-only, down to the
    memory they view: ``setflags(write=True)`` fails). Picklable (``frames`` is rebuilt from
    ``padded``, not copied); ``==`` is identity (compare arrays with ``numpy.array_equal``).

    Attributes
    ----------
    mel : ave: float64 (80, T) mel; wenet: float32 (F, 80) Kaldi fbank; hubert: None
    features : the upstream array — ave float32 (N, 512) (one encoder row per window),
        hubert (T', 2, 1024) (``aud_hu.npy``), wenet (K, 16, 512) (``aud_wenet.npy``)
    padded : float32 (M, D), one row per output video frame — ave (N + 2, 512) with the
        first/last row repeated; hubert (T', 2048); wenet (K, 8192)
    frames : float32 (M, *mode_shape(mode, radius)) — zero-copy view, the U-Net's audio input
    mode, fps, context, radius : the settings used
    metadata : read-only mapping (versions, config, shapes, value ranges)
    """

    mel: "np.ndarray | None"
    features: np.ndarray
    padded: np.ndarray
    frames: np.ndarray
    mode: str
    fps: float
    context: str
    metadata: Mapping[str, Any] = field(default_factory=dict)
    radius: int = DEFAULT_RADIUS

    @property
    def starts(self) -> np.ndarray:
        """int64 (N,): first mel column of every window (ave)."""
        return window_starts(self.mel.shape[1], self.fps)

    @property
    def windows(self) -> np.ndarray:
        """float32 (N, 80, 16): the ave encoder inputs, recomputed from ``mel`` on each access."""
        return np.asarray(window(self.mel, self.fps))

    @property
    def n_frames(self) -> int:
        """The number of output video frames (ave: N + 2)."""
        return int(self.padded.shape[0])

    def frame(self, index: int, *, reshape: bool = True) -> np.ndarray:
        """Frame ``index``'s context window: (2·radius, D), or the mode shape when ``reshape``."""
        win = context_window(self.padded, index, context=self.context, radius=self.radius)
        return reshape_for_mode(win, self.mode) if reshape else win

    def __reduce__(self) -> tuple:
        """Pickle (and ``copy.deepcopy``) the arrays and a plain dict of the metadata; ``frames``, a
        view of ``padded``, is rebuilt on load rather than stored (it would be 2·radius times larger)."""
        return (_features, (self.mel, self.features, self.padded, self.mode, self.fps, self.context,
                            dict(self.metadata), self.radius))


def _sealed(arr: np.ndarray) -> np.ndarray:
    """``arr`` read-only down to the array that owns its memory (``setflags(write=True)`` then fails
    on it and on every view of it). Only for arrays this module made."""
    chain = []
    while isinstance(arr, np.ndarray):
        chain.append(arr)
        arr = arr.base
    for a in reversed(chain):  # the owner first: a view cannot stay writeable over a read-only base
        a.setflags(write=False)
    view = chain[0].view()  # the owner itself could turn WRITEABLE back on; a view of it cannot
    view.setflags(write=False)
    return view


def _features(mel: "np.ndarray | None", features: np.ndarray, padded: np.ndarray, mode: str, fps: float,
              context: str, metadata: Mapping[str, Any], radius: int) -> Features:
    """A :class:`Features` of arrays this module made (sealed read-only), ``frames`` built from ``padded``."""
    # frames first: they view the margin rows the encoder left around ``padded`` (no copy), which
    # context_windows only uses in a writeable buffer; then everything is sealed
    frames = _sealed(reshape_for_mode(context_windows(padded, context=context, radius=radius), mode))
    return Features(mel=None if mel is None else _sealed(mel), features=_sealed(features), padded=_sealed(padded),
                    frames=frames, mode=mode, fps=fps, context=context, metadata=MappingProxyType(dict(metadata)),
                    radius=radius)


def _value_range(arr: np.ndarray) -> list[float]:
    return [float(arr.min()), float(arr.max())] if arr.size else [0.0, 0.0]


def _metadata(*, source: str, n_samples: int, mode: str, fps: float, context: str, radius: int, engine: Any,
              config: MelConfig, mel: "np.ndarray | None", features: np.ndarray, padded: np.ndarray,
              extra: Mapping[str, Any]) -> dict[str, Any]:
    shapes = {"audio_features_raw": list(features.shape), "audio_features_padded": list(padded.shape),
              "frame_window": [2 * radius, int(padded.shape[1])], "frame_reshaped": list(mode_shape(mode, radius))}
    ranges = {"audio_features_raw": _value_range(features)}
    if mode == "ave":
        shapes = {"mel_spectrogram": list(mel.shape), "mel_windows": [int(features.shape[0]), int(mel.shape[0]), 16],
                  **shapes}
        ranges = {"mel_spectrogram": _value_range(mel), **ranges}
    meta = {
        "library": "synctalk-audio", "version": __version__, "source": source,
        "sample_rate": config.sample_rate, "n_samples": n_samples, "duration_s": n_samples / config.sample_rate,
        "mode": mode, "fps": fps, "context": context, "radius": radius,
        "precision": engine.precision, "encoder_compute": engine.compute,
        **extra,
        "n_frames": int(padded.shape[0]), "shapes": shapes, "value_ranges": ranges,
    }
    if mode == "ave":
        meta["mel_config"] = asdict(config)
    return meta


def load_for_mode(path: "str | os.PathLike", mode: str, *, config: MelConfig = SYNCTALK_2D,
                  max_seconds: "float | None" = None) -> np.ndarray:
    """An audio file as ``mode``'s recipe reads it: float32 (n,) at 16 kHz.

    ave: :func:`load_audio` (channels averaged, as librosa); hubert and wenet:
    :func:`load_channel` (channel 0, as their ``soundfile.read`` scripts).
    """
    if mode == "ave":
        return load_audio(path, sr=config.sample_rate, max_seconds=max_seconds)
    return load_channel(path, 16000, max_seconds=max_seconds)


def pipeline(
    audio: "str | os.PathLike | np.ndarray",
    *,
    checkpoint: Any,
    mode: str = "ave",
    fps: float | None = None,
    precision: "str | None" = None,
    device: str = "auto",
    context: str = "zeros",
    radius: int = DEFAULT_RADIUS,
    config: MelConfig = SYNCTALK_2D,
    batch_size: "int | None" = None,
    progress: bool = False,
    threads: "int | None" = None,
    hubert_odd: str = "drop",
    max_seconds: "float | None" = None,
) -> Features:
    """Audio → the mode's features → per-frame U-Net tensors, composed from the public stages.

    Parameters
    ----------
    audio : path or ndarray (n,)
        An audio file (any rate/channels) or 16 kHz mono samples. ave loads it like
        ``librosa.load(sr=16000)`` (channel mean); hubert and wenet like their upstream
        scripts (channel 0), resampled to 16 kHz when needed.
    checkpoint
        ave: ``audio_visual_encoder.pth``, an exported ``.onnx`` (onnxruntime, no torch) or
        ``"seeded"`` (UNTRAINED stand-in); hubert: a HuggingFace HuBERT directory or hub id;
        wenet: ``encoder.onnx``; or an engine from :func:`resolve_encoder`.
    mode : "ave", "hubert" or "wenet"
    fps : float, optional
        ave: any video rate (default 25). hubert (25) and wenet (20) are fixed by their features.
    precision : str, optional
        ave: "exact" (default for .pth, bit-identical to upstream on CPU), "fast" (<= 2 % of
        max|features|), "onnx" (an .onnx checkpoint); hubert: "exact" or "fast"; wenet: "onnx".
    device : "auto", "cpu", "cuda", …
    context : "zeros" (upstream) or "edge" (LiveTalking)
    radius : 8 or 4
        Context rows each side of a frame: 8 (SyncTalk_2D, the seed) or 4 (Ultralight since
        mid-2025, LiveTalking).
    config : MelConfig
        ave's mel preset: ``SYNCTALK_2D`` (default) or ``WAV2LIP``.
    batch_size, threads : int, optional
        Encoder items per call and CPU threads; the features do not depend on them.
    hubert_odd : "drop" or "pad"
        hubert: drop a last odd HuBERT row (upstream) or pad it with a zero row (Ultralight 2026).
    max_seconds : float, optional
        Longest audio file accepted (checked from its header before decoding); default
        ``$SYNCTALK_AUDIO_MAX_SECONDS`` or 3 hours; ``float("inf")`` for no ceiling.

    Returns
    -------
    Features — ave: ``mel`` (80, T), ``features`` (N, 512), ``padded`` (N+2, 512), ``frames``
    (N+2, 32, 16, 16); hubert: ``features`` (T', 2, 1024), ``frames`` (T', 32, 32, 32); wenet:
    ``features`` (K, 16, 512), ``frames`` (K, 256, 16, 32) (radius 8).

    Examples
    --------
    >>> out = pipeline("speech.wav", checkpoint="seeded")   # doctest: +SKIP
    >>> out.frames.shape                                     # doctest: +SKIP
    (77, 32, 16, 16)
    """
    fps = check_mode_fps(mode, fps)
    check_context(context)
    radius = check_radius(radius)
    check_encoder_config(config)
    if hubert_odd not in _HUBERT_ODD:
        raise ConfigError(f"hubert_odd must be 'drop' or 'pad', got {hubert_odd!r}")
    check_positive_int("batch_size", batch_size)
    check_positive_int("threads", threads)
    engine = resolve_encoder(checkpoint, mode=mode, precision=precision, device=device, threads=threads)
    source = str(audio) if isinstance(audio, (str, os.PathLike)) else "<array>"
    if isinstance(audio, (str, os.PathLike)):
        wav = load_for_mode(audio, mode, config=config, max_seconds=max_seconds)
    else:  # a 2-D array: ave's librosa mixes channels, the hubert/wenet scripts take channel 0
        wav = check_waveform(audio, mono_hint=MIX_HINT if mode == "ave" else CHANNEL0_HINT)
    n_samples = int(wav.shape[0])
    extra: dict[str, Any] = {}
    mel = None
    if mode == "ave":
        mel = melspectrogram(wav, config)
        del wav  # a decoded hour is 230 MB: freed before encoding
        windows = window(mel, fps)
        features = encode_batch(windows, engine, batch_size=batch_size, threads=threads, progress=progress,
                                margin=radius + 1)  # room for pad_context: the features are never copied
        del windows
        padded = pad_context(features, margin=radius, context=context)
        features = padded[1:-1]
        extra = {"n_mel_frames": int(mel.shape[1]), "n_windows": int(features.shape[0])}
    elif mode == "hubert":
        from .hubert import hubert_features

        features = hubert_features(wav, engine, odd=hubert_odd)
        padded = rearrange(features, "t two d -> t (two d)")
        extra = {"hubert_odd": hubert_odd}
    else:
        from .wenet import wenet_features

        mel, features = wenet_features(wav, engine, batch_size=batch_size, return_fbank=True)
        padded = rearrange(features, "k rows d -> k (rows d)")
    metadata = _metadata(source=source, n_samples=n_samples, mode=mode, fps=fps, context=context, radius=radius,
                         engine=engine, config=config, mel=mel, features=features, padded=padded, extra=extra)
    return _features(mel, features, padded, mode, fps, context, metadata, radius)


class AudioPipeline:
    """The seed document's API, kept name for name, as a thin facade over :func:`pipeline`.

    Parameters
    ----------
    checkpoint_path
        ave: ``model/checkpoints/audio_visual_encoder.pth`` (or ``.onnx``, ``"seeded"``);
        hubert: a HuggingFace HuBERT directory; wenet: ``encoder.onnx``.
    device : str, optional
        None/"auto" → CUDA when available.
    mode : "ave", "hubert" or "wenet"
    fps : float, optional
        25 for ave and hubert, 20 for wenet (the default follows the mode).
    radius : 8 or 4
        Context rows each side of a frame.

    Examples
    --------
    >>> p = AudioPipeline("audio_visual_encoder.pth", mode="ave", fps=25)   # doctest: +SKIP
    >>> padded, meta = p.process_audio_file("talk.wav")                      # doctest: +SKIP
    >>> p.get_frame_features(padded, 10).shape                               # doctest: +SKIP
    (32, 16, 16)
    """

    def __init__(self, checkpoint_path: Any, device: str | None = None, mode: str = "ave",
                 fps: "float | None" = None, *, radius: int = DEFAULT_RADIUS) -> None:
        self.mode = check_mode(mode)
        self.fps = check_mode_fps(mode, fps)
        self.radius = check_radius(radius)
        self.checkpoint_path = checkpoint_path if isinstance(checkpoint_path, (str, os.PathLike)) else None
        self.encoder = resolve_encoder(checkpoint_path, mode=mode, device="auto" if device is None else device)
        self.device = str(self.encoder.device)

    def run(self, audio: "str | os.PathLike | np.ndarray", **kwargs: Any) -> Features:
        """:func:`pipeline` with this instance's encoder, mode, fps, radius and device."""
        return pipeline(audio, checkpoint=self.encoder, mode=self.mode, fps=self.fps, radius=self.radius,
                        device=self.device, **kwargs)

    def process_audio_file(
        self, audio_path: "str | os.PathLike", save_intermediates: bool = False,
        output_dir: "str | os.PathLike | None" = None, overwrite: bool = False,
    ) -> tuple[np.ndarray, dict]:
        """Audio file → (padded features (M, D) float32, metadata dict).

        With ``save_intermediates`` the intermediates and ``metadata.json`` are written
        (atomically) to ``output_dir``; an existing non-empty ``output_dir`` is replaced only
        with ``overwrite=True`` and only if this library wrote it.
        """
        if save_intermediates and output_dir is None:
            raise ConfigError("save_intermediates=True needs an output_dir")
        result = self.run(audio_path)
        if save_intermediates:
            from .dataset import write_reference

            write_reference(result, output_dir, frames=False, checkpoint=self._weights_source(), overwrite=overwrite)
        return result.padded, dict(result.metadata)

    def get_frame_features(self, features: np.ndarray, frame_idx: int, reshape: bool = True) -> np.ndarray:
        """Frame ``frame_idx``'s ±radius context of padded ``features``: (2·radius, D), or the mode shape."""
        arr = np.asarray(features)
        if arr.ndim > 2:
            arr = rearrange(arr, "m ... -> m (...)")
        win = context_window(arr, frame_idx, radius=self.radius)
        return reshape_for_mode(win, self.mode) if reshape else win

    def process_and_save_all_frames(self, audio_path: "str | os.PathLike", output_dir: "str | os.PathLike",
                                    overwrite: bool = False) -> dict:
        """Write the complete reference dataset for ``audio_path`` to ``output_dir``; return its metadata.

        An existing non-empty ``output_dir`` is replaced only with ``overwrite=True`` and only
        if this library wrote it.
        """
        from .dataset import write_reference

        result = self.run(audio_path)
        return write_reference(result, output_dir, frames=True, checkpoint=self._weights_source(), overwrite=overwrite)

    def _weights_source(self) -> Any:
        """What metadata.json records the weights from: the engine's provenance (checkpoint path
        and hashes, the untrained flag)."""
        return self.encoder
