"""Run an encoder over many mel windows batch by batch (no torch here).

Every engine of the encoder seam (:mod:`synctalk_audio.engines`) — PyTorch, onnxruntime,
HuBERT, wenet — is run through :func:`encode_in_batches`: cut inputs per batch, run them,
check the rows, store them.
"""

from __future__ import annotations

import numbers
import os
from collections import deque
from concurrent.futures import ThreadPoolExecutor, wait
from typing import Any, Callable

import numpy as np

from .config import FEATURE_DIM
from .errors import ConfigError, ShapeError

__all__ = ["encode_in_batches", "check_positive_int", "usable_cores", "max_threads", "MAX_BATCH_SIZE",
           "THREADS_PER_CORE"]

#: Largest ``batch_size`` accepted: 65536 mel windows are 335 MB of float32 input per call.
MAX_BATCH_SIZE = 65536
#: ``threads`` (and process ``workers``) may oversubscribe the usable cores at most this many
#: times: a thread count far beyond the machine makes libgomp abort the process and
#: onnxruntime crash, instead of running.
THREADS_PER_CORE = 4


def usable_cores() -> int:
    """The CPU cores this process may run on (its affinity mask; ``os.cpu_count()`` elsewhere)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def max_threads() -> int:
    """The most ``threads``/``workers`` accepted: :data:`THREADS_PER_CORE` × the usable cores."""
    return THREADS_PER_CORE * usable_cores()


def check_positive_int(name: str, value: Any, *, allow_none: bool = True) -> "int | None":
    """``value`` as an int if it is a positive integer (or None when allowed), else ConfigError.

    Counts with a machine-sized meaning are also bounded: ``threads`` and ``workers`` by
    :func:`max_threads`, ``batch_size`` by :data:`MAX_BATCH_SIZE`.
    """
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value <= 0:
        raise ConfigError(f"{name} must be a positive integer, got {value!r}")
    if name in ("threads", "workers") and value > max_threads():
        raise ConfigError(f"{name} must be at most {max_threads()} ({THREADS_PER_CORE} per usable core; this "
                          f"process may use {usable_cores()}), got {value!r}")
    if name == "batch_size" and value > MAX_BATCH_SIZE:
        raise ConfigError(f"batch_size must be at most {MAX_BATCH_SIZE}, got {value!r}")
    return int(value)


def _output(n: int, out: "np.ndarray | None", rows: "np.ndarray | None",
            row_shape: tuple[int, ...]) -> tuple[np.ndarray, "np.ndarray | None"]:
    if rows is not None:
        rows = np.asarray(rows, dtype=np.intp)
        if rows.shape != (n,) or out is None:
            raise ShapeError(f"rows must have shape ({n},) and come with out, got {rows.shape}")
    m = n if rows is None else out.shape[0]
    if out is None:
        return np.empty((n, *row_shape), dtype=np.float32), rows
    if out.shape != (m, *row_shape) or out.dtype != np.float32:
        raise ShapeError(f"out must be float32 {(m, *row_shape)}, got {out.dtype} {out.shape}")
    return out, rows


def run_beside(executor: "ThreadPoolExecutor | None", work: Callable[[int, int], Any], n: int,
               parts: int) -> list:
    """``work(lo, hi)`` over ``parts`` even spans of ``range(n)``, side by side: the first on the
    calling thread, the others on ``executor`` (``parts − 1`` workers; None when ``parts`` is 1).

    Returns the results in span order. Every span has finished before this returns or raises,
    so nothing is left running behind the caller (e.g. after it restores a thread setting).
    """
    bounds = [n * i // parts for i in range(parts + 1)]
    futures = [executor.submit(work, lo, hi) for lo, hi in zip(bounds[1:-1], bounds[2:])] if parts > 1 else []
    try:
        first = work(bounds[0], bounds[1])
    finally:
        wait(futures)
    return [first] + [f.result() for f in futures]


def _run_batches(n_batches: int, work: Callable[[int], int], workers: int,
                 progress: "Callable[[int], Any] | None") -> None:
    """Run ``work(b)`` for every batch index, on ``workers`` threads (>1) or inline."""
    if workers <= 1:
        for b in range(n_batches):
            done = work(b)
            if progress is not None:
                progress(done)
        return
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="synctalk-encoder")
    try:
        pending: deque = deque()
        for b in range(n_batches):
            pending.append(pool.submit(work, b))
            while len(pending) > 4 * workers or (pending and pending[0].done()):
                done = pending.popleft().result()
                if progress is not None:
                    progress(done)
        while pending:
            done = pending.popleft().result()
            if progress is not None:
                progress(done)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def encode_in_batches(
    n_windows: int,
    get_windows: Callable[[int, int], Any],
    run: Callable[[Any], np.ndarray],
    *,
    batch_size: int,
    workers: int = 1,
    out: "np.ndarray | None" = None,
    rows: "np.ndarray | None" = None,
    progress: "Callable[[int], Any] | None" = None,
    row_shape: tuple[int, ...] = (FEATURE_DIM,),
) -> np.ndarray:
    """``run(get_windows(lo, hi))`` for consecutive batches of ``batch_size`` windows.

    Parameters
    ----------
    n_windows : int
    get_windows : callable (lo, hi) → the batch's windows, in whatever form ``run`` takes
    run : callable windows → float32 ndarray (hi − lo, *row_shape)
    batch_size : int
    workers : int
        Threads running batches concurrently (1: inline, in order).
    out : float32 ndarray (M, *row_shape), optional
        Written in place; M = n_windows unless ``rows``.
    rows : int ndarray (n_windows,), optional
        Row of ``out`` for each window; other rows are left alone.
    progress : callable(int), optional
        Called with the number of windows in each finished batch.
    row_shape : tuple
        One output row's shape: (512,) for the conv encoder, (16, 512) for wenet.

    Returns
    -------
    ndarray, float32, shape (M, *row_shape) (``out`` when given)

    Raises
    ------
    ShapeError : a bad ``out``/``rows``, an engine returning other than one row per input, or
        encoder rows that overflowed to NaN/Inf
    """
    n = int(n_windows)
    out, rows = _output(n, out, rows, tuple(row_shape))
    if n == 0:
        return out

    def work(b: int) -> int:
        lo, hi = b * batch_size, min(n, (b + 1) * batch_size)
        y = run(get_windows(lo, hi))
        got = tuple(getattr(y, "shape", ()))
        if got != (hi - lo, *row_shape):
            raise ShapeError(f"the encoder returned shape {got} for a batch of {hi - lo} inputs; expected "
                             f"{(hi - lo, *row_shape)}, one row per input (is the checkpoint this mode's encoder?)")
        if not np.isfinite(y).all():
            raise ShapeError("encoder output overflowed to NaN/Inf; expected normalised inputs (mel windows in [-4, 4])"
                             if tuple(row_shape) == (512,) else
                             "the encoder returned NaN/Inf for finite fbank windows (is the checkpoint the wenet "
                             "encoder.onnx?)")
        if rows is None:
            out[lo:hi] = y
        else:
            out[rows[lo:hi]] = y
        return hi - lo

    n_batches = -(-n // batch_size)
    _run_batches(n_batches, work, min(workers, n_batches), progress)
    return out
