"""HuBERT front end: upstream's ``data_utils/hubert.py`` (SyncTalk, Ultralight-Digital-Human).

The literal composition (:func:`hubert_features`)::

    wav (n,) ─ hubert_normalize ─ hubert_chunks (20 s, +80 samples overlap) ─ engine per chunk
        ─ concatenate (T, 1024) ─ hubert_pairs ─ (T', 2, 1024), one row per 25 fps video frame

The expensive stage is a transformers ``HubertModel`` behind the encoder seam
(:class:`HubertEngine`, made by :func:`load_hubert_engine`). torch and transformers are imported
lazily: importing this module imports neither.

Precision (measured on the golden speech clips, see ``golden/README.md``):

- ``"exact"``: the float32 eval forward of upstream (``last_hidden_state``); bit-identical to the
  independent oracle (transformers 4.57, torch 2.13 CPU) on every golden clip. On CUDA it runs
  with TF32 off (cuDNN's default lets convolutions round inputs to TF32's 10-bit mantissa).
- ``"fast"``: the model in bfloat16 on CPU (float16 on CUDA); ``max|fast − exact| / max|exact|``
  stays below :data:`FAST_REL_ERROR_BOUND`.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Iterator, Mapping

import numpy as np

from .errors import AudioError, CheckpointError, ConfigError, ShapeError, install_hint

__all__ = [
    "HUBERT_SAMPLE_RATE",
    "HUBERT_CLIP",
    "HUBERT_KERNEL",
    "HUBERT_STRIDE",
    "HUBERT_DIM",
    "HUBERT_PRECISIONS",
    "HUBERT_ODD",
    "FAST_REL_ERROR_BOUND",
    "UNTRAINED_MARKER",
    "hubert_normalize",
    "hubert_chunks",
    "hubert_row_count",
    "hubert_pair_count",
    "hubert_model_rows",
    "hubert_pairs",
    "hubert_features",
    "load_hubert_audio",
    "HubertEngine",
    "load_hubert_engine",
    "write_standin_hubert",
    "standin_state_dict",
    "hubert_state_sha256",
]

#: Sample rate the model expects (Hz).
HUBERT_SAMPLE_RATE = 16000
#: Samples per upstream chunk (20 s); chunk i starts at ``HUBERT_CLIP * i``.
HUBERT_CLIP = 320 * 1000
#: Receptive field and hop of HuBERT's conv feature extractor (samples): one row per 20 ms.
HUBERT_KERNEL = 400
#: Fewest samples that give a video frame with ``odd="drop"``: two hidden-state rows, (720 − 80) // 320.
HUBERT_MIN_DROP = 720
HUBERT_STRIDE = 320
#: Hidden size of hubert-large (and of every model this front end accepts).
HUBERT_DIM = 1024
#: Precision names :func:`load_hubert_engine` accepts.
HUBERT_PRECISIONS = ("exact", "fast")
#: What :func:`hubert_pairs` does with a last odd row: ``"drop"`` (upstream) or ``"pad"`` (a zero
#: row; Ultralight-Digital-Human since 2026).
HUBERT_ODD = ("drop", "pad")
#: Bound on ``max|fast − exact| / max|exact|`` of the "fast" precision. Measured with the stand-in
#: model on the 7 golden speech clips (CPU, the model in bfloat16): 1.4e-2 to 1.7e-2 (1.3e-2 to
#: 2.1e-2 with torch.autocast, used before); 2.3e-2 on a hubert-large-shaped random model; stated
#: with margin. Not measured on trained hubert-large weights (none can be downloaded here).
FAST_REL_ERROR_BOUND = 5e-2
#: Key in a stand-in model's config.json that marks it untrained.
UNTRAINED_MARKER = "synctalk_audio_untrained"

# The conv feature extractor of every HuBERT (kernel, stride) per layer: (10,5) then (3,2)x4, (2,2)x2.
_CONV_KERNEL = (10, 3, 3, 3, 3, 2, 2)
_CONV_STRIDE = (5, 2, 2, 2, 2, 2, 2)
# Default chunks per forward pass: 1, as batching is not bit-identical (see HubertEngine).
_DEFAULT_BATCH = 1


# --------------------------------------------------------------------------- pure stages


def _check_count(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
        raise ConfigError(f"{name} must be a non-negative integer, got {value!r}")
    return int(value)


def hubert_normalize(wav: np.ndarray) -> np.ndarray:
    """Zero-mean, unit-variance normalisation of a whole file, as Wav2Vec2FeatureExtractor does.

    ``Wav2Vec2FeatureExtractor(do_normalize=True)`` first casts the samples to float32, then
    computes ``(x − x.mean()) / sqrt(x.var() + 1e-7)`` in float32 (numpy's pairwise sums). The
    result is bit-identical to the extractor's ``input_values[0]``.

    Parameters
    ----------
    wav : array_like, shape (n,), n >= 1
        Real samples at 16 kHz (float64 from ``soundfile.read``, or float32).

    Returns
    -------
    ndarray, float32, shape (n,)

    Raises
    ------
    AudioError
        Not 1-D, not real, empty, or holding NaN/Inf.

    Examples
    --------
    >>> hubert_normalize(np.array([0.0, 1.0])).tolist()
    [-0.9999998807907104, 0.9999998807907104]
    """
    from .audio import CHANNEL0_HINT, check_waveform

    arr = check_waveform(wav, name="hubert audio", integers=True, mono_hint=CHANNEL0_HINT)  # normalised: any scale
    if arr.size == 0:
        raise AudioError("hubert audio is empty, expected at least 1 sample")
    x = arr.astype(np.float32)  # the extractor's float64 → float32 cast (also ints, float16)
    return (x - x.mean()) / np.sqrt(x.var() + 1e-7)


def hubert_chunks(n: int) -> list[tuple[int, int]]:
    """Sample ranges ``[lo, hi)`` upstream runs the model on, in order.

    Chunk i = ``[320000·i, 320000·i + 320080)`` for ``i < n // 320000`` (clamped to n, as
    Python slicing does: the last full chunk is shorter when fewer than 80 samples follow it),
    then the remainder ``[320000·(n // 320000), n)`` if it has >= 400 samples (one model
    window); a shorter remainder is skipped. ``n < 400`` gives no chunk (upstream crashes).

    Parameters
    ----------
    n : int
        Number of samples (>= 0).

    Returns
    -------
    list of (lo, hi)
        ``len = n // 320000 + (remainder >= 400)``.

    Examples
    --------
    >>> hubert_chunks(700000)
    [(0, 320080), (320000, 640080), (640000, 700000)]
    >>> hubert_chunks(640050)
    [(0, 320080), (320000, 640050)]
    """
    n = _check_count("n", n)
    full = n // HUBERT_CLIP
    ranges = [(HUBERT_CLIP * i, min(HUBERT_CLIP * i + HUBERT_CLIP - HUBERT_STRIDE + HUBERT_KERNEL, n))
              for i in range(full)]
    lo = HUBERT_CLIP * full
    if n - lo >= HUBERT_KERNEL:
        ranges.append((lo, n))
    return ranges


def hubert_row_count(n: int) -> int:
    """Upstream's ``expected_T = (n − 80) // 320``: hidden-state rows for n samples (n >= 400).

    Examples
    --------
    >>> hubert_row_count(32000)
    99
    """
    n = _check_count("n", n)
    return (n - (HUBERT_KERNEL - HUBERT_STRIDE)) // HUBERT_STRIDE


def hubert_pair_count(n: int, *, odd: str = "drop") -> int:
    """Video frames (rows of ``aud_hu.npy``) for n samples: ``expected_T // 2`` (drop) or rounded up (pad).

    Examples
    --------
    >>> hubert_pair_count(32000), hubert_pair_count(32000, odd="pad")
    (49, 50)
    """
    rows = hubert_row_count(n)
    return (rows + (_check_odd(odd) == "pad")) // 2


def hubert_model_rows(length: int) -> int:
    """Rows ``R`` a HubertModel gives for a chunk of ``length`` samples (its conv stack's output length).

    Equal to ``(length − 400) // 320 + 1`` for every ``length >= 400``; 0 below.

    Examples
    --------
    >>> hubert_model_rows(320080), hubert_model_rows(400), hubert_model_rows(399)
    (1000, 1, 0)
    """
    rows = _check_count("length", length)
    for kernel, stride in zip(_CONV_KERNEL, _CONV_STRIDE):
        rows = (rows - kernel) // stride + 1 if rows >= kernel else 0
    return rows


def _check_odd(odd: str) -> str:
    if odd not in HUBERT_ODD:
        raise ConfigError(f"odd must be one of {', '.join(map(repr, HUBERT_ODD))}, got {odd!r}")
    return odd


def hubert_pairs(rows: np.ndarray, *, expected_T: int, odd: str = "drop") -> np.ndarray:
    """Fit hidden-state rows to ``expected_T`` and pair them: one (2, 1024) row per video frame.

    Pads with zero rows or trims to ``expected_T`` (upstream's ``F.pad`` / ``ret[:expected_T]``),
    then a last odd row is dropped (``odd="drop"``, upstream's ``make_even_first_dim``) or
    followed by one zero row (``odd="pad"``), and the rows are reshaped ``(−1, 2, 1024)``.

    Parameters
    ----------
    rows : ndarray, shape (T, 1024)
        The concatenated ``last_hidden_state`` rows.
    expected_T : int
        ``hubert_row_count(n)``.
    odd : "drop" or "pad"

    Returns
    -------
    ndarray, float32, shape (expected_T // 2, 2, 1024) (drop) or ((expected_T + 1) // 2, 2, 1024) (pad)

    Raises
    ------
    ShapeError
        ``rows`` is not (T, 1024), or more than one row away from ``expected_T`` (upstream
        asserts ``abs(T − expected_T) <= 1``: a model with another conv layout).
    ConfigError
        ``expected_T`` negative or ``odd`` unknown.
    """
    import einops

    arr = np.asarray(rows)
    if arr.ndim != 2 or arr.shape[1] != HUBERT_DIM or arr.dtype.kind != "f":
        raise ShapeError(f"hubert rows must be a float (T, {HUBERT_DIM}) array, got {arr.dtype} {arr.shape}")
    expected_T = _check_count("expected_T", expected_T)
    odd = _check_odd(odd)
    if abs(arr.shape[0] - expected_T) > 1:  # upstream: assert abs(ret.shape[0] - expected_T) <= 1
        raise ShapeError(f"the hubert model gave {arr.shape[0]} rows where hubert-large's convolutions give "
                         f"{expected_T} (± 1): a model with another conv layout (conv_kernel / conv_stride) than "
                         f"hubert-large, whose rows would not be 20 ms apart")
    arr = arr.astype(np.float32, copy=False)
    target = expected_T - expected_T % 2 if odd == "drop" else expected_T + expected_T % 2
    if arr.shape[0] >= target:
        fitted = arr[:target]
    else:  # zero rows for what upstream pads (expected_T) and for the "pad" policy's odd row
        fitted = np.concatenate([arr, np.zeros((target - arr.shape[0], HUBERT_DIM), np.float32)])
    return einops.rearrange(fitted, "(t two) d -> t two d", two=2)


def hubert_features(wav: np.ndarray, engine: Any, *, odd: str = "drop") -> np.ndarray:
    """``aud_hu.npy`` of a 16 kHz waveform: normalise → 20 s chunks → engine → concatenate → pairs.

    Consecutive chunks of equal length run together, ``engine.batch_size`` per call (1 by
    default: batching is not bit-identical on CPU).

    Parameters
    ----------
    wav : array_like, shape (n,), n >= 720 (``odd="drop"``) or 400 (``"pad"``)
        Samples at 16 kHz (float64 as ``soundfile.read`` gives them; see :func:`load_hubert_audio`).
    engine : HubertEngine
        Any object of the seam with ``mode == "hubert"``: ``engine(batch (B, L)) -> (B, R, 1024)``.
    odd : "drop" or "pad"
        See :func:`hubert_pairs`.

    Returns
    -------
    ndarray, float32, shape (T', 2, 1024)
        ``T' = hubert_pair_count(n, odd=odd)``.

    Raises
    ------
    AudioError
        Fewer than 400 samples (no model window; upstream crashes), fewer than 720 with
        ``odd="drop"`` (one hidden-state row, dropped: no frame), or bad samples.
    ConfigError
        Unknown ``odd`` or an engine of another mode.
    """
    odd = _check_odd(odd)
    if getattr(engine, "mode", None) != "hubert":
        raise ConfigError(f"hubert_features needs a hubert engine, got mode {getattr(engine, 'mode', None)!r}")
    x = hubert_normalize(wav)
    n = x.shape[0]
    if n < HUBERT_KERNEL:
        raise AudioError(f"hubert audio has {n} samples, expected at least {HUBERT_KERNEL} (25 ms at 16 kHz)")
    if hubert_pair_count(n, odd=odd) == 0:  # one hidden-state row: upstream drops it, no frame is left
        raise AudioError(f"hubert audio has {n} samples: with odd={odd!r} that is no video frame; expected at least "
                         f"{HUBERT_MIN_DROP} samples (45 ms at 16 kHz; {HUBERT_KERNEL} with odd='pad')")
    batch_size = max(1, int(getattr(engine, "batch_size", 1) or 1))
    parts = []
    for group in _batches(hubert_chunks(n), batch_size):
        batch = np.stack([x[lo:hi] for lo, hi in group])
        out = np.asarray(engine(batch))
        parts.extend(out)
    return hubert_pairs(np.concatenate(parts), expected_T=hubert_row_count(n), odd=odd)


def _batches(ranges: list[tuple[int, int]], size: int) -> Iterator[list[tuple[int, int]]]:
    """Consecutive runs of equal-length ranges, at most ``size`` each, in order."""
    group: list[tuple[int, int]] = []
    for r in ranges:
        if group and (len(group) == size or r[1] - r[0] != group[0][1] - group[0][0]):
            yield group
            group = []
        group.append(r)
    if group:
        yield group


def load_hubert_audio(path: "str | os.PathLike") -> np.ndarray:
    """Read audio as upstream's hubert script does: ``sf.read`` float64, channel 0, 16 kHz.

    The channel is picked *before* resampling (upstream resamples the 2-D array, which crashes
    on stereo files not at 16 kHz); a 16 kHz file is not resampled. Resampling is librosa's
    soxr_hq with its length fix. The float64 result goes to :func:`hubert_normalize`, which
    casts to float32 first, exactly as the feature extractor does with upstream's float64 input.

    Returns
    -------
    ndarray, float64, shape (n,), ``n = ceil(n_file * 16000 / file_rate)``

    Raises
    ------
    AudioError
        Missing, undecodable, empty or non-finite audio.
    """
    from .audio import load_channel

    return load_channel(path, HUBERT_SAMPLE_RATE, channel=0)


# --------------------------------------------------------------------------- the engine


@contextmanager
def _torch_threads(threads: "int | None") -> Iterator[None]:
    import torch

    saved = torch.get_num_threads()
    try:
        if threads is not None and threads != saved:
            torch.set_num_threads(threads)
        yield
    finally:
        if torch.get_num_threads() != saved:
            torch.set_num_threads(saved)


@dataclass(frozen=True, eq=False)
class HubertEngine:
    """A transformers ``HubertModel`` behind the encoder seam (make one with :func:`load_hubert_engine`).

    Call it on B normalised chunks of equal length L: ``engine(batch (B, L) float32)`` →
    ``(B, R, 1024) float32``, ``R = hubert_model_rows(L)``.

    Attributes
    ----------
    model : transformers.HubertModel
        In eval mode on :attr:`device`.
    precision : "exact" or "fast"
    device : str
    batch_invariant : bool
        False: on CPU a chunk's rows differ in the last bits (~1e-7 relative) between a batch
        of one and a batch of two (measured, torch 2.13 / oneDNN), so :attr:`batch_size` is 1.
    batch_size : int
        Chunks per call :func:`hubert_features` uses.
    compute : str
        What runs, e.g. ``"HubertModel float32 eval forward (sdpa attention) on cpu"``.
    provenance : Mapping
        Read-only: ``source`` (model dir, hub id or ``"<in-memory>"``), ``config_sha256``,
        ``weights_sha256`` (:func:`hubert_state_sha256`), ``untrained``, ``num_layers``,
        ``transformers``, ``torch``.
    threads : int or None
        CPU threads while it runs (None: torch's setting); restored afterwards.
    mode : "hubert"
    row_shape : (1024,)
    """

    model: Any = field(repr=False)
    precision: str
    device: str
    batch_invariant: bool
    batch_size: int
    compute: str
    provenance: Mapping[str, Any] = field(repr=False)
    threads: "int | None" = None
    mode: str = field(default="hubert", init=False)
    row_shape: tuple[int, ...] = field(default=(HUBERT_DIM,), init=False)

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        """Run B chunks: ``batch (B, L) float32`` → ``(B, R, 1024) float32``, ``R = hubert_model_rows(L)``."""
        import torch

        arr = np.asarray(batch)
        if arr.ndim != 2 or arr.shape[0] < 1 or arr.shape[1] < HUBERT_KERNEL or arr.dtype.kind != "f":
            raise ShapeError(f"hubert engine input must be a float (B, L) batch with B >= 1 and "
                             f"L >= {HUBERT_KERNEL}, got {arr.dtype} {arr.shape}")
        from .torch_engines import ieee_float32

        x = torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32)).to(self.device)
        with _torch_threads(self.threads), torch.no_grad(), ieee_float32(self.device):
            out = self.model(x.to(next(self.model.parameters()).dtype)).last_hidden_state
            return out.float().cpu().numpy()


def hubert_state_sha256(model: Any) -> str:
    """sha256 of a model's float32 weights: ``b"".join(key + bytes)`` over sorted state-dict keys."""
    digest = hashlib.sha256()
    state = model.state_dict()
    for key in sorted(state):
        digest.update(key.encode())
        digest.update(np.ascontiguousarray(state[key].detach().cpu().float().numpy()).tobytes())
    return digest.hexdigest()


def _config_sha256(config: Any) -> str:
    text = json.dumps(config.to_dict(), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def _looks_local(spec: str) -> bool:
    """A path that exists, anything not shaped like a hub id (``name`` or ``org/name``), or an
    ``org/name`` whose ``org`` is a local folder (a mistyped directory there, not a hub id: the
    hub would be asked, and retried for ~20 s without a network, before the error)."""
    import re

    if os.path.exists(spec) or re.fullmatch(r"[A-Za-z0-9][\w.-]*(/[\w.-]+)?", spec) is None:
        return True
    return "/" in spec and os.path.isdir(spec.split("/", 1)[0])


def _read_local_config(path: Path) -> dict[str, Any]:
    if not path.exists():
        raise CheckpointError(f"hubert model directory not found: {path}")
    if not path.is_dir():
        raise CheckpointError(f"hubert checkpoint {path} is a file, expected a HuggingFace model directory")
    cfg_file = path / "config.json"
    if not cfg_file.is_file():
        raise CheckpointError(f"{path} has no config.json, expected a HuggingFace HubertModel directory")
    try:
        config = json.loads(cfg_file.read_text())
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"cannot read {cfg_file}: {' '.join(str(exc).split())}") from None
    if not isinstance(config, dict):
        raise CheckpointError(f"{cfg_file} is not a JSON object, expected a HuggingFace model config")
    return config


def _check_config(config: Mapping[str, Any], where: str) -> None:
    kind = config.get("model_type")
    if kind != "hubert":
        raise CheckpointError(f"{where} holds a {kind!r} model, expected a HubertModel (model_type 'hubert')")
    hidden = config.get("hidden_size")
    if hidden != HUBERT_DIM:
        raise CheckpointError(f"{where} has hidden_size {hidden!r}, expected {HUBERT_DIM} (hubert-large)")
    for name, want in (("conv_kernel", _CONV_KERNEL), ("conv_stride", _CONV_STRIDE)):
        got = config.get(name, list(want))
        if not isinstance(got, (list, tuple)) or tuple(got) != want:
            raise CheckpointError(f"{where} has {name} {got!r}, expected {list(want)} (hubert-large): its rows "
                                  f"would not be 20 ms apart")


def _load_model(checkpoint: Any) -> tuple[Any, str]:
    """``(HubertModel in float32, source description)``; one CheckpointError line on failure."""
    import transformers

    if isinstance(checkpoint, transformers.HubertModel):
        _check_config(checkpoint.config.to_dict(), "the in-memory model")
        return checkpoint, "<in-memory>"
    if isinstance(checkpoint, transformers.PreTrainedModel):
        raise CheckpointError(f"checkpoint is a {type(checkpoint).__name__}, expected a transformers HubertModel")
    if not isinstance(checkpoint, (str, os.PathLike)):
        raise CheckpointError(f"hubert checkpoint must be a model directory, a hub id or a HubertModel, "
                              f"got {type(checkpoint).__name__}")
    spec = os.fspath(checkpoint)
    local = not isinstance(checkpoint, str) or _looks_local(spec)
    if local:
        path = Path(spec).expanduser()
        _check_config(_read_local_config(path), str(path))
        where, kwargs = str(path), {"local_files_only": True}
    else:
        where, kwargs = spec, {}
    try:
        if not local:
            config = transformers.AutoConfig.from_pretrained(spec)
            _check_config(config.to_dict(), spec)
        verbosity = transformers.logging.get_verbosity()
        transformers.logging.set_verbosity_error()  # its mismatch report: said below in one line
        try:  # mismatched tensors are reported by `info` (raising, transformers refers to a printed table)
            model, info = transformers.HubertModel.from_pretrained(where, output_loading_info=True,
                                                                   ignore_mismatched_sizes=True, **kwargs)
        finally:
            transformers.logging.set_verbosity(verbosity)
    except CheckpointError:
        raise
    except Exception as exc:  # OSError, ValueError, HF hub errors, safetensors errors...
        reason = " ".join(str(exc).split())[:300] or type(exc).__name__
        if local:
            raise CheckpointError(f"cannot load hubert model {where!r}: {reason}") from None
        raise CheckpointError(f"cannot load hubert model {spec!r}: no such local directory (in {os.getcwd()}), and as "
                              f"a HuggingFace hub id: {reason}") from None
    mismatched = sorted(info.get("mismatched_keys") or (), key=lambda m: str(m[0]))
    if mismatched:
        key, *shapes = mismatched[0]
        have, want = (tuple(getattr(x, "shape", x)) for x in (shapes + [(), ()])[:2])
        raise CheckpointError(f"hubert model {where!r}: {len(mismatched)} weight(s) do not match its config.json "
                              f"(first: {key}, {have} in the weights, {want} by the config)")
    missing = [k for k in info.get("missing_keys", ()) if k != "masked_spec_embed"]
    if missing:
        raise CheckpointError(f"hubert model {where!r} lacks {len(missing)} weight(s) (first: {missing[0]}), "
                              "expected a complete HubertModel checkpoint")
    return model, where


def load_hubert_engine(
    checkpoint: Any,
    *,
    precision: "str | None" = None,
    device: str = "auto",
    threads: "int | None" = None,
    batch_size: "int | None" = None,
) -> HubertEngine:
    """Load a HubertModel and wrap it as the seam's engine.

    Parameters
    ----------
    checkpoint : str, PathLike or transformers.HubertModel
        A local HuggingFace model directory (loaded with ``local_files_only=True``: never the
        network), a hub id such as ``"facebook/hubert-large-ls960-ft"`` (downloads where the
        network allows), or a model in memory (put in eval mode and moved to ``device``).
    precision : "exact" (default) or "fast"
        "exact": float32 forward as upstream (on CUDA with TF32 off: float32 arithmetic, where
        upstream's script would let cuDNN convolve in TF32). "fast": the model in bfloat16 on CPU, float16 on CUDA
        (error within :data:`FAST_REL_ERROR_BOUND`).
    device : str
        ``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda"``, ``"cuda:1"``...
    threads : int, optional
        CPU threads while the engine runs.
    batch_size : int, optional
        Chunks per call in :func:`hubert_features` (default 1).

    Returns
    -------
    HubertEngine

    Raises
    ------
    CheckpointError
        Not a HubertModel directory/model, hidden size not 1024, missing weights, download failed.
    ConfigError
        Unknown precision, device, bad threads or batch_size.
    """
    precision = "exact" if precision is None else precision
    if precision not in HUBERT_PRECISIONS:
        raise ConfigError(f"unknown hubert precision {precision!r}, expected one of "
                          f"{', '.join(map(repr, HUBERT_PRECISIONS))}")
    for name, value in (("threads", threads), ("batch_size", batch_size)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1):
            raise ConfigError(f"{name} must be a positive integer, got {value!r}")
    try:
        import torch
        import transformers
    except ImportError as exc:
        raise ConfigError(f"hubert mode needs transformers and torch (the [hubert] extra: {install_hint('hubert')}): {exc}") from None
    from .torch_engines import resolve_device

    dev = resolve_device(device)
    model, where = _load_model(checkpoint)
    model = model.to(device=dev, dtype=torch.float32).eval()
    config = model.config
    attn = getattr(config, "_attn_implementation", None) or "eager"
    weights_sha256 = hubert_state_sha256(model)  # of the float32 weights, whatever runs
    if precision == "exact":
        compute = (f"HubertModel float32 eval forward ({attn} attention) on {dev}"
                   + (", TF32 off" if dev.type == "cuda" else ""))
    else:
        # The whole model in half precision (a copy: the caller's model stays float32). Measured
        # on a hubert-large-shaped model on an AMD EPYC (Zen 4): 1.90x float32 and 2.3 % of
        # max|x| off, against 1.68x and 2.8 % for torch.autocast, which keeps some ops float32.
        half = torch.float16 if dev.type == "cuda" else torch.bfloat16
        model = copy.deepcopy(model).to(dtype=half) if where == "<in-memory>" else model.to(dtype=half)
        compute = f"HubertModel {'float16' if dev.type == 'cuda' else 'bfloat16'} weights ({attn} attention) on {dev}"
    provenance = MappingProxyType({
        "mode": "hubert",
        "source": where,
        "config_sha256": _config_sha256(config),
        "weights_sha256": weights_sha256,
        "untrained": bool(getattr(config, UNTRAINED_MARKER, False)),
        "num_layers": int(config.num_hidden_layers),
        "precision": precision,
        "transformers": transformers.__version__,
        "torch": torch.__version__,
    })
    return HubertEngine(
        model=model,
        precision=precision,
        device=str(dev),
        batch_invariant=False,
        batch_size=int(batch_size) if batch_size is not None else _DEFAULT_BATCH,
        compute=compute,
        provenance=provenance,
        threads=int(threads) if threads is not None else None,
    )


# --------------------------------------------------------------------------- the stand-in model


def _standin_config_kwargs(*, num_layers: int, conv_dim: int, seed: int) -> dict[str, Any]:
    """hubert-large-ls960-ft's geometry and flags, shrunk where the rows' shape does not depend on it."""
    return dict(
        hidden_size=HUBERT_DIM,
        num_hidden_layers=num_layers,
        num_attention_heads=16,
        intermediate_size=64,  # large: 4096
        conv_dim=[conv_dim] * 7,  # large: 512
        conv_kernel=list(_CONV_KERNEL),
        conv_stride=list(_CONV_STRIDE),
        conv_bias=True,
        feat_extract_norm="layer",
        feat_extract_activation="gelu",
        do_stable_layer_norm=True,
        hidden_act="gelu",
        layer_norm_eps=1e-5,
        num_conv_pos_embeddings=16,  # large: 128 (even, like 16)
        num_conv_pos_embedding_groups=16,
        vocab_size=32,
        **{UNTRAINED_MARKER: True, "synctalk_audio_standin": {"seed": seed, "recipe": "standin_state_dict"}},
    )


def standin_state_dict(shapes: Mapping[str, tuple[int, ...]], *, seed: int = 0) -> dict[str, np.ndarray]:
    """Deterministic float32 weights for the given parameter shapes (the stand-in's recipe).

    ``rng = np.random.default_rng(seed)``; for each key in sorted order one float64 draw of its
    shape, cast to float32: ``1 + 0.1·N`` for LayerNorm weights and the weight-norm gain
    (``original0``), ``0.02·N`` for biases, ``N`` for ``masked_spec_embed``, else
    ``N · sqrt(1 / fan_in)`` with ``fan_in = prod(shape[1:])``.

    Parameters
    ----------
    shapes : Mapping[str, tuple]
        State-dict key → shape.

    Returns
    -------
    dict[str, ndarray float32]
    """
    rng = np.random.default_rng(seed)
    out = {}
    for key in sorted(shapes):
        shape = tuple(shapes[key])
        draw = rng.standard_normal(shape)
        if key.endswith("layer_norm.weight") or key.endswith("original0"):
            value = 1.0 + 0.1 * draw
        elif key.endswith(".bias"):
            value = 0.02 * draw
        elif key == "masked_spec_embed":
            value = draw
        else:
            value = draw * np.sqrt(1.0 / int(np.prod(shape[1:])))
        out[key] = value.astype(np.float32)
    return out


def write_standin_hubert(
    path: "str | os.PathLike", *, seed: int = 0, num_layers: int = 2, conv_dim: int = 32, overwrite: bool = False
) -> Path:
    """Save a deterministic, UNTRAINED tiny ``HubertModel`` (1024-d) with ``save_pretrained``.

    hubert-large-ls960-ft's flags and geometry (layer-norm conv extractor with bias, stable
    layer norm, kernels 10,3,3,3,3,2,2 / strides 5,2,2,2,2,2,2, 16 heads, hidden 1024) with few
    layers, a narrow conv stack (``conv_dim``; large: 512), intermediate size 64 and 16
    positional-conv taps, so rows have the real shape at a fraction of the cost. Weights:
    :func:`standin_state_dict`. ``config.json`` carries ``"synctalk_audio_untrained": true``,
    which the engine's provenance reports as ``untrained``.

    Parameters
    ----------
    path : str or PathLike
        Directory to create (built in a hidden temp sibling and renamed into place, with a
        ``metadata.json`` of this library beside the model's files); an empty one is filled.
    seed, num_layers, conv_dim : int
    overwrite : bool
        Replace an earlier stand-in there (never a directory this library did not write).

    Returns
    -------
    Path of the directory.

    Raises
    ------
    OutputError
        ``path`` is a non-empty directory (without ``overwrite``, or not a stand-in of ours), a
        file, or cannot be written.
    """
    import torch
    import transformers

    for name, value in (("num_layers", num_layers), ("conv_dim", conv_dim)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ConfigError(f"{name} must be a positive integer, got {value!r}")
    seed = _check_count("seed", seed)
    config = transformers.HubertConfig(**_standin_config_kwargs(num_layers=int(num_layers), conv_dim=int(conv_dim),
                                                                 seed=seed))
    model = transformers.HubertModel(config)
    state = model.state_dict()
    weights = standin_state_dict({k: tuple(v.shape) for k, v in state.items()}, seed=seed)
    model.load_state_dict({k: torch.from_numpy(v) for k, v in weights.items()})
    from ._io import LIBRARY, atomic_dir, file_sha256
    from .config import check_flag

    with atomic_dir(path, overwrite=check_flag("overwrite", overwrite), kind=_STANDIN_KIND) as tmp:
        model.eval().save_pretrained(tmp)
        files = sorted(p.name for p in tmp.iterdir() if p.is_file())
        meta = {"library": LIBRARY, "output_kind": _STANDIN_KIND, "untrained": True, "seed": seed,
                "sha256": {name: file_sha256(tmp / name) for name in files}}
        (tmp / "metadata.json").write_text(json.dumps(meta, indent=2) + "\n")
    return Path(path)


#: ``output_kind`` of a :func:`write_standin_hubert` directory (what ``overwrite`` may replace).
_STANDIN_KIND = "hubert-standin"
