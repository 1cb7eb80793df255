"""The port checker: compare a port's ``.npy`` outputs with a reference dataset.

:func:`validate` reads both directories as hostile input (every file of a candidate *or* a
reference may be truncated, forged, a FIFO or hold NaN): only regular files are opened,
``.npy`` headers are checked against the file length before anything is allocated, JSON is
bounded, and a problem in the reference is reported as the reference's, not the candidate's.
The dataset layout and the pass rules (:data:`ARTIFACTS`, :class:`Tolerance`,
:data:`DEFAULT_TOLERANCES`) live in :mod:`synctalk_audio.dataset`.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Callable, Iterable, Mapping

import numpy as np

from ._io import jsonable, load_npy, read_json
from .dataset import (
    ARTIFACTS,
    artifact_files,
    DEFAULT_TOLERANCES,
    FORMAT_VERSION,
    FRAMES_DIR,
    INSTRUCTIONS,
    STACKED_FRAMES,
    Tolerance,
    frame_files,
    input_dir,
    read_metadata,
)
from .errors import ConfigError, OutputError, SyncTalkAudioError

__all__ = ["ArtifactResult", "ValidationReport", "validate", "instructions"]

_MAX_INSTRUCTIONS_BYTES = 1 << 20
_CHUNK_VALUES = 4 << 20  # ~4M values (32 MB float64) compared at a time


_DESCRIPTIONS = MappingProxyType({
    "mel_spectrogram": "normalised log-mel spectrogram, float64 (80, T), values in [-4, 4]",
    "mel_windows": "encoder inputs: 16-column mel windows cast to float32, (N, 80, 16)",
    "audio_features_raw": "encoder output, float32 (N, 512), one row per window",
    "audio_features_padded": "first/last row repeated, float32 (N+2, 512), one row per video frame",
    "fbank": "wenet: Kaldi log-mel fbank of the int16-scaled, zero-padded audio, float32 (F, 80)",
    "frames_window": "per-frame context: rows [i-r, i+r) of the padded features (r = radius), zeros outside, (2r, D)",
    "frames_reshaped": "per-frame U-Net audio input: the context window reshaped row-major to the mode shape",
})


_MODE_DESCRIPTIONS = MappingProxyType({
    ("hubert", "audio_features_raw"): "aud_hu.npy: HuBERT last_hidden_state rows in pairs, float32 (T', 2, 1024), "
                                      "one pair per 25 fps video frame",
    ("wenet", "audio_features_raw"): "aud_wenet.npy: wenet encoder output per 67-frame fbank window, float32 "
                                     "(K, 16, 512), one per 20 fps video frame",
})
#: (frame_count_rule, window_rule) of the modes without ave's windows and N + 2 padding.
_MODE_RULES = MappingProxyType({
    "hubert": ("T' = ((L - 80) // 320) // 2 pairs for L samples at 16 kHz (a last odd HuBERT row dropped, or "
               "padded with hubert_odd='pad'); one frame per pair, no first/last repeat",
               "input normalised over the whole file ((x - mean) / sqrt(var + 1e-7), float32); chunk i = samples "
               "[320000 i, 320000 i + 320080), then the remainder if >= 400 samples; rows concatenated, padded "
               "or trimmed to (L - 80) // 320"),
    "wenet": ("K = 1 + ceil(max(0, F - 67) / 5) rows, F = 1 + (n + 10720 - 400) // 160 fbank frames (20 s + 1 "
              "for s whole seconds); one frame per row, no first/last repeat",
              "int16 PCM (truncated x * 32767), 5120 zeros before and 5600 after; Kaldi fbank (25 ms / 10 ms, "
              "povey, 80 bins); windows of 67 frames starting every 5, the last zero-padded"),
})


def instructions(meta: Mapping[str, Any]) -> dict[str, Any]:
    """The content of VALIDATION_INSTRUCTIONS.json for a reference dataset's ``metadata.json``:
    what to compare, shapes, tolerances, the frame-count / window / context rules and recipes."""
    n_frames = meta["n_frames"]
    radius = meta.get("radius", 8)
    shapes = meta["shapes"]
    ranges = meta["value_ranges"]
    artifacts: dict[str, Any] = {}
    files = artifact_files(meta.get("mode", "ave"))
    for name in ARTIFACTS:
        tol = DEFAULT_TOLERANCES[name]
        if name in files:
            entry = {"file": files[name], "shape": shapes.get(name),
                     "dtype": "float64" if name == "mel_spectrogram" else "float32"}
            ref_max = ranges[files[name]]["max_abs"]
        elif not name.startswith("frames_"):
            continue
        else:
            kind_ = name.split("_", 1)[1]
            entry = {"files": f"{FRAMES_DIR}/frame_{{i:05d}}_{kind_}.npy for i in 0..{n_frames - 1}",
                     "count": n_frames, "shape": shapes["frame_window" if kind_ == "window" else "frame_reshaped"],
                     "dtype": "float32"}
            if kind_ == "reshaped":
                entry["alternative"] = (f"one stacked file {STACKED_FRAMES} of shape "
                                        f"[{n_frames}, {', '.join(map(str, shapes['frame_reshaped']))}]")
            ref_max = max(ranges[f]["max_abs"] for n_, f in files.items() if n_.startswith("audio_features"))
        entry.update({
            "what": _MODE_DESCRIPTIONS.get((meta.get("mode"), name), _DESCRIPTIONS[name]),
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
        "n_mel_frames_T": meta.get("n_mel_frames"),
        "n_windows_N": meta.get("n_windows"),
        "n_frames": n_frames,
        **_rules(meta.get("mode", "ave"), n_frames, radius),
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


def _rules(mode: str, n_frames: int, radius: int) -> dict[str, str]:
    """frame_count_rule, window_rule and context_rule of ``mode``."""
    if mode in _MODE_RULES:
        count, window = _MODE_RULES[mode]
        return {"frame_count_rule": count, "window_rule": window,
                "context_rule": (f"frame i = rows [i-{radius}, i+{radius}) of the feature rows, zero rows outside "
                                 "(context='zeros', upstream), then a row-major reshape to the mode shape")}
    return {
        "frame_count_rule": ("N = int((T - 16) / 80.0 * fps) + 2 windows; the padded features and the frames "
                             f"have N + 2 = {n_frames} rows: exactly one per output video frame"),
        "window_rule": "window i: start = int(80.0 * (i / fps)), end = start + 16; if end > T: end = T, start = T - 16",
        "context_rule": (f"frame i = rows [i-{radius}, i+{radius}) of the padded features, zero rows outside [0, N+2) "
                         "(context='zeros', upstream), then a row-major reshape to the mode shape"),
    }


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
    mode: str = "ave"

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
        return jsonable({
            "ok": self.ok,
            "reference": self.reference,
            "candidate": self.candidate,
            "n_frames": self.n_frames,
            "mode": self.mode,
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
            text.append(f"frames expected: {self.n_frames} " + ("(N+2)" if self.mode == "ave" else
                                                                  f"(one per {self.mode} feature row)"))
        text.append("")
        for j, line in enumerate(lines):
            text.append("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(line)).rstrip())
            if j == 0:
                text.append("  ".join("-" * w for w in widths))
        problems = []
        for r in self.rows:
            parts = [r.message] if r.message else []
            where = None if r.worst_at is None else (
                f"frame {r.worst_at[0]}" if r.count_expected is not None
                else "index [" + ", ".join(map(str, r.worst_at)) + "]")
            if (r.status == "fail" and where is not None and r.tolerance is not None
                    and r.max_abs_diff is not None and r.max_abs_diff > r.tolerance):
                parts.append(f"largest difference {r.max_abs_diff:.3g} at {where} (allowed {r.tolerance:.3g})")
            elif r.status in ("fail", "error") and where is not None and r.max_abs_diff is not None \
                    and math.isnan(r.max_abs_diff):
                parts.append(f"first non-finite value at {where}")
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
    """Streaming max/mean |a − b|, max|ref|, the worst position and the non-finite counts.

    A non-finite value in the reference is counted apart (``ref_nonfinite``: the reference is
    broken); one in the candidate where the reference is finite is the candidate's
    (``nonfinite``). Either makes the differences ``nan``, never a reassuring 0.
    """

    def __init__(self) -> None:
        self.max_abs = 0.0
        self.sum_abs = 0.0
        self.count = 0
        self.ref_max = 0.0
        self.nonfinite = 0
        self.ref_nonfinite = 0
        self.worst: tuple[int, ...] | None = None
        self.first_bad: tuple[int, ...] | None = None

    def update(self, ref: np.ndarray, cand: np.ndarray, where: Callable[[int], tuple[int, ...]]) -> None:
        r = np.asarray(ref, dtype=np.float64)
        with np.errstate(invalid="ignore", over="ignore"):
            d = np.abs(np.asarray(cand, dtype=np.float64) - r)
        r_ok = np.isfinite(r)
        bad = ~np.isfinite(d)
        if bad.any():
            self.ref_nonfinite += int((~r_ok).sum())
            cand_bad = bad & r_ok
            self.nonfinite += int(cand_bad.sum())
            if self.first_bad is None:
                self.first_bad = where(int(np.flatnonzero(bad.ravel())[0]))
            d = np.where(bad, 0.0, d)
        if r.size:
            self.ref_max = max(self.ref_max, float(np.max(np.abs(r[r_ok]), initial=0.0)))
            k = int(np.argmax(d))
            if self.worst is None or d.flat[k] > self.max_abs:
                self.max_abs = float(d.flat[k])
                self.worst = where(k)
            self.sum_abs += float(d.sum())
            self.count += d.size

    @property
    def finite(self) -> bool:
        return self.nonfinite == 0 and self.ref_nonfinite == 0

    def fields(self, tol: Tolerance) -> dict[str, Any]:
        bound = tol.bound(self.ref_max)
        if not self.finite:
            return {"max_abs_diff": math.nan, "mean_abs_diff": math.nan, "max_rel_diff": math.nan,
                    "ref_max_abs": self.ref_max, "tolerance": bound, "worst_at": self.first_bad}
        return {
            "max_abs_diff": self.max_abs,
            "mean_abs_diff": self.sum_abs / self.count if self.count else 0.0,
            "max_rel_diff": (self.max_abs / self.ref_max) if self.ref_max > 0 else (0.0 if self.max_abs == 0 else math.inf),
            "ref_max_abs": self.ref_max,
            "tolerance": bound,
            "worst_at": self.worst,
        }

    def passes(self, tol: Tolerance) -> bool:
        return self.finite and self.max_abs <= tol.bound(self.ref_max)

    def status(self, tol: Tolerance) -> str:
        """``error`` when the reference itself is not finite, else ``pass`` / ``fail``."""
        if self.ref_nonfinite:
            return "error"
        return "pass" if self.passes(tol) else "fail"

    def problems(self, what: str) -> list[str]:
        out = []
        if self.ref_nonfinite:
            out.append(f"the reference's {what} holds {self.ref_nonfinite} non-finite values: the reference is "
                       "broken, not the candidate (regenerate it)")
        if self.nonfinite:
            out.append(f"{self.nonfinite} non-finite values")
        return out


def _numeric(arr: np.ndarray, label: str) -> np.ndarray:
    if arr.dtype.kind not in "fiub":
        raise OutputError(f"{label} holds dtype {arr.dtype}; expected numbers")
    return arr


def _exists(path: Path) -> bool:
    return os.path.lexists(path)


def _frame_source(root: Path, kind_: str, *, strict: bool) -> tuple[dict[int, Callable[[], np.ndarray]], str] | None:
    files = frame_files(root)[kind_]
    if files:
        return {i: (lambda p=p: load_npy(p)) for i, p in files.items()}, f"{FRAMES_DIR}/frame_*_{kind_}.npy"
    if kind_ == "reshaped" and _exists(root / STACKED_FRAMES):
        arr = load_npy(root / STACKED_FRAMES, mmap=True)
        if arr.ndim < 1:
            if strict:
                raise OutputError(f"{root / STACKED_FRAMES} is a scalar, expected (N+2, *mode shape)")
            return {}, STACKED_FRAMES
        return {i: (lambda i=i: arr[i]) for i in range(arr.shape[0])}, STACKED_FRAMES
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
    """Per-artifact tolerances from the reference's VALIDATION_INSTRUCTIONS.json (hostile input)."""
    path = root / INSTRUCTIONS
    if not _exists(path):
        return {}
    doc = read_json(path, max_bytes=_MAX_INSTRUCTIONS_BYTES)
    arts = doc.get("artifacts", {}) if isinstance(doc, dict) else None
    if not isinstance(arts, dict):
        raise OutputError(f"cannot read tolerances from {path}: expected a JSON object with an 'artifacts' object")
    out = {}
    for name, entry in arts.items():
        if name not in ARTIFACTS or not isinstance(entry, dict) or "atol" not in entry:
            continue
        try:
            out[name] = Tolerance(atol=entry["atol"], rtol=entry.get("rtol", 0.0))
        except ConfigError as exc:
            raise OutputError(f"cannot read tolerances from {path}: {name}: {exc}") from None
    return out


def _row(name: str, tol: Tolerance, required: bool, **kw: Any) -> ArtifactResult:
    base = dict(ref_shape=None, cand_shape=None, shape_ok=None, max_abs_diff=None, mean_abs_diff=None,
                max_rel_diff=None, ref_max_abs=None, tolerance=None)
    base.update(kw)
    return ArtifactResult(name=name, required=required, atol=tol.atol, rtol=tol.rtol, **base)


def _compare_array(name: str, ref_path: Path, cand_path: Path | None, tol: Tolerance, required: bool) -> ArtifactResult:
    ref = _numeric(load_npy(ref_path, mmap=True, what="reference"), f"reference {ref_path}")
    if cand_path is None:
        return _row(name, tol, required, status="missing", ref_shape=tuple(ref.shape),
                    message=("required but not provided" if required else ""))
    try:
        cand = load_npy(cand_path, mmap=True)
    except SyncTalkAudioError as exc:
        return _row(name, tol, required, status="error", ref_shape=tuple(ref.shape),
                    message=f"cannot use {cand_path.name}: {' '.join(str(exc).split())[:200]}")
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
        step = max(1, _CHUNK_VALUES // max(inner, 1))
        for lo in range(0, ref.shape[0], step):
            hi = min(lo + step, ref.shape[0])
            shape = (hi - lo, *ref.shape[1:])
            stats.update(ref[lo:hi], cand[lo:hi],
                         lambda k, lo=lo, shape=shape: _offset(np.unravel_index(k, shape), lo))
    return _row(name, tol, required, status=stats.status(tol), ref_shape=tuple(ref.shape),
                cand_shape=tuple(cand.shape), shape_ok=True, message="; ".join(stats.problems(ref_path.name)),
                **stats.fields(tol))


def _offset(index: tuple[Any, ...], lo: int) -> tuple[int, ...]:
    return (int(index[0]) + lo, *(int(x) for x in index[1:]))


def _reference_frames(name: str, ref_root: Path, n_frames: int | None) -> dict[int, Callable[[], np.ndarray]] | None:
    kind_ = name.split("_", 1)[1]
    ref_src = _frame_source(ref_root, kind_, strict=True)
    if ref_src is None:
        return None
    ref_frames, desc = ref_src
    n = len(ref_frames)
    if sorted(ref_frames) != list(range(n)):
        raise OutputError(f"reference {ref_root / FRAMES_DIR} has gaps: frame indices must be 0..{n - 1}")
    if n_frames is not None and n != n_frames:
        raise OutputError(f"reference {ref_root} has {n} frames in {desc} but its metadata.json says n_frames = "
                          f"{n_frames} (extra or missing frame files in the reference)")
    return ref_frames


def _compare_frames(name: str, ref_root: Path, cand_root: Path, tol: Tolerance, required: bool,
                    n_frames: int | None) -> ArtifactResult | None:
    ref_frames = _reference_frames(name, ref_root, n_frames)
    if ref_frames is None:
        return None
    n = len(ref_frames)
    kind_ = name.split("_", 1)[1]
    try:
        cand_src = _frame_source(cand_root, kind_, strict=False)
    except SyncTalkAudioError as exc:
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
        r = _numeric(ref_frames[i](), f"reference frame {i} of {ref_root}")
        try:
            c = cand_frames[i]()
        except SyncTalkAudioError as exc:
            return _row(name, tol, required, status="error", count_expected=n, count_found=len(cand_frames),
                        message=" ".join(str(exc).split())[:200])
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
    problems += stats.problems("frames")
    passed = shape_ok and not missing and not extra and stats.count > 0 and stats.passes(tol)
    status = "error" if stats.ref_nonfinite else ("pass" if passed else "fail")
    fields = stats.fields(tol) if stats.count else {}
    return _row(name, tol, required, status=status, ref_shape=ref_shape, cand_shape=cand_shape,
                shape_ok=shape_ok, count_expected=n, count_found=len(cand_frames), missing=len(missing),
                extra=len(extra), message="; ".join(problems) + (f" ({cand_desc})" if problems else ""), **fields)


def _required(required: "Iterable[str] | str | None") -> set[str]:
    if required is None:
        req: set[str] = set()
    elif isinstance(required, str):
        req = set(ARTIFACTS) if required == "all" else {required}
    else:
        req = set(required)
    unknown = req - set(ARTIFACTS)
    if unknown:
        raise ConfigError(f"unknown artifact(s) {', '.join(sorted(map(str, unknown)))} in required; "
                          f"expected names from {', '.join(ARTIFACTS)} or 'all'")
    return req


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
    ``max|d| <= atol + rtol·max|reference|`` and all values finite (a non-finite difference is
    reported as ``nan``; one in the reference makes the row an ``error`` of the reference).
    Frames may come as the per-frame files or one stacked ``audio_frames.npy`` (N+2, *mode
    shape); exactly the indices 0..N+1 must be present (a missing or an extra frame fails: N
    instead of N+2 is the classic porting bug).

    Missing artifacts are reported as ``missing`` and do not fail unless named in
    ``required`` (``"all"`` for every artifact the reference has); a candidate with no
    artifact at all fails. Both directories are read as hostile input (module docstring): a
    candidate file that cannot be used is an ``error`` row, never a crash or a hang.

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
        A directory is missing, or the reference is unreadable or inconsistent.
    ShapeError
        A truncated or forged ``.npy`` in the reference.
    ConfigError
        Unknown artifact names in ``tolerances`` / ``required``.
    """
    ref_root = input_dir(reference_dir, "reference")
    cand_root = input_dir(candidate_dir, "candidate")
    tols = dict(DEFAULT_TOLERANCES)
    tols.update(_reference_tolerances(ref_root))
    tols.update(_coerce_tolerances(tolerances, tols))
    req = _required(required)
    meta = read_metadata(ref_root, required=False) or {}
    n_frames = meta.get("n_frames")
    rows: list[ArtifactResult] = []
    notes: list[str] = []
    files = artifact_files(meta.get("mode") if meta.get("mode") in ("hubert", "wenet") else "ave")
    if required == "all":  # every artifact this reference has
        req = {n for n in ARTIFACTS if (n in files and _exists(ref_root / files[n]))
               or (n.startswith("frames_") and (ref_root / FRAMES_DIR).is_dir())}
    for name in ARTIFACTS:
        if name in files:
            ref_path = ref_root / files[name]
            if not _exists(ref_path):
                continue
            cand_path = cand_root / files[name]
            rows.append(_compare_array(name, ref_path, cand_path if _exists(cand_path) else None, tols[name],
                                       name in req))
        elif name.startswith("frames_"):
            row = _compare_frames(name, ref_root, cand_root, tols[name], name in req, n_frames)
            if row is not None:
                rows.append(row)
    if not rows:
        raise OutputError(f"reference {ref_root} holds none of the dataset files "
                          f"({', '.join(files.values())}, frames/)")
    for name in sorted(req - {r.name for r in rows}):
        notes.append(f"{name} is required but the reference does not have it")
        rows.append(_row(name, tols[name], True, status="missing", message="required, but not in the reference either"))
    weights = meta.get("weights") or {}
    if weights.get("untrained_seeded") is True:
        same = ("weights (seeded_state_dict(0))" if meta.get("mode", "ave") == "ave"
                else f"stand-in model ({weights.get('checkpoint') or 'see metadata.json'})")
        notes.append(f"the reference was made with UNTRAINED weights; run your port with the same {same}")
    if any(r.status == "error" and "the reference is broken" in r.message for r in rows):
        notes.append("the reference itself holds non-finite values: regenerate it before judging a port")
    if not any(r.status in ("pass", "fail") for r in rows):
        notes.append("the candidate provides none of the reference's artifacts")
    return ValidationReport(reference=str(ref_root), candidate=str(cand_root), n_frames=n_frames,
                            rows=tuple(rows), notes=tuple(notes), mode=meta.get("mode", "ave"))
