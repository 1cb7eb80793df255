"""Reference datasets for ports (iOS/CoreML, Go, C++…): the writer and the reader.

A *reference dataset* (the seed's ``process_and_save_all_frames``) is one directory::

    mel_spectrogram.npy          float64 (80, T)
    mel_windows.npy              float32 (N, 80, 16)
    audio_features_raw.npy       float32 (N, 512)
    audio_features_padded.npy    float32 (N+2, 512)
    frames/frame_{i:05d}_window.npy     float32 (16, 512)    for i in 0 … N+1
    frames/frame_{i:05d}_reshaped.npy   float32 mode shape   (ave: (32, 16, 16))
    metadata.json                versions, config, shapes, value ranges, sha256 of every file, weights
    summary.json                 the short human summary
    VALIDATION_INSTRUCTIONS.json what to compare, tolerances, shapes, frame count, recipes

:func:`write_features` writes the compact variant (no windows; the frames, when asked for, in
one ``audio_frames.npy`` (N+2, *mode shape)). The port checker, :func:`validate`, lives in
:mod:`synctalk_audio.validation` and is re-exported here.

Writing is atomic (:func:`synctalk_audio._io.atomic_dir`): everything is built in a hidden temp
directory next to the target and renamed into place; an existing non-empty target is replaced
only with ``overwrite=True`` and only when it is a dataset of the same kind written by
synctalk-audio. Reading treats every file as hostile (regular files only, ``.npy`` headers
checked against the file length, bounded JSON, no path from ``metadata.json`` followed).
"""

from __future__ import annotations

import hashlib
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from types import MappingProxyType
from typing import Any, Callable, Iterator, Mapping

import numpy as np

from . import _io
from ._io import atomic_dir, check_dir_target, file_sha256, library_versions, load_npy, read_json
from .config import CONTEXT_MODES, DEFAULT_RADIUS, MODES, RADII, check_flag, mode_shape
from .context import context_windows, reshape_for_mode
from .errors import ConfigError, OutputError

__all__ = [
    "FORMAT_VERSION",
    "ARTIFACTS",
    "ARRAY_FILES",
    "FRAMES_DIR",
    "STACKED_FRAMES",
    "METADATA",
    "SUMMARY",
    "INSTRUCTIONS",
    "Tolerance",
    "DEFAULT_TOLERANCES",
    "SEEDED_STATE_DICT_SHA256",
    "UNTRAINED_NOTE",
    "check_output_dir",
    "atomic_directory",
    "weights_info",
    "write_reference",
    "write_features",
    "read_reference",
    "read_metadata",
    "frame_files",
    "input_dir",
    # from synctalk_audio.validation, served lazily (it imports this module)
    "ArtifactResult",
    "ValidationReport",
    "validate",
]

FORMAT_VERSION = 1
#: ``state_dict_sha256(seeded_state_dict(0))`` — also in golden/manifest.json.
SEEDED_STATE_DICT_SHA256 = "4756955eb8fe86657bebc326ade43a65229e15e6a913150c330c943cc07b6683"
UNTRAINED_NOTE = (
    "UNTRAINED seeded weights (synctalk_audio.encoder.seeded_state_dict(0)): these features check "
    "the recipe bit for bit, but they are NOT the features of the trained audio_visual_encoder.pth "
    "and must not drive a real U-Net."
)

#: Top-level array files, by artifact name.
ARRAY_FILES: Mapping[str, str] = MappingProxyType({
    "mel_spectrogram": "mel_spectrogram.npy",
    "mel_windows": "mel_windows.npy",
    "audio_features_raw": "audio_features_raw.npy",
    "audio_features_padded": "audio_features_padded.npy",
})
#: The upstream file of each non-ave mode (what Ultralight/SyncTalk training code loads).
MODE_FILES: Mapping[str, str] = MappingProxyType({"hubert": "aud_hu.npy", "wenet": "aud_wenet.npy"})
STACKED_FRAMES = "audio_frames.npy"
FRAMES_DIR = "frames"
# at most 9 digits: a forged name of 5,000 digits must not reach int()
_FRAME_RE = re.compile(r"^frame_(\d{5,9})_(window|reshaped)\.npy$")
METADATA, SUMMARY, INSTRUCTIONS = "metadata.json", "summary.json", "VALIDATION_INSTRUCTIONS.json"
_MAX_SMALL_JSON = 1 << 20  # summary.json, VALIDATION_INSTRUCTIONS.json: a few KB when we write them
_MAX_FRAMES = 10 ** 9
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")

#: The artifacts :func:`validate` compares, in order.
ARTIFACTS: tuple[str, ...] = (*ARRAY_FILES, "fbank", "frames_window", "frames_reshaped")


def artifact_files(mode: str) -> Mapping[str, str]:
    """artifact name → file name of a dataset of ``mode``: ave the four arrays above; hubert
    ``aud_hu.npy`` (T', 2, 1024); wenet ``fbank.npy`` (F, 80) and ``aud_wenet.npy`` (K, 16, 512)
    — as ``audio_features_raw``, the upstream files that training code reads unchanged."""
    if mode == "hubert":
        return MappingProxyType({"audio_features_raw": MODE_FILES["hubert"]})
    if mode == "wenet":
        return MappingProxyType({"fbank": "fbank.npy", "audio_features_raw": MODE_FILES["wenet"]})
    return ARRAY_FILES



@dataclass(frozen=True)
class Tolerance:
    """Pass rule of one artifact: ``max|candidate − reference| <= atol + rtol · max|reference|``.

    ``rtol`` is relative to the artifact's largest absolute reference value (not element-wise:
    about half of the features are exactly 0 after the ReLU).
    """

    atol: float
    rtol: float = 0.0

    def __post_init__(self) -> None:
        for name in ("atol", "rtol"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise ConfigError(f"tolerance {name} must be a finite number >= 0, got {value!r}")

    def bound(self, ref_max_abs: float) -> float:
        """The largest allowed absolute difference for a reference whose max |value| is given."""
        return float(self.atol + self.rtol * ref_max_abs)


# Float32 features of magnitude ~100 differ by ~1e-4 absolute (~1e-6 of the max) between
# runtimes, batch sizes or a folded BatchNorm; rtol 1e-5 leaves a 10x margin while any recipe
# error (a wrong window offset, a missing BN, N instead of N+2) is off by O(1).
_FEATURE_TOL = Tolerance(atol=1e-5, rtol=1e-5)
#: Per-artifact pass rules (read-only; pass ``validate(tolerances=...)`` to change them).
DEFAULT_TOLERANCES: Mapping[str, Tolerance] = MappingProxyType({
    "mel_spectrogram": Tolerance(atol=1e-5),
    "mel_windows": Tolerance(atol=1e-5),
    "audio_features_raw": _FEATURE_TOL,
    "audio_features_padded": _FEATURE_TOL,
    "frames_window": _FEATURE_TOL,
    "frames_reshaped": _FEATURE_TOL,
    # wenet's log-mel fbank: float32 FFT round-off moves log energies of bands ~10 orders below
    # their frame's peak by up to ~0.02 (measured between torchaudio and this library); the
    # features the encoder makes of them stay within the feature tolerance.
    "fbank": Tolerance(atol=5e-2),
})


def __getattr__(name: str) -> Any:
    """``validate``, ``ValidationReport`` and ``ArtifactResult`` live in :mod:`.validation`."""
    if name in ("validate", "ValidationReport", "ArtifactResult"):
        from . import validation

        return getattr(validation, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# --------------------------------------------------------------------------- output checks


def check_output_dir(target: "str | os.PathLike", *, overwrite: bool = False, kind: str | None = None) -> bool:
    """Check that a dataset may be written to ``target``; True if it would replace one.

    Call it before long work to fail fast. ``kind`` (``"reference"``, ``"features"``,
    ``"demo"``) must match an existing dataset's; None accepts any synctalk-audio dataset. Raises
    :class:`OutputError` as described in :func:`synctalk_audio._io.check_dir_target`.
    """
    return check_dir_target(target, overwrite=overwrite, kind=kind)


def atomic_directory(target: "str | os.PathLike", *, overwrite: bool = False,
                     kind: str | None = None) -> "Iterator[Path]":
    """Context manager: build a directory in a temp sibling, rename it to ``target`` at the end.

    The output rule of :func:`synctalk_audio._io.atomic_dir`: a missing or empty ``target`` is
    filled; a non-empty one is replaced only with ``overwrite=True`` and only when it holds a
    ``metadata.json`` written by synctalk-audio (of the same ``kind`` when given); a file in the
    way is an error. On any exception the temp directory is removed and ``target`` is left as it
    was.
    """
    return atomic_dir(target, overwrite=overwrite, kind=kind)


# --------------------------------------------------------------------------- writing


class _HashingFile:
    """Write-through file object that sha256-hashes what is written (np.save streams into it)."""

    def __init__(self, fh: Any) -> None:
        self._fh = fh
        self.sha256 = hashlib.sha256()

    def write(self, data: Any) -> int:
        self.sha256.update(data)
        return self._fh.write(data)

    def flush(self) -> None:
        self._fh.flush()


def _save(root: Path, rel: str, arr: np.ndarray, checksums: dict[str, str]) -> None:
    """``np.save`` into ``root/rel`` (inside a temp directory being built) and record its sha256."""
    with open(root / rel, "wb") as fh:
        hf = _HashingFile(fh)
        np.save(hf, arr, allow_pickle=False)
    checksums[rel] = hf.sha256.hexdigest()


def weights_info(checkpoint: Any, *, encoder: Any = None) -> dict[str, Any]:
    """Describe the encoder weights for ``metadata.json``: hashes and an untrained-weights note.

    Parameters
    ----------
    checkpoint : path, "seeded", state dict, AudioEncoder, OnnxEncoder, an engine of the seam, or None
        A path also gets the file's sha256. ``state_dict_sha256`` is the hash of the weights as
        loaded into the AudioEncoder (keys without prefix, the golden manifest's definition).
        For an .onnx encoder it and the untrained flag come from the export's
        ``<model>.json`` when that matches the model (None otherwise). For any other engine
        they come from its ``provenance`` (``state_dict_sha256``, ``untrained_seeded`` /
        ``untrained``, ``checkpoint``, ``checkpoint_sha256``).
    encoder : AudioEncoder, optional
        The encoder already loaded from ``checkpoint``: hashed instead of loading it again.

    Returns
    -------
    dict with ``state_dict_sha256``, ``untrained_seeded`` (bool or None) and ``note``
    """
    if checkpoint is None:
        return {"state_dict_sha256": None, "untrained_seeded": None,
                "note": "weights not recorded (no checkpoint was given to the writer)"}
    from .runtime import OnnxEncoder, is_onnx_model, load_onnx_encoder

    if isinstance(checkpoint, OnnxEncoder) or is_onnx_model(checkpoint):
        if not isinstance(checkpoint, OnnxEncoder) and not isinstance(encoder, OnnxEncoder):
            encoder = load_onnx_encoder(checkpoint, device="cpu", threads=1)
        return _onnx_weights_info(checkpoint if isinstance(checkpoint, OnnxEncoder) else encoder)
    from .engines import is_engine

    if is_engine(checkpoint):
        return _engine_weights_info(checkpoint)
    from .encoder import AudioEncoder, load_encoder, state_dict_sha256

    from .engines import SEEDED

    info: dict[str, Any] = {}
    if isinstance(checkpoint, str) and checkpoint == SEEDED:  # as every entry point takes it
        from .seeded import seeded_state_dict

        if not isinstance(encoder, AudioEncoder):
            encoder = load_encoder(seeded_state_dict(0), device="cpu")
        info["checkpoint"] = SEEDED
    elif isinstance(checkpoint, (str, os.PathLike)):
        path = Path(checkpoint)
        if not isinstance(encoder, AudioEncoder):
            encoder = load_encoder(path, device="cpu")
        info["checkpoint"] = str(path)
        info["checkpoint_sha256"] = file_sha256(path)
    elif isinstance(checkpoint, AudioEncoder):
        encoder = checkpoint
    elif isinstance(checkpoint, Mapping):
        if not isinstance(encoder, AudioEncoder):
            encoder = load_encoder(checkpoint, device="cpu")
    else:
        raise ConfigError(
            f"checkpoint must be a path, a state dict or an AudioEncoder, got {type(checkpoint).__name__}"
        )
    digest = state_dict_sha256(encoder.audio_encoder.state_dict())
    seeded = digest == SEEDED_STATE_DICT_SHA256
    info["state_dict_sha256"] = digest
    info["untrained_seeded"] = seeded
    info["note"] = UNTRAINED_NOTE if seeded else "checkpoint weights (not the seeded untrained ones)"
    return info


#: What metadata.json says of an UNTRAINED hubert/wenet stand-in model.
STANDIN_NOTE = ("UNTRAINED stand-in model (synctalk_audio.hubert.write_standin_hubert / "
                "synctalk_audio.wenet.write_standin_wenet_onnx): these features check the recipe, but they are NOT "
                "the features of a trained model and must not drive a real U-Net.")


def _engine_weights_info(engine: Any) -> dict[str, Any]:
    prov = dict(getattr(engine, "provenance", None) or {})
    seeded = prov.get("untrained_seeded", prov.get("untrained"))
    if seeded:
        note = UNTRAINED_NOTE if getattr(engine, "mode", "ave") == "ave" else STANDIN_NOTE
    elif prov:
        note = "checkpoint weights (not the seeded untrained ones)"
    else:
        note = f"{type(engine).__name__} without provenance: which weights it holds is not recorded"
    info = {key: prov[key] for key in ("checkpoint", "checkpoint_sha256", "format") if key in prov}
    if "checkpoint" not in info and (prov.get("source") or prov.get("path")):
        info["checkpoint"] = str(prov.get("source") or prov.get("path"))
    for key in ("sha256", "weights_sha256", "config_sha256"):  # wenet .onnx / hubert identities
        if key in prov:
            info[key] = prov[key]
    info.update({"state_dict_sha256": prov.get("state_dict_sha256"), "untrained_seeded": seeded, "note": note})
    return info


def _onnx_weights_info(encoder: Any) -> dict[str, Any]:
    prov = encoder.provenance
    seeded = prov.get("untrained_seeded")
    if seeded:
        note = UNTRAINED_NOTE
    elif prov:
        note = "checkpoint weights (not the seeded untrained ones), exported to ONNX"
    else:
        note = (f"ONNX encoder without matching export metadata ({encoder.path.name}.json): "
                "which weights it holds is not recorded")
    return {"checkpoint": str(encoder.path), "checkpoint_sha256": encoder.sha256, "format": "onnx",
            "state_dict_sha256": prov.get("state_dict_sha256"), "untrained_seeded": seeded, "note": note}


def _stats(arr: np.ndarray) -> dict[str, float]:
    if arr.size == 0:
        return {"min": 0.0, "max": 0.0, "max_abs": 0.0, "mean": 0.0}
    lo, hi = float(arr.min()), float(arr.max())
    return {"min": lo, "max": hi, "max_abs": max(abs(lo), abs(hi)), "mean": float(arr.mean(dtype=np.float64))}


def _write_frames(root: Path, ctx: Any, mode: str, checksums: dict[str, str], progress: bool) -> None:
    """frames/frame_{i:05d}_window.npy (16, 512) and _reshaped.npy (mode shape) for every frame."""
    (root / FRAMES_DIR).mkdir()
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=int(ctx.shape[0]), unit="frame", desc="writing frames", leave=False)
    for i in range(int(ctx.shape[0])):
        win = ctx[i]
        _save(root, f"{FRAMES_DIR}/frame_{i:05d}_window.npy", win, checksums)
        _save(root, f"{FRAMES_DIR}/frame_{i:05d}_reshaped.npy", reshape_for_mode(win, mode), checksums)
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()


def _write_into(
    root: Path,
    result: Any,
    *,
    kind: str,
    output_kind: str,
    checkpoint: Any,
    progress: bool,
    weights: Mapping[str, Any] | None = None,
    extra_meta: Mapping[str, Any] | None = None,
    stacked_frames: bool = False,
) -> dict[str, Any]:
    checksums: dict[str, str] = {}
    features = np.asarray(result.features)
    padded = np.asarray(result.padded)
    if result.mode == "ave":
        mel = np.asarray(result.mel)
        arrays = {"mel_spectrogram": mel, "audio_features_raw": features, "audio_features_padded": padded}
        if kind != "features":  # the compact variant leaves the windows out (they are mel columns)
            arrays["mel_windows"] = np.asarray(result.windows)
        names = dict(ARRAY_FILES)
    else:  # hubert/wenet: the upstream file, read unchanged by existing training code (+ wenet's fbank)
        arrays = {"audio_features_raw": features}
        names = dict(artifact_files(result.mode))
        if "fbank" in names:
            arrays = {"fbank": np.asarray(result.mel), **arrays}
    for name, arr in arrays.items():
        _save(root, names[name], arr, checksums)
    n_frames = int(padded.shape[0])
    radius = int(getattr(result, "radius", DEFAULT_RADIUS))
    ctx = context_windows(padded, context=result.context, radius=radius)
    if kind == "features" and stacked_frames:
        _save(root, STACKED_FRAMES, reshape_for_mode(ctx, result.mode), checksums)
    elif kind == "reference":
        _write_frames(root, ctx, result.mode, checksums, progress)

    meta: dict[str, Any] = dict(result.metadata)
    meta.setdefault("mode", result.mode)
    meta.setdefault("fps", result.fps)
    meta.setdefault("context", result.context)
    meta.setdefault("radius", radius)
    meta["library"] = _io.LIBRARY
    meta["output_kind"] = output_kind
    meta["n_frames"] = n_frames
    shapes = dict(meta.get("shapes") or {})
    shapes.update({"audio_features_raw": list(features.shape), "audio_features_padded": list(padded.shape),
                   "frame_window": list(ctx.shape[1:]), "frame_reshaped": list(mode_shape(result.mode, radius))})
    if "fbank" in arrays:
        shapes["fbank"] = list(arrays["fbank"].shape)
    if result.mode == "ave":
        meta["n_mel_frames"] = int(mel.shape[1])
        meta["n_windows"] = int(features.shape[0])
        shapes.update({"mel_spectrogram": list(mel.shape),
                       "mel_windows": [int(features.shape[0]), int(mel.shape[0]), 16]})
    meta["shapes"] = shapes
    meta["value_ranges"] = {names[name]: _stats(arr) for name, arr in arrays.items()}
    meta["dataset"] = {
        "kind": kind,
        "format_version": FORMAT_VERSION,
        "frames": {"reference": f"{FRAMES_DIR}/frame_{{i:05d}}_window.npy and _reshaped.npy, {n_frames} each",
                   "features": (f"{STACKED_FRAMES} ({n_frames}, {', '.join(map(str, mode_shape(result.mode, radius)))})"
                                if stacked_frames else "not written (views of audio_features_padded: "
                                                       "frames_for_mode, or write_features(frames=True))"),
                   "intermediates": "not written"}[kind],
        "frames_value_range": ("rows of audio_features_padded plus zero rows outside the padded range "
                               "(context='zeros'): its range widened to include 0"),
    }
    meta["versions"] = library_versions()
    meta["weights"] = dict(weights) if weights is not None else weights_info(checkpoint)
    if extra_meta:
        meta.update(extra_meta)
    meta["sha256"] = dict(sorted(checksums.items()))
    _io.write_json(root / METADATA, meta, atomic=False)
    if kind == "reference":
        _io.write_json(root / SUMMARY, _summary(meta, len(checksums)), atomic=False)
        from .validation import instructions  # it imports this module

        _io.write_json(root / INSTRUCTIONS, instructions(meta), atomic=False)
    return meta


def _summary(meta: Mapping[str, Any], n_files: int) -> dict[str, Any]:
    return {
        "source": meta.get("source"),
        "duration_s": meta.get("duration_s"),
        "mode": meta["mode"],
        "fps": meta["fps"],
        "context": meta["context"],
        "n_mel_frames": meta.get("n_mel_frames"),
        "n_windows": meta.get("n_windows"),
        "n_frames": meta["n_frames"],
        "n_npy_files": n_files,
        "weights": meta["weights"]["note"],
        "state_dict_sha256": meta["weights"]["state_dict_sha256"],
        "shapes": meta["shapes"],
    }


def write_reference(
    result: Any,
    output_dir: "str | os.PathLike",
    *,
    frames: bool = True,
    checkpoint: Any = None,
    weights: Mapping[str, Any] | None = None,
    overwrite: bool = False,
    progress: bool = False,
    extra_meta: Mapping[str, Any] | None = None,
    extra_files: Callable[[Path], None] | None = None,
    output_kind: str = "reference",
) -> dict[str, Any]:
    """Write ``result`` (a :class:`~synctalk_audio.pipeline.Features`) as a reference dataset.

    With ``frames=True`` the whole dataset (module docstring): the four arrays, two files per
    output frame (N+2 frames), ``metadata.json``, ``summary.json`` and
    ``VALIDATION_INSTRUCTIONS.json``. With ``frames=False`` only the four arrays and
    ``metadata.json`` (the seed's ``save_intermediates``).

    Parameters
    ----------
    result : Features
        From :func:`~synctalk_audio.pipeline.pipeline`.
    output_dir : path
        Created atomically; see :func:`atomic_directory` for existing directories.
    checkpoint : path, state dict, AudioEncoder or None
        The weights used, recorded in ``metadata.json`` (hashes; a note when they are the
        untrained seeded ones). A path also gets the file's sha256.
    weights : mapping, optional
        A precomputed :func:`weights_info` (skips hashing ``checkpoint`` again).
    overwrite : bool
        Replace an existing non-empty directory previously written by synctalk-audio as the same
        ``output_kind``.
    progress : bool
        A tqdm bar while the frame files are written.
    extra_meta : mapping, optional
        Added to ``metadata.json``.
    extra_files : callable(tmp_dir), optional
        Writes more files into the directory before it is renamed into place (the demo's PNG).
    output_kind : str
        What ``metadata.json`` records as ``output_kind`` (``"reference"``; the CLI demo:
        ``"demo"``): an ``overwrite`` replaces only an output of the same kind.

    Returns
    -------
    dict, the content of ``metadata.json`` (``sha256`` maps every written .npy to its hash)

    Raises
    ------
    OutputError
        Target is a file or under a file, non-empty without ``overwrite``, or the write failed
        (nothing is left behind).
    """
    return _write(result, output_dir, kind="reference" if frames else "intermediates", output_kind=output_kind,
                  checkpoint=checkpoint, weights=weights, overwrite=overwrite, progress=progress,
                  extra_meta=extra_meta, extra=extra_files)


def write_features(
    result: Any,
    output_dir: "str | os.PathLike",
    *,
    checkpoint: Any = None,
    weights: Mapping[str, Any] | None = None,
    overwrite: bool = False,
    frames: bool = False,
) -> dict[str, Any]:
    """Write the pipeline outputs compactly (what ``synctalk-audio features`` writes).

    ``mel_spectrogram.npy`` (80, T), ``audio_features_raw.npy`` (N, 512),
    ``audio_features_padded.npy`` (N+2, 512) (upstream's ``aud_ave.npy``) and
    ``metadata.json``; with ``frames=True`` also ``audio_frames.npy`` (N+2, *mode shape),
    streamed from the zero-copy frame view, never materialised in memory (it is 16× the
    padded features: 2.9 GB for an hour, so it is opt-in). Atomic, like
    :func:`write_reference`; ``checkpoint``, ``weights`` and ``overwrite`` as there (an
    ``overwrite`` replaces only a features directory).

    Returns
    -------
    dict, the content of ``metadata.json``
    """
    return _write(result, output_dir, kind="features", output_kind="features", checkpoint=checkpoint,
                  weights=weights, overwrite=overwrite, progress=False, stacked_frames=frames)


def _write(result: Any, output_dir: Any, *, kind: str, output_kind: str, checkpoint: Any, overwrite: bool,
           progress: bool, weights: Mapping[str, Any] | None = None, extra_meta: Mapping[str, Any] | None = None,
           extra: Callable[[Path], None] | None = None, stacked_frames: bool = False) -> dict[str, Any]:
    for attr in ("mel", "features", "padded", "mode", "context", "metadata"):
        if not hasattr(result, attr):
            raise ConfigError(f"result must be a Features from pipeline(), got {type(result).__name__}")
    if result.mode not in MODES:
        raise ConfigError(f"result has an unknown mode {result.mode!r}")
    overwrite, stacked_frames = check_flag("overwrite", overwrite), check_flag("frames", stacked_frames)
    with atomic_dir(output_dir, overwrite=overwrite, kind=output_kind) as tmp:
        meta = _write_into(tmp, result, kind=kind, output_kind=output_kind, checkpoint=checkpoint,
                           progress=progress, weights=weights, extra_meta=extra_meta, stacked_frames=stacked_frames)
        if extra is not None:
            extra(tmp)
    return meta


# --------------------------------------------------------------------------- reading


def input_dir(path: "str | os.PathLike", what: str) -> Path:
    """``path`` as an existing directory to read (``what``: "reference", "candidate")."""
    p = Path(_io.check_path_type(path, f"{what} directory")).expanduser()
    if not os.path.lexists(p):
        raise OutputError(f"{what} directory not found: {p}")
    if not p.is_dir():
        raise OutputError(f"{what} path {p} is a file; expected a directory of .npy files")
    return p


def frame_files(root: Path) -> dict[str, dict[int, Path]]:
    """``{"window": {i: path}, "reshaped": {i: path}}`` for the files in ``root/frames``.

    Only names ``frame_{i:05d}_{window|reshaped}.npy`` count (i at most 9 digits); the files
    are not opened here.
    """
    found: dict[str, dict[int, Path]] = {"window": {}, "reshaped": {}}
    fdir = root / FRAMES_DIR
    if fdir.is_dir() and not fdir.is_symlink():
        for entry in fdir.iterdir():
            m = _FRAME_RE.match(entry.name)
            if m:
                found[m.group(2)][int(m.group(1))] = entry
    return found


def _nonneg_int(meta: Mapping[str, Any], key: str, path: Path) -> int | None:
    value = meta.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= _MAX_FRAMES:
        raise OutputError(f"{path}: {key} must be an integer in [0, {_MAX_FRAMES}], got {str(value)[:40]}")
    return value


def read_metadata(root: "str | os.PathLike", *, required: bool = True) -> dict[str, Any] | None:
    """``root/metadata.json`` read as hostile input and checked for the fields readers use.

    Returns
    -------
    dict, or None when it is absent and not ``required``

    Raises
    ------
    OutputError
        Missing (when required), not a regular file, too large or too deep, not a JSON object,
        or ``n_frames`` / ``sha256`` / ``weights`` of the wrong type.
    """
    path = Path(root) / METADATA
    if not os.path.lexists(path):
        if required:
            raise OutputError(f"{Path(root)} has no {METADATA}; not a synctalk-audio dataset")
        return None
    meta = read_json(path)
    if not isinstance(meta, dict):
        raise OutputError(f"{path} must hold a JSON object, got a JSON {type(meta).__name__}")
    for key in ("n_frames", "n_windows", "n_mel_frames"):
        _nonneg_int(meta, key, path)
    for key in ("sha256", "weights", "shapes"):
        if meta.get(key) is not None and not isinstance(meta[key], dict):
            raise OutputError(f"{path}: {key} must be a JSON object, got a JSON {type(meta[key]).__name__}")
    for key, allowed in (("mode", MODES), ("radius", RADII), ("context", CONTEXT_MODES)):
        value = meta.get(key)
        if value is not None and (isinstance(value, bool) or value not in allowed):
            raise OutputError(f"{path}: {key} {value!r} is not one of {', '.join(map(str, allowed))}")
    return meta


def _read_small_json(path: Path) -> dict[str, Any]:
    obj = read_json(path, max_bytes=_MAX_SMALL_JSON)
    if not isinstance(obj, dict):
        raise OutputError(f"{path} must hold a JSON object, got a JSON {type(obj).__name__}")
    return obj


def _listed_path(root: Path, rel: Any, digest: Any) -> Path:
    """The file a ``sha256`` entry names: only the dataset's own file names, never a path out."""
    meta_path = root / METADATA
    if not isinstance(rel, str) or not isinstance(digest, str) or not _SHA256_RE.match(digest):
        raise OutputError(f"{meta_path}: sha256 entry {str(rel)[:80]!r} must map a file name to a 64-hex digest")
    parts = PurePosixPath(rel).parts
    if (rel.startswith("/") or "\\" in rel or ".." in parts or len(parts) not in (1, 2)
            or (len(parts) == 2 and (parts[0] != FRAMES_DIR or not _FRAME_RE.match(parts[1])))
            or (len(parts) == 1 and rel not in (*ARRAY_FILES.values(), STACKED_FRAMES))):
        raise OutputError(f"{meta_path}: sha256 lists {rel[:80]!r}, which is not a file of a dataset "
                          "(absolute paths and '..' are never followed)")
    return root / rel


def _dataset_npys(root: Path) -> set[str]:
    """Relative names of the .npy files in ``root`` and ``root/frames``."""
    names = {p.name for p in root.iterdir() if p.name.endswith(".npy")}
    fdir = root / FRAMES_DIR
    if fdir.is_dir() and not fdir.is_symlink():
        names |= {f"{FRAMES_DIR}/{p.name}" for p in fdir.iterdir() if p.name.endswith(".npy")}
    return names


def _verify(root: Path, meta: Mapping[str, Any]) -> None:
    sums = meta.get("sha256") or {}
    if not sums:
        raise OutputError(f"{root / METADATA} lists no sha256 checksums to verify")
    paths = {rel: _listed_path(root, rel, digest) for rel, digest in sums.items()}
    extra = sorted(_dataset_npys(root) - set(paths))
    if extra:
        raise OutputError(f"{root / extra[0]} is not listed in metadata.json's sha256 "
                          f"({len(extra)} unlisted .npy file(s)); the dataset was modified")
    for rel, path in paths.items():
        if not os.path.lexists(path):
            raise OutputError(f"{path} is listed in metadata.json but missing")
        if file_sha256(path) != sums[rel]:
            raise OutputError(f"{path} does not match its sha256 in metadata.json (modified or corrupt)")


def _stack_frames(root: Path, paths: Mapping[int, Path], n_frames: int | None) -> np.ndarray:
    n = len(paths)
    if sorted(paths) != list(range(n)):
        raise OutputError(f"{root / FRAMES_DIR} has gaps: frame indices must be 0..{n - 1}")
    if n_frames is not None and n != n_frames:
        raise OutputError(f"{root / FRAMES_DIR} holds {n} frames of a kind, but metadata.json says n_frames = "
                          f"{n_frames} (extra or missing frame files)")
    frames = [load_npy(paths[i]) for i in range(n)]
    shapes = {(f.shape, f.dtype) for f in frames}
    if len(shapes) > 1:
        raise OutputError(f"{root / FRAMES_DIR} holds frames of different shapes or dtypes")
    return np.stack(frames)


def read_reference(reference_dir: "str | os.PathLike", *, frames: bool = True, verify: bool = False) -> dict[str, Any]:
    """Load a dataset written by :func:`write_reference` or :func:`write_features`.

    Every file is read as hostile input: regular files only, ``.npy`` headers checked against
    the file length, JSON bounded in size and depth; no path named in ``metadata.json`` is
    followed (only the dataset's own file names are accepted there).

    Parameters
    ----------
    reference_dir : path
    frames : bool
        Also load and stack the per-frame files (``frames_window`` (N+2, 16, 512),
        ``frames_reshaped`` (N+2, *mode shape)); for a 1-hour clip that is ~6 GB, so pass
        False to skip them. A stacked ``audio_frames.npy`` is loaded as ``frames_reshaped``.
        Their count must equal ``n_frames`` in ``metadata.json``.
    verify : bool
        Check every .npy against the sha256 in ``metadata.json``; a .npy that is not listed
        there is an error too.

    Returns
    -------
    dict with the arrays present (``mel_spectrogram``, ``mel_windows``, ``audio_features_raw``,
    ``audio_features_padded``, ``frames_window``, ``frames_reshaped``), ``metadata`` and, for a
    full dataset, ``summary`` and ``validation_instructions``.

    Raises
    ------
    OutputError
        Not a directory, unreadable or malformed files, gaps or extra frame files, a checksum
        mismatch.
    ShapeError
        A truncated or forged ``.npy``.
    """
    root = input_dir(reference_dir, "reference")
    meta = read_metadata(root)
    out: dict[str, Any] = {"metadata": meta}
    for key, name in (("summary", SUMMARY), ("validation_instructions", INSTRUCTIONS)):
        if os.path.lexists(root / name):
            out[key] = _read_small_json(root / name)
    if verify:
        _verify(root, meta)
    for name, fname in ARRAY_FILES.items():
        if os.path.lexists(root / fname):
            out[name] = load_npy(root / fname)
    if frames:
        n_frames = _nonneg_int(meta, "n_frames", root / METADATA)
        for kind_, paths in frame_files(root).items():
            if paths:
                out[f"frames_{kind_}"] = _stack_frames(root, paths, n_frames)
        if "frames_reshaped" not in out and os.path.lexists(root / STACKED_FRAMES):
            out["frames_reshaped"] = load_npy(root / STACKED_FRAMES)
    return out
