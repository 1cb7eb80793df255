"""Export the AudioEncoder to ONNX, TorchScript and CoreML, each artifact verified.

Every export writes the artifact and a JSON beside it (``encoder.onnx`` + ``encoder.onnx.json``
…) atomically: both are built and verified in a temporary sibling folder, then renamed into
place, so a failed or interrupted export (SIGTERM included) leaves nothing half-written. An
existing artifact is replaced only with ``overwrite=True`` (CLI ``--force``) and only when its
``.json`` says synctalk-audio exported it (:mod:`synctalk_audio._io`'s output rule).

- ``onnx`` → ``encoder.onnx``: BatchNorm folded, opset 17, ``mel_input`` float32
  (batch, 1, 80, 16) → ``features`` float32 (batch, 512) with a dynamic batch axis.
- ``torchscript`` → ``encoder.pt``: traced, unfolded by default, i.e. the very ops of the
  PyTorch encoder (bit-identical outputs in LibTorch); any batch size.
- ``coreml`` → ``encoder.mlpackage``: ML Program (iOS 15+), BatchNorm folded, ``mel_input``
  (1…max_batch, 1, 80, 16) → ``features``; float32 compute precision by default, float16 on
  request.

Tolerances. Seeded (untrained) weights give features up to ~100 in magnitude, where one
float32 ulp is ~8e-6; two correct float32 implementations that sum the same products in a
different order (onnxruntime's MLAS vs PyTorch's oneDNN, or a folded vs an unfolded
BatchNorm) differ by up to ~1.5e-6 × max|features| (measured: ~5e-5 absolute). Float32
exports are therefore checked against ``FLOAT32_REL_TOL × max|features|`` (5e-6: ~5e-4
absolute at that scale). Mistakes land far above it (measured relative to max|features|: a
missing residual 0.5, one layer's weights 1 % off ~1e-2, a single weight off by 0.01 4e-5), and
float16 compute precision lands at ~1e-3.

torch is imported here (like encoder.py); onnx, onnxruntime and coremltools are imported only
by the functions that need them (the ``export`` extra).
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import logging
import os
import platform
import re
import sys
import warnings
from dataclasses import dataclass, field
from importlib import import_module
from importlib import metadata as _metadata
from pathlib import Path
from types import MappingProxyType
from typing import Any, Callable, Iterable, Mapping

import numpy as np
import torch
from torch import nn

from . import __version__
from .config import PRESETS
from . import _io
from ._io import file_sha256
from .encoder import FEATURE_DIM, AudioEncoder, fold_batchnorm, load_encoder, seeded_state_dict, state_dict_sha256
from .errors import CheckpointError, ConfigError, OutputError, ShapeError, SyncTalkAudioError, install_hint

__all__ = [
    "EXPORT_FORMATS",
    "FILENAMES",
    "INPUT_NAME",
    "OUTPUT_NAME",
    "INPUT_SHAPE",
    "ONNX_OPSET",
    "FLOAT32_REL_TOL",
    "FLOAT16_REL_TOL",
    "ExportResult",
    "verification_windows",
    "export_onnx",
    "export_torchscript",
    "export_coreml",
    "export_all",
    "run_onnx",
    "run_torchscript",
    "run_coreml",
    "verify_onnx",
    "verify_torchscript",
    "verify_coreml",
    "describe_coreml",
]

EXPORT_FORMATS = ("onnx", "torchscript", "coreml")
FILENAMES: Mapping[str, str] = MappingProxyType(
    {"onnx": "encoder.onnx", "torchscript": "encoder.pt", "coreml": "encoder.mlpackage"}
)
INPUT_NAME = "mel_input"
OUTPUT_NAME = "features"
#: One encoder input window: (channels, mels, frames); the batch axis comes first.
INPUT_SHAPE = (1, 80, 16)
ONNX_OPSET = 17
#: float32 artifacts: max|export − torch| ≤ FLOAT32_REL_TOL · max|torch features| (measured ≤ 1.5e-6).
FLOAT32_REL_TOL = 5e-6
#: float16 CoreML compute precision: same check with this bound (emulated on Linux, see run_coreml).
FLOAT16_REL_TOL = 1e-2
_AUTHOR = "synctalk-audio"
_DESCRIPTION = ("SyncTalk_2D AudioEncoder: mel windows (batch, 1, 80, 16) from the synctalk_audio front end "
                "→ features (batch, 512)")
_PRECISIONS = ("float32", "float16")
_SEEDED = re.compile(r"seeded(?::(\d+))?")
_EXTRA_HINT = install_hint("export")
_MAX_SIDECAR_BYTES = 1 << 20


@dataclass(frozen=True)
class ExportResult:
    """One written artifact.

    Attributes
    ----------
    format : "onnx", "torchscript" or "coreml"
    path : the artifact (``encoder.onnx``, ``encoder.pt`` or the ``encoder.mlpackage`` folder)
    metadata_path : the JSON beside it (``<path>.json``)
    metadata : its content (read-only mapping), including ``verification.max_abs_diff``
    """

    format: str
    path: Path
    metadata_path: Path
    metadata: Mapping[str, Any] = field(default_factory=dict)


# --------------------------------------------------------------------------- helpers


def _require(module: str, fmt: str) -> Any:
    try:
        return import_module(module)
    except ImportError:
        raise ConfigError(f"format {fmt!r} needs the {module} package, which is not installed: {_EXTRA_HINT}") from None


def _import_coremltools() -> Any:
    """Import coremltools without its import-time chatter (missing native proxies off macOS…)."""
    log = logging.getLogger("coremltools")
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        return _require("coremltools", "coreml")
    finally:
        log.setLevel(level)


@contextlib.contextmanager
def _quiet():
    """Silence converters: deprecation warnings, progress bars on stderr, coremltools logging."""
    log = logging.getLogger("coremltools")
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stderr(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        log.setLevel(level)


def _version(dist: str) -> "str | None":
    try:
        return _metadata.version(dist)
    except _metadata.PackageNotFoundError:
        return None


def _versions(*dists: str) -> dict[str, "str | None"]:
    out: dict[str, "str | None"] = {"synctalk-audio": __version__, "python": platform.python_version(),
                                    "torch": torch.__version__, "numpy": np.__version__}
    out.update({d: _version(d) for d in dists})
    return out


@dataclass(frozen=True)
class _Resolved:
    encoder: AudioEncoder
    provenance: Mapping[str, Any]


def _resolve(source: Any) -> _Resolved:
    """Encoder (CPU, float32, eval, a private copy) and its provenance from any checkpoint form.

    ``source`` is an :class:`AudioEncoder`, a state dict, a checkpoint path, or the string
    ``"seeded"`` / ``"seeded:N"`` for the untrained :func:`seeded_state_dict` weights (like the
    CLI's ``--checkpoint seeded``; write ``./seeded`` for a file of that name).
    """
    if isinstance(source, _Resolved):
        return source
    file_sha = None
    if isinstance(source, AudioEncoder):
        encoder, label = copy.deepcopy(source), "AudioEncoder instance"
    elif isinstance(source, Mapping):
        encoder, label = load_encoder(source, device="cpu"), "state dict"
    elif isinstance(source, (str, os.PathLike)):
        text = os.fspath(source)
        match = _SEEDED.fullmatch(text) if isinstance(source, str) else None
        if match:
            seed = int(match.group(1) or 0)
            encoder, label = load_encoder(seeded_state_dict(seed), device="cpu"), f"seeded:{seed} (untrained)"
        else:
            path = Path(text)
            encoder, label = load_encoder(path, device="cpu"), str(path)
            file_sha = file_sha256(path)
    else:
        raise CheckpointError(
            f"checkpoint must be a path, a state dict, an AudioEncoder or 'seeded', got {type(source).__name__}")
    encoder = encoder.to("cpu", torch.float32).eval()
    for p in encoder.parameters():
        p.requires_grad_(False)
    digest = state_dict_sha256(encoder.audio_encoder.state_dict())
    provenance = {
        "checkpoint": label,
        "checkpoint_sha256": file_sha,
        "state_dict_sha256": digest,
        "untrained_seeded": digest == state_dict_sha256(seeded_state_dict(0)),
    }
    return _Resolved(encoder, MappingProxyType(provenance))


def _check_preset(preset: str) -> str:
    if preset not in PRESETS:
        raise ConfigError(f"unknown preset {preset!r}, expected one of {sorted(PRESETS)}")
    return preset


def _check_windows(windows: Any) -> np.ndarray:
    arr = windows.detach().cpu().numpy() if isinstance(windows, torch.Tensor) else np.asarray(windows)
    if arr.ndim == 3:
        arr = arr[:, None]
    if arr.ndim != 4 or tuple(arr.shape[1:]) != INPUT_SHAPE or arr.shape[0] == 0:
        raise ShapeError(f"windows must have shape (N>0, 80, 16) or (N>0, 1, 80, 16), got {tuple(np.shape(windows))}")
    if not np.issubdtype(arr.dtype, np.floating):
        raise ShapeError(f"windows must be floating point (float32), got dtype {arr.dtype}")
    if not np.isfinite(arr).all():
        raise ShapeError("windows contain NaN or Inf values")
    return np.ascontiguousarray(arr, dtype=np.float32)


def _torch_features(model: nn.Module, windows: np.ndarray) -> np.ndarray:
    with torch.inference_mode():
        return model.eval()(torch.from_numpy(windows)).float().numpy()


def _max_abs_diff(a: np.ndarray, b: np.ndarray) -> float:
    if a.shape != b.shape:
        raise ShapeError(f"exported model returned shape {a.shape}, expected {b.shape}")
    return float(np.max(np.abs(a.astype(np.float64) - b.astype(np.float64))))


def verification_windows(batch: int = 8, *, seed: int = 0) -> np.ndarray:
    """Deterministic encoder inputs for checking an export.

    Row 0 is silence (every mel value at the floor −4, what silent audio gives); the other rows
    are uniform in the mel range [−4, 4] from ``numpy.random.default_rng(seed)``.

    Returns
    -------
    ndarray, float32, shape (batch, 1, 80, 16)
    """
    if isinstance(batch, bool) or not isinstance(batch, int) or batch <= 0:
        raise ConfigError(f"verification batch must be a positive integer, got {batch!r}")
    rng = np.random.default_rng(seed)
    out = rng.uniform(-4.0, 4.0, (batch, *INPUT_SHAPE)).astype(np.float32)
    out[0] = -4.0
    return out


def _verification(runtime: str, run: Callable[[np.ndarray], np.ndarray], reference: nn.Module,
                  reference_label: str, exact: AudioEncoder, windows: np.ndarray, rel_tol: float) -> dict[str, Any]:
    """Run the artifact on ``windows``; compare with ``reference`` (same math) and the exact encoder."""
    got = run(windows)
    expected = _torch_features(reference, windows)
    exact_out = _torch_features(exact, windows)
    scale = float(np.max(np.abs(exact_out)))
    diff = _max_abs_diff(got, expected)
    diff_exact = _max_abs_diff(got, exact_out)
    bound = rel_tol * max(scale, 1.0)
    return {
        "runtime": runtime,
        "windows": {"batch": int(windows.shape[0]),
                    "recipe": "verification_windows(): row 0 silence (-4), others uniform in [-4, 4], seed 0"},
        "reference": reference_label,
        "max_abs_diff": diff,
        "max_abs_diff_vs_exact_encoder": diff_exact,
        "feature_scale": scale,
        "relative_diff": diff / max(scale, 1.0),
        "relative_diff_vs_exact_encoder": diff_exact / max(scale, 1.0),
        "tolerance_relative": rel_tol,
        "passed": bool(diff <= bound and diff_exact <= bound),
    }


def _shape_meta(batch: Any) -> dict[str, Any]:
    return {
        "input": {"name": INPUT_NAME, "dtype": "float32", "shape": [batch, *INPUT_SHAPE]},
        "output": {"name": OUTPUT_NAME, "dtype": "float32", "shape": [batch, FEATURE_DIM]},
    }


def _is_our_export(path: Path) -> bool:
    """True when ``<path>.json`` (or ``path`` itself, for the sidecar) is an export sidecar of ours."""
    sidecar = path if path.name.endswith(".json") else path.with_name(path.name + ".json")
    try:
        meta = _io.read_json(sidecar, max_bytes=_MAX_SIDECAR_BYTES)
    except OutputError:
        return False
    return isinstance(meta, dict) and meta.get("library") == _io.LIBRARY and meta.get("file") == (
        path.name[:-len(".json")] if path.name.endswith(".json") else path.name)


def _check_dest(dest: Path, *, overwrite: bool) -> bool:
    """The output rule for an artifact: True when an existing one of ours will be replaced."""
    if dest.suffix != ".mlpackage":
        return _io.check_file_target(dest, overwrite=overwrite, is_ours=_is_our_export)
    if os.path.lexists(dest) and not dest.is_dir():
        raise OutputError(f"cannot write {dest}: a file is in the way (a .mlpackage is a folder)")
    if not dest.is_dir() or not any(dest.iterdir()):
        return dest.is_dir()
    if not overwrite:
        raise OutputError(f"output {dest} exists; choose a new path or replace it (overwrite=True, CLI --force)")
    if dest.is_symlink() or not _is_our_export(dest):
        raise OutputError(f"output {dest} was not exported by synctalk-audio (no matching {dest.name}.json); "
                          "refusing to replace it")
    return True


def _check_target(path: "str | os.PathLike", suffix: str, *, overwrite: bool = False) -> Path:
    """The destination (and its ``.json``) checked against the output rule; nothing is created."""
    dest = Path(path)
    if dest.suffix != suffix:
        raise OutputError(f"export path {dest} must end with {suffix!r}")
    if dest.exists() and (dest.is_dir() != (suffix == ".mlpackage")):
        raise OutputError(f"cannot write {dest}: a {'folder' if dest.is_dir() else 'file'} is in the way")
    _check_dest(dest, overwrite=overwrite)
    _io.check_file_target(dest.with_name(dest.name + ".json"), overwrite=overwrite, is_ours=_is_our_export)
    return dest


def _target(path: "str | os.PathLike", suffix: str, *, overwrite: bool = False) -> Path:
    """:func:`_check_target`, then the output folder is created."""
    dest = _check_target(path, suffix, overwrite=overwrite)
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create output folder {dest.parent}: {exc.strerror or exc}") from None
    if not dest.parent.is_dir():
        raise OutputError(f"output folder {dest.parent} is not a folder")
    return dest


def _write_atomically(dest: Path, build: Callable[[Path], dict[str, Any]], *, overwrite: bool) -> dict[str, Any]:
    """Build into a hidden temp sibling folder (``build(tmp_artifact)`` returns the JSON dict),
    write the JSON there too, then rename both into place (artifact first: a stale JSON never
    describes a new artifact, its sha256 would not match). The temp folder never outlives the
    call, SIGTERM included."""
    meta_dest = dest.with_name(dest.name + ".json")
    try:
        with _io.scratch_dir(dest) as tmp:
            tmp_art = tmp / dest.name
            meta = build(tmp_art)
            meta["file"] = dest.name
            tmp_meta = _io.write_json(tmp / meta_dest.name, meta, atomic=False)
            replace = _check_dest(dest, overwrite=overwrite)
            _io.check_file_target(meta_dest, overwrite=overwrite, is_ours=_is_our_export)
            _io.install(tmp_art, dest, replace=replace)
            _io.install(tmp_meta, meta_dest, replace=False)
    except OSError as exc:
        raise OutputError(f"cannot write {dest}: {exc.strerror or exc}") from None
    return meta


@contextlib.contextmanager
def _converting(what: str, *dists: str):
    """Turn a converter's failure into one OutputError naming the tool versions."""
    try:
        yield
    except SyncTalkAudioError:
        raise
    except Exception as exc:  # converters raise anything (RuntimeError, ValueError, AssertionError…)
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        versions = ", ".join(f"{d} {_version(d)}" for d in ("torch", *dists))
        raise OutputError(f"{what} failed with {versions}: {type(exc).__name__}: {first}") from exc


def _finish(fmt: str, dest: Path, meta: dict[str, Any]) -> ExportResult:
    return ExportResult(fmt, dest, dest.with_name(dest.name + ".json"), MappingProxyType(meta))


def _fail_unverified(fmt: str, ver: dict[str, Any]) -> None:
    if not ver["passed"]:
        raise OutputError(
            f"{fmt} export does not reproduce the encoder: max abs diff {ver['max_abs_diff']:.3g} "
            f"(vs exact {ver['max_abs_diff_vs_exact_encoder']:.3g}) exceeds "
            f"{ver['tolerance_relative']:g} x feature scale {ver['feature_scale']:.3g}; nothing was written")


def _base_meta(fmt: str, provenance: dict[str, Any], preset: str, batch: Any, folded: bool,
               versions: dict[str, Any]) -> dict[str, Any]:
    return {
        "format": fmt,
        "library": "synctalk-audio",
        "library_version": __version__,
        "description": _DESCRIPTION,
        "preset": preset,
        **_shape_meta(batch),
        "batchnorm_folded": folded,
        "checkpoint": provenance,
        "versions": versions,
    }


# --------------------------------------------------------------------------- ONNX


def run_onnx(path: "str | os.PathLike", windows: Any) -> np.ndarray:
    """Run ``encoder.onnx`` with onnxruntime (CPU), as :func:`synctalk_audio.load_onnx_encoder` loads it.

    Parameters
    ----------
    path : the .onnx file
    windows : float32 (N, 80, 16) or (N, 1, 80, 16)

    Returns
    -------
    ndarray, float32, shape (N, 512)
    """
    from .runtime import load_onnx_encoder

    x = _check_windows(windows)
    return load_onnx_encoder(path, device="cpu")(x)


def verify_onnx(path: "str | os.PathLike", encoder: nn.Module, windows: Any) -> float:
    """Max abs difference between onnxruntime on ``path`` and ``encoder`` in PyTorch.

    Pass ``fold_batchnorm(encoder)`` to compare against the same math as the exported graph,
    or the exact encoder to see the folding round-off too.
    """
    x = _check_windows(windows)
    return _max_abs_diff(run_onnx(path, x), _torch_features(encoder, x))


def export_onnx(
    encoder_or_checkpoint: Any,
    path: "str | os.PathLike",
    *,
    opset: int = ONNX_OPSET,
    preset: str = "synctalk_2d",
    verify: bool = True,
    verify_batch: int = 8,
    overwrite: bool = False,
) -> ExportResult:
    """Write ``path`` (.onnx): BatchNorm folded, dynamic batch, checked with ``onnx.checker``.

    Parameters
    ----------
    encoder_or_checkpoint : AudioEncoder, state dict, checkpoint path or "seeded"
    path : destination, ending in ``.onnx``; ``<path>.json`` is written beside it
    opset : ONNX opset, ≥ 17
    preset : mel preset the inputs come from (recorded in the metadata)
    verify : run onnxruntime on :func:`verification_windows` and refuse to write the file when it
        differs from PyTorch by more than ``FLOAT32_REL_TOL × max|features|``
    verify_batch : verification batch size (≠ 1 exercises the dynamic batch axis)
    overwrite : replace an existing artifact (and its ``.json``) exported earlier by synctalk-audio;
        without it an existing non-empty one is refused (OutputError, CLI ``--force``)

    Returns
    -------
    ExportResult

    Raises
    ------
    ConfigError (onnx missing, opset < 17), CheckpointError, OutputError
    """
    onnx = _require("onnx", "onnx")
    if verify:
        _require("onnxruntime", "onnx")
    if isinstance(opset, bool) or not isinstance(opset, int) or opset < 17:
        raise ConfigError(f"ONNX opset must be an integer >= 17, got {opset!r}")
    preset = _check_preset(preset)
    resolved = _resolve(encoder_or_checkpoint)
    dest = _target(path, ".onnx", overwrite=overwrite)
    encoder, provenance = resolved.encoder, dict(resolved.provenance)
    folded = fold_batchnorm(encoder)
    windows = verification_windows(verify_batch)

    def build(tmp: Path) -> dict[str, Any]:
        with _quiet(), _converting("torch.onnx.export (TorchScript-based exporter, dynamo=False)", "onnx"):
            torch.onnx.export(
                folded, (torch.from_numpy(windows[:1]),), os.fspath(tmp),
                input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
                opset_version=opset, do_constant_folding=True, dynamo=False,
            )
        model = onnx.load(os.fspath(tmp))
        model.doc_string = _DESCRIPTION
        model.producer_name = "synctalk-audio"
        model.producer_version = __version__
        props = {"author": _AUTHOR, "version": __version__, "preset": preset, "batchnorm_folded": "true",
                 "input": f"{INPUT_NAME} float32 (batch, 1, 80, 16)", "output": f"{OUTPUT_NAME} float32 (batch, 512)",
                 "state_dict_sha256": provenance["state_dict_sha256"]}
        del model.metadata_props[:]
        for key, value in props.items():
            entry = model.metadata_props.add()
            entry.key, entry.value = key, value
        onnx.checker.check_model(model, full_check=True)
        onnx.save(model, os.fspath(tmp))
        ops = sorted({node.op_type for node in model.graph.node})
        meta = _base_meta("onnx", provenance, preset, "batch", True, _versions("onnx", "onnxruntime"))
        meta["opset"] = opset
        meta["ops"] = ops
        meta["sha256"] = file_sha256(tmp)
        if verify:
            ort_version = _version("onnxruntime")
            ver = _verification(f"onnxruntime {ort_version} (CPUExecutionProvider)", lambda x: run_onnx(tmp, x),
                                folded, "fold_batchnorm(encoder) in PyTorch float32", encoder, windows,
                                FLOAT32_REL_TOL)
            _fail_unverified("onnx", ver)
            meta["verification"] = ver
        return meta

    return _finish("onnx", dest, _write_atomically(dest, build, overwrite=overwrite))


# --------------------------------------------------------------------------- TorchScript


def run_torchscript(path: "str | os.PathLike", windows: Any) -> np.ndarray:
    """Run ``encoder.pt`` with ``torch.jit.load`` on the CPU → float32 (N, 512)."""
    x = _check_windows(windows)
    with _quiet():
        module = torch.jit.load(os.fspath(path), map_location="cpu")
    return _torch_features(module, x)


def verify_torchscript(path: "str | os.PathLike", encoder: nn.Module, windows: Any) -> float:
    """Max abs difference between the TorchScript file and ``encoder`` on ``windows``."""
    x = _check_windows(windows)
    return _max_abs_diff(run_torchscript(path, x), _torch_features(encoder, x))


def export_torchscript(
    encoder_or_checkpoint: Any,
    path: "str | os.PathLike",
    *,
    fold_bn: bool = False,
    preset: str = "synctalk_2d",
    verify: bool = True,
    verify_batch: int = 8,
    overwrite: bool = False,
) -> ExportResult:
    """Write ``path`` (.pt): the encoder traced with ``torch.jit.trace`` (any batch size).

    Unfolded by default: LibTorch then runs the very ops of the PyTorch encoder and the outputs
    are bit-identical (the exact path); ``fold_bn=True`` traces :func:`fold_batchnorm` instead
    (13 fewer ops, ~1e-6 × max|features| round-off). The metadata JSON is also embedded in the
    archive as the extra file ``synctalk_audio.json``.

    Returns
    -------
    ExportResult

    Raises
    ------
    CheckpointError, OutputError
    """
    preset = _check_preset(preset)
    resolved = _resolve(encoder_or_checkpoint)
    dest = _target(path, ".pt", overwrite=overwrite)
    encoder, provenance = resolved.encoder, dict(resolved.provenance)
    model = fold_batchnorm(encoder) if fold_bn else encoder
    windows = verification_windows(verify_batch)

    def build(tmp: Path) -> dict[str, Any]:
        meta = _base_meta("torchscript", provenance, preset, "batch", bool(fold_bn), _versions())
        meta["trace"] = "torch.jit.trace on a (1, 1, 80, 16) example (verified on a larger batch)"
        with _quiet(), _converting("torch.jit.trace"):
            traced = torch.jit.trace(model, torch.from_numpy(windows[:1]), check_trace=False)
        with _quiet():
            torch.jit.save(traced, os.fspath(tmp),
                           _extra_files={"synctalk_audio.json": json.dumps(meta, sort_keys=False)})
        meta["sha256"] = file_sha256(tmp)
        if verify:
            label = "fold_batchnorm(encoder)" if fold_bn else "the exact (unfolded) encoder"
            ver = _verification(f"torch.jit.load, torch {torch.__version__} (CPU)", lambda x: run_torchscript(tmp, x),
                                model, f"{label} in PyTorch float32", encoder, windows, FLOAT32_REL_TOL)
            _fail_unverified("torchscript", ver)
            meta["verification"] = ver
        return meta

    return _finish("torchscript", dest, _write_atomically(dest, build, overwrite=overwrite))


# --------------------------------------------------------------------------- CoreML


def _coreml_spec(path: "str | os.PathLike") -> tuple[Any, Any]:
    ct = _import_coremltools()
    with _quiet():
        model = ct.models.MLModel(os.fspath(path), skip_model_load=True)
    return model, model.get_spec()


def describe_coreml(path: "str | os.PathLike") -> dict[str, Any]:
    """Read an ``.mlpackage`` back (no macOS needed) and summarise its interface.

    Returns
    -------
    dict with ``type`` ("mlProgram"), ``specification_version``, ``inputs`` / ``outputs``
    (name → {"dtype", "shape", "shape_range" [[lo, hi], …] or None}), ``metadata`` (author,
    version, short_description, user_defined), ``ops`` (op type → count in ``main``) and
    ``compute_precision`` ("float16" when the program casts to fp16, else "float32").
    """
    model, spec = _coreml_spec(path)

    def arrays(features: Iterable[Any]) -> dict[str, Any]:
        out = {}
        for feat in features:
            arr = feat.type.multiArrayType
            ranges = [[r.lowerBound, r.upperBound] for r in arr.shapeRange.sizeRanges] or None
            dtype = type(arr).ArrayDataType.Name(arr.dataType)
            out[feat.name] = {"dtype": dtype, "shape": list(arr.shape), "shape_range": ranges}
        return out

    kind = spec.WhichOneof("Type")
    ops: dict[str, int] = {}
    if kind == "mlProgram":
        fn = spec.mlProgram.functions["main"]
        for op in fn.block_specializations[fn.opset].operations:
            ops[op.type] = ops.get(op.type, 0) + 1
    meta = spec.description.metadata
    return {
        "type": kind,
        "specification_version": spec.specificationVersion,
        "inputs": arrays(spec.description.input),
        "outputs": arrays(spec.description.output),
        "metadata": {"author": meta.author, "version": meta.versionString, "short_description": meta.shortDescription,
                     "license": meta.license, "user_defined": dict(meta.userDefined)},
        "ops": ops,
        "compute_precision": "float16" if ops.get("cast") else "float32",
    }


def _coreml_can_predict() -> bool:
    if sys.platform != "darwin":
        return False
    try:
        import_module("coremltools.libcoremlpython")
    except ImportError:
        return False
    return True


def _interpret_mil(path: "str | os.PathLike", x: np.ndarray) -> np.ndarray:
    """Evaluate the ML Program in ``path`` op by op with torch (for machines without Core ML).

    Covers the ops the encoder converts to (const, cast, conv, relu, add, reshape); fp16 values
    are rounded to float16 after every op that produces them (accumulation stays float32), a
    close model of, not a substitute for, Core ML's own fp16 kernels.
    """
    _import_coremltools()
    from coremltools.converters.mil.frontend.milproto.load import load as mil_load
    from coremltools.converters.mil.mil import types

    model, spec = _coreml_spec(path)
    with _quiet():
        prog = mil_load(spec, specification_version=spec.specificationVersion, file_weights_dir=model.weights_dir)
    fn = prog.functions["main"]
    env: dict[str, Any] = {INPUT_NAME: torch.from_numpy(x)}

    def val(op: Any, name: str) -> Any:
        var = op.inputs.get(name)
        if var is None:
            return None
        if var.name in env:
            return env[var.name]
        return var.val

    def tensor(value: Any) -> torch.Tensor:
        return value if isinstance(value, torch.Tensor) else torch.from_numpy(np.asarray(value, dtype=np.float32))

    for op in fn.operations:
        kind, out_var = op.op_type, op.outputs[0]
        if kind == "const":
            env[out_var.name] = out_var.val
            continue
        if kind == "cast":
            result = tensor(val(op, "x")).float()
        elif kind == "conv":
            weight, bias = tensor(val(op, "weight")).float(), val(op, "bias")
            pad_type = str(val(op, "pad_type"))
            pad = [int(p) for p in val(op, "pad")] if pad_type == "custom" else [0, 0, 0, 0]
            if pad_type not in ("custom", "valid"):
                raise OutputError(f"{path}: conv pad_type {pad_type!r} is not supported by the checker")
            inp = torch.nn.functional.pad(tensor(val(op, "x")), (pad[2], pad[3], pad[0], pad[1]))
            result = torch.nn.functional.conv2d(
                inp, weight, None if bias is None else tensor(bias).float(),
                stride=tuple(int(s) for s in val(op, "strides")), dilation=tuple(int(d) for d in val(op, "dilations")),
                groups=int(val(op, "groups")))
        elif kind == "relu":
            result = torch.relu(tensor(val(op, "x")))
        elif kind == "add":
            result = tensor(val(op, "x")) + tensor(val(op, "y"))
        elif kind == "reshape":
            result = tensor(val(op, "x")).reshape(tuple(int(s) for s in val(op, "shape")))
        else:
            raise OutputError(f"{path}: op {kind!r} is not supported by the checker")
        if out_var.dtype == types.fp16:
            result = result.half().float()
        env[out_var.name] = result
    return env[fn.outputs[0].name].detach().numpy().astype(np.float32)


def run_coreml(path: "str | os.PathLike", windows: Any, *, backend: str = "auto") -> np.ndarray:
    """Run ``encoder.mlpackage`` on ``windows`` → float32 (N, 512).

    Parameters
    ----------
    backend : "auto", "coreml" or "interpreter"
        "coreml" predicts with Core ML itself (macOS only, CPU compute units); "interpreter"
        evaluates the saved ML Program op by op with torch (any OS: checks the saved graph and
        weights, not Apple's kernels); "auto" picks Core ML where it can run.
    """
    x = _check_windows(windows)
    if backend == "auto":
        backend = "coreml" if _coreml_can_predict() else "interpreter"
    if backend == "interpreter":
        return _interpret_mil(path, x)
    if backend != "coreml":
        raise ConfigError(f"unknown CoreML backend {backend!r}, expected 'auto', 'coreml' or 'interpreter'")
    if not _coreml_can_predict():
        raise ConfigError("Core ML prediction needs macOS with coremltools' native module; use backend='interpreter'")
    ct = _import_coremltools()
    model = ct.models.MLModel(os.fspath(path), compute_units=ct.ComputeUnit.CPU_ONLY)
    info = describe_coreml(path)
    max_batch = (info["inputs"][INPUT_NAME]["shape_range"] or [[1, 1]])[0][1]
    chunk = max(1, max_batch if max_batch > 0 else x.shape[0])
    parts = [np.asarray(model.predict({INPUT_NAME: x[i:i + chunk]})[OUTPUT_NAME], dtype=np.float32)
             for i in range(0, x.shape[0], chunk)]
    return np.concatenate(parts).reshape(x.shape[0], FEATURE_DIM)


def verify_coreml(path: "str | os.PathLike", encoder: nn.Module, windows: Any, *, backend: str = "auto") -> float:
    """Max abs difference between :func:`run_coreml` on ``path`` and ``encoder`` on ``windows``."""
    x = _check_windows(windows)
    return _max_abs_diff(run_coreml(path, x, backend=backend), _torch_features(encoder, x))


def export_coreml(
    encoder_or_checkpoint: Any,
    path: "str | os.PathLike",
    *,
    compute_precision: str = "float32",
    max_batch: int = 64,
    capture: str = "trace",
    preset: str = "synctalk_2d",
    verify: bool = True,
    verify_batch: int = 8,
    overwrite: bool = False,
) -> ExportResult:
    """Write ``path`` (.mlpackage folder): a Core ML ML Program of the BatchNorm-folded encoder.

    Converted with coremltools (iOS 15 / macOS 12 minimum) from a ``torch.jit.trace`` graph,
    coremltools' stable PyTorch path (``capture="export"`` uses ``torch.export`` instead, its
    beta path; both give the same 13 conv + 13 relu + 7 add program). Input
    ``mel_input`` float32 (1, 1, 80, 16) by default, flexible batch 1…``max_batch`` (a
    ``ct.RangeDim``; ``max_batch=1`` gives a fixed shape, friendlier to the Neural Engine);
    output ``features`` float32 (batch, 512). Metadata: author, version, short description,
    preset, shapes, checkpoint hash.

    Verification runs Core ML itself on macOS and, elsewhere, evaluates the saved program op by
    op with torch (see :func:`run_coreml`); the JSON records which.

    Parameters
    ----------
    compute_precision : "float32" (default, matches PyTorch to float32 round-off) or "float16"
        (smaller, faster on GPU/ANE; ~1e-3 relative error)
    max_batch : largest batch of the flexible input; 1 for a fixed (1, 1, 80, 16) input
    capture : "trace" or "export", how the PyTorch graph is captured for coremltools

    Raises
    ------
    ConfigError (coremltools missing, bad precision/max_batch), CheckpointError, OutputError
    """
    ct = _import_coremltools()
    if compute_precision not in _PRECISIONS:
        raise ConfigError(f"compute_precision must be one of {_PRECISIONS}, got {compute_precision!r}")
    if isinstance(max_batch, bool) or not isinstance(max_batch, int) or max_batch < 1:
        raise ConfigError(f"max_batch must be a positive integer, got {max_batch!r}")
    if capture not in ("trace", "export"):
        raise ConfigError(f"capture must be 'trace' or 'export', got {capture!r}")
    preset = _check_preset(preset)
    resolved = _resolve(encoder_or_checkpoint)
    dest = _target(path, ".mlpackage", overwrite=overwrite)
    encoder, provenance = resolved.encoder, dict(resolved.provenance)
    folded = fold_batchnorm(encoder)
    windows = verification_windows(min(verify_batch, max_batch))
    fp16 = compute_precision == "float16"
    batch_meta: Any = 1 if max_batch == 1 else f"1..{max_batch}"

    def build(tmp: Path) -> dict[str, Any]:
        with _quiet(), _converting(f"CoreML conversion (capture={capture!r})", "coremltools"):
            example = torch.zeros(min(2, max_batch), *INPUT_SHAPE)
            if capture == "trace":
                program = torch.jit.trace(folded, example, check_trace=False)
            else:
                dynamic = None if max_batch == 1 else ({0: torch.export.Dim("batch", min=1, max=max_batch)},)
                program = torch.export.export(folded, (example,), dynamic_shapes=dynamic).run_decompositions({})
            batch_dim = 1 if max_batch == 1 else ct.RangeDim(lower_bound=1, upper_bound=max_batch, default=1)
            mlmodel = ct.convert(
                program,
                inputs=[ct.TensorType(name=INPUT_NAME, shape=(batch_dim, *INPUT_SHAPE), dtype=np.float32)],
                outputs=[ct.TensorType(name=OUTPUT_NAME, dtype=np.float32)],
                convert_to="mlprogram",
                compute_precision=ct.precision.FLOAT16 if fp16 else ct.precision.FLOAT32,
                minimum_deployment_target=ct.target.iOS15,
            )
        meta = _base_meta("coreml", provenance, preset, batch_meta, True, _versions("coremltools"))
        meta["compute_precision"] = compute_precision
        meta["minimum_deployment_target"] = "iOS15 / macOS12"
        meta["captured_with"] = "torch.jit.trace" if capture == "trace" else "torch.export"
        mlmodel.author = _AUTHOR
        mlmodel.version = __version__
        mlmodel.short_description = _DESCRIPTION
        mlmodel.input_description[INPUT_NAME] = "mel windows float32 (batch, 1, 80, 16), values in [-4, 4]"
        mlmodel.output_description[OUTPUT_NAME] = "audio features float32 (batch, 512)"
        mlmodel.user_defined_metadata.update({
            "preset": preset,
            "input_shape": f"({batch_meta}, 1, 80, 16)",
            "output_shape": f"({batch_meta}, 512)",
            "compute_precision": compute_precision,
            "batchnorm_folded": "true",
            "library_version": __version__,
            "state_dict_sha256": provenance["state_dict_sha256"],
        })
        with _quiet():
            mlmodel.save(os.fspath(tmp))
        info = describe_coreml(tmp)
        if (list(info["inputs"]) != [INPUT_NAME] or list(info["outputs"]) != [OUTPUT_NAME]
                or info["inputs"][INPUT_NAME]["shape"] != [1, *INPUT_SHAPE]):
            raise OutputError(f"coremltools produced an unexpected interface: {info['inputs']} -> {info['outputs']}")
        meta["ops"] = info["ops"]
        if verify:
            backend = "coreml" if _coreml_can_predict() else "interpreter"
            runtime = ("Core ML (macOS, CPU_ONLY)" if backend == "coreml" else
                       "saved ML Program interpreted op by op with torch (no Core ML on this OS"
                       + ("; fp16 emulated by rounding every fp16 value" if fp16 else "") + ")")
            ver = _verification(runtime, lambda x: run_coreml(tmp, x, backend=backend), folded,
                                "fold_batchnorm(encoder) in PyTorch float32", encoder, windows,
                                FLOAT16_REL_TOL if fp16 else FLOAT32_REL_TOL)
            _fail_unverified("coreml", ver)
            meta["verification"] = ver
        return meta

    return _finish("coreml", dest, _write_atomically(dest, build, overwrite=overwrite))


# --------------------------------------------------------------------------- all


def _check_formats(formats: "str | Iterable[str]") -> tuple[str, ...]:
    items = [formats] if isinstance(formats, str) else list(formats)
    out: list[str] = []
    for item in items:
        names = EXPORT_FORMATS if item == "all" else (item,)
        for name in names:
            if name not in EXPORT_FORMATS:
                raise ConfigError(f"unknown export format {name!r}, expected one of {(*EXPORT_FORMATS, 'all')}")
            if name not in out:
                out.append(name)
    if not out:
        raise ConfigError("no export format given, expected one of onnx, torchscript, coreml, all")
    return tuple(out)


def export_all(
    checkpoint: Any,
    output_dir: "str | os.PathLike",
    *,
    formats: "str | Iterable[str]" = "all",
    compute_precision: str = "float32",
    max_batch: int = 64,
    preset: str = "synctalk_2d",
    verify: bool = True,
    overwrite: bool = False,
) -> list[ExportResult]:
    """Export ``checkpoint`` to ``output_dir/encoder.{onnx,pt,mlpackage}`` (+ ``.json`` each).

    Parameters
    ----------
    checkpoint : checkpoint path, state dict, AudioEncoder, or "seeded" (untrained weights)
    output_dir : created if missing
    formats : "all", one of ``EXPORT_FORMATS`` or an iterable of them
    compute_precision, max_batch : CoreML options, see :func:`export_coreml`
    preset, verify, overwrite : as in :func:`export_onnx`

    Every needed package and option is checked before anything is written.

    Returns
    -------
    list of ExportResult, in ``formats`` order
    """
    fmts = _check_formats(formats)
    for fmt in fmts:
        if fmt == "onnx":
            _require("onnx", fmt)
            if verify:
                _require("onnxruntime", fmt)
        elif fmt == "coreml":
            _import_coremltools()
    if compute_precision not in _PRECISIONS:
        raise ConfigError(f"compute_precision must be one of {_PRECISIONS}, got {compute_precision!r}")
    if isinstance(max_batch, bool) or not isinstance(max_batch, int) or max_batch < 1:
        raise ConfigError(f"max_batch must be a positive integer, got {max_batch!r}")
    _check_preset(preset)
    out_dir = Path(output_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise OutputError(f"output folder {out_dir} is a file")
    for fmt in fmts:  # the output rule for every artifact, before any work
        _check_target(out_dir / FILENAMES[fmt], Path(FILENAMES[fmt]).suffix, overwrite=overwrite)
    resolved = _resolve(checkpoint)
    results = []
    for fmt in fmts:
        dest = out_dir / FILENAMES[fmt]
        if fmt == "onnx":
            results.append(export_onnx(resolved, dest, preset=preset, verify=verify, overwrite=overwrite))
        elif fmt == "torchscript":
            results.append(export_torchscript(resolved, dest, preset=preset, verify=verify, overwrite=overwrite))
        else:
            results.append(export_coreml(resolved, dest, compute_precision=compute_precision, max_batch=max_batch,
                                         preset=preset, verify=verify, overwrite=overwrite))
    return results
