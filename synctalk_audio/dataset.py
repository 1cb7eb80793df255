"""Reference datasets for ports (iOS/CoreML, Go, C++…) and the validator that checks a port.

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
one ``audio_frames.npy`` (N+2, *mode shape)); :func:`validate` accepts either layout on either
side.

Writing is atomic: everything is built in a hidden temp directory next to the target and
renamed into place, so a crash, a full disk or a permission error never leaves a
half-written dataset under the target name (see :func:`atomic_directory` for the policy on
existing targets).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import platform
import re
import shutil
import tempfile
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from importlib import metadata as _importlib_metadata
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping

import numpy as np

from . import __version__
from .config import MODES, mode_shape
from .context import context_windows, reshape_for_mode
from .errors import ConfigError, OutputError

__all__ = [
    "FORMAT_VERSION",
    "ARTIFACTS",
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

# Top-level array files, by artifact name.
_FILES = {
    "mel_spectrogram": "mel_spectrogram.npy",
    "mel_windows": "mel_windows.npy",
    "audio_features_raw": "audio_features_raw.npy",
    "audio_features_padded": "audio_features_padded.npy",
}
_STACKED_FRAMES = "audio_frames.npy"
_FRAMES_DIR = "frames"
_FRAME_RE = re.compile(r"^frame_(\d{5,})_(window|reshaped)\.npy$")
_META, _SUMMARY, _INSTRUCTIONS = "metadata.json", "summary.json", "VALIDATION_INSTRUCTIONS.json"

#: The artifacts :func:`validate` compares, in order.
ARTIFACTS: tuple[str, ...] = (*_FILES, "frames_window", "frames_reshaped")

_DESCRIPTIONS = {
    "mel_spectrogram": "normalised log-mel spectrogram, float64 (80, T), values in [-4, 4]",
    "mel_windows": "encoder inputs: 16-column mel windows cast to float32, (N, 80, 16)",
    "audio_features_raw": "encoder output, float32 (N, 512), one row per window",
    "audio_features_padded": "first/last row repeated, float32 (N+2, 512), one row per video frame",
    "frames_window": "per-frame context: rows [i-8, i+8) of the padded features, zeros outside, (16, 512)",
    "frames_reshaped": "per-frame U-Net audio input: the context window reshaped row-major to the mode shape",
}


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
DEFAULT_TOLERANCES: Mapping[str, Tolerance] = {
    "mel_spectrogram": Tolerance(atol=1e-5),
    "mel_windows": Tolerance(atol=1e-5),
    "audio_features_raw": _FEATURE_TOL,
    "audio_features_padded": _FEATURE_TOL,
    "frames_window": _FEATURE_TOL,
    "frames_reshaped": _FEATURE_TOL,
}


# --------------------------------------------------------------------------- atomic output


def _check_target(target: Path) -> None:
    for parent in [target, *target.parents]:
        if parent.exists() and not parent.is_dir():
            where = "is a file" if parent == target else f"lies under the file {parent}"
            raise OutputError(f"output path {target} {where}; expected a directory")


def _is_our_output(path: Path) -> bool:
    try:
        meta = json.loads((path / _META).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(meta, dict) and meta.get("library") == "synctalk-audio"


def check_output_dir(target: "str | os.PathLike", *, overwrite: bool = False) -> bool:
    """Check that :func:`atomic_directory` may write ``target``; True if it would replace one.

    Call it before long work to fail fast. Raises :class:`OutputError` as described there.
    """
    target = Path(target).expanduser()
    _check_target(target)
    if target.is_dir() and any(target.iterdir()):
        if not overwrite:
            raise OutputError(
                f"output directory {target} exists and is not empty; choose a new path or overwrite "
                "(overwrite=True, CLI --force)"
            )
        if not _is_our_output(target):
            raise OutputError(
                f"output directory {target} is not empty and was not written by synctalk-audio "
                "(no metadata.json of ours); refusing to replace it"
            )
        return True
    return False


@contextmanager
def atomic_directory(target: "str | os.PathLike", *, overwrite: bool = False) -> Iterator[Path]:
    """Build a directory in a temp sibling and rename it to ``target`` when the block succeeds.

    Policy for an existing ``target``:

    * missing or an empty directory → created by one rename;
    * a non-empty directory → :class:`OutputError`, unless ``overwrite=True`` **and** it holds a
      ``metadata.json`` written by synctalk-audio: then the old one is moved aside, the new one
      renamed into place, and the old one deleted (restored if the rename fails). A non-empty
      directory that synctalk-audio did not write is never replaced;
    * a file, or a path under a file → :class:`OutputError`.

    On any exception inside the block the temp directory is removed and the target is left as
    it was; ``OSError`` (disk full, permission denied…) becomes :class:`OutputError`.

    Yields
    ------
    Path of the temp directory to fill.
    """
    target = Path(target).expanduser()
    replace = check_output_dir(target, overwrite=overwrite)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    except OSError as exc:
        raise OutputError(f"cannot create output directory next to {target}: {exc.strerror or exc}") from None
    try:
        yield tmp
        os.chmod(tmp, 0o777 & ~_umask())
        if replace:
            old = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".old", dir=target.parent))
            os.rename(target, old / "d")
            try:
                os.rename(tmp, target)
            except BaseException:
                os.rename(old / "d", target)
                shutil.rmtree(old, ignore_errors=True)
                raise
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, target)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise OutputError(f"cannot write {target}: {exc.strerror or exc}") from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


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
    path = root / rel
    with open(path, "wb") as fh:
        hf = _HashingFile(fh)
        np.save(hf, arr, allow_pickle=False)
    checksums[rel] = hf.sha256.hexdigest()


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _version(dist: str) -> str | None:
    try:
        return _importlib_metadata.version(dist)
    except _importlib_metadata.PackageNotFoundError:
        return None


def _versions() -> dict[str, Any]:
    out: dict[str, Any] = {"synctalk_audio": __version__, "python": platform.python_version()}
    for dist in ("numpy", "scipy", "torch", "soundfile", "soxr"):
        out[dist] = _version(dist)
    return out


def weights_info(checkpoint: Any, *, encoder: Any = None) -> dict[str, Any]:
    """Describe the encoder weights for ``metadata.json``: hashes and an untrained-weights note.

    Parameters
    ----------
    checkpoint : path, state dict, AudioEncoder, OnnxEncoder or None
        A path also gets the file's sha256. ``state_dict_sha256`` is the hash of the weights as
        loaded into the AudioEncoder (keys without prefix, the golden manifest's definition).
        For an .onnx encoder it and the untrained flag come from the export's
        ``<model>.json`` when that matches the model (None otherwise).
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
    from .encoder import AudioEncoder, load_encoder, state_dict_sha256

    info: dict[str, Any] = {}
    if isinstance(checkpoint, (str, os.PathLike)):
        path = Path(checkpoint)
        if not isinstance(encoder, AudioEncoder):
            encoder = load_encoder(path, device="cpu")
        info["checkpoint"] = str(path)
        info["checkpoint_sha256"] = _file_sha256(path)
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


def _instructions(meta: Mapping[str, Any], kind: str) -> dict[str, Any]:
    n_frames = meta["n_frames"]
    shapes = meta["shapes"]
    ranges = meta["value_ranges"]
    artifacts: dict[str, Any] = {}
    for name in ARTIFACTS:
        tol = DEFAULT_TOLERANCES[name]
        if name in _FILES:
            entry = {"file": _FILES[name], "shape": shapes[name], "dtype": "float64" if name == "mel_spectrogram" else "float32"}
            ref_max = ranges[_FILES[name]]["max_abs"]
        else:
            kind_ = name.split("_", 1)[1]
            entry = {"files": f"{_FRAMES_DIR}/frame_{{i:05d}}_{kind_}.npy for i in 0..{n_frames - 1}",
                     "count": n_frames, "shape": shapes["frame_window" if kind_ == "window" else "frame_reshaped"],
                     "dtype": "float32"}
            if kind_ == "reshaped":
                entry["alternative"] = (f"one stacked file {_STACKED_FRAMES} of shape "
                                        f"[{n_frames}, {', '.join(map(str, shapes['frame_reshaped']))}]")
            ref_max = ranges[_FILES["audio_features_padded"]]["max_abs"]
        entry.update({
            "what": _DESCRIPTIONS[name],
            "atol": tol.atol,
            "rtol": tol.rtol,
            "max_abs_reference": ref_max,
            "max_abs_diff_allowed": tol.bound(ref_max),
        })
        artifacts[name] = entry
    return {
        "format": "synctalk-audio reference dataset",
        "format_version": FORMAT_VERSION,
        "weights": meta["weights"]["note"],
        "mode": meta["mode"],
        "fps": meta["fps"],
        "context": meta["context"],
        "n_mel_frames_T": meta["n_mel_frames"],
        "n_windows_N": meta["n_windows"],
        "n_frames": n_frames,
        "frame_count_rule": ("N = int((T - 16) / 80.0 * fps) + 2 windows; the padded features and the frames "
                             f"have N + 2 = {n_frames} rows: exactly one per output video frame"),
        "window_rule": "window i: start = int(80.0 * (i / fps)), end = start + 16; if end > T: end = T, start = T - 16",
        "context_rule": ("frame i = rows [i-8, i+8) of the padded features, zero rows outside [0, N+2) "
                         "(context='zeros', upstream), then a row-major reshape to the mode shape"),
        "pass_rule": ("for every artifact: same shape, all values finite, and "
                      "max|candidate - reference| <= atol + rtol * max|reference| "
                      "(max over the whole artifact; per-frame files: over all frames). "
                      "Frame files: exactly the indices 0..N+1, none missing, none extra."),
        "missing_artifacts": ("an artifact the candidate does not provide is reported as missing and does not "
                              "fail validation unless it is required (validate(required=...), CLI --require); "
                              "at least one artifact must be compared"),
        "how_to_compare": ("write your port's outputs as .npy files (little-endian, C order, any float dtype) "
                           "with the names above into a directory, then run: "
                           "synctalk-audio validate REFERENCE_DIR YOUR_DIR   (exit 0 pass, 1 fail; --json for a report)"),
        "artifacts": artifacts,
        "recipes": {
            "python": "ref = np.load(f); out = np.load(g); assert ref.shape == out.shape; "
                      "d = np.abs(out.astype(np.float64) - ref).max(); assert d <= atol + rtol * np.abs(ref).max()",
            "swift": "read the .npy (10-byte preamble \\x93NUMPY + header dict with 'descr' '<f4'/'<f8', "
                     "'shape'; data follows, C order) into [Float]/[Double]; compare with vDSP "
                     "(vDSP.subtract, vDSP.absolute, vDSP.maximum); or write .npy from Swift and use the CLI",
            "go": "github.com/kshedden/gonpy (NpyReader.GetFloat32/GetFloat64) or github.com/sbinet/npyio; "
                  "loop over values, track max |a-b| and max |ref|",
            "cpp": "cnpy (cnpy::npy_load(path).as_vec<float>()) or xtensor's xt::load_npy; "
                   "compute max |a-b| in double precision",
            "kotlin_java": "org.jetbrains.bio:npy (NpyFile.read(path)); or any .npy reader; compare in double",
        },
    }


def _write_into(
    root: Path,
    result: Any,
    *,
    kind: str,
    checkpoint: Any,
    progress: bool,
    weights: Mapping[str, Any] | None = None,
    extra_meta: Mapping[str, Any] | None = None,
    stacked_frames: bool = False,
) -> dict[str, Any]:
    checksums: dict[str, str] = {}
    mel = np.asarray(result.mel)
    features = np.asarray(result.features)
    padded = np.asarray(result.padded)
    arrays = {"mel_spectrogram": mel, "audio_features_raw": features, "audio_features_padded": padded}
    if kind != "features":  # the compact variant leaves the windows out (they are mel columns)
        arrays["mel_windows"] = np.asarray(result.windows)
    for name, arr in arrays.items():
        _save(root, _FILES[name], arr, checksums)
    n_frames = int(padded.shape[0])
    ctx = context_windows(padded, context=result.context)
    if kind == "features" and stacked_frames:
        _save(root, _STACKED_FRAMES, reshape_for_mode(ctx, result.mode), checksums)
    elif kind == "reference":
        (root / _FRAMES_DIR).mkdir()
        bar = None
        if progress:
            from tqdm import tqdm

            bar = tqdm(total=n_frames, unit="frame", desc="writing frames", leave=False)
        for i in range(n_frames):
            win = ctx[i]
            _save(root, f"{_FRAMES_DIR}/frame_{i:05d}_window.npy", win, checksums)
            _save(root, f"{_FRAMES_DIR}/frame_{i:05d}_reshaped.npy", reshape_for_mode(win, result.mode), checksums)
            if bar is not None:
                bar.update(1)
        if bar is not None:
            bar.close()

    meta: dict[str, Any] = dict(result.metadata)
    meta.setdefault("library", "synctalk-audio")
    meta.setdefault("mode", result.mode)
    meta.setdefault("fps", result.fps)
    meta.setdefault("context", result.context)
    meta["library"] = "synctalk-audio"
    meta["n_mel_frames"] = int(mel.shape[1])
    meta["n_windows"] = int(features.shape[0])
    meta["n_frames"] = n_frames
    shapes = dict(meta.get("shapes") or {})
    shapes.update({"mel_spectrogram": list(mel.shape), "mel_windows": [int(features.shape[0]), int(mel.shape[0]), 16],
                   "audio_features_raw": list(features.shape), "audio_features_padded": list(padded.shape),
                   "frame_window": list(ctx.shape[1:]), "frame_reshaped": list(mode_shape(result.mode))})
    meta["shapes"] = shapes
    meta["value_ranges"] = {_FILES[name]: _stats(arr) for name, arr in arrays.items()}
    meta["dataset"] = {
        "kind": kind,
        "format_version": FORMAT_VERSION,
        "frames": {"reference": f"{_FRAMES_DIR}/frame_{{i:05d}}_window.npy and _reshaped.npy, {n_frames} each",
                   "features": (f"{_STACKED_FRAMES} ({n_frames}, {', '.join(map(str, mode_shape(result.mode)))})"
                                if stacked_frames else "not written (views of audio_features_padded: "
                                                       "frames_for_mode, or write_features(frames=True))"),
                   "intermediates": "not written"}[kind],
        "frames_value_range": ("rows of audio_features_padded plus zero rows outside the padded range "
                               "(context='zeros'): its range widened to include 0"),
    }
    meta["versions"] = _versions()
    meta["weights"] = dict(weights) if weights is not None else weights_info(checkpoint)
    if extra_meta:
        meta.update(extra_meta)
    meta["sha256"] = dict(sorted(checksums.items()))
    _write_json(root / _META, meta)
    if kind == "reference":
        summary = {
            "source": meta.get("source"),
            "duration_s": meta.get("duration_s"),
            "mode": meta["mode"],
            "fps": meta["fps"],
            "context": meta["context"],
            "n_mel_frames": meta["n_mel_frames"],
            "n_windows": meta["n_windows"],
            "n_frames": n_frames,
            "n_npy_files": len(checksums),
            "weights": meta["weights"]["note"],
            "state_dict_sha256": meta["weights"]["state_dict_sha256"],
            "shapes": shapes,
        }
        _write_json(root / _SUMMARY, summary)
        _write_json(root / _INSTRUCTIONS, _instructions(meta, kind))
    return meta


def _write_json(path: Path, obj: Any) -> None:
    with open(path, "w", encoding="utf-8") as fh:
        json.dump(_jsonable(obj), fh, indent=2, allow_nan=False)
        fh.write("\n")


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, Mapping):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, Path):
        return str(obj)
    return obj


def write_reference(
    result: Any,
    output_dir: "str | os.PathLike",
    *,
    frames: bool = True,
    checkpoint: Any = None,
    weights: Mapping[str, Any] | None = None,
    overwrite: bool = False,
    progress: bool = False,
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
        Replace an existing non-empty directory previously written by synctalk-audio.
    progress : bool
        A tqdm bar while the frame files are written.

    Returns
    -------
    dict, the content of ``metadata.json`` (``sha256`` maps every written .npy to its hash)

    Raises
    ------
    OutputError
        Target is a file or under a file, non-empty without ``overwrite``, or the write failed
        (nothing is left behind).
    """
    return _write(result, output_dir, kind="reference" if frames else "intermediates",
                  checkpoint=checkpoint, weights=weights, overwrite=overwrite, progress=progress)


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
    :func:`write_reference`; ``checkpoint``, ``weights`` and ``overwrite`` as there.

    Returns
    -------
    dict, the content of ``metadata.json``
    """
    return _write(result, output_dir, kind="features", checkpoint=checkpoint, weights=weights,
                  overwrite=overwrite, progress=False, stacked_frames=frames)


def _write(result: Any, output_dir: Any, *, kind: str, checkpoint: Any, overwrite: bool, progress: bool,
           weights: Mapping[str, Any] | None = None, extra_meta: Mapping[str, Any] | None = None,
           extra: Callable[[Path], None] | None = None, stacked_frames: bool = False) -> dict[str, Any]:
    for attr in ("mel", "features", "padded", "mode", "context", "metadata"):
        if not hasattr(result, attr):
            raise ConfigError(f"result must be a Features from pipeline(), got {type(result).__name__}")
    if result.mode not in MODES:
        raise ConfigError(f"result has an unknown mode {result.mode!r}")
    with atomic_directory(output_dir, overwrite=overwrite) as tmp:
        meta = _write_into(tmp, result, kind=kind, checkpoint=checkpoint, progress=progress, weights=weights,
                           extra_meta=extra_meta, stacked_frames=stacked_frames)
        if extra is not None:
            extra(tmp)
    return meta


# --------------------------------------------------------------------------- reading


def _load(path: Path, *, mmap: bool = False) -> np.ndarray:
    try:
        return np.load(path, allow_pickle=False, mmap_mode="r" if mmap else None)
    except (OSError, ValueError, EOFError) as exc:
        raise OutputError(f"cannot read {path}: {' '.join(str(exc).split())[:160]}") from None


def _check_dir(path: "str | os.PathLike", what: str) -> Path:
    p = Path(path).expanduser()
    if not p.exists():
        raise OutputError(f"{what} directory not found: {p}")
    if not p.is_dir():
        raise OutputError(f"{what} path {p} is a file; expected a directory of .npy files")
    return p


def _frame_files(root: Path) -> dict[str, dict[int, Path]]:
    found: dict[str, dict[int, Path]] = {"window": {}, "reshaped": {}}
    fdir = root / _FRAMES_DIR
    if fdir.is_dir():
        for entry in fdir.iterdir():
            m = _FRAME_RE.match(entry.name)
            if m:
                found[m.group(2)][int(m.group(1))] = entry
    return found


def read_reference(reference_dir: "str | os.PathLike", *, frames: bool = True, verify: bool = False) -> dict[str, Any]:
    """Load a dataset written by :func:`write_reference` or :func:`write_features`.

    Parameters
    ----------
    reference_dir : path
    frames : bool
        Also load and stack the per-frame files (``frames_window`` (N+2, 16, 512),
        ``frames_reshaped`` (N+2, *mode shape)); for a 1-hour clip that is ~6 GB, so pass
        False to skip them. A stacked ``audio_frames.npy`` is loaded as ``frames_reshaped``.
    verify : bool
        Check every .npy against the sha256 in ``metadata.json``.

    Returns
    -------
    dict with the arrays present (``mel_spectrogram``, ``mel_windows``, ``audio_features_raw``,
    ``audio_features_padded``, ``frames_window``, ``frames_reshaped``), ``metadata`` and, for a
    full dataset, ``summary`` and ``validation_instructions``.

    Raises
    ------
    OutputError
        Not a directory, unreadable files, gaps in the frame files or a checksum mismatch.
    """
    root = _check_dir(reference_dir, "reference")
    out: dict[str, Any] = {}
    for key, name in (("metadata", _META), ("summary", _SUMMARY), ("validation_instructions", _INSTRUCTIONS)):
        path = root / name
        if path.is_file():
            try:
                out[key] = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError) as exc:
                raise OutputError(f"cannot read {path}: {exc}") from None
    if "metadata" not in out:
        raise OutputError(f"{root} has no {_META}; not a synctalk-audio dataset")
    for name, fname in _FILES.items():
        if (root / fname).is_file():
            out[name] = _load(root / fname)
    if frames:
        files = _frame_files(root)
        for kind_, paths in files.items():
            if not paths:
                continue
            n = len(paths)
            if sorted(paths) != list(range(n)):
                raise OutputError(f"{root / _FRAMES_DIR} has gaps: frame indices must be 0..{n - 1}")
            out[f"frames_{kind_}"] = np.stack([_load(paths[i]) for i in range(n)])
        if "frames_reshaped" not in out and (root / _STACKED_FRAMES).is_file():
            out["frames_reshaped"] = _load(root / _STACKED_FRAMES)
    if verify:
        sums = out["metadata"].get("sha256") or {}
        if not sums:
            raise OutputError(f"{root / _META} lists no sha256 checksums to verify")
        for rel, digest in sums.items():
            path = root / rel
            if not path.is_file():
                raise OutputError(f"{path} is listed in metadata.json but missing")
            if _file_sha256(path) != digest:
                raise OutputError(f"{path} does not match its sha256 in metadata.json (modified or corrupt)")
    return out


# --------------------------------------------------------------------------- validation


@dataclass(frozen=True)
class ArtifactResult:
    """One row of a :class:`ValidationReport`.

    ``status`` is ``"pass"``, ``"fail"``, ``"missing"`` (the candidate does not provide it) or
    ``"error"`` (the candidate's file cannot be read). Differences are absolute; ``max_rel_diff``
    is ``max_abs_diff / max|reference|``. For frame artifacts the counts are in frames and the
    diffs are over all frames; ``worst_at`` is the index (frame index for frames) of the
    largest difference.
    """

    name: str
    status: str
    required: bool
    ref_shape: tuple[int, ...] | None
    cand_shape: tuple[int, ...] | None
    shape_ok: bool | None
    max_abs_diff: float | None
    mean_abs_diff: float | None
    max_rel_diff: float | None
    ref_max_abs: float | None
    atol: float
    rtol: float
    tolerance: float | None
    worst_at: tuple[int, ...] | None = None
    count_expected: int | None = None
    count_found: int | None = None
    missing: int = 0
    extra: int = 0
    message: str = ""

    @property
    def ok(self) -> bool:
        """True when it passed, or is missing but not required."""
        return self.status == "pass" or (self.status == "missing" and not self.required)


@dataclass(frozen=True)
class ValidationReport:
    """Result of :func:`validate`: one :class:`ArtifactResult` per reference artifact.

    ``ok`` is True when every row is ok (see :attr:`ArtifactResult.ok`) and at least one
    artifact was compared.
    """

    reference: str
    candidate: str
    n_frames: int | None
    rows: tuple[ArtifactResult, ...]
    notes: tuple[str, ...] = field(default=())

    @property
    def compared(self) -> int:
        """Number of artifacts actually compared (pass or fail)."""
        return sum(r.status in ("pass", "fail") for r in self.rows)

    @property
    def ok(self) -> bool:
        return self.compared > 0 and all(r.ok for r in self.rows)

    def row(self, name: str) -> ArtifactResult:
        """The row of artifact ``name``."""
        for r in self.rows:
            if r.name == name:
                return r
        raise KeyError(name)

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form; non-finite numbers become None."""
        rows = []
        for r in self.rows:
            d = asdict(r)
            d["ok"] = r.ok
            rows.append(d)
        return _jsonable({
            "ok": self.ok,
            "reference": self.reference,
            "candidate": self.candidate,
            "n_frames": self.n_frames,
            "compared": self.compared,
            "rows": rows,
            "notes": list(self.notes),
        })

    def to_json(self, *, indent: int | None = 2) -> str:
        """The report as a JSON string."""
        return json.dumps(self.to_dict(), indent=indent, allow_nan=False)

    def table(self) -> str:
        """A readable fixed-width table plus the verdict."""

        def num(x: float | None) -> str:
            return "-" if x is None else f"{x:.3g}"

        def shape(r: ArtifactResult) -> str:
            if r.count_expected is not None:
                return f"{r.count_found or 0}/{r.count_expected} frames"
            def fmt(s: tuple[int, ...] | None) -> str:
                return "x".join(map(str, s)) if s is not None else "-"

            if r.shape_ok is False:
                return f"{fmt(r.cand_shape)} (ref {fmt(r.ref_shape)})"
            return fmt(r.cand_shape if r.cand_shape is not None else r.ref_shape)

        head = ("artifact", "shape", "max|d|", "mean|d|", "max|d|/max|ref|", "allowed", "result")
        lines = [head]
        for r in self.rows:
            verdict = {"pass": "PASS", "fail": "FAIL", "error": "ERROR",
                       "missing": "MISSING (required)" if r.required else "missing"}[r.status]
            lines.append((r.name, shape(r), num(r.max_abs_diff), num(r.mean_abs_diff), num(r.max_rel_diff),
                          num(r.tolerance), verdict))
        widths = [max(len(line[i]) for line in lines) for i in range(len(head))]
        text = [f"reference: {self.reference}", f"candidate: {self.candidate}"]
        if self.n_frames is not None:
            text.append(f"frames expected: {self.n_frames} (N+2)")
        text.append("")
        for j, line in enumerate(lines):
            text.append("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(line)).rstrip())
            if j == 0:
                text.append("  ".join("-" * w for w in widths))
        problems = []
        for r in self.rows:
            parts = [r.message] if r.message else []
            if (r.status == "fail" and r.worst_at is not None and r.tolerance is not None
                    and r.max_abs_diff is not None and r.max_abs_diff > r.tolerance):
                where = (f"frame {r.worst_at[0]}" if r.count_expected is not None
                         else "index [" + ", ".join(map(str, r.worst_at)) + "]")
                parts.append(f"largest difference {r.max_abs_diff:.3g} at {where} (allowed {r.tolerance:.3g})")
            if parts:
                problems.append(f"  {r.name}: " + "; ".join(parts))
        if problems:
            text += ["", *problems]
        text += [f"  note: {n}" for n in self.notes]
        missing = sum(r.status == "missing" for r in self.rows)
        verdict = "PASS" if self.ok else "FAIL"
        text += ["", f"{verdict}: {self.compared} compared, "
                     f"{sum(r.status == 'fail' or r.status == 'error' for r in self.rows)} failed, {missing} missing"]
        return "\n".join(text)


class _DiffStats:
    """Streaming max/mean |a − b|, max|ref| and the position of the worst difference."""

    def __init__(self) -> None:
        self.max_abs = 0.0
        self.sum_abs = 0.0
        self.count = 0
        self.ref_max = 0.0
        self.nonfinite = 0
        self.worst: tuple[int, ...] | None = None

    def update(self, ref: np.ndarray, cand: np.ndarray, where: Callable[[int], tuple[int, ...]]) -> None:
        r = np.asarray(ref, dtype=np.float64)
        d = np.abs(np.asarray(cand, dtype=np.float64) - r)
        bad = ~np.isfinite(d)
        if bad.any():
            self.nonfinite += int(bad.sum())
            d = np.where(bad, 0.0, d)
        if r.size:
            self.ref_max = max(self.ref_max, float(np.max(np.abs(r[np.isfinite(r)]), initial=0.0)))
            k = int(np.argmax(d))
            if self.worst is None or d.flat[k] > self.max_abs:
                self.max_abs = float(d.flat[k])
                self.worst = where(k)
            self.sum_abs += float(d.sum())
            self.count += d.size

    def fields(self, tol: Tolerance) -> dict[str, Any]:
        bound = tol.bound(self.ref_max)
        return {
            "max_abs_diff": self.max_abs,
            "mean_abs_diff": self.sum_abs / self.count if self.count else 0.0,
            "max_rel_diff": (self.max_abs / self.ref_max) if self.ref_max > 0 else (0.0 if self.max_abs == 0 else math.inf),
            "ref_max_abs": self.ref_max,
            "tolerance": bound,
            "worst_at": self.worst,
        }

    def passes(self, tol: Tolerance) -> bool:
        return self.nonfinite == 0 and self.max_abs <= tol.bound(self.ref_max)


def _frame_source(root: Path, kind_: str, *, strict: bool) -> tuple[dict[int, Callable[[], np.ndarray]], str] | None:
    files = _frame_files(root)[kind_]
    if files:
        return {i: (lambda p=p: _load(p)) for i, p in files.items()}, f"{_FRAMES_DIR}/frame_*_{kind_}.npy"
    if kind_ == "reshaped" and (root / _STACKED_FRAMES).is_file():
        arr = _load(root / _STACKED_FRAMES, mmap=True)
        if arr.ndim < 1:
            if strict:
                raise OutputError(f"{root / _STACKED_FRAMES} is a scalar, expected (N+2, *mode shape)")
            return {}, _STACKED_FRAMES
        return {i: (lambda i=i: arr[i]) for i in range(arr.shape[0])}, _STACKED_FRAMES
    return None


def _coerce_tolerances(tolerances: Any, base: Mapping[str, Tolerance]) -> dict[str, Tolerance]:
    out: dict[str, Tolerance] = {}
    if tolerances is None:
        return out
    if isinstance(tolerances, Tolerance):
        return {name: tolerances for name in ARTIFACTS}
    if not isinstance(tolerances, Mapping):
        raise ConfigError(f"tolerances must be a mapping artifact -> Tolerance, got {type(tolerances).__name__}")
    for name, tol in tolerances.items():
        if name not in ARTIFACTS:
            raise ConfigError(f"unknown artifact {name!r} in tolerances; expected one of {', '.join(ARTIFACTS)}")
        if isinstance(tol, Tolerance):
            out[name] = tol
        elif isinstance(tol, Mapping):
            bad = set(tol) - {"atol", "rtol"}
            if bad:
                raise ConfigError(f"tolerance for {name!r} has unknown keys {sorted(bad)}; expected atol, rtol")
            out[name] = Tolerance(atol=tol.get("atol", base[name].atol), rtol=tol.get("rtol", base[name].rtol))
        elif isinstance(tol, (tuple, list)) and len(tol) == 2:
            out[name] = Tolerance(*tol)
        elif isinstance(tol, (int, float)) and not isinstance(tol, bool):
            out[name] = Tolerance(atol=tol)
        else:
            raise ConfigError(f"tolerance for {name!r} must be a Tolerance, (atol, rtol) or a number, got {tol!r}")
    return out


def _reference_tolerances(root: Path) -> dict[str, Tolerance]:
    path = root / _INSTRUCTIONS
    if not path.is_file():
        return {}
    try:
        arts = json.loads(path.read_text(encoding="utf-8")).get("artifacts", {})
        return {name: Tolerance(atol=float(a["atol"]), rtol=float(a.get("rtol", 0.0)))
                for name, a in arts.items() if name in ARTIFACTS and "atol" in a}
    except (OSError, ValueError, TypeError, KeyError, AttributeError, ConfigError) as exc:
        raise OutputError(f"cannot read tolerances from {path}: {exc}") from None


def _row(name: str, tol: Tolerance, required: bool, **kw: Any) -> ArtifactResult:
    base = dict(ref_shape=None, cand_shape=None, shape_ok=None, max_abs_diff=None, mean_abs_diff=None,
                max_rel_diff=None, ref_max_abs=None, tolerance=None)
    base.update(kw)
    return ArtifactResult(name=name, required=required, atol=tol.atol, rtol=tol.rtol, **base)


def _compare_array(name: str, ref_path: Path, cand_path: Path | None, tol: Tolerance, required: bool) -> ArtifactResult:
    ref = _load(ref_path, mmap=True)
    if cand_path is None:
        return _row(name, tol, required, status="missing", ref_shape=tuple(ref.shape),
                    message=("required but not provided" if required else ""))
    try:
        cand = np.load(cand_path, allow_pickle=False, mmap_mode="r")
    except (OSError, ValueError, EOFError) as exc:
        return _row(name, tol, required, status="error", ref_shape=tuple(ref.shape),
                    message=f"cannot read {cand_path.name}: {' '.join(str(exc).split())[:120]}")
    shape_ok = tuple(cand.shape) == tuple(ref.shape)
    if not shape_ok:
        return _row(name, tol, required, status="fail", ref_shape=tuple(ref.shape), cand_shape=tuple(cand.shape),
                    shape_ok=False, message=f"shape {tuple(cand.shape)}, expected {tuple(ref.shape)}")
    if cand.dtype.kind not in "fiub":
        return _row(name, tol, required, status="fail", ref_shape=tuple(ref.shape), cand_shape=tuple(cand.shape),
                    shape_ok=True, message=f"dtype {cand.dtype} is not numeric")
    stats = _DiffStats()
    if ref.ndim == 0:
        stats.update(ref, cand, lambda k: ())
    else:
        inner = int(np.prod(ref.shape[1:]))
        step = max(1, (4 << 20) // max(inner, 1))  # ~4M values (32 MB float64) per chunk
        for lo in range(0, ref.shape[0], step):
            hi = min(lo + step, ref.shape[0])
            shape = (hi - lo, *ref.shape[1:])
            stats.update(ref[lo:hi], cand[lo:hi],
                         lambda k, lo=lo, shape=shape: _offset(np.unravel_index(k, shape), lo))
    status = "pass" if stats.passes(tol) else "fail"
    msg = f"{stats.nonfinite} non-finite values" if stats.nonfinite else ""
    return _row(name, tol, required, status=status, ref_shape=tuple(ref.shape), cand_shape=tuple(cand.shape),
                shape_ok=True, message=msg, **stats.fields(tol))


def _offset(index: tuple[Any, ...], lo: int) -> tuple[int, ...]:
    return (int(index[0]) + lo, *(int(x) for x in index[1:]))


def _compare_frames(name: str, ref_root: Path, cand_root: Path, tol: Tolerance, required: bool) -> ArtifactResult | None:
    kind_ = name.split("_", 1)[1]
    ref_src = _frame_source(ref_root, kind_, strict=True)
    if ref_src is None:
        return None
    ref_frames, _ = ref_src
    n = len(ref_frames)
    if sorted(ref_frames) != list(range(n)):
        raise OutputError(f"reference {ref_root / _FRAMES_DIR} has gaps: frame indices must be 0..{n - 1}")
    try:
        cand_src = _frame_source(cand_root, kind_, strict=False)
    except OutputError as exc:
        return _row(name, tol, required, status="error", count_expected=n, count_found=0, message=str(exc))
    if cand_src is None or not cand_src[0]:
        return _row(name, tol, required, status="missing", count_expected=n, count_found=0,
                    message=("required but not provided" if required else ""))
    cand_frames, cand_desc = cand_src
    missing = sorted(set(range(n)) - set(cand_frames))
    extra = sorted(set(cand_frames) - set(range(n)))
    stats = _DiffStats()
    shape_ok = True
    problems: list[str] = []
    ref_shape = cand_shape = None
    for i in range(n):
        if i not in cand_frames:
            continue
        r = ref_frames[i]()
        try:
            c = cand_frames[i]()
        except OutputError as exc:
            return _row(name, tol, required, status="error", count_expected=n, count_found=len(cand_frames),
                        message=str(exc))
        ref_shape = tuple(r.shape)
        if tuple(c.shape) != tuple(r.shape) or c.dtype.kind not in "fiub":
            shape_ok = False
            cand_shape = tuple(c.shape)
            problems.append(f"frame {i} has shape {tuple(c.shape)} dtype {c.dtype}, expected {tuple(r.shape)}")
            break
        cand_shape = tuple(c.shape)
        stats.update(r, c, lambda k, i=i: (i,))
    counts = []
    if missing:
        counts.append(f"{len(missing)} frames missing (first: {missing[0]})")
    if extra:
        counts.append(f"{len(extra)} extra frames (first: {extra[0]})")
    if counts:
        problems.append(", ".join(counts) + f"; the frame count must be N+2 = {n}")
    if stats.nonfinite:
        problems.append(f"{stats.nonfinite} non-finite values")
    passed = shape_ok and not missing and not extra and stats.count > 0 and stats.passes(tol)
    fields = stats.fields(tol) if stats.count else {}
    return _row(name, tol, required, status="pass" if passed else "fail", ref_shape=ref_shape, cand_shape=cand_shape,
                shape_ok=shape_ok, count_expected=n, count_found=len(cand_frames), missing=len(missing),
                extra=len(extra), message="; ".join(problems) + (f" ({cand_desc})" if problems else ""), **fields)


def validate(
    reference_dir: "str | os.PathLike",
    candidate_dir: "str | os.PathLike",
    *,
    tolerances: Any = None,
    required: "Iterable[str] | str | None" = None,
) -> ValidationReport:
    """Compare a port's outputs with a reference dataset, artifact by artifact.

    The candidate directory holds ``.npy`` files named like the reference's (any float dtype,
    C order); it may provide only some of them. Per artifact: shape check, max / mean absolute
    difference, max difference relative to ``max|reference|``, pass if
    ``max|d| <= atol + rtol·max|reference|`` and all values finite. Frames may come as the
    per-frame files or one stacked ``audio_frames.npy`` (N+2, *mode shape); exactly the
    indices 0..N+1 must be present (a missing or an extra frame fails: N instead of N+2 is the
    classic porting bug).

    Missing artifacts are reported as ``missing`` and do not fail unless named in
    ``required`` (``"all"`` for every artifact the reference has); a candidate with no
    artifact at all fails.

    Parameters
    ----------
    reference_dir, candidate_dir : path
    tolerances : mapping artifact → Tolerance / (atol, rtol) / atol / {"atol": …, "rtol": …}, or one Tolerance for all
        Overrides, per artifact, the reference's ``VALIDATION_INSTRUCTIONS.json``, which
        overrides :data:`DEFAULT_TOLERANCES`; a dict with only one key keeps the other.
    required : iterable of artifact names, or "all"

    Returns
    -------
    ValidationReport

    Raises
    ------
    OutputError
        A directory is missing or the reference is unreadable.
    ConfigError
        Unknown artifact names in ``tolerances`` / ``required``.
    """
    ref_root = _check_dir(reference_dir, "reference")
    cand_root = _check_dir(candidate_dir, "candidate")
    tols = dict(DEFAULT_TOLERANCES)
    tols.update(_reference_tolerances(ref_root))
    tols.update(_coerce_tolerances(tolerances, tols))
    if required is None:
        req: set[str] = set()
    elif isinstance(required, str):
        req = set(ARTIFACTS) if required == "all" else {required}
    else:
        req = set(required)
    unknown = req - set(ARTIFACTS)
    if unknown:
        raise ConfigError(f"unknown artifact(s) {', '.join(sorted(unknown))} in required; "
                          f"expected names from {', '.join(ARTIFACTS)} or 'all'")
    rows: list[ArtifactResult] = []
    notes: list[str] = []
    for name in ARTIFACTS:
        if name in _FILES:
            ref_path = ref_root / _FILES[name]
            if not ref_path.is_file():
                continue
            cand_path = cand_root / _FILES[name]
            rows.append(_compare_array(name, ref_path, cand_path if cand_path.is_file() else None, tols[name], name in req))
        else:
            row = _compare_frames(name, ref_root, cand_root, tols[name], name in req)
            if row is not None:
                rows.append(row)
    if not rows:
        raise OutputError(f"reference {ref_root} holds none of the dataset files ({', '.join(_FILES.values())}, frames/)")
    not_in_ref = req - {r.name for r in rows}
    for name in sorted(not_in_ref):
        notes.append(f"{name} is required but the reference does not have it")
        rows.append(_row(name, tols[name], True, status="missing", message="required, but not in the reference either"))
    n_frames = None
    meta_path = ref_root / _META
    if meta_path.is_file():
        try:
            n_frames = int(json.loads(meta_path.read_text(encoding="utf-8")).get("n_frames"))
        except (OSError, ValueError, TypeError):
            n_frames = None
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
            if (meta.get("weights") or {}).get("untrained_seeded"):
                notes.append("the reference was made with UNTRAINED seeded weights; run your port with the same "
                             "weights (seeded_state_dict(0))")
        except (OSError, ValueError):
            pass
    if not any(r.status in ("pass", "fail") for r in rows):
        notes.append("the candidate provides none of the reference's artifacts")
    return ValidationReport(reference=str(ref_root), candidate=str(cand_root), n_frames=n_frames,
                            rows=tuple(rows), notes=tuple(notes))
