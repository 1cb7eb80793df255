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

This module holds the ONNX and TorchScript exports and :func:`export_all`; the CoreML export
is in :mod:`synctalk_audio.coreml` and what every format shares (checkpoint
resolution, verification, the atomic write) in :mod:`synctalk_audio.export_common`. Every
public name of both is importable from here.

torch is imported here (like encoder.py); onnx, onnxruntime and coremltools are imported only
by the functions that need them (the ``export`` extra).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import torch
from torch import nn

from . import __version__
from ._io import check_names_a_dir, file_sha256
from .encoder import fold_batchnorm
from .errors import ConfigError, OutputError
from .export_common import (_AUTHOR, _DESCRIPTION, EXPORT_FORMATS, FILENAMES, FLOAT16_REL_TOL, FLOAT32_REL_TOL,
                            INPUT_NAME, INPUT_SHAPE, ONNX_OPSET, OUTPUT_NAME, ExportResult, _base_meta, _check_preset,
                            _check_target, _check_windows, _converting, _fail_unverified, _finish, _max_abs_diff,
                            _quiet, _require, _resolve, _target, _torch_features, _verification, _version, _versions,
                            _write_atomically, verification_windows)
from .coreml import _check_options as _check_coreml_options
from .coreml import _import_coremltools, describe_coreml, export_coreml, run_coreml, verify_coreml

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


def _max_opset() -> "int | None":
    """The highest opset torch's TorchScript-based ONNX exporter writes (None when this torch does
    not say: the exporter's own error then)."""
    try:
        from torch.onnx import _constants
    except ImportError:
        return None
    top = getattr(_constants, "ONNX_TORCHSCRIPT_EXPORTER_MAX_OPSET", None)
    return top if isinstance(top, int) else None


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
    top = _max_opset()
    if isinstance(opset, bool) or not isinstance(opset, int) or opset < 17 or (top is not None and opset > top):
        raise ConfigError(f"ONNX opset must be an integer in [17, {top if top is not None else '…'}] (what this "
                          f"torch's TorchScript-based exporter writes), got {opset!r}")
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
    _check_coreml_options(compute_precision, max_batch)
    _check_preset(preset)
    check_names_a_dir(output_dir)
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
