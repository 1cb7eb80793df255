"""The one encoder seam: every expensive stage turns a batch of inputs into a batch of rows.

An :class:`Engine` is any object with ``mode``, ``precision``, ``device``, ``batch_invariant``,
``batch_size``, ``compute``, ``row_shape`` and ``provenance`` that maps a float32 batch
(B, *item) to float32 rows (B, *row_shape):

=========  ==========================================  ==================  =====================
mode       engines                                     item                row
=========  ==========================================  ==================  =====================
ave        exact / fast PyTorch, onnxruntime (.onnx)   mel window          (512,)
                                                       (1, 80, 16)
hubert     transformers HubertModel (exact / fast)     20 s of samples     (rows, 1024)
wenet      encoder.onnx in onnxruntime                 fbank (67, 80)      (16, 512)
=========  ==========================================  ==================  =====================

:func:`resolve_encoder` is the only place that turns a checkpoint into an engine (pipeline,
streams, CLI, plots and dataset jobs all call it); :func:`run_engine` is the only batching
loop. This module does not import torch: an ``.onnx`` checkpoint never loads it.
"""

from __future__ import annotations

import os
import warnings
from contextlib import nullcontext
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from types import MappingProxyType
from typing import Any, Callable, Mapping, Protocol, runtime_checkable

import numpy as np

from .batches import check_positive_int, encode_in_batches
from .config import MEL_STEP, WINDOW_SHAPE, check_mode, check_number
from .errors import CheckpointError, ConfigError, ShapeError, install_hint
from .frames import MelWindows

__all__ = ["Engine", "Precision", "PRECISIONS", "resolve_encoder", "run_engine", "encode_batch", "SEEDED",
           "is_engine", "MAX_MARGIN"]

#: ``checkpoint="seeded"``: deterministic UNTRAINED ave weights (``seeded_state_dict(0)``).
SEEDED = "seeded"
#: Most spare rows :func:`encode_batch` allocates each side (``margin``); pad_context needs radius + 1 <= 9.
MAX_MARGIN = 4096
_TORCH_MISSING = ("PyTorch checkpoints (.pth) need PyTorch (the [torch] extra: " + install_hint("torch") + "), "
                  "or export the encoder once to .onnx and run it with onnxruntime (the [onnx] extra, "
                  "--checkpoint encoder.onnx)")


@runtime_checkable
class Engine(Protocol):
    """What the seam needs of an encoder (see the module docstring for the three modes)."""

    mode: str
    precision: str
    batch_invariant: bool
    batch_size: int
    compute: str
    row_shape: tuple[int, ...]

    def __call__(self, batch: np.ndarray) -> np.ndarray:  # float32 (B, *item) → (B, *row_shape)
        ...


@dataclass(frozen=True)
class Precision:
    """A ``precision=`` choice and its documented error bound against the upstream recipe.

    Attributes
    ----------
    name : str
    max_rel : float
        Bound on ``max|features − upstream| / max|upstream features|``.
    max_abs : float or None
        Absolute bound, where one is promised.
    description : str
    """

    name: str
    max_rel: float
    max_abs: "float | None"
    description: str


#: The precisions of the ave encoder, with their bounds. "fast" was measured on real speech (the
#: 9 golden clips + a 45 s clip) with the seeded weights: max |fast − exact| / max |exact| =
#: 0.67–0.97 % (bfloat16; 2e-6 in float32 on CPUs without bfloat16); the bound leaves a factor
#: of 2. "onnx" is what an .onnx checkpoint runs; the other two need the PyTorch checkpoint.
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


def is_engine(obj: Any) -> bool:
    """True for an object that already is an engine of the seam (not a checkpoint to load)."""
    return isinstance(obj, Engine) and isinstance(getattr(obj, "mode", None), str)


#: The precisions each mode offers (hubert: the model in float32 or bfloat16/float16; wenet: onnxruntime).
MODE_PRECISIONS: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {"ave": tuple(PRECISIONS), "hubert": ("exact", "fast"), "wenet": ("onnx",)})


def check_precision(precision: "str | None", mode: str = "ave") -> "str | None":
    """``precision`` if ``mode`` offers it (None: the checkpoint's own), else one ConfigError line."""
    if precision is not None and (not isinstance(precision, str) or precision not in PRECISIONS):
        raise ConfigError(f"unknown precision {precision!r}; {mode} offers {', '.join(MODE_PRECISIONS[mode])}")
    return precision


def _import_torch_side() -> Any:
    try:
        from . import torch_engines
    except ImportError as exc:
        if "torch" not in str(exc):
            raise
        raise ConfigError(_TORCH_MISSING) from None
    return torch_engines


def _check_device(engine: Any, device: str) -> None:
    """ConfigError when ``device`` (not "auto") is not where ``engine`` runs: an engine is never
    moved behind the caller's back, as a precision is never changed silently. "cuda" matches any
    CUDA device; "cuda:N" a given one."""
    if device == "auto":
        return
    from .runtime import device_name, unknown_device

    asked = device_name(device)
    if asked is None:
        raise unknown_device(device)
    runs = str(getattr(engine, "device", ""))
    where = device_name(runs)
    if where is None:  # an engine of our seam that does not say where it runs: nothing to compare
        return
    if asked[0] != where[0] or (None not in (asked[1], where[1]) and asked[1] != where[1]):
        raise ConfigError(f"the encoder given runs on device {runs!r}, not {device!r}: pass device='auto' (or "
                          f"{runs!r}), or resolve the checkpoint again with device={device!r}")


def _check_engine(engine: Any, mode: str, precision: "str | None", device: str, threads: "int | None") -> Any:
    if engine.mode != mode:
        raise ConfigError(f"the encoder given is a {engine.mode!r} engine, not {mode!r}")
    if precision is not None and precision != engine.precision:
        if mode == "ave" and engine.precision != "onnx" and precision != "onnx":
            return _import_torch_side().prepare_encoder(
                engine, precision=precision, device=engine.device if device == "auto" else device)
        if engine.precision == "onnx":
            raise ConfigError(f"precision {precision!r} needs the PyTorch checkpoint (.pth); an .onnx encoder runs "
                              "precision 'onnx' (float32 in onnxruntime)")
        if precision == "onnx":
            raise ConfigError("precision 'onnx' needs an exported .onnx encoder as checkpoint "
                              "(synctalk-audio export --format onnx)")
        raise ConfigError(f"the encoder given runs precision {engine.precision!r}, not {precision!r}")
    _check_device(engine, device)
    if threads is not None and engine.precision == "onnx" and getattr(engine, "device", "cpu") == "cpu" \
            and threads != getattr(engine, "threads", threads):
        raise ConfigError(f"the ONNX encoder was loaded with {engine.threads} threads, not {threads}: "
                          f"load it again with threads={threads}")
    return engine


def _file_identity(path: Path) -> tuple[str, int, int, int]:
    """(real path, inode, size, mtime in ns): a changed or replaced file is a new cache entry."""
    st = path.stat()
    return os.path.realpath(path), st.st_ino, st.st_size, st.st_mtime_ns


@lru_cache(maxsize=8)
def _cached_file_engine(mode: str, identity: tuple[str, int, int, int], precision: "str | None", device: str,
                        threads: "int | None") -> Any:
    return _load_engine(mode, identity[0], precision, device, threads)


def _load_engine(mode: str, checkpoint: Any, precision: "str | None", device: str, threads: "int | None") -> Any:
    """checkpoint → engine for ``mode`` (no cache)."""
    if mode == "hubert":
        from .hubert import load_hubert_engine

        return load_hubert_engine(checkpoint, precision=precision, device=device, threads=threads)
    if mode == "wenet":
        from .wenet import load_wenet_engine

        if precision not in (None, "onnx"):
            raise ConfigError(f"precision {precision!r} is not offered for wenet: encoder.onnx runs in onnxruntime "
                              "(precision 'onnx')")
        if not isinstance(checkpoint, (str, os.PathLike)):
            what = f"an {checkpoint.mode!r} engine" if is_engine(checkpoint) else type(checkpoint).__name__
            raise ConfigError(f"mode 'wenet' needs the wenet encoder.onnx (a path) or its loaded engine, got {what}")
        return load_wenet_engine(checkpoint, device=device, threads=threads)
    from .runtime import is_onnx_model, load_onnx_encoder

    if is_onnx_model(checkpoint):
        if precision not in (None, "onnx"):
            raise ConfigError(f"precision {precision!r} needs the PyTorch checkpoint (.pth); an .onnx encoder "
                              "runs precision 'onnx' (float32 in onnxruntime)")
        return load_onnx_encoder(checkpoint, device=device, threads=threads)
    if precision == "onnx":
        raise ConfigError("precision 'onnx' needs an exported .onnx encoder as checkpoint "
                          "(synctalk-audio export --format onnx)")
    te = _import_torch_side()
    from .encoder import AudioEncoder, load_encoder

    if isinstance(checkpoint, str) and checkpoint == SEEDED:
        from .seeded import seeded_state_dict

        warnings.warn("checkpoint='seeded': deterministic UNTRAINED weights — the features have the recipe's "
                      "shapes and arithmetic but mean nothing; use audio_visual_encoder.pth for real features",
                      UserWarning, stacklevel=4)
        checkpoint = seeded_state_dict(0)
    module = checkpoint.eval() if isinstance(checkpoint, AudioEncoder) else load_encoder(checkpoint, device=device)
    engine = te.prepare_encoder(module, precision=precision or "exact", device=device)
    if isinstance(checkpoint, (str, os.PathLike)):
        from ._io import file_sha256

        engine.provenance = MappingProxyType({**engine.provenance, "checkpoint": str(checkpoint),
                                              "checkpoint_sha256": file_sha256(Path(checkpoint))})
    return engine


def resolve_encoder(
    checkpoint: Any,
    *,
    mode: str = "ave",
    precision: "str | None" = None,
    device: str = "auto",
    threads: "int | None" = None,
) -> Any:
    """checkpoint → a ready :class:`Engine` for ``mode``: the seam's only loader.

    Parameters
    ----------
    checkpoint
        ave: ``audio_visual_encoder.pth`` (or a state dict, an ``AudioEncoder``, ``"seeded"``
        for UNTRAINED stand-in weights), or an exported ``.onnx`` (onnxruntime, no torch).
        hubert: a HuggingFace model directory or hub id (or a ``HubertModel``). wenet:
        ``encoder.onnx``. An engine is returned as it is (after checking it fits).
    mode : "ave", "hubert" or "wenet"
    precision : str, optional
        Default the checkpoint's own: "exact" for PyTorch weights, "onnx" for an .onnx model.
        Asking a checkpoint for a precision it cannot give is a ConfigError, never a silent
        change of the numbers.
    device : "auto", "cpu", "cuda", …
    threads : int, optional
        CPU threads (torch worker threads; onnxruntime intra-op threads).

    Returns
    -------
    Engine

    Notes
    -----
    Engines loaded from a file are cached (8 entries) by the file's identity — real path,
    inode, size, modification time — and the settings, so calling :func:`pipeline` once per
    file does not reload, fold and re-pack the weights each time. A changed file is reloaded.
    """
    check_mode(mode)
    check_precision(precision, mode)
    threads = check_positive_int("threads", threads)
    if not isinstance(device, str):
        device = str(device)
    if checkpoint is None:
        raise ConfigError("checkpoint is required: a path to audio_visual_encoder.pth (or an exported .onnx, or "
                          "'seeded' for untrained stand-in weights), a HuBERT model directory (hubert) or "
                          "encoder.onnx (wenet)")
    if is_engine(checkpoint):
        return _check_engine(checkpoint, mode, precision, device, threads)
    if isinstance(checkpoint, str) and checkpoint == SEEDED and mode != "ave":
        maker = "hubert.write_standin_hubert(DIR)" if mode == "hubert" else "wenet.write_standin_wenet_onnx(PATH)"
        raise ConfigError(f"checkpoint 'seeded' is the ave stand-in; {mode} needs its own model (an UNTRAINED "
                          f"stand-in: synctalk_audio.{maker})")
    if isinstance(checkpoint, (str, os.PathLike)) and not (isinstance(checkpoint, str) and checkpoint == SEEDED):
        path = Path(checkpoint).expanduser()
        if path.is_file():
            return _cached_file_engine(mode, _file_identity(path), precision, device, threads)
        if not path.exists() and mode != "hubert":  # a hubert checkpoint may be a hub id
            raise CheckpointError(f"checkpoint not found: {path}")
    elif not isinstance(checkpoint, (str, os.PathLike, Mapping)) and type(checkpoint).__module__.split(".")[0] \
            not in ("synctalk_audio", "torch", "transformers"):
        raise ConfigError(f"checkpoint must be a path, a state dict, an encoder or 'seeded', "
                          f"got {type(checkpoint).__name__}")
    return _load_engine(mode, checkpoint, precision, device, threads)


def run_engine(
    engine: Any,
    n_items: int,
    get_items: Callable[[int, int], np.ndarray],
    *,
    batch_size: "int | None" = None,
    threads: "int | None" = None,
    out: "np.ndarray | None" = None,
    rows: "np.ndarray | None" = None,
    progress: "Callable[[int], Any] | None" = None,
) -> np.ndarray:
    """Run ``engine`` over ``n_items`` inputs that ``get_items(lo, hi)`` cuts batch by batch.

    Only the batches in flight exist at any time, so memory does not grow with the audio.

    Parameters
    ----------
    engine : Engine
    n_items : int
    get_items : callable (lo, hi) → float32 (hi − lo, *item)
    batch_size : int, optional
        Items per call; default the engine's.
    threads : int, optional
        CPU threads for this run (PyTorch engines: worker threads; restored afterwards).
    out : float32 ndarray (M, *row_shape), optional
        Written in place; M = n_items unless ``rows``.
    rows : int ndarray (n_items,), optional
        Row of ``out`` for each item.
    progress : callable(int), optional
        Called with the number of items of each finished batch.

    Returns
    -------
    ndarray, float32, shape (M, *row_shape)
    """
    if not is_engine(engine):
        raise ConfigError(f"run_engine needs an engine (resolve_encoder(checkpoint)), got {type(engine).__name__}")
    bs = check_positive_int("batch_size", batch_size) or engine.batch_size
    threads = check_positive_int("threads", threads)
    running = getattr(engine, "running", None)
    with (running(int(n_items), bs, threads) if running is not None else nullcontext(1)) as workers:
        return encode_in_batches(n_items, get_items, engine, batch_size=bs, workers=workers, out=out, rows=rows,
                                 progress=progress, row_shape=tuple(engine.row_shape))


def _as_windows(windows: Any) -> "np.ndarray | MelWindows":
    """Windows as a MelWindows or a float32 (N, 1, 80, 16) array; ShapeError otherwise."""
    if isinstance(windows, MelWindows):
        if windows.shape[1:] != WINDOW_SHAPE[1:]:
            raise ShapeError(f"windows must have shape (N, 80, 16), got {windows.shape}: the ave encoder takes 80 "
                             f"mel bands, this mel has {windows.shape[1]} (a transposed (T, 80) mel?)")
        return windows
    if type(windows).__module__.split(".")[0] == "torch":
        windows = windows.detach().cpu().numpy()
    arr = np.asarray(windows)
    if arr.ndim == 3:
        arr = arr[:, None]
    if arr.ndim != 4 or arr.shape[1:] != WINDOW_SHAPE:
        raise ShapeError(f"windows must have shape (N, 80, 16) or (N, 1, 80, 16), got {np.shape(windows)}")
    if arr.dtype.kind != "f":
        raise ShapeError(f"windows must be float32, got {arr.dtype}")
    arr = np.ascontiguousarray(arr, dtype=np.float32)
    if arr.size and not np.isfinite(arr).all():
        raise ShapeError("windows contain NaN or Inf values")
    return arr


def encode_batch(
    windows: Any,
    encoder: Any,
    *,
    batch_size: "int | None" = None,
    device: str = "auto",
    precision: "str | None" = None,
    threads: "int | None" = None,
    progress: bool = False,
    out: "np.ndarray | None" = None,
    margin: int = 0,
) -> np.ndarray:
    """Run mel windows through the conv AudioEncoder, batch by batch (eval mode, no autograd).

    Parameters
    ----------
    windows : MelWindows (from :func:`window`, cut batch by batch), or float32 ndarray/tensor
        (N, 80, 16) or (N, 1, 80, 16)
    encoder : an ave engine, or anything :func:`resolve_encoder` takes (path, state dict,
        AudioEncoder, ``"seeded"``, ``.onnx``)
    batch_size : int, optional
        Windows per forward pass (default the engine's). Exact results are bit-identical for
        every batch size and thread count on CPU.
    device : "auto", "cpu", "cuda", …
    precision : "exact", "fast" or "onnx"; default the encoder's own (see :data:`PRECISIONS`)
    threads : int, optional
        CPU worker threads.
    progress : bool
        A tqdm bar over the windows.
    out : float32 ndarray (N, 512), optional
        Written in place.
    margin : int
        Spare rows to allocate before and after the result (a view into that buffer), so
        that :func:`pad_context` can add the context rows without copying the features:
        an integer in [0, :data:`MAX_MARGIN`], and 0 when ``out`` is given.

    Returns
    -------
    ndarray, float32, shape (N, 512)

    Raises
    ------
    ConfigError
        A bad ``batch_size``, ``margin``, ``precision``, ``threads`` or ``device`` — also a
        ``device`` other than the one a prepared engine runs on ("auto" takes the engine's).
    ShapeError
        Windows that are not (N, 80, 16) float32 with finite values.

    Notes
    -----
    With a batch-invariant engine (exact and onnx on CPU), windows of one constant value
    (digital silence) are run once per distinct value; the copies equal what the encoder gives.

    Examples
    --------
    >>> encode_batch(np.zeros((3, 80, 16), np.float32), "seeded").shape   # doctest: +SKIP
    (3, 512)
    """
    check_positive_int("batch_size", batch_size)
    margin = check_number("margin", margin, lo=0, hi=MAX_MARGIN, integer=True)
    if out is not None and margin:
        raise ConfigError(f"margin={margin} applies to the buffer encode_batch allocates; with out= given it "
                          "would be ignored: pass margin=0, or allocate the spare rows around out yourself")
    wins = _as_windows(windows)
    engine = resolve_encoder(encoder, mode="ave", precision=precision, device=device, threads=threads)
    n = len(wins)
    if out is None:
        out = np.empty((n + 2 * margin, *engine.row_shape), dtype=np.float32)[margin: margin + n]
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=n, unit="frame", desc="encoding", leave=False)
    run = dict(batch_size=batch_size, threads=threads, progress=bar.update if bar is not None else None)
    try:
        varying = None
        if isinstance(wins, MelWindows) and engine.batch_invariant:
            varying, constant, values = wins.constant_runs()
            if constant.size:
                distinct, which = np.unique(values, return_inverse=True)
                reps = np.broadcast_to(distinct[:, None, None], (distinct.shape[0], wins.shape[1], MEL_STEP))
                out[constant] = run_engine(engine, distinct.shape[0], lambda lo, hi: reps[lo:hi],
                                           batch_size=batch_size, threads=threads)[which]
                if bar is not None:
                    bar.update(constant.shape[0])
        if varying is None:
            run_engine(engine, n, lambda lo, hi: wins[lo:hi], out=out, **run)
        elif varying.size:
            run_engine(engine, varying.shape[0], lambda lo, hi: wins[varying[lo:hi]], out=out, rows=varying, **run)
        return out
    except ShapeError as exc:
        if "overflowed" not in str(exc):
            raise
        peak = float(np.max(np.abs(wins.mel32 if isinstance(wins, MelWindows) else wins)))
        raise ShapeError(f"encoder output overflowed to NaN/Inf (window values up to {peak:.3g}); "
                         "expected normalised mel windows in [-4, 4]") from None
    finally:
        if bar is not None:
            bar.close()
