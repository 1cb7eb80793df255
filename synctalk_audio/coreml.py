"""CoreML export: ``encoder.mlpackage``, read back, run and verified on any OS.

:func:`export_coreml` converts the BatchNorm-folded encoder with coremltools to an ML Program
(iOS 15+); :func:`describe_coreml` summarises a saved package without macOS;
:func:`run_coreml` predicts with Core ML itself on macOS, elsewhere evaluates the saved
program op by op with torch. Shared export machinery (resolution, verification, the atomic
write) is in :mod:`synctalk_audio.export_common`; all names are re-exported by
:mod:`synctalk_audio.export`. coremltools (the ``export`` extra) is imported only on use.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
from importlib import import_module
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import torch
from torch import nn

from . import __version__
from .encoder import FEATURE_DIM, fold_batchnorm
from .errors import ConfigError, OutputError
from .export_common import (_AUTHOR, _DESCRIPTION, _PRECISIONS, FLOAT16_REL_TOL, FLOAT32_REL_TOL, INPUT_NAME,
                            INPUT_SHAPE, OUTPUT_NAME, ExportResult, _base_meta, _check_preset, _check_windows,
                            _converting, _fail_unverified, _finish, _max_abs_diff, _quiet, _require, _resolve, _target,
                            _torch_features, _verification, _versions, _write_atomically, verification_windows)

__all__ = ["export_coreml", "run_coreml", "verify_coreml", "describe_coreml"]


def _import_coremltools() -> Any:
    """Import coremltools without its import-time chatter (missing native proxies off macOS…)."""
    log = logging.getLogger("coremltools")
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        return _require("coremltools", "coreml")
    finally:
        log.setLevel(level)


def _check_options(compute_precision: str, max_batch: int) -> None:
    """``compute_precision`` and ``max_batch`` of :func:`export_coreml` (also checked by ``export_all``)."""
    if compute_precision not in _PRECISIONS:
        raise ConfigError(f"compute_precision must be one of {_PRECISIONS}, got {compute_precision!r}")
    if isinstance(max_batch, bool) or not isinstance(max_batch, int) or max_batch < 1:
        raise ConfigError(f"max_batch must be a positive integer, got {max_batch!r}")


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


def _drop_temp_package(mlmodel: Any) -> None:
    """Delete the temporary .mlpackage coremltools converted into (it removes it only at interpreter
    exit, which the CLI skips with os._exit: ~11 MB left in $TMPDIR per export)."""
    path = getattr(mlmodel, "package_path", None)
    if getattr(mlmodel, "is_temp_package", False) and path:
        shutil.rmtree(path, ignore_errors=True)


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
    _check_options(compute_precision, max_batch)
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
        _drop_temp_package(mlmodel)
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
