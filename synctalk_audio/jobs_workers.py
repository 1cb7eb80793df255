"""Where a dataset run's per-file task runs: this process, local worker processes or Ray actors.

- the task: :func:`load_engine` (once per worker) and :func:`extract_one` (``pipeline`` then
  ``write_features``; a bad file becomes a failed :class:`~synctalk_audio.jobs_plan.Outcome`);
- numpy's OpenBLAS pinned to :data:`BLAS_THREADS` so every backend writes the same bytes;
- ``_run_pool``: spawned worker processes, a crashed worker's files retried alone;
- ``_start_ray``: the address checked (an unreachable HOST:PORT is one quick line), Ray started
  or connected to; ``_run_ray``: Ray actors, one item in flight each, a dead actor replaced.

:mod:`synctalk_audio.jobs` plans the run and calls these; its public names are importable
from there too. Standard library only at import time (numpy, the pipeline and ray load on use).
"""

from __future__ import annotations

import os
import re
import time
import warnings
from collections import deque
from typing import Any, Callable, Mapping, Sequence

from .errors import ConfigError
from .jobs_plan import Item, Outcome, Settings, _one_line, weights_key

__all__ = ["BLAS_THREADS", "load_engine", "check_device", "extract_one", "pin_blas_threads", "usable_cores"]

_RAY_MISSING = ("ray is not installed; --ray / extract_dataset(ray=...) needs it: pip install -e '.[ray]' in the "
                "package's clone")


# --------------------------------------------------------------------------- the per-file task


def load_engine(settings: Settings) -> tuple[Any, dict[str, Any]]:
    """``settings`` → (engine, weights record for metadata.json), as ``synctalk-audio features`` does."""
    from .dataset import weights_info
    from .engines import resolve_encoder

    with warnings.catch_warnings():  # the summary says 'untrained'; no warning per worker
        warnings.simplefilter("ignore", UserWarning)
        engine = resolve_encoder(settings.checkpoint, mode=settings.mode, precision=settings.precision,
                                 device=settings.device, threads=settings.threads)
    return engine, weights_info(engine)


def check_device(device: str, engine: Any, *, here: bool = True) -> None:
    """Check in the parent the device the workers will load ``engine``'s checkpoint on (the parent
    itself loads it on the CPU).

    ``here``: the checks of a load on this machine (CUDA present, the index exists), through the
    engine family's own device resolver; otherwise only the spelling (Ray GPU actors run on nodes
    whose GPUs this one may lack).

    Raises
    ------
    ConfigError
    """
    if not here:
        from .runtime import device_name, unknown_device

        if device != "auto" and device_name(device) is None:
            raise unknown_device(device)
        return
    if engine.precision == "onnx":  # onnxruntime engines (ave .onnx, wenet)
        from .runtime import _import_onnxruntime, _providers

        _providers(_import_onnxruntime(), device)
    else:
        from .torch_engines import resolve_device

        resolve_device(device)


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


def _init_process(settings: Settings, expected: tuple[tuple[str, Any], ...], parent: int) -> None:
    """A worker process's start: quiet on Ctrl-C (the driver reports it, once), killed with its
    parent — and gone at once if the parent already died while this process was starting (the
    parent-death signal only covers deaths after it is set: an orphan went on writing files)."""
    global _PROCESS_WORKER
    import signal

    signal.signal(signal.SIGINT, lambda *_: os._exit(130))  # no traceback from every worker
    _die_with_parent()
    if os.getppid() != parent:
        os._exit(0)
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
                                   initargs=(settings, expected, os.getpid()))

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


def _run_ray(ray: Any, todo: Sequence[Item], settings: Settings, workers: "int | None", gpus: float,
             expected: tuple, emit: Callable[[Outcome], None]) -> int:
    """Ray actors, one item in flight per actor; an actor that dies is replaced and its item
    retried once (a lost node is not the file's fault), then recorded as failed. Returns the
    number of actors. Ray must be running (:func:`_start_ray`)."""
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


def _ray_address(ray: "bool | str") -> "str | None":
    """``ray=`` → the address ``ray.init`` gets: None (start a local Ray, or reuse RAY_ADDRESS),
    ``"auto"``, a client address ``"SCHEME://…"`` or ``"HOST:PORT"``; nothing imported.

    Raises
    ------
    ConfigError
        Anything else (Ray itself would fail with a ValueError only once it is imported).
    """
    if ray is True or ray in ("", "local"):
        return None
    text = str(ray)
    if text == "auto" or re.fullmatch(r"[A-Za-z][A-Za-z0-9+.-]*://\S+", text):
        return text
    host, _, port = text.rpartition(":")
    if host and not any(c.isspace() for c in host) and port.isdigit() and 0 < int(port) < 65536:
        return text
    raise ConfigError(f"Ray address {text!r} is not valid: expected 'auto', HOST:PORT (the head node's "
                      "`ray start --head --port=6379`) or ray://HOST:PORT")


def _probe_ray(address: str, timeout: float = 5.0) -> None:
    """One TCP connection to a HOST:PORT Ray head: an unreachable cluster is one quick ConfigError
    line rather than Ray's minutes of GCS connection retries, logged by its C++ client on stderr."""
    import socket

    host, _, port = address.rpartition(":")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as exc:
        raise ConfigError(f"cannot reach the Ray cluster at {address}: {_one_line(exc)} (is `ray start --head` "
                          "running there, and the port open?)") from None


def _start_ray(ray: Any, address: "bool | str") -> bool:
    """Connect to (or start) Ray unless this process already did; True if we must shut it down.

    Raises
    ------
    ConfigError
        The address is unreachable, or Ray fails to start or connect (one line naming it).
    """
    import logging

    if ray.is_initialized():
        return False
    where = _ray_address(address)
    if where is not None and where != "auto" and "://" not in where:
        _probe_ray(where)
    try:
        ray.init(address=where, include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING)
    except Exception as exc:  # ValueError, ConnectionError, RuntimeError … from ray.init
        what = "start a local Ray" if where is None else f"connect to the Ray cluster at {where}"
        raise ConfigError(f"cannot {what}: {_one_line(exc)}") from None
    return True
