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

This module holds the entry point and the run's bookkeeping (lock, failures file, summary);
the records, input discovery and completeness check are in :mod:`synctalk_audio.jobs_plan`,
the per-file task and the executors (this process, a process pool, Ray) in
:mod:`synctalk_audio.jobs_workers`. Their public names are importable from here.
"""

from __future__ import annotations

import json
import os
import time
import warnings
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable, Sequence

from . import jobs_plan
from ._io import check_path_type
from .config import check_flag
from .errors import ConfigError, OutputError
# every public name of jobs_plan (AUDIO_SUFFIXES, read_manifest …) stays importable from here
from .jobs_plan import (AUDIO_SUFFIXES, FAILURES, SUMMARY, Failure, Item, Outcome, Settings, Summary, _Expected,
                        _one_line, _remove_leftovers, find_inputs, output_state, plan_items, read_manifest, weights_key)
from .jobs_workers import (BLAS_THREADS, _import_ray, _ray_address, _run_pool, _run_ray, _start_ray, check_device,
                           extract_one, load_engine, pin_blas_threads, usable_cores)

__all__ = [*jobs_plan.__all__, "extract_one", "extract_dataset"]

#: Held (flock) by the run that writes OUT: two runs never write one OUT at once.
LOCK = ".synctalk-audio-dataset.lock"


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
        _write_books(lambda: _write_failures(self.out_root / FAILURES, self.failed))
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


def _write_books(write: Callable[[], Any]) -> None:
    """Write ``_failures.jsonl`` or ``_summary.json``; if that fails (a full disk: what made the files
    fail too), warn and go on — the run's summary still lists every failure, and the exit status
    says some failed."""
    try:
        write()
    except (OutputError, OSError) as exc:
        warnings.warn(f"{_one_line(exc)}; the run goes on (its summary lists the failures)", stacklevel=2)


def _write_failures(path: Path, failures: Sequence[Failure]) -> None:
    from ._io import atomic_file

    with atomic_file(path, overwrite=True) as fh:
        for f in failures:
            fh.write((json.dumps(asdict(f), ensure_ascii=False) + "\n").encode("utf-8"))


def _out_path(out: "str | os.PathLike", src_dir: "Path | None") -> Path:
    """``out`` → the absolute OUT folder, checked but not created: not empty, not a file, and
    neither ``src_dir`` (SRC when it is a directory) nor inside it."""
    if not check_path_type(out, "OUT"):
        raise OutputError("OUT is empty: -o names the folder that gets one sub-folder per input")
    root = Path(os.path.abspath(Path(out).expanduser()))
    if os.path.lexists(root) and not root.is_dir():
        raise OutputError(f"output {root} is a file; -o names the folder that gets one sub-folder per input")
    if src_dir is not None:
        real, src_real = Path(os.path.realpath(root)), Path(os.path.realpath(src_dir))
        if real == src_real or real.is_relative_to(src_real):
            where = "is SRC" if real == src_real else "is inside SRC"
            raise OutputError(f"OUT {root} {where} {src_dir}: choose a folder outside it (outputs would be "
                              "written into the source tree)")
    return root


def _make_out(root: Path) -> None:
    """Create OUT and its missing parents (none is left if that fails; the path is named once)."""
    from ._io import make_folders

    try:
        make_folders(root)
    except OSError as exc:
        raise OutputError(f"cannot create output folder {root}: {exc.strerror or _one_line(exc)}") from None


def _check_settings(settings: Settings, workers: int, ray: Any, gpus: float) -> None:
    from .audio import max_audio_seconds
    from .batches import check_positive_int
    from .config import check_context, check_mode, check_mode_fps, check_radius
    from .engines import check_precision

    check_mode(settings.mode)
    check_radius(settings.radius)
    check_context(settings.context)
    if settings.fps is not None:
        check_mode_fps(settings.mode, settings.fps)
    check_precision(settings.precision, settings.mode)
    check_positive_int("batch_size", settings.batch_size)
    check_positive_int("threads", settings.threads)
    check_positive_int("workers", workers, allow_none=False)
    if isinstance(gpus, bool) or not isinstance(gpus, (int, float)) or not gpus >= 0:
        raise ConfigError(f"gpus_per_worker must be a number >= 0, got {gpus!r}")
    if gpus and not ray:
        raise ConfigError("gpus_per_worker needs ray=...; local workers share the visible GPUs (device='cuda')")
    if ray is not None and not isinstance(ray, (bool, str)):
        raise ConfigError(f"ray must be None, True (a local Ray) or a cluster ADDRESS string, got {ray!r}")
    if ray:
        _ray_address(ray)
    max_audio_seconds()  # $SYNCTALK_AUDIO_MAX_SECONDS: one setting error now, not one failure per file


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
        when missing, once every setting is checked; not empty, not ``src`` nor inside it. Also
        ``_summary.json`` and, when files failed, ``_failures.jsonl``.
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
        Before anything is written (OUT is not created): bad settings or SRC (device and
        ``$SYNCTALK_AUDIO_MAX_SECONDS`` included), Ray missing or its address invalid or
        unreachable, the checkpoint cannot be loaded, OUT empty, inside SRC or unusable; OUT
        locked by another run.
    """
    start = time.perf_counter()
    settings = Settings(checkpoint=str(checkpoint) if isinstance(checkpoint, os.PathLike) else checkpoint,
                        mode=mode, radius=radius, precision=precision, device=device, fps=fps, context=context,
                        frames=check_flag("frames", frames), batch_size=batch_size, threads=threads)
    if not isinstance(settings.checkpoint, str):
        raise ConfigError(f"checkpoint must be a path or 'seeded' (every worker loads it), "
                          f"got {type(checkpoint).__name__}")
    n_workers = 1 if workers is None else workers
    _check_settings(settings, n_workers, ray, gpus_per_worker)
    _check_not_bootstrapping()
    ray_mod = _import_ray() if ray else None
    root, files = find_inputs(src)
    out_root = _out_path(out, root if os.path.isdir(Path(src).expanduser()) else None)
    serial = not ray and n_workers == 1
    engine, weights = _parent_engine(settings, serial=serial, gpu_actors=bool(ray) and gpus_per_worker > 0)
    started = _start_ray(ray_mod, ray) if ray else False
    try:  # every usage error is behind us: only now is anything written
        _make_out(out_root)
        items, collisions = plan_items(root, files, out_root)
        lock = _Lock(out_root)
        try:
            return _run(settings, src, out_root, items, collisions, engine, weights, start=start, serial=serial,
                        workers=workers, ray=ray, ray_mod=ray_mod, gpus=float(gpus_per_worker), progress=progress)
        finally:
            lock.release()
    finally:
        if started:
            ray_mod.shutdown()


def _parent_engine(settings: Settings, *, serial: bool, gpu_actors: bool) -> tuple[Any, dict[str, Any]]:
    """The engine this process needs: the one that runs the files when ``serial``, else one on the
    CPU that only tells the weight hashes, with the workers' device checked here (its spelling
    only for Ray GPU actors: this machine may have no GPU). Raises on a bad checkpoint, mode,
    precision or device, before anything is written."""
    if serial:
        return load_engine(settings)
    engine, weights = load_engine(Settings(**{**asdict(settings), "device": "cpu"}))
    check_device(settings.device, engine, here=not gpu_actors)
    return engine, weights


def _check_not_bootstrapping() -> None:
    """A spawned worker re-imports the caller's main script: an unguarded ``extract_dataset`` call
    there would start a second run. Say so in one line (the parent's run holds OUT's lock)."""
    import multiprocessing as mp

    if getattr(mp.current_process(), "_inheriting", False):
        raise ConfigError("extract_dataset() was called while a worker process was starting: its workers "
                          "re-import your main script, so put the call under `if __name__ == \"__main__\":`")


def _run(settings: Settings, src: Any, out_root: Path, items: list[Item], collisions: list[Failure], engine: Any,
         weights: dict[str, Any], *, start: float, serial: bool, workers: "int | None", ray: Any, ray_mod: Any,
         gpus: float, progress: bool) -> Summary:
    from .config import MODE_FPS

    _remove_leftovers(items, out_root)
    stale = out_root / FAILURES
    if stale.is_file() and not stale.is_symlink():
        stale.unlink()
    local_threads = settings.threads or (None if serial else max(1, usable_cores() // (workers or 1)))
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
            n = _run_ray(ray_mod, todo, settings, workers, gpus, expected.weights, books)
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

    _write_books(lambda: write_json(out_root / SUMMARY, summary.to_dict(), overwrite=True))
    return summary
