"""What a dataset run works on: its records, its inputs and which outputs are already complete.

- the records: :class:`Item` (one input and its output directory), :class:`Settings` (what
  every worker needs), :class:`Outcome`, :class:`Failure` and the run's :class:`Summary`;
- the inputs: :func:`find_inputs` (a directory scan or :func:`read_manifest`) and
  :func:`plan_items` (output paths, collisions become failures);
- resuming: :func:`output_state` says whether an output directory is complete for these
  settings and weights (:func:`weights_key`); ``_remove_leftovers`` deletes what a killed run
  left behind.

Used by :mod:`synctalk_audio.jobs` (the entry point) and :mod:`synctalk_audio.jobs_workers`;
every public name is importable from :mod:`synctalk_audio.jobs`. Standard library only at
import time.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
from dataclasses import asdict, dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Iterable, Mapping, Sequence

from ._io import check_path_type
from .errors import ConfigError, SyncTalkAudioError

__all__ = [
    "AUDIO_SUFFIXES",
    "FAILURES",
    "SUMMARY",
    "Item",
    "Settings",
    "Outcome",
    "Failure",
    "Summary",
    "find_inputs",
    "read_manifest",
    "plan_items",
    "output_state",
    "weights_key",
]

#: Audio files a directory scan picks up (case-insensitive).
AUDIO_SUFFIXES = frozenset({".wav", ".flac", ".ogg", ".mp3"})
#: One JSON object per failed file: ``{"path", "output", "error"}``.
FAILURES = "_failures.jsonl"
#: The run's summary (counts, audio hours, wall time, throughput).
SUMMARY = "_summary.json"
_MANIFEST_MAX_BYTES = 256 << 20
_NPY_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*\.npy$")
#: What :func:`synctalk_audio._io.atomic_dir` leaves behind when killed: ``.NAME.<8 hex>.tmp|old``.
_LEFTOVER = re.compile(r"^\.(?P<name>.+)\.[0-9a-f]{8}\.(?:tmp|old)$")


# --------------------------------------------------------------------------- data


@dataclass(frozen=True)
class Item:
    """One input file and where its output goes.

    Attributes
    ----------
    source : str, absolute path of the audio file (recorded as ``source`` in metadata.json)
    rel : str, output directory relative to OUT (POSIX, no suffix): ``a/b/talk``
    output : str, absolute ``OUT/rel``
    """

    source: str
    rel: str
    output: str


@dataclass(frozen=True)
class Settings:
    """What every worker needs to rebuild the engine and run :func:`extract_one` (picklable)."""

    checkpoint: str
    mode: str = "ave"
    radius: int = 8
    precision: "str | None" = None
    device: str = "auto"
    fps: "float | None" = None
    context: str = "zeros"
    frames: bool = False
    batch_size: "int | None" = None
    threads: "int | None" = None


@dataclass(frozen=True)
class Outcome:
    """What became of one item: ``status`` is "done", "skipped" or "failed" (then ``error``)."""

    item: Item
    status: str
    duration_s: float = 0.0
    error: str = ""
    seconds: float = 0.0


@dataclass(frozen=True)
class Failure:
    """One line of ``_failures.jsonl``."""

    path: str
    output: str
    error: str


@dataclass(frozen=True)
class Summary:
    """The result of :func:`extract_dataset` (also ``OUT/_summary.json``).

    ``files_per_hour`` and ``audio_hours_per_hour`` count the files computed in this run
    (``done``) over its whole wall time, planning and engine loads included.
    """

    src: str
    out: str
    backend: str
    workers: int
    mode: str
    radius: int
    precision: str
    n_files: int
    done: int
    skipped: int
    failed: tuple[Failure, ...]
    audio_s_done: float
    audio_s_skipped: float
    wall_s: float
    untrained: bool

    @property
    def ok(self) -> bool:
        """True when no file failed."""
        return not self.failed

    @property
    def files_per_hour(self) -> float:
        return 3600.0 * self.done / self.wall_s if self.wall_s > 0 else 0.0

    @property
    def audio_hours_per_hour(self) -> float:
        return self.audio_s_done / self.wall_s if self.wall_s > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict (what ``_summary.json`` holds)."""
        out = asdict(self)
        out["failed"] = [asdict(f) for f in self.failed]
        out.update(ok=self.ok, n_failed=len(self.failed), audio_hours_done=self.audio_s_done / 3600.0,
                   audio_hours_skipped=self.audio_s_skipped / 3600.0, files_per_hour=self.files_per_hour,
                   audio_hours_per_hour=self.audio_hours_per_hour)
        return out

    def lines(self) -> list[str]:
        """The human summary, one string per line."""
        head = (f"{self.n_files} files: {self.done} done, {self.skipped} skipped (already complete), "
                f"{len(self.failed)} failed")
        rate = (f"{self.audio_s_done / 3600.0:.4g} audio hours computed in {self.wall_s:.1f} s: "
                f"{self.files_per_hour:.0f} files/h, {self.audio_hours_per_hour:.3g} audio-h/h "
                f"({self.backend}, {self.workers} worker{'s' if self.workers != 1 else ''})")
        out = [head, rate]
        for f in self.failed[:20]:
            out.append(f"  failed: {f.path}: {f.error}")
        if len(self.failed) > 20:
            out.append(f"  … and {len(self.failed) - 20} more")
        where = str(Path(self.out) / SUMMARY)
        if self.failed:
            where += f"; failures: {Path(self.out) / FAILURES}"
        out.append(f"summary: {where}")
        return out


# --------------------------------------------------------------------------- inputs


def _is_audio(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in AUDIO_SUFFIXES


def _scan(root: Path) -> list[Path]:
    """Audio files under ``root``, recursively; hidden entries and links to directories skipped."""
    found = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        found += [Path(dirpath) / f for f in filenames if not f.startswith(".") and _is_audio(f)]
    return found


def _manifest_text(path: Path) -> str:
    from ._io import open_regular

    with open_regular(path, what="manifest") as fh:
        data = fh.read(_MANIFEST_MAX_BYTES + 1)
    if len(data) > _MANIFEST_MAX_BYTES:
        raise ConfigError(f"manifest {path} is larger than {_MANIFEST_MAX_BYTES >> 20} MiB")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise ConfigError(f"manifest {path} is not UTF-8 text") from None


def _csv_paths(text: str, path: Path) -> list[str]:
    reader = csv.DictReader(io.StringIO(text))
    fields = [f.strip() for f in reader.fieldnames or []]
    if "path" not in fields:
        raise ConfigError(f"manifest {path} has no 'path' column (columns: {', '.join(fields) or 'none'})")
    reader.fieldnames = fields
    out = []
    for row in reader:
        value = (row.get("path") or "").strip()
        if not value:
            raise ConfigError(f"manifest {path} line {reader.line_num}: empty 'path'")
        out.append(value)
    return out


def _jsonl_paths(text: str, path: Path) -> list[str]:
    out = []
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except ValueError:
            raise ConfigError(f"manifest {path} line {lineno}: not a JSON object") from None
        value = obj.get("path") if isinstance(obj, dict) else None
        if not isinstance(value, str) or not value.strip():
            raise ConfigError(f"manifest {path} line {lineno}: expected an object with a string 'path'")
        out.append(value.strip())
    return out


def _text_paths(text: str) -> list[str]:
    lines = (line.strip() for line in text.splitlines())
    return [line for line in lines if line and not line.startswith("#")]


def read_manifest(path: "str | os.PathLike") -> list[Path]:
    """The audio paths a manifest lists, absolute, duplicates dropped, in manifest order.

    ``.csv``: a ``path`` column; ``.jsonl``/``.ndjson``: one object with ``path`` per line;
    anything else: one path per line (blank lines and ``#`` comments skipped). Relative paths
    are relative to the manifest's folder.

    Raises
    ------
    ConfigError
        Unreadable, not UTF-8, no ``path`` column, a malformed line, or no path at all.
    """
    p = Path(path).expanduser()
    text = _manifest_text(p)
    suffix = p.suffix.lower()
    raw = (_csv_paths(text, p) if suffix == ".csv" else _jsonl_paths(text, p) if suffix in (".jsonl", ".ndjson")
           else _text_paths(text))
    base = p.parent
    seen: dict[str, Path] = {}
    for value in raw:
        q = Path(value).expanduser()
        absolute = Path(os.path.abspath(q if q.is_absolute() else base / q))
        seen.setdefault(str(absolute), absolute)
    if not seen:
        raise ConfigError(f"manifest {p} lists no paths")
    return list(seen.values())


def find_inputs(src: "str | os.PathLike") -> tuple[Path, list[Path]]:
    """SRC → (root, audio files): a directory scanned recursively, or a manifest.

    Returns
    -------
    root : Path
        What output paths are relative to: the directory, or the common parent of the
        manifest's paths.
    files : list of absolute Paths, sorted (directory) or in manifest order

    Raises
    ------
    ConfigError
        SRC missing, an audio file itself, a directory without audio files, a bad manifest.
    """
    p = Path(check_path_type(src, "SRC")).expanduser()
    if not os.path.lexists(p):
        raise ConfigError(f"SRC not found: {p} (expected a directory of audio files or a manifest)")
    if p.is_dir():
        root = Path(os.path.abspath(p))
        files = sorted(_scan(root), key=lambda f: f.relative_to(root).as_posix())
        if not files:
            raise ConfigError(f"no audio files ({', '.join(sorted(AUDIO_SUFFIXES))}) under {p}")
        return root, files
    if _is_audio(p.name):
        raise ConfigError(f"SRC {p} is an audio file; give a directory or a manifest (for single files: "
                          "synctalk-audio features)")
    files = read_manifest(p)
    root = Path(os.path.commonpath([str(f.parent) for f in files]))
    return root, files


def _rel(file: Path, root: Path) -> str:
    rel = PurePosixPath(Path(os.path.relpath(file, root)).as_posix())
    return str(rel.with_suffix("")) if rel.suffix else str(rel)


def plan_items(root: Path, files: Sequence[Path], out: "str | os.PathLike") -> tuple[list[Item], list[Failure]]:
    """One :class:`Item` per file; files whose outputs would collide become failures.

    Two files collide when they map to one output directory (``a.wav`` and ``a.flac``) or one
    output would hold another (``a.wav`` → ``OUT/a/`` and ``a/b.wav`` → ``OUT/a/b/``).
    """
    out_root = Path(os.path.abspath(Path(out).expanduser()))
    by_rel: dict[str, list[Path]] = {}
    for f in files:
        by_rel.setdefault(_rel(f, root), []).append(f)
    bad: dict[str, str] = {}
    for rel, group in by_rel.items():
        if len(group) > 1:
            bad[rel] = f"{len(group)} inputs ({', '.join(g.name for g in group)}) map to {out_root / rel}; rename one"
        for parent in PurePosixPath(rel).parents:
            if str(parent) in by_rel and str(parent) != ".":
                msg = f"output {out_root / parent} would contain {out_root / rel}; rename one of the inputs"
                bad.setdefault(rel, msg)
                bad.setdefault(str(parent), msg)
    items, failures = [], []
    for rel, group in by_rel.items():
        for f in group:
            if rel in bad:
                failures.append(Failure(str(f), str(out_root / rel), bad[rel]))
            else:
                items.append(Item(str(f), rel, str(out_root / rel)))
    return items, failures


# --------------------------------------------------------------------------- completeness


def weights_key(weights: "Mapping[str, Any] | None") -> tuple[tuple[str, Any], ...]:
    """What identifies the weights in a ``metadata.json`` ``weights`` record.

    Its hashes (keys ending in ``sha256``) and untrained flags; when it records no hash at all,
    every field except the free-text ``note``.
    """
    if not isinstance(weights, Mapping):
        return ()
    hashes = {k: v for k, v in weights.items() if k.endswith("sha256") and v is not None}
    keep = (lambda k: k.endswith("sha256") or k.startswith("untrained")) if hashes else (lambda k: k != "note")
    return tuple(sorted((k, json.dumps(v, sort_keys=True, default=str)) for k, v in weights.items() if keep(k)))


@dataclass(frozen=True)
class _Expected:
    mode: str
    radius: int
    context: str
    fps: float
    precision: str
    frames: bool
    weights: tuple[tuple[str, Any], ...]


def _listed_npys(meta: Mapping[str, Any]) -> "dict[str, str] | None":
    sums = meta.get("sha256")
    if not isinstance(sums, Mapping) or not sums:
        return None
    for name, digest in sums.items():
        if not (isinstance(name, str) and _NPY_NAME.match(name) and isinstance(digest, str)
                and re.fullmatch(r"[0-9a-f]{64}", digest)):
            return None
    return dict(sums)


def _settings_mismatch(meta: Mapping[str, Any], source: str, exp: _Expected) -> str:
    from ._io import output_kind

    if output_kind(meta) != "features":
        return "not a features output of synctalk-audio"
    for key, want in (("mode", exp.mode), ("radius", exp.radius), ("context", exp.context),
                      ("precision", exp.precision), ("source", source)):
        if meta.get(key) != want:
            return f"{key} is {meta.get(key)!r}, not {want!r}"
    fps = meta.get("fps")
    if isinstance(fps, bool) or not isinstance(fps, (int, float)) or float(fps) != float(exp.fps):
        return f"fps is {fps!r}, not {exp.fps!r}"
    if weights_key(meta.get("weights")) != exp.weights:
        return "written with other weights"
    return ""


def output_state(output: "str | os.PathLike", source: str, expected: _Expected) -> tuple[bool, str, float]:
    """Is ``output`` a complete features directory for ``source`` with these settings?

    Complete: ``metadata.json`` of a synctalk-audio features output with the same mode, radius,
    context, fps, precision, source and weights hashes; ``audio_frames.npy`` listed exactly when
    frames are asked for; every ``.npy`` in the directory listed in its ``sha256`` and every
    listed file matching it.

    Returns
    -------
    (complete, why not (empty when complete), audio duration in seconds from the metadata)
    """
    from ._io import file_sha256
    from .dataset import STACKED_FRAMES, read_metadata

    root = Path(output)
    if not os.path.lexists(root):
        return False, "absent", 0.0
    if root.is_symlink() or not root.is_dir():
        return False, "not a directory", 0.0
    try:
        meta = read_metadata(root, required=False)
    except (SyncTalkAudioError, OSError) as exc:
        return False, _one_line(exc), 0.0
    if meta is None:
        return False, "no metadata.json", 0.0
    why = _settings_mismatch(meta, source, expected)
    sums = _listed_npys(meta)
    if not why and sums is None:
        why = "metadata.json lists no valid sha256 checksums"
    if not why and (STACKED_FRAMES in sums) != expected.frames:
        why = f"{STACKED_FRAMES} {'missing' if expected.frames else 'present'}"
    if why:
        return False, why, 0.0
    try:
        present = {e.name for e in os.scandir(root) if e.name.endswith(".npy")}
        if present != set(sums):
            return False, "the .npy files differ from those metadata.json lists", 0.0
        for name, digest in sums.items():
            if file_sha256(root / name) != digest:
                return False, f"{name} does not match its sha256", 0.0
    except (SyncTalkAudioError, OSError) as exc:
        return False, _one_line(exc), 0.0
    duration = meta.get("duration_s")
    return True, "", float(duration) if isinstance(duration, (int, float)) and not isinstance(duration, bool) else 0.0


def _remove_leftovers(items: Iterable[Item], out_root: Path) -> int:
    """Delete the temp siblings a killed run left next to the planned outputs; how many."""
    from ._io import _remove

    names: dict[Path, set[str]] = {out_root: {SUMMARY, FAILURES}}
    for it in items:
        target = Path(it.output)
        names.setdefault(target.parent, set()).add(target.name)
    removed = 0
    for folder, wanted in names.items():
        try:
            entries = list(os.scandir(folder))
        except OSError:
            continue
        for entry in entries:
            m = _LEFTOVER.match(entry.name)
            if m and m.group("name") in wanted:
                _remove(Path(entry.path))
                removed += 1
    return removed


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    if isinstance(exc, OSError) and exc.filename is not None and exc.strerror:
        text = f"{exc.filename}: {exc.strerror}"
    if not isinstance(exc, (SyncTalkAudioError, OSError)):
        text = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    return text[:500] or type(exc).__name__

