"""Dataset-scale extraction: many files, resumable, failure-isolated, on local workers or Ray.

One per-file task — :func:`extract_one`: ``pipeline`` then ``write_features`` into
``OUT/<path relative to SRC without its suffix>/`` — run three ways with the same result, byte
for byte:

* serially in this process (``workers=1``);
* by ``workers`` local processes (``ProcessPoolExecutor``, spawn), each loading the
  encoder once in its initializer, CPU threads divided so ``workers × threads <= cores``;
* by Ray actors (``ray=True`` local, ``ray="ADDRESS"`` an existing cluster), one encoder load
  per actor, ``gpus_per_worker`` GPUs each.

The parent plans the run (:func:`find_inputs`, :func:`plan_items`), skips every file whose
output is already complete (:func:`output_state`: metadata present, same settings and weights
hashes, every listed ``.npy`` present with its sha256) and hands only the rest to the workers.
Each output directory is written atomically, so a run killed at any moment (SIGKILL included)
leaves complete directories and hidden temp siblings, which the next run removes before it
finishes the rest. A file that fails is recorded in ``OUT/_failures.jsonl`` and the run goes
on; the summary goes to ``OUT/_summary.json``. See docs/datasets.md.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import time
import warnings
from collections import deque
from dataclasses import asdict, dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Callable, Iterable, Mapping, Sequence

from .errors import ConfigError, OutputError, SyncTalkAudioError

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
    "extract_one",
    "extract_dataset",
]

#: Audio files a directory scan picks up (case-insensitive).
AUDIO_SUFFIXES = frozenset({".wav", ".flac", ".ogg", ".mp3"})
#: One JSON object per failed file: ``{"path", "output", "error"}``.
FAILURES = "_failures.jsonl"
#: The run's summary (counts, audio hours, wall time, throughput).
SUMMARY = "_summary.json"
#: Held (flock) by the run that writes OUT: two runs never write one OUT at once.
LOCK = ".synctalk-audio-dataset.lock"
_MANIFEST_MAX_BYTES = 256 << 20
_NPY_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*\.npy$")
#: What :func:`synctalk_audio._io.atomic_dir` leaves behind when killed: ``.NAME.<8 hex>.tmp|old``.
_LEFTOVER = re.compile(r"^\.(?P<name>.+)\.[0-9a-f]{8}\.(?:tmp|old)$")
_RAY_MISSING = ("ray is not installed; --ray / extract_dataset(ray=...) needs it: pip install 'synctalk-audio[ray]' "
                "(from a clone: pip install -e '.[ray]')")


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
    p = Path(src).expanduser()
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


# --------------------------------------------------------------------------- the per-file task


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    if isinstance(exc, OSError) and exc.filename is not None and exc.strerror:
        text = f"{exc.filename}: {exc.strerror}"
    if not isinstance(exc, (SyncTalkAudioError, OSError)):
        text = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    return text[:500] or type(exc).__name__


def load_engine(settings: Settings) -> tuple[Any, dict[str, Any]]:
    """``settings`` → (engine, weights record for metadata.json), as ``synctalk-audio features`` does."""
    from .dataset import weights_info
    from .engines import resolve_encoder

    with warnings.catch_warnings():  # the summary says 'untrained'; no warning per worker
        warnings.simplefilter("ignore", UserWarning)
        engine = resolve_encoder(settings.checkpoint, mode=settings.mode, precision=settings.precision,
                                 device=settings.device, threads=settings.threads)
    return engine, weights_info(engine)


def extract_one(item: Item, engine: Any, weights: Mapping[str, Any], settings: Settings) -> Outcome:
    """Run the pipeline on ``item.source`` and write ``item.output`` atomically; never raises
    for a bad file (the error becomes a failed :class:`Outcome`)."""
    from .dataset import write_features
    from .pipeline import pipeline

    start = time.perf_counter()
    try:
        result = pipeline(item.source, checkpoint=engine, mode=settings.mode, fps=settings.fps,
                          precision=settings.precision, device=settings.device, context=settings.context,
                          radius=settings.radius, batch_size=settings.batch_size, threads=settings.threads)
        meta = write_features(result, item.output, weights=weights, overwrite=True, frames=settings.frames)
    except Exception as exc:  # failure isolation: any error of this file is this file's
        return Outcome(item, "failed", error=_one_line(exc), seconds=time.perf_counter() - start)
    return Outcome(item, "done", duration_s=float(meta.get("duration_s") or 0.0),
                   seconds=time.perf_counter() - start)


class _Worker:
    """The engine of one worker process or Ray actor, loaded once."""

    def __init__(self, settings: Settings, expected: tuple[tuple[str, Any], ...]) -> None:
        self.settings = settings
        self.error = ""
        pin_blas_threads(BLAS_THREADS)
        try:
            self.engine, self.weights = load_engine(settings)
            if weights_key(self.weights) != expected:
                self.error = (f"this worker loaded other weights from {settings.checkpoint} than the driver "
                              "(is the checkpoint the same file on every node?)")
        except Exception as exc:
            self.error = f"worker could not load the encoder: {_one_line(exc)}"

    def run(self, item: Item) -> Outcome:
        if self.error:
            return Outcome(item, "failed", error=self.error)
        return extract_one(item, self.engine, self.weights, self.settings)


_PROCESS_WORKER: "_Worker | None" = None


def _die_with_parent() -> None:
    """Linux: SIGKILL this worker when its parent dies, so a killed run leaves no worker
    finishing files behind the next run's back (best effort elsewhere)."""
    import ctypes
    import signal

    try:
        libc = ctypes.CDLL(None)
        libc.prctl(1, int(signal.SIGKILL), 0, 0, 0)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _init_process(settings: Settings, expected: tuple[tuple[str, Any], ...]) -> None:
    global _PROCESS_WORKER
    _die_with_parent()
    _PROCESS_WORKER = _Worker(settings, expected)


def _run_in_process(item: Item) -> Outcome:
    assert _PROCESS_WORKER is not None
    return _PROCESS_WORKER.run(item)


# --------------------------------------------------------------------------- backends


#: numpy's OpenBLAS takes one code path with 1 thread and another, whose float64 sums differ in
#: the last bit, with 2 or more (the mel projection ``mel_basis @ |stft|``): every backend pins
#: it to this count so outputs do not depend on the worker's CPU share (Ray sets 1 per actor).
BLAS_THREADS = 2
_OPENBLAS_SET = ("scipy_openblas_set_num_threads64_", "scipy_openblas_set_num_threads",
                 "openblas_set_num_threads64_", "openblas_set_num_threads")
_OPENBLAS_GET = ("scipy_openblas_get_num_threads64_", "scipy_openblas_get_num_threads",
                 "openblas_get_num_threads64_", "openblas_get_num_threads")


def _openblas() -> "tuple[Any, Any] | None":
    """(set, get) thread-count functions of the OpenBLAS loaded in this process, if any."""
    import ctypes

    try:
        with open("/proc/self/maps") as fh:
            libs = sorted({line.split()[-1] for line in fh if "openblas" in line.lower() and ".so" in line})
    except OSError:
        return None
    for path in libs:
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        setter = next((getattr(lib, s) for s in _OPENBLAS_SET if hasattr(lib, s)), None)
        getter = next((getattr(lib, s) for s in _OPENBLAS_GET if hasattr(lib, s)), None)
        if setter is not None and getter is not None:
            setter.argtypes, getter.restype = [ctypes.c_int], ctypes.c_int
            return setter, getter
    return None


def pin_blas_threads(n: int) -> "int | None":
    """Set numpy's OpenBLAS thread count to ``n``; returns the previous count (None: no OpenBLAS
    found, nothing changed)."""
    import numpy  # noqa: F401  (loads the BLAS numpy uses)

    funcs = _openblas()
    if funcs is None:
        return None
    setter, getter = funcs
    previous = int(getter())
    setter(int(n))
    return previous


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity mask), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def _died(item: Item, what: str) -> Outcome:
    return Outcome(item, "failed", error=f"{what} died while processing this file (crash or out of memory)")


def _run_pool(todo: Sequence[Item], settings: Settings, workers: int, expected: tuple,
              emit: Callable[[Outcome], None]) -> None:
    """``workers`` processes; at most ``workers`` items in flight.

    A worker that dies breaks the whole pool: the items then in flight become suspects and are
    run again one at a time in a fresh pool, so a crash while a suspect runs alone is that
    file's and only that file fails.
    """
    import multiprocessing as mp
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
    from concurrent.futures.process import BrokenProcessPool

    # spawn: workers are this process's own children (a fresh interpreter each: no torch or
    # thread state inherited through fork), so PR_SET_PDEATHSIG ends them when it is killed
    ctx = mp.get_context("spawn")

    def new_pool() -> ProcessPoolExecutor:
        return ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_init_process,
                                   initargs=(settings, expected))

    queue, suspects = deque(todo), deque()
    pending: dict[Any, Item] = {}
    alone = False
    pool = new_pool()
    try:
        while queue or suspects or pending:
            if suspects and not pending:
                item = suspects.popleft()
                pending[pool.submit(_run_in_process, item)] = item
                alone = True
            elif not suspects and not alone:
                while queue and len(pending) < workers:
                    item = queue.popleft()
                    pending[pool.submit(_run_in_process, item)] = item
            done, _ = wait(list(pending), return_when=FIRST_COMPLETED)
            crashed = []
            for fut in done:
                item = pending.pop(fut)
                try:
                    emit(fut.result())
                except BrokenProcessPool:
                    crashed.append(item)
            if crashed:
                crashed += list(pending.values())
                pending.clear()
                if alone:
                    emit(_died(crashed[0], "the worker process"))
                else:
                    suspects.extend(crashed)
                pool.shutdown(wait=True, cancel_futures=True)
                pool = new_pool()
            if not pending:
                alone = False
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise ConfigError(_RAY_MISSING) from None
    return ray


def _ray_actor_count(ray: Any, workers: "int | None", threads: int, gpus: float, n_todo: int) -> int:
    if workers is not None:
        return max(1, min(workers, n_todo))
    resources = ray.cluster_resources()
    if gpus > 0:
        n = int(resources.get("GPU", 0) // gpus)
        if n < 1:
            raise ConfigError(f"gpus_per_worker={gpus:g} but the Ray cluster has {resources.get('GPU', 0):g} GPUs")
    else:
        n = int(resources.get("CPU", 1) // threads)
    return max(1, min(n, n_todo))


def _run_ray(ray: Any, address: "bool | str", todo: Sequence[Item], settings: Settings, workers: "int | None",
             gpus: float, expected: tuple, emit: Callable[[Outcome], None]) -> int:
    """Ray actors, one item in flight per actor; an actor that dies is replaced and its item
    retried once (a lost node is not the file's fault), then recorded as failed. Returns the
    number of actors. Ray is started (or connected to) here unless this process already did."""
    started = _start_ray(ray, address)
    try:
        return _drive_actors(ray, todo, settings, workers, gpus, expected, emit)
    finally:
        if started:
            ray.shutdown()


def _drive_actors(ray: Any, todo: Sequence[Item], settings: Settings, workers: "int | None", gpus: float,
                  expected: tuple, emit: Callable[[Outcome], None]) -> int:
    threads = settings.threads or 1
    n = _ray_actor_count(ray, workers, threads, gpus, len(todo))
    actor_cls = ray.remote(_Worker).options(num_cpus=threads, num_gpus=gpus, max_restarts=0)

    def spawn() -> Any:
        return actor_cls.remote(settings, expected)

    free = [spawn() for _ in range(n)]
    queue = deque(todo)
    inflight: dict[Any, tuple[Any, Item]] = {}
    tries: dict[str, int] = {}
    try:
        while queue or inflight:
            while queue and free:
                actor, item = free.pop(), queue.popleft()
                inflight[actor.run.remote(item)] = (actor, item)
            ready, _ = ray.wait(list(inflight), num_returns=1)
            for ref in ready:
                actor, item = inflight.pop(ref)
                try:
                    emit(ray.get(ref))
                    free.append(actor)
                except ray.exceptions.RayActorError:
                    tries[item.source] = tries.get(item.source, 0) + 1
                    if tries[item.source] >= 2:
                        emit(_died(item, "the Ray actor"))
                    else:
                        queue.appendleft(item)
                    ray.kill(actor)
                    free.append(spawn())
                except ray.exceptions.RayError as exc:
                    emit(Outcome(item, "failed", error=f"Ray: {_one_line(exc)}"))
                    free.append(actor)
    finally:
        for actor in free + [a for a, _ in inflight.values()]:
            ray.kill(actor)
    return n


def _start_ray(ray: Any, address: "bool | str") -> bool:
    """Connect to (or start) Ray unless this process already did; True if we must shut it down."""
    import logging

    if ray.is_initialized():
        return False
    where = None if address is True or address in ("", "local") else str(address)
    ray.init(address=where, include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING)
    return True


# --------------------------------------------------------------------------- run bookkeeping


class _Lock:
    """``OUT/.synctalk-audio-dataset.lock`` held with flock for the run (released on any exit,
    SIGKILL included, by the kernel)."""

    def __init__(self, out_root: Path) -> None:
        self.fd = -1
        try:
            import fcntl
        except ImportError:  # not POSIX: no lock
            return
        path = out_root / LOCK
        try:
            self.fd = os.open(path, os.O_CREAT | os.O_RDWR | getattr(os, "O_CLOEXEC", 0), 0o666)
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self.fd)
            self.fd = -1
            raise OutputError(f"another dataset run is writing {out_root} (lock {path} is held); "
                              "wait for it or choose another OUT") from None
        except OSError as exc:
            raise OutputError(f"cannot lock {path}: {_one_line(exc)}") from None

    def release(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class _Books:
    """Counts, the failures file and the progress bar of one run."""

    def __init__(self, out_root: Path, total: int, progress: bool) -> None:
        self.out_root = out_root
        self.failed: list[Failure] = []
        self.done = self.skipped = 0
        self.audio_done = self.audio_skipped = 0.0
        self.bar = None
        if progress:
            from tqdm import tqdm

            self.bar = tqdm(total=total, unit="file", desc="dataset", dynamic_ncols=True)

    def skip(self, duration: float) -> None:
        self.skipped += 1
        self.audio_skipped += duration
        self._tick()

    def fail(self, failure: Failure) -> None:
        self.failed.append(failure)
        _write_failures(self.out_root / FAILURES, self.failed)
        self._tick()

    def __call__(self, outcome: Outcome) -> None:
        if outcome.status == "done":
            self.done += 1
            self.audio_done += outcome.duration_s
            self._tick()
        elif outcome.status == "skipped":
            self.skip(outcome.duration_s)
        else:
            self.fail(Failure(outcome.item.source, outcome.item.output, outcome.error))

    def _tick(self) -> None:
        if self.bar is not None:
            self.bar.set_postfix_str(f"{(self.audio_done + self.audio_skipped) / 3600:.3f} audio-h, "
                                     f"{len(self.failed)} failed", refresh=False)
            self.bar.update(1)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _write_failures(path: Path, failures: Sequence[Failure]) -> None:
    from ._io import atomic_file

    with atomic_file(path, overwrite=True) as fh:
        for f in failures:
            fh.write((json.dumps(asdict(f), ensure_ascii=False) + "\n").encode("utf-8"))


def _out_root(out: "str | os.PathLike") -> Path:
    root = Path(os.path.abspath(Path(out).expanduser()))
    if os.path.lexists(root) and not root.is_dir():
        raise OutputError(f"output {root} is a file; -o names the folder that gets one sub-folder per input")
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create output folder {root}: {_one_line(exc)}") from None
    return root


def _check_settings(settings: Settings, workers: int, ray: Any, gpus: float) -> None:
    from .batches import check_positive_int
    from .config import MODE_FPS, check_context, check_fps, check_mode, check_radius
    from .engines import PRECISIONS

    check_mode(settings.mode)
    check_radius(settings.radius)
    check_context(settings.context)
    if settings.fps is not None:
        check_fps(settings.fps)
        if settings.mode != "ave" and settings.fps != MODE_FPS[settings.mode]:
            raise ConfigError(f"fps for {settings.mode} is fixed at {MODE_FPS[settings.mode]}, got {settings.fps!r}")
    if settings.precision is not None and settings.precision not in PRECISIONS:
        raise ConfigError(f"unknown precision {settings.precision!r}; expected one of {', '.join(PRECISIONS)}")
    check_positive_int("batch_size", settings.batch_size)
    check_positive_int("threads", settings.threads)
    check_positive_int("workers", workers, allow_none=False)
    if isinstance(gpus, bool) or not isinstance(gpus, (int, float)) or not gpus >= 0:
        raise ConfigError(f"gpus_per_worker must be a number >= 0, got {gpus!r}")
    if gpus and not ray:
        raise ConfigError("gpus_per_worker needs ray=...; local workers share the visible GPUs (device='cuda')")
    if ray is not None and not isinstance(ray, (bool, str)):
        raise ConfigError(f"ray must be None, True (a local Ray) or a cluster ADDRESS string, got {ray!r}")


# --------------------------------------------------------------------------- the entry point


def extract_dataset(
    src: "str | os.PathLike",
    out: "str | os.PathLike",
    *,
    checkpoint: "str | os.PathLike",
    mode: str = "ave",
    radius: int = 8,
    precision: "str | None" = None,
    device: str = "auto",
    fps: "float | None" = None,
    context: str = "zeros",
    frames: bool = False,
    batch_size: "int | None" = None,
    threads: "int | None" = None,
    workers: "int | None" = None,
    ray: "bool | str | None" = None,
    gpus_per_worker: float = 0,
    progress: bool = True,
) -> Summary:
    """Extract features for every audio file of ``src`` into ``out``; resumable.

    Parameters
    ----------
    src : path
        A directory (scanned recursively for .wav/.flac/.ogg/.mp3, any case; hidden entries
        and links to directories skipped) or a manifest (one path per line, or a CSV/JSONL
        with a ``path`` column; relative paths relative to the manifest).
    out : path
        ``out/<path relative to src, suffix dropped>/`` gets what ``synctalk-audio features``
        writes for that file (relative to the common parent of a manifest's paths). Created
        when missing. Also ``_summary.json`` and, when files failed, ``_failures.jsonl``.
    checkpoint : path or "seeded"
        As for :func:`~synctalk_audio.pipeline.pipeline` (a path: every worker loads it).
    mode, radius, precision, device, fps, context, batch_size
        As for :func:`~synctalk_audio.pipeline.pipeline`.
    frames : bool
        Also write ``audio_frames.npy`` (``features --frames``).
    threads : int, optional
        CPU threads per worker (default: usable cores ÷ workers; 1 per Ray actor).
    workers : int, optional
        Local processes (default 1: this process). With ``ray``: the number of actors
        (default: the cluster's CPUs ÷ threads, or its GPUs ÷ ``gpus_per_worker``).
    ray : None, True or "ADDRESS"
        True starts (or reuses) a local Ray; a string connects to that cluster ("auto", or
        "HOST:6379"). ``out`` and the audio must then be on storage every node sees.
    gpus_per_worker : float
        GPUs per Ray actor (Ray only; 0 = CPU actors).
    progress : bool
        A tqdm bar over files (audio hours and failures in its postfix).

    Returns
    -------
    Summary (``ok`` is False when some file failed; those are in ``failed``)

    Raises
    ------
    ConfigError, CheckpointError, OutputError
        Before any file is processed: bad settings or SRC, Ray missing, the checkpoint cannot
        be loaded, OUT unusable or locked by another run.
    """
    start = time.perf_counter()
    settings = Settings(checkpoint=str(checkpoint) if isinstance(checkpoint, os.PathLike) else checkpoint,
                        mode=mode, radius=radius, precision=precision, device=device, fps=fps, context=context,
                        frames=bool(frames), batch_size=batch_size, threads=threads)
    if not isinstance(settings.checkpoint, str):
        raise ConfigError(f"checkpoint must be a path or 'seeded' (every worker loads it), "
                          f"got {type(checkpoint).__name__}")
    n_workers = 1 if workers is None else workers
    _check_settings(settings, n_workers, ray, gpus_per_worker)
    ray_mod = _import_ray() if ray else None
    root, files = find_inputs(src)
    out_root = _out_root(out)
    items, collisions = plan_items(root, files, out_root)
    lock = _Lock(out_root)
    try:
        return _run(settings, src, out_root, items, collisions, start=start, workers=workers, ray=ray,
                    ray_mod=ray_mod, gpus=float(gpus_per_worker), progress=progress)
    finally:
        lock.release()


def _run(settings: Settings, src: Any, out_root: Path, items: list[Item], collisions: list[Failure], *,
         start: float, workers: "int | None", ray: Any, ray_mod: Any, gpus: float, progress: bool) -> Summary:
    from .config import MODE_FPS

    _remove_leftovers(items, out_root)
    stale = out_root / FAILURES
    if stale.is_file() and not stale.is_symlink():
        stale.unlink()
    serial = not ray and (workers or 1) == 1
    local_threads = settings.threads or (None if serial else max(1, usable_cores() // (workers or 1)))
    parent_settings = settings if serial else Settings(**{**asdict(settings), "device": "cpu"})
    engine, weights = load_engine(parent_settings)  # fails early (exit 2) on a bad checkpoint
    expected = _Expected(mode=settings.mode, radius=settings.radius, context=settings.context,
                         fps=float(settings.fps if settings.fps is not None else MODE_FPS[settings.mode]),
                         precision=engine.precision, frames=settings.frames, weights=weights_key(weights))
    books = _Books(out_root, len(items) + len(collisions), progress)
    try:
        for f in collisions:
            books.fail(f)
        todo = []
        for it in items:
            complete, _, duration = output_state(it.output, it.source, expected)
            if complete:
                books.skip(duration)
            else:
                todo.append(it)
        n = 1
        if todo and serial:
            previous = pin_blas_threads(BLAS_THREADS)
            try:
                for it in todo:
                    books(extract_one(it, engine, weights, settings))
            finally:
                if previous is not None:
                    pin_blas_threads(previous)
        elif todo and ray:
            n = _run_ray(ray_mod, ray, todo, settings, workers, gpus, expected.weights, books)
        elif todo:
            n = max(1, min(workers or 1, len(todo)))
            _run_pool(todo, Settings(**{**asdict(settings), "threads": local_threads}), n, expected.weights, books)
    finally:
        books.close()
    backend = "ray" if ray else "serial" if serial else "processes"
    summary = Summary(src=str(src), out=str(out_root), backend=backend, workers=n, mode=settings.mode,
                      radius=settings.radius, precision=engine.precision, n_files=len(items) + len(collisions),
                      done=books.done, skipped=books.skipped, failed=tuple(books.failed),
                      audio_s_done=books.audio_done, audio_s_skipped=books.audio_skipped,
                      wall_s=time.perf_counter() - start, untrained=bool(weights.get("untrained_seeded")))
    from ._io import write_json

    write_json(out_root / SUMMARY, summary.to_dict(), overwrite=True)
    return summary

