"""The torch-free encoder backend: an exported AudioEncoder (``.onnx``) run by onnxruntime.

Export once (this step needs torch)::

    synctalk-audio export --checkpoint audio_visual_encoder.pth --format onnx -o encoder.onnx

then give ``encoder.onnx`` wherever a checkpoint goes — :func:`synctalk_audio.pipeline`,
:class:`synctalk_audio.StreamingPipeline`, ``synctalk-audio features/reference/stream
--checkpoint encoder.onnx`` — and the encoder runs in onnxruntime: torch is never imported, so
a fresh process starts in about 0.15 s instead of about 0.9 s.

The numbers are float32 but not bit-identical to PyTorch's kernels: precision ``"onnx"`` in
:data:`synctalk_audio.pipeline.PRECISIONS` (≤ 5e-6 of max|features| from the exact PyTorch
encoder). On the CPU provider a window's row does not depend on its batch or the thread
count (tested), so results are reproducible run to run.

The ``encoder.onnx.json`` that the export writes beside the model is read when its
``sha256`` matches the model: it says which weights were exported (the state-dict hash and
whether they are the UNTRAINED seeded ones), which ``metadata.json`` then records.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from contextlib import contextmanager
from typing import Any, ClassVar, Iterator, Mapping

import numpy as np

from ._io import check_input_file
from .batches import check_positive_int
from .config import FEATURE_DIM, WINDOW_SHAPE
from .errors import CheckpointError, ConfigError, install_hint

__all__ = ["OnnxEncoder", "load_onnx_encoder", "is_onnx_model", "ONNX_SUFFIX", "unknown_device"]

ONNX_SUFFIX = ".onnx"
_CPU = "CPUExecutionProvider"
_CUDA = "CUDAExecutionProvider"
# Windows per session.run: 64 measured best on a 2-core AVX-512 CPU (16–128 within 5 %).
_DEFAULT_BATCH = {"cpu": 64, "cuda": 1024}


def is_onnx_model(checkpoint: Any) -> bool:
    """True for a path (str or PathLike) whose name ends in ``.onnx`` (any case)."""
    return isinstance(checkpoint, (str, os.PathLike)) and os.fspath(checkpoint).lower().endswith(ONNX_SUFFIX)


@dataclass(frozen=True, eq=False)
class OnnxEncoder:
    """An ONNX AudioEncoder loaded in onnxruntime: (B, 1, 80, 16) float32 → (B, 512) float32.

    Make one with :func:`load_onnx_encoder`; call it on a batch of windows. An engine of the
    encoder seam (:class:`synctalk_audio.engines.Engine`).

    Attributes
    ----------
    path : Path
    sha256 : str
        Of the .onnx file.
    device : "cpu" or "cuda[:N]"
    threads : int
        onnxruntime intra-op threads (CPU).
    batch_size : int
        Default windows per ``session.run``.
    compute : str
        What runs, e.g. ``"float32 onnxruntime 1.32.0 (CPUExecutionProvider, 2 threads)"``.
    provenance : read-only mapping
        The export's ``checkpoint`` record (``state_dict_sha256``, ``untrained_seeded``…)
        when ``<model>.json`` matches the model; empty otherwise.
    precision : "onnx"
    batch_invariant : bool
        True on the CPU provider (a window's row does not depend on its batch; tested).
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
    _input: str = field(repr=False)
    _output: str = field(repr=False)
    precision: ClassVar[str] = "onnx"
    mode: ClassVar[str] = "ave"
    row_shape: ClassVar[tuple[int, ...]] = (FEATURE_DIM,)

    def __call__(self, windows: np.ndarray) -> np.ndarray:
        """float32 (B, 1, 80, 16) or (B, 80, 16) → float32 (B, 512)."""
        x = np.ascontiguousarray(windows, dtype=np.float32).reshape(-1, *WINDOW_SHAPE)
        if x.shape[0] == 0:  # no windows: no rows (not every exported graph takes an empty batch)
            return np.empty((0, FEATURE_DIM), np.float32)
        y = np.asarray(self._session.run([self._output], {self._input: x})[0])
        if y.shape != (x.shape[0], FEATURE_DIM):
            raise CheckpointError(f"ONNX encoder {self.path} returned shape {y.shape} for {x.shape[0]} windows; an "
                                  f"AudioEncoder returns ({x.shape[0]}, {FEATURE_DIM}), one row per window")
        return np.asarray(y, dtype=np.float32)

    @contextmanager
    def running(self, n_items: int, batch_size: int, threads: "int | None" = None) -> Iterator[int]:
        """One worker: onnxruntime's own intra-op threads do the parallel work."""
        if threads is not None and self.device == "cpu" and threads != self.threads:
            raise ConfigError(f"the ONNX encoder was loaded with {self.threads} threads, not {threads}: "
                              f"load_onnx_encoder(path, threads={threads})")
        yield 1


_DEVICE_NAME = re.compile(r"(cpu|cuda)(?::([0-9]+))?")


def device_name(device: Any) -> "tuple[str, int | None] | None":
    """A device name every engine knows, parsed: "cpu" → ("cpu", None), "cuda" → ("cuda", None),
    "cuda:N" → ("cuda", N); None for anything else ("auto" is the caller's to resolve)."""
    found = _DEVICE_NAME.fullmatch(device) if isinstance(device, str) else None
    if found is None or (found.group(1) == "cpu" and found.group(2) is not None):
        return None
    return found.group(1), None if found.group(2) is None else int(found.group(2))


def unknown_device(device: Any) -> ConfigError:
    """The one message for a device name neither engine knows (torch's list of backends is not ours)."""
    return ConfigError(f"unknown device {device!r}; expected 'auto', 'cpu', 'cuda' or 'cuda:N'")


def _import_onnxruntime() -> Any:
    try:
        import onnxruntime
    except ImportError:
        raise ConfigError("an .onnx encoder needs onnxruntime (the [onnx] extra: " + install_hint("onnx") + ") "
                          "(or give the PyTorch checkpoint .pth)") from None
    return onnxruntime


def _providers(ort: Any, device: str) -> tuple[list[Any], str]:
    if not isinstance(device, str):
        device = str(device)
    available = ort.get_available_providers()
    if device == "auto":
        device = "cuda" if _CUDA in available else "cpu"
    parsed = device_name(device)
    if parsed is None:  # a malformed name first: whatever onnxruntime offers, it names no device
        raise unknown_device(device)
    kind, index = parsed
    if kind == "cpu":
        return [_CPU], "cpu"
    if _CUDA not in available:
        raise ConfigError(f"device {device!r} with an .onnx encoder needs onnxruntime-gpu "
                          f"(this onnxruntime offers {', '.join(available)}); use device 'cpu'")
    index = index or 0
    return [(_CUDA, {"device_id": index}), _CPU], f"cuda:{index}"


def _usable_cores() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def _dims(arg: Any) -> str:
    return "(" + ", ".join(str(d) for d in arg.shape) + ")"


def _check_io(session: Any, path: Path) -> tuple[str, str]:
    inputs, outputs = session.get_inputs(), session.get_outputs()
    if len(inputs) != 1 or len(outputs) != 1:
        raise CheckpointError(f"{path} is not an AudioEncoder: it has {len(inputs)} inputs and {len(outputs)} "
                              "outputs; expected 1 and 1 (export it with 'synctalk-audio export --format onnx')")
    i, o = inputs[0], outputs[0]
    if i.type != "tensor(float)" or len(i.shape) != 4 or tuple(i.shape[1:]) != WINDOW_SHAPE:
        raise CheckpointError(f"{path} takes {i.type} {_dims(i)}; an AudioEncoder takes float32 (batch, 1, 80, 16)")
    if o.type != "tensor(float)" or len(o.shape) != 2 or o.shape[1] != FEATURE_DIM:
        raise CheckpointError(f"{path} gives {o.type} {_dims(o)}; an AudioEncoder gives float32 (batch, {FEATURE_DIM})")
    return i.name, o.name


def _provenance(path: Path, sha256: str) -> Mapping[str, Any]:
    """The export's checkpoint record from ``<model>.json`` if that file describes this model."""
    from ._io import read_json
    from .errors import SyncTalkAudioError

    meta_path = path.with_name(path.name + ".json")
    if not meta_path.exists():
        return MappingProxyType({})
    try:  # bounded size and depth, regular files only: a hostile sidecar is ignored, never followed
        meta = read_json(meta_path, max_bytes=1 << 20)
    except SyncTalkAudioError:
        return MappingProxyType({})
    if not isinstance(meta, dict) or meta.get("sha256") != sha256 or not isinstance(meta.get("checkpoint"), dict):
        return MappingProxyType({})
    record = dict(meta["checkpoint"])
    record["metadata"] = str(meta_path)
    if isinstance(meta.get("verification"), dict):
        record["verification"] = {k: meta["verification"].get(k) for k in
                                  ("runtime", "max_abs_diff", "relative_diff", "feature_scale", "passed")}
    return MappingProxyType(record)


def _not_onnx_hint(blob: bytes) -> str:
    """What a file onnxruntime refused looks like, when it is a common other kind ("" otherwise)."""
    if blob.startswith(b"PK\x03\x04"):
        return "it is a zip archive (a PyTorch .pth checkpoint?), not an ONNX model; "
    if blob.startswith(b"\x80"):
        return "it is a Python pickle (a PyTorch checkpoint?), not an ONNX model; "
    if blob[:64].strip() and all(32 <= c < 127 or c in (9, 10, 13) for c in blob[:64]):
        return "it is a text file, not an ONNX model; "
    return ""


def open_session(ort: Any, path: "str | os.PathLike", *, what: str, device: str,
                 threads: "int | None") -> tuple[Path, str, Any, int, str]:
    """Read an .onnx file and start an onnxruntime session on it: the one loader of both ONNX
    engines (the ave encoder here, wenet's encoder.onnx).

    Returns
    -------
    (path, sha256 of the file, InferenceSession, intra-op threads, device asked: "cpu" or "cuda:N")

    Raises
    ------
    CheckpointError : an empty path, missing, a directory or not a regular file (a FIFO is never opened),
        unreadable, empty, or not loadable by onnxruntime
    ConfigError : an unknown device, or CUDA without onnxruntime-gpu
    """
    p, _ = check_input_file(os.path.expanduser(path), what=what, error=CheckpointError)
    try:
        blob = p.read_bytes()
    except OSError as exc:
        raise CheckpointError(f"cannot read {what} {p}: {exc.strerror or exc}") from None
    if not blob:  # the file was emptied since its stat
        raise CheckpointError(f"{what} is empty (0 bytes): {p}")
    providers, dev = _providers(ort, device)
    options = ort.SessionOptions()
    n_threads = threads or _usable_cores()
    options.intra_op_num_threads = n_threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3  # errors only: no optimiser chatter on stderr
    try:
        session = ort.InferenceSession(blob, options, providers=providers)
    except Exception as exc:  # onnxruntime raises its own (Fail, InvalidProtobuf, …) classes
        reason = " ".join(str(exc).split())[:200] or type(exc).__name__
        raise CheckpointError(f"cannot load {what} {p}: {_not_onnx_hint(blob)}{reason}") from None
    return p, hashlib.sha256(blob).hexdigest(), session, n_threads, dev


def load_onnx_encoder(
    path: "str | os.PathLike",
    *,
    device: str = "auto",
    threads: "int | None" = None,
    batch_size: "int | None" = None,
) -> OnnxEncoder:
    """Load an exported AudioEncoder (.onnx) into onnxruntime, without importing torch.

    Parameters
    ----------
    path : path to the .onnx file (from ``synctalk-audio export --format onnx``)
    device : "auto" (CUDA when onnxruntime-gpu offers it, else CPU), "cpu", "cuda", "cuda:N"
    threads : int, optional
        Intra-op threads on CPU (default: the cores this process may use).
    batch_size : int, optional
        Default windows per run (64 on CPU, 1024 on CUDA).

    Returns
    -------
    OnnxEncoder: (B, 1, 80, 16) float32 → (B, 512) float32

    Raises
    ------
    CheckpointError : missing/unreadable file, not an ONNX model, wrong inputs/outputs
    ConfigError : onnxruntime missing, bad device/threads/batch_size
    """
    threads = check_positive_int("threads", threads)
    batch_size = check_positive_int("batch_size", batch_size)
    ort = _import_onnxruntime()
    p, digest, session, n_threads, dev = open_session(ort, path, what="ONNX encoder", device=device,
                                                      threads=threads)
    input_name, output_name = _check_io(session, p)
    used = session.get_providers()[0]
    kind = "cuda" if used == _CUDA else "cpu"
    compute = (f"float32 onnxruntime {ort.__version__} ({used}"
               + (f", {n_threads} threads)" if kind == "cpu" else ")"))
    return OnnxEncoder(
        path=p, sha256=digest, device=dev if kind == "cuda" else "cpu",
        threads=n_threads, batch_size=batch_size or _DEFAULT_BATCH[kind], compute=compute,
        provenance=_provenance(p, digest), batch_invariant=kind == "cpu",
        _session=session, _input=input_name, _output=output_name,
    )
