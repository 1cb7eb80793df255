"""The wenet front end (Ultralight-Digital-Human ``data_utils/wenet_infer.py``), without torch.

::

    wav (n,) float at 16 kHz ─ wenet_pcm ─ fbank ─ wenet_windows ─ encoder.onnx ─ (K, 16, 512)
                               int16 values,  (F, 80)  (K, 67, 80)   WenetEngine    aud_wenet.npy
                               zero padded

- :func:`wenet_pcm`: ``(x.astype(float32) * 32767).astype(int16)`` (truncation toward zero),
  then 32·160 zeros before and 35·160 after, as float32 (upstream's ``.float()``).
- :func:`synctalk_audio.kaldi_fbank.fbank`: torchaudio's Kaldi fbank (80 bins, 25/10 ms, dither 0).
- :func:`wenet_windows`: windows of 67 fbank frames starting at 0, 5, 10, … while the previous
  window ended before ``F``; the last one zero-padded to 67 — ``K = 1 + ceil(max(0, F − 67) / 5)``,
  which is ``20·seconds + 1``: one row per 20 fps video frame.
- :class:`WenetEngine`: the user's ``encoder.onnx`` in onnxruntime, one window per run with
  ``offset = [100]`` and zero ``att_cache`` (3, 8, 16, 128) / ``cnn_cache`` (3, 1, 512, 14);
  the first output (1, 16, 512) is the window's row.

Upstream never resamples (other rates silently give wrong features); :func:`load_wenet_audio`
resamples to 16 kHz (soxr_hq, like ``librosa.resample``) after taking channel 0.

For tests and demos without the real model, :func:`write_standin_wenet_onnx` writes a small
**UNTRAINED** graph with the encoder's exact interface; its features mean nothing.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Callable, ClassVar, Mapping

import numpy as np

from .audio import CHANNEL0_HINT, check_waveform, load_channel
from .batches import check_positive_int, run_beside
from .errors import AudioError, CheckpointError, ConfigError, ShapeError, install_hint
from .kaldi_fbank import fbank
from .runtime import _CUDA, _import_onnxruntime, _usable_cores, open_session

__all__ = [
    "WenetEngine",
    "load_wenet_engine",
    "wenet_features",
    "wenet_pcm",
    "wenet_windows",
    "wenet_window_count",
    "load_wenet_audio",
    "write_standin_wenet_onnx",
    "WENET_SAMPLE_RATE",
    "WENET_MIN_SAMPLES",
    "PAD_BEFORE",
    "PAD_AFTER",
    "WINDOW_FRAMES",
    "WINDOW_STEP",
    "ROW_SHAPE",
]

WENET_SAMPLE_RATE = 16000
#: Zeros upstream puts around the int16 PCM: 32 and 35 fbank hops (160 samples each).
PAD_BEFORE = 32 * 160
PAD_AFTER = 35 * 160
#: Fbank frames per encoder window, and the step between window starts (frames).
WINDOW_FRAMES = 67
WINDOW_STEP = 5
#: One encoder row per window: 16 time steps × 512.
ROW_SHAPE = (16, 512)
_FRAME_LENGTH, _FRAME_SHIFT = 400, 160  # 25 ms / 10 ms at 16 kHz
#: The shortest audio wenet takes: 240 samples (15 ms) at 16 kHz, the length whose padded PCM
#: (n + 10720 samples) just fills one whole 67-frame window (400 + 66·160 = 10960 samples).
#: Shorter audio would give a single window made of padding and zero frames.
WENET_MIN_SAMPLES = _FRAME_LENGTH + (WINDOW_FRAMES - 1) * _FRAME_SHIFT - PAD_BEFORE - PAD_AFTER
_INT16_MIN, _INT16_MAX = -32768, 32767
#: The encoder's inputs as upstream feeds them: name → (onnx type, shape).
_INPUTS: Mapping[str, tuple[str, tuple[int, ...]]] = MappingProxyType({
    "chunk": ("tensor(float)", (1, 1, WINDOW_FRAMES, 80)),
    "offset": ("tensor(int64)", (1,)),
    "att_cache": ("tensor(float)", (3, 8, 16, 128)),
    "cnn_cache": ("tensor(float)", (3, 1, 512, 14)),
})
_OFFSET = 100
_OUTPUT_SHAPE = (1, *ROW_SHAPE)
_EXPECTED = ", ".join(f"{name} {'int64' if t.endswith('(int64)') else 'float32'} {shape}"
                      for name, (t, shape) in _INPUTS.items())
#: Windows per engine call (each window is its own session.run: the graph takes batch 1).
_DEFAULT_BATCH = 64
_UNTRAINED_KEY = "synctalk_audio.untrained"


# --------------------------------------------------------------------------- pure stages


def wenet_pcm(wav: np.ndarray) -> np.ndarray:
    """Upstream's int16 PCM with its zero padding, as float32 (the values torch's ``.float()`` sees).

    ``(wav.astype(float32) * 32767).astype(int16)`` truncates toward zero; then 32·160 zeros
    before and 35·160 after.

    Samples beyond full scale (``|x · 32767| ≥ 32768``, e.g. resampler overshoot of a clip
    normalised to ±1, or a float WAV above 1.0) saturate to −32768 / 32767. Upstream's numpy
    cast is undefined there (on x86 it wraps around: 32800 → −32736, a loud click); every
    sample within range gives upstream's value exactly.

    Parameters
    ----------
    wav : ndarray, float, shape (n,)
        Samples in about [−1, 1] at 16 kHz (soundfile's float scale).

    Returns
    -------
    ndarray, float32, shape (n + 10720,), integer values in [−32768, 32767]

    Raises
    ------
    AudioError
        Not 1-D, integer samples (give floats in [−1, 1]), NaN/Inf.

    Examples
    --------
    >>> pcm = wenet_pcm(np.array([0.5, -0.5, 1.2]))
    >>> pcm.shape, pcm[5120:5123].tolist()
    ((10723,), [16383.0, -16383.0, 32767.0])
    """
    x = check_waveform(wav, name="wav", mono_hint=CHANNEL0_HINT)
    if x.dtype.kind != "f":
        raise AudioError(f"wav must hold float samples in [-1, 1] (soundfile's scale), got dtype {x.dtype}; "
                         "divide integer PCM by 32768 first")
    scaled = x.astype(np.float32) * np.float32(32767)
    pcm = np.zeros(PAD_BEFORE + x.shape[0] + PAD_AFTER, dtype=np.float32)
    body = np.clip(scaled, _INT16_MIN, _INT16_MAX).astype(np.int16)
    pcm[PAD_BEFORE:PAD_BEFORE + x.shape[0]] = body
    return pcm


def wenet_window_count(n_frames: int) -> int:
    """Windows of upstream's loop over ``n_frames`` fbank frames: ``1 + ceil(max(0, F − 67) / 5)``.

    ``F = 100·s + 65`` for ``s`` whole seconds of audio, so ``K = 20·s + 1``.

    Examples
    --------
    >>> [wenet_window_count(f) for f in (1, 67, 68, 72, 73, 165)]
    [1, 1, 2, 2, 3, 21]
    """
    f = int(n_frames)
    if f < 1:
        raise ShapeError(f"n_frames must be at least 1, got {n_frames!r}")
    return 1 + -(-max(0, f - WINDOW_FRAMES) // WINDOW_STEP)


def wenet_windows(fb: np.ndarray) -> np.ndarray:
    """The encoder's 67-frame windows, starts 0, 5, 10, …, the last zero-padded to 67 frames.

    A read-only strided view: of ``fb`` itself when the last window ends exactly at ``F``,
    otherwise of one copy of ``fb`` with the missing (≤ 66) rows zero. Never K·67·80 floats.

    Parameters
    ----------
    fb : ndarray, float32, shape (F, 80), F >= 1

    Returns
    -------
    ndarray, float32, shape (K, 67, 80), ``K = wenet_window_count(F)``; window k is rows
    ``[5k, 5k + 67)`` of ``fb`` with zero rows past ``F``.

    Examples
    --------
    >>> wenet_windows(np.ones((70, 80), np.float32)).shape
    (2, 67, 80)
    """
    a = np.asarray(fb)
    if a.ndim != 2 or a.shape[0] < 1 or a.shape[1] != 80:
        raise ShapeError(f"fb must be an fbank of shape (F, 80) with F >= 1, got {a.shape}")
    a = np.ascontiguousarray(a, dtype=np.float32)
    k = wenet_window_count(a.shape[0])
    need = (k - 1) * WINDOW_STEP + WINDOW_FRAMES
    if need > a.shape[0]:
        padded = np.zeros((need, a.shape[1]), dtype=np.float32)
        padded[:a.shape[0]] = a
        a = padded
    return np.lib.stride_tricks.as_strided(
        a, shape=(k, WINDOW_FRAMES, a.shape[1]),
        strides=(WINDOW_STEP * a.strides[0], a.strides[0], a.strides[1]), writeable=False)


# --------------------------------------------------------------------------- the engine


@dataclass(frozen=True, eq=False)
class WenetEngine:
    """A wenet ``encoder.onnx`` in onnxruntime: windows float32 (B, 67, 80) → rows float32 (B, 16, 512).

    Make one with :func:`load_wenet_engine`. Each window is one ``session.run`` (the graph
    takes one chunk) with upstream's constant inputs: ``offset = [100]``, zero caches.

    Attributes
    ----------
    path : Path
    sha256 : str
        Of the .onnx file.
    device : "cpu" or "cuda:N"
    threads : int
        CPU threads a call spreads its windows over (one window per ``session.run``, one
        onnxruntime intra-op thread each: a window is too small to split, so windows run side
        by side instead; the rows do not depend on it).
    batch_size : int
        Windows per call when run through the seam (64).
    compute : str
        E.g. ``"float32 onnxruntime 1.32.0 (CPUExecutionProvider, windows on 2 threads), one window per run"``.
    provenance : read-only mapping
        ``path``, ``sha256``, ``untrained`` (True for :func:`write_standin_wenet_onnx` graphs),
        and the model's ``producer`` and metadata.
    batch_invariant : bool
        True on CPU: a window's row never depends on the others in its batch.
    mode : "wenet"
    precision : "onnx"
    row_shape : (16, 512)
    """

    path: Path
    sha256: str
    device: str
    threads: int
    batch_size: int
    compute: str
    provenance: Mapping[str, Any]
    batch_invariant: bool
    _session: Any = field(repr=False)
    _output: str = field(repr=False)
    _constants: Mapping[str, np.ndarray] = field(repr=False)
    _pool: Any = field(default=None, repr=False)  # threads − 1 workers (CPU, threads > 1)
    mode: ClassVar[str] = "wenet"
    precision: ClassVar[str] = "onnx"
    row_shape: ClassVar[tuple[int, int]] = ROW_SHAPE

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        """float32 (B, 67, 80) or (B, 1, 67, 80) windows → float32 (B, 16, 512) rows."""
        x = np.asarray(batch)
        if x.ndim == 4 and x.shape[1] == 1:
            x = x[:, 0]
        if x.ndim != 3 or x.shape[1:] != (WINDOW_FRAMES, 80):
            raise ShapeError(f"wenet windows must have shape (B, 67, 80), got {np.shape(batch)}")
        out = np.empty((x.shape[0], *ROW_SHAPE), dtype=np.float32)
        if x.shape[0] == 0:
            return out
        parts = min(self.threads, x.shape[0]) if self._pool is not None else 1
        run_beside(self._pool, lambda lo, hi: self._run(x, out, lo, hi), x.shape[0], parts)
        return out

    def _run(self, x: np.ndarray, out: np.ndarray, lo: int, hi: int) -> None:
        """Windows ``x[lo:hi]`` → ``out[lo:hi]``, one ``session.run`` each."""
        feeds = dict(self._constants)
        for b in range(lo, hi):
            feeds["chunk"] = np.ascontiguousarray(x[b], dtype=np.float32).reshape(_INPUTS["chunk"][1])
            y = self._session.run([self._output], feeds)[0]
            if y.shape != _OUTPUT_SHAPE:
                raise ShapeError(f"{self.path} gave {y.shape} for one window; a wenet encoder gives {_OUTPUT_SHAPE}")
            out[b] = y[0]


def _dims_fit(shape: Any, expected: tuple[int, ...]) -> bool:
    """A model's declared shape fits ``expected``: same rank, each dim equal or symbolic."""
    return shape is not None and len(shape) == len(expected) and all(
        not isinstance(d, int) or d == e for d, e in zip(shape, expected))


def _check_wenet_io(session: Any, path: Path) -> str:
    """The wenet interface or one CheckpointError line; returns the first output's name."""
    inputs = {i.name: i for i in session.get_inputs()}
    missing = [name for name in _INPUTS if name not in inputs]
    extra = [name for name in inputs if name not in _INPUTS]
    if missing or extra:
        what = (f"lacks input(s) {', '.join(missing)}" if missing else "") + ("; " if missing and extra else "") \
            + (f"has input(s) upstream never feeds: {', '.join(extra)}" if extra else "")
        raise CheckpointError(f"{path} is not a wenet encoder: it {what}; expected inputs {_EXPECTED}")
    for name, (onnx_type, shape) in _INPUTS.items():
        arg = inputs[name]
        if arg.type != onnx_type or not _dims_fit(arg.shape, shape):
            raise CheckpointError(f"{path} input {name!r} is {arg.type} {tuple(arg.shape)}; "
                                  f"a wenet encoder takes {_EXPECTED}")
    outputs = session.get_outputs()
    if not outputs or outputs[0].type != "tensor(float)" or not _dims_fit(outputs[0].shape, _OUTPUT_SHAPE):
        got = f"{outputs[0].type} {tuple(outputs[0].shape)}" if outputs else "no output"
        raise CheckpointError(f"{path} first output is {got}; a wenet encoder gives float32 {_OUTPUT_SHAPE}")
    return outputs[0].name


def _constant_inputs() -> Mapping[str, np.ndarray]:
    """Upstream's constant feeds: offset [100] int64 and zero caches, read-only."""
    consts = {"offset": np.full(_INPUTS["offset"][1], _OFFSET, dtype=np.int64),
              "att_cache": np.zeros(_INPUTS["att_cache"][1], dtype=np.float32),
              "cnn_cache": np.zeros(_INPUTS["cnn_cache"][1], dtype=np.float32)}
    for value in consts.values():
        value.setflags(write=False)
    return MappingProxyType(consts)


def load_wenet_engine(
    path: "str | os.PathLike",
    *,
    device: str = "auto",
    threads: "int | None" = None,
    batch_size: "int | None" = None,
) -> WenetEngine:
    """Load a wenet ``encoder.onnx`` into onnxruntime (no torch) and check its interface.

    Parameters
    ----------
    path : path to the .onnx file (Ultralight-Digital-Human's ``encoder.onnx``)
    device : "auto" (CUDA when onnxruntime-gpu offers it, else CPU), "cpu", "cuda", "cuda:N"
    threads : int, optional
        CPU threads a call spreads its windows over, each running whole windows with one
        intra-op thread (default: the cores this process may use).
    batch_size : int, optional
        Windows per engine call through the seam (default 64).

    Returns
    -------
    WenetEngine : float32 (B, 67, 80) → float32 (B, 16, 512)

    Raises
    ------
    CheckpointError
        Missing, empty or unreadable file, not ONNX, inputs other than ``chunk``, ``offset``,
        ``att_cache``, ``cnn_cache`` (with their dtypes and shapes), or a first output that is
        not (1, 16, 512) for one window.
    ConfigError
        onnxruntime missing, bad device/threads/batch_size.
    """
    threads = check_positive_int("threads", threads)
    batch_size = check_positive_int("batch_size", batch_size)
    try:
        ort = _import_onnxruntime()
    except ConfigError:
        raise ConfigError("mode 'wenet' runs encoder.onnx in onnxruntime (the [wenet] extra: "
                          + install_hint("wenet") + ")") from None
    # On CPU, one intra-op thread per session.run and the windows spread over `threads` threads
    # (the session is shared: onnxruntime runs concurrent calls); on CUDA the session's default.
    cpu = str(device).lower() == "cpu" or (str(device).lower() == "auto" and _CUDA not in ort.get_available_providers())
    p, digest, session, n_threads, dev = open_session(ort, path, what="wenet encoder", device=device,
                                                      threads=1 if cpu else threads)
    workers = (threads or _usable_cores()) if cpu else 1
    output = _check_wenet_io(session, p)
    constants = _constant_inputs()
    probe = dict(constants, chunk=np.zeros(_INPUTS["chunk"][1], dtype=np.float32))
    try:
        y = session.run([output], probe)[0]
    except Exception as exc:
        reason = " ".join(str(exc).split())[:200] or type(exc).__name__
        raise CheckpointError(f"wenet encoder {p} fails on one zero window: {reason}") from None
    if y.shape != _OUTPUT_SHAPE or y.dtype != np.float32:
        raise CheckpointError(f"{p} gives {y.dtype} {y.shape} for one window; a wenet encoder gives float32 "
                              f"{_OUTPUT_SHAPE}")
    meta = session.get_modelmeta()
    custom = dict(meta.custom_metadata_map or {})
    used = session.get_providers()[0]
    kind = "cuda" if used == _CUDA else "cpu"
    compute = (f"float32 onnxruntime {ort.__version__} ({used}"
               + (f", windows on {workers} thread{'s' if workers > 1 else ''})" if kind == "cpu" else ")")
               + ", one window per run")
    provenance = MappingProxyType({
        "path": str(p), "sha256": digest, "untrained": custom.get(_UNTRAINED_KEY) == "true",
        "producer": meta.producer_name or None, "metadata": custom,
    })
    return WenetEngine(
        path=p, sha256=digest, device=dev if kind == "cuda" else "cpu",
        threads=workers if kind == "cpu" else n_threads,
        batch_size=batch_size or _DEFAULT_BATCH, compute=compute, provenance=provenance,
        batch_invariant=kind == "cpu", _session=session, _output=output, _constants=constants,
        _pool=ThreadPoolExecutor(max_workers=workers - 1, thread_name_prefix="synctalk-wenet")
        if kind == "cpu" and workers > 1 else None,
    )


# --------------------------------------------------------------------------- composition


def load_wenet_audio(path: "str | os.PathLike") -> np.ndarray:
    """Read an audio file as upstream's wenet script does, resampled to 16 kHz.

    ``soundfile.read`` (float64), channel 0, then soxr_hq resampling (``librosa.resample``
    semantics, length ``ceil(n · 16000 / rate)``) when the rate is not 16 kHz — a step
    upstream lacks (it silently computes wrong features for other rates).

    Returns
    -------
    ndarray, float64, shape (n,) at 16 kHz

    Raises
    ------
    AudioError : missing, empty, undecodable, NaN/Inf
    """
    return load_channel(path, WENET_SAMPLE_RATE, channel=0)


def wenet_features(
    wav: np.ndarray,
    engine: Any,
    *,
    batch_size: "int | None" = None,
    return_fbank: bool = False,
    progress: "Callable[[int], Any] | None" = None,
) -> "np.ndarray | tuple[np.ndarray, np.ndarray]":
    """``aud_wenet.npy`` of a 16 kHz waveform: wenet_pcm → fbank → wenet_windows → engine.

    Parameters
    ----------
    wav : ndarray, float, shape (n,), n >= 240 (:data:`WENET_MIN_SAMPLES`)
        Samples in [−1, 1] at 16 kHz (:func:`load_wenet_audio`).
    engine : WenetEngine, or anything :func:`synctalk_audio.engines.resolve_encoder` takes
        for mode "wenet" (a path to ``encoder.onnx``)
    batch_size : int, optional
        Windows per engine call (the engine's default); the result does not depend on it.
    return_fbank : bool
        Also return the fbank.
    progress : callable(int), optional
        Called with the number of windows of each finished batch.

    Returns
    -------
    features : ndarray, float32, shape (K, 16, 512), ``K = 1 + ceil(max(0, F − 67) / 5)``
        with ``F = 1 + (n + 10320) // 160`` — ``20·s + 1`` for ``s`` whole seconds.
    fbank : ndarray, float32, shape (F, 80), only with ``return_fbank``

    Raises
    ------
    AudioError
        Not 1-D float, NaN/Inf, or fewer than 240 samples (15 ms): then not even the first
        67-frame window is filled by the padded audio.
    """
    from .engines import resolve_encoder, run_engine

    x = check_waveform(wav, name="wav", mono_hint=CHANNEL0_HINT)
    if x.shape[0] < WENET_MIN_SAMPLES:
        raise AudioError(f"audio has {x.shape[0]} samples; wenet needs at least {WENET_MIN_SAMPLES} at 16 kHz "
                         f"({1000 * WENET_MIN_SAMPLES / WENET_SAMPLE_RATE:g} ms) to fill one 67-frame window")
    check_positive_int("batch_size", batch_size)
    eng = resolve_encoder(engine, mode="wenet")
    fb = fbank(wenet_pcm(x))
    windows = wenet_windows(fb)
    features = run_engine(eng, windows.shape[0], lambda lo, hi: windows[lo:hi], batch_size=batch_size,
                          progress=progress)
    return (fb, features) if return_fbank else features


# --------------------------------------------------------------------------- stand-in model


def _standin_graph(seed: int) -> Any:
    """The UNTRAINED stand-in graph (onnx ModelProto) with the wenet encoder's interface."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    hidden = 64
    # chunk (1, 1, 67, 80) → Conv kernel (7, 80) stride (4, 1): (1, 64, 16, 1), the 4× time
    # subsampling of wenet's Conv2dSubsampling4 (67 frames → 16 rows).
    w1 = (rng.standard_normal((hidden, 1, 7, 80)) * (0.1 / np.sqrt(7 * 80))).astype(np.float32)
    b1 = (0.1 * rng.standard_normal(hidden)).astype(np.float32)
    w2 = (rng.standard_normal((hidden, 512)) * (0.5 / np.sqrt(hidden))).astype(np.float32)
    b2 = (0.1 * rng.standard_normal(512)).astype(np.float32)
    pos = (0.002 * rng.standard_normal((1, 1, 512))).astype(np.float32)  # × offset (100): a position term
    inits = [numpy_helper.from_array(a, name) for a, name in
             [(w1, "conv.weight"), (b1, "conv.bias"), (w2, "proj.weight"), (b2, "proj.bias"), (pos, "pos.scale"),
              (np.array([1, hidden, 16], dtype=np.int64), "shape.rows")]]
    nodes = [
        helper.make_node("Conv", ["chunk", "conv.weight", "conv.bias"], ["conv"], kernel_shape=[7, 80],
                         strides=[4, 1]),
        helper.make_node("Reshape", ["conv", "shape.rows"], ["rows"]),
        helper.make_node("Transpose", ["rows"], ["rows_t"], perm=[0, 2, 1]),
        helper.make_node("MatMul", ["rows_t", "proj.weight"], ["proj"]),
        helper.make_node("Add", ["proj", "proj.bias"], ["proj_b"]),
        helper.make_node("Cast", ["offset"], ["offset_f"], to=TensorProto.FLOAT),
        helper.make_node("Mul", ["pos.scale", "offset_f"], ["pos"]),
        helper.make_node("ReduceMean", ["att_cache"], ["att_mean"], keepdims=0),
        helper.make_node("ReduceMean", ["cnn_cache"], ["cnn_mean"], keepdims=0),
        helper.make_node("Add", ["att_mean", "cnn_mean"], ["cache_mean"]),
        helper.make_node("Add", ["pos", "cache_mean"], ["shift"]),
        helper.make_node("Add", ["proj_b", "shift"], ["pre"]),
        helper.make_node("Tanh", ["pre"], ["output"]),
        helper.make_node("Identity", ["att_cache"], ["r_att_cache"]),
        helper.make_node("Identity", ["cnn_cache"], ["r_cnn_cache"]),
    ]
    elem = {"tensor(float)": TensorProto.FLOAT, "tensor(int64)": TensorProto.INT64}
    inputs = [helper.make_tensor_value_info(name, elem[t], list(shape)) for name, (t, shape) in _INPUTS.items()]
    outputs = [helper.make_tensor_value_info("output", TensorProto.FLOAT, list(_OUTPUT_SHAPE)),
               helper.make_tensor_value_info("r_att_cache", TensorProto.FLOAT, list(_INPUTS["att_cache"][1])),
               helper.make_tensor_value_info("r_cnn_cache", TensorProto.FLOAT, list(_INPUTS["cnn_cache"][1]))]
    doc = ("UNTRAINED stand-in for Ultralight-Digital-Human's wenet encoder.onnx (seeded random weights, "
           f"seed {seed}): the same inputs and outputs, features that mean nothing. For tests only.")
    graph = helper.make_graph(nodes, "wenet_standin_untrained", inputs, outputs, initializer=inits, doc_string=doc)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)],
                              producer_name="synctalk_audio.wenet.write_standin_wenet_onnx", doc_string=doc)
    model.ir_version = 8
    helper.set_model_props(model, {_UNTRAINED_KEY: "true", "synctalk_audio.standin": "wenet-encoder",
                                   "synctalk_audio.seed": str(seed)})
    onnx.checker.check_model(model)
    return model


def write_standin_wenet_onnx(path: "str | os.PathLike", *, seed: int = 0, overwrite: bool = False) -> Path:
    """Write a deterministic **UNTRAINED** stand-in for the wenet ``encoder.onnx``.

    Same interface as the real encoder — inputs ``chunk`` float32 (1, 1, 67, 80), ``offset``
    int64 (1,), ``att_cache`` float32 (3, 8, 16, 128), ``cnn_cache`` float32 (3, 1, 512, 14);
    outputs ``output`` float32 (1, 16, 512), ``r_att_cache``, ``r_cnn_cache`` — but a tiny graph
    (a (7, 80) stride-4 convolution to 64 channels, a 64 → 512 projection, a term in
    ``offset`` and the caches' means, tanh) with weights from ``np.random.default_rng(seed)``.
    Its features have the real shapes and mean nothing; the model says so in its
    doc_string and in the metadata ``synctalk_audio.untrained = "true"``
    (``WenetEngine.provenance["untrained"]``). The same seed gives the same bytes.

    Parameters
    ----------
    path : str or PathLike
        The .onnx file to write (atomically).
    seed : int
    overwrite : bool
        Replace an existing file.

    Returns
    -------
    Path

    Raises
    ------
    ConfigError : the ``onnx`` package is missing, or a bad seed
    OutputError : ``path`` exists (without ``overwrite``) or cannot be written
    """
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ConfigError(f"seed must be a non-negative integer, got {seed!r}")
    try:
        import onnx  # noqa: F401
    except ImportError:
        raise ConfigError("writing the stand-in wenet encoder needs the onnx package: pip install onnx") from None
    from ._io import atomic_file

    data = _standin_graph(int(seed)).SerializeToString()
    target = Path(path).expanduser()
    with atomic_file(target, overwrite=overwrite) as fh:
        fh.write(data)
    return target
