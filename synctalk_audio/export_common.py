"""What every export format shares: the interface, checkpoint resolution, verification, writing.

- the interface constants (``INPUT_NAME``, ``INPUT_SHAPE``, tolerances …) and :class:`ExportResult`;
- ``_resolve``: any checkpoint form → a private CPU float32 encoder and its provenance;
- :func:`verification_windows` and ``_verification``: run an artifact and compare it with PyTorch;
- the output rule and ``_write_atomically``: artifact + JSON built in a temp sibling, renamed
  into place.

The formats themselves live in :mod:`synctalk_audio.export` (ONNX, TorchScript, ``export_all``)
and :mod:`synctalk_audio.coreml`; see :mod:`synctalk_audio.export` for the tolerances.
torch is imported here; onnx, onnxruntime and coremltools only by the functions that need them.
"""

from __future__ import annotations

import contextlib
import copy
import io
import logging
import os
import platform
import re
import warnings
from dataclasses import dataclass, field
from importlib import import_module
from importlib import metadata as _metadata
from pathlib import Path
from types import MappingProxyType
from typing import Any, Callable, Mapping

import numpy as np
import torch
from torch import nn

from . import __version__
from .config import PRESETS
from . import _io
from ._io import file_sha256
from .encoder import FEATURE_DIM, AudioEncoder, load_encoder, seeded_state_dict, state_dict_sha256
from .errors import CheckpointError, ConfigError, OutputError, ShapeError, SyncTalkAudioError, install_hint

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
    from ._io import check_path_type

    dest = Path(check_path_type(path, "export path"))
    if dest.suffix != suffix:
        raise OutputError(f"export path {dest} must end with {suffix!r}")
    if dest.exists() and (dest.is_dir() != (suffix == ".mlpackage")):
        raise OutputError(f"cannot write {dest}: a {'folder' if dest.is_dir() else 'file'} is in the way")
    _check_dest(dest, overwrite=overwrite)
    _io.check_file_target(dest.with_name(dest.name + ".json"), overwrite=overwrite, is_ours=_is_our_export)
    return dest


def _target(path: "str | os.PathLike", suffix: str, *, overwrite: bool = False) -> Path:
    """:func:`_check_target` (the output folder is created when the export is written, and removed
    again if it fails: :func:`_io.scratch_dir`)."""
    return _check_target(path, suffix, overwrite=overwrite)


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
    except (SyncTalkAudioError, OSError):  # OSError: writing failed (a full disk), not the converter
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
