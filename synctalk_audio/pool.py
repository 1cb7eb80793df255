"""Many exact ave or wenet streams sharing one engine: :class:`StreamPool` (one batched encoder call
per tick across streams) and its :class:`PoolError`. The per-stream state machine is
:mod:`synctalk_audio.stream`'s, the same one :class:`~synctalk_audio.StreamingPipeline` runs.
"""

from __future__ import annotations

from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Any, Hashable, Mapping

import numpy as np

from .config import SYNCTALK_2D, MelConfig
from .dsp import mel_columns, mel_frames, mel_init
from .errors import AudioError, ConfigError, StreamError
from .stream import _PIECE, RADIUS, _check_chunk, _configure, _encode

__all__ = ["StreamPool", "PoolError"]

#: STFT frames per :func:`mel_columns` call in a pool: wide enough to share the per-call numpy
#: overhead (8 µs per column at 16 against 37 µs for one), narrow enough that OpenBLAS runs the
#: mel product on one thread (at 32 columns it wakes its thread pool: 30× slower per column).
_COLUMNS_PER_CALL = 16

#: Fewest windows per worker thread when a pool splits a push's windows across threads.
_MIN_SPLIT = 4

#: Most pushes whose windows an overlapped pool may still be encoding (``overlap=N``).
MAX_OVERLAP = 4


@dataclass(frozen=True)
class _Pending:
    """An overlapped push whose windows are still being encoded in the background.

    keys : the keys the push advanced, in order
    ids : each key's stream identity then (a stream reset, or reset and reopened, since drops its rows)
    before : their states before the push (None: opened by it); their input side is put back
        if the encoder fails
    sizes : windows per key
    rows : the futures of the engine runs of its windows, in order (their results, concatenated:
        float32 (sum(sizes), *row_shape)); empty when the push cut no windows
    """

    keys: tuple
    ids: tuple
    before: tuple
    sizes: tuple
    rows: "tuple[Future, ...]"


class StreamPool:
    """Many independent ave (or wenet) streams sharing one engine: one batched encoder run per push.

    ``pool.push({key: chunk, ...})`` advances every stream given (a new key opens a stream):
    the mel columns of all of them in one call (wenet: each stream's fbank rows), then *all*
    windows that became ready, across streams, in one engine run. Each stream's frames equal ``pipeline(its audio).frames`` bit
    for bit on CPU (the exact and onnx engines are batch-invariant), whatever the other
    streams do. See docs/serving.md for a server loop and measured capacity.

    Parameters
    ----------
    checkpoint, mode, fps, device, precision, context, radius, config, batch_size
        As for :class:`StreamingPipeline`; every stream shares them. ``mode`` "ave" or
        "wenet" (with the wenet ``encoder.onnx``); hubert cannot stream exactly (whole-file
        normalisation: a ConfigError says so).
    threads : int or None
        CPU threads of the encoder (default 1: the encoder call sets torch's process thread count
        to 1 and restores it). With the PyTorch engines on CPU and ``threads`` >= 2, the pool runs
        that many worker threads of one torch thread each (set in those threads only) and they
        take the encodings in order: a push's windows are split over them (at least 4 windows
        a piece), or with ``overlap >= threads`` each push's windows run whole on one of them
        (a push may then take that many ticks, and larger batches cost less per window).
        For an .onnx checkpoint: onnxruntime's intra-op threads. The frames do not depend on it.
    overlap : bool or int
        False or 0 (default): ``push`` encodes its windows before it returns, and returns their
        frames. True or 1: ``push`` starts encoding its windows in the background and returns
        the frames of the *previous* push's windows, so the encoder runs while the caller waits
        for the next chunks: a push then blocks only for its own mel step (plus whatever of
        the previous encoding is left). N (2 … 4): N pushes in flight; a push returns the
        frames of the push N before it, so an encoding may take up to N ticks as long as the
        ticks' average fits — with 20 ms chunks every stream completes a frame every second
        tick, so ticks alternate heavy and light, and 2 absorbs that. Frames arrive N pushes
        later (N × 20 ms at 20 ms ticks) and are the same, bit for bit. :meth:`flush` returns
        the key's pending frames and its tail.

    Attributes
    ----------
    latency : Latency
        The algorithmic latency of every stream (452.5 ms at 25 fps, radius 8).
    precision, device : str
    frame_shape : tuple

    Notes
    -----
    A bad chunk for one key (not a 1-D float array, NaN/Inf) raises :class:`PoolError` after
    the other keys of the same push were processed; ``.frames`` holds theirs, and the failing
    stream is left as it was (its chunk not consumed, a new key not opened). If the encoder
    itself fails, no stream of that push advances (with ``overlap``, the error surfaces at
    the next call, and every stream of the pushes still in flight goes back to before the
    oldest of them: their chunks were not consumed, push them again). Calls are serialised
    by a lock.

    Examples
    --------
    >>> pool = StreamPool(checkpoint="seeded", device="cpu", threads=2)       # doctest: +SKIP
    >>> out = pool.push({"alice": chunk_a, "bob": chunk_b})                   # doctest: +SKIP
    >>> out["alice"].shape                                                    # doctest: +SKIP
    (1, 32, 16, 16)
    >>> tail = pool.flush("alice")                                            # doctest: +SKIP
    >>> with StreamPool(checkpoint="seeded", overlap=True) as pool: ...       # doctest: +SKIP
    """

    def __init__(
        self,
        checkpoint: Any = None,
        *,
        mode: str = "ave",
        fps: float | None = None,
        device: str = "auto",
        precision: "str | None" = None,
        context: str = "zeros",
        radius: int = RADIUS,
        config: MelConfig = SYNCTALK_2D,
        batch_size: int | None = None,
        threads: int | None = 1,
        overlap: "bool | int" = False,
    ) -> None:
        if isinstance(overlap, (np.bool_, np.integer)):  # numpy's True and 2 are the same settings
            overlap = bool(overlap) if isinstance(overlap, np.bool_) else int(overlap)
        if not (isinstance(overlap, bool) or (isinstance(overlap, int) and 0 <= overlap <= MAX_OVERLAP)):
            raise ConfigError(f"overlap must be True, False or the pushes in flight 0 … {MAX_OVERLAP}, got {overlap!r}")
        _configure(self, checkpoint, mode=mode, fps=fps, device=device, precision=precision, context=context,
                   radius=radius, config=config, batch_size=batch_size, threads=threads)
        # batch-invariant torch engines on CPU: the encodings run on `threads` worker threads, one
        # torch thread each (see _start); onnxruntime parallelises inside its own call
        self._workers = self.threads if self._encoder.batch_invariant and (self.threads or 1) > 1 \
            and self._engine_threads and str(self._encoder.device) == "cpu" \
            and callable(getattr(self._encoder, "worker_threads", None)) else 1
        self._executor: "ThreadPoolExecutor | None" = None  # the worker threads that run the engine
        self.overlap = overlap
        self._depth = int(overlap)  # pushes in flight
        self._pending: "deque[_Pending]" = deque()  # overlap: pushes in flight, oldest first
        self._ids: dict[Hashable, object] = {}  # each open stream's identity
        self._held: dict[Hashable, np.ndarray] = {}  # overlap: frames collected by flush() for other keys
        self._no_cols = np.empty((config.n_mels, 0), np.float64)
        self.latency = self._latency
        self._states: dict[Hashable, Any] = {}  # ave or wenet stream states
        # the one-off costs (kernel set-up, the exact engine's weight packing) now, not in a tick
        self._encode([np.zeros((1, *self._geo.warm_up()[1]), np.float32)])

    @property
    def in_flight(self) -> int:
        """Pushes whose windows are still being encoded (``overlap``; at most ``overlap``, fewer after
        :meth:`flush` or :meth:`close`, which collect them). If an encoding fails, the streams of
        these pushes go back to before them: a server that keeps its last chunks re-pushes this many."""
        return len(self._pending)

    def keys(self) -> list[Hashable]:
        """The open streams' keys, in the order they were opened."""
        return list(self._states)

    @property
    def frame_shape(self) -> tuple[int, ...]:
        """Shape of one frame, (32, 16, 16) for ave at radius 8."""
        return self._geo.shape

    def __repr__(self) -> str:
        return (f"StreamPool(mode={self.mode!r}, fps={self.fps}, context={self.context!r}, radius={self.radius}, "
                f"precision={self.precision!r}, device={self.device!r}, threads={self.threads}, "
                f"overlap={self.overlap}, streams={len(self._states)}, latency={self.latency.ms:g} ms)")

    def reset(self, key: Hashable) -> None:
        """Forget ``key``'s input (it starts again at its next push)."""
        with self._lock:
            self._states.pop(_check_key(key), None)  # its pending rows, if any, are dropped when collected
            self._ids.pop(key, None)
            self._held.pop(key, None)

    def _columns(self, staged: "list[tuple[Any, Any]]") -> list["np.ndarray | None"]:
        """Each stream's new mel columns (n_mels, c): one :func:`mel_columns` call per 16 STFT frames
        of all streams together. ``staged`` holds (carry, frames) after :func:`mel_frames`, or
        (None, chunk) for a push too long to stack (None in the result: cut piece by piece later).
        """
        stacked = [frames for carry, frames in staged if carry is not None]
        frames = np.concatenate(stacked) if len(stacked) > 1 else stacked[0] if stacked else None
        cols = None
        if frames is not None and frames.shape[0]:
            cols = np.concatenate([mel_columns(frames[lo:lo + _COLUMNS_PER_CALL], self.config)
                                   for lo in range(0, frames.shape[0], _COLUMNS_PER_CALL)], axis=1)
        out, at = [], 0
        for carry, own in staged:
            if carry is None:
                out.append(None)
                continue
            n = own.shape[0]
            out.append(cols[:, at:at + n] if n else self._no_cols)
            at += n
        return out

    def _encode(self, windows: list[np.ndarray]) -> "list[np.ndarray | None]":
        """One engine run for the windows of all streams; the rows split back per stream (None: no windows)."""
        batch = _stacked(windows)
        if batch is None:
            return [None] * len(windows)
        rows = _encode(self._encoder, batch, batch_size=self.batch_size, threads=self._engine_threads) \
            if self._workers == 1 else _joined(self._start(batch))
        return _split(rows, [w.shape[0] for w in windows])

    def _start(self, batch: np.ndarray) -> "tuple[Future, ...]":
        """Start encoding float32 (k, 80, 16) windows on the pool's worker threads; the futures of
        the pieces' (k_i, 512) rows, in order.

        One worker: one run (the engine's own threads). ``threads`` workers (the PyTorch engines on
        CPU, one torch thread each): pieces of at least 4 windows, at most a batch, as many as
        there are workers when the windows allow; the workers take pieces in order as they become
        free, so a push's encoding starts while the previous one's last piece still runs.
        """
        if self._executor is None:
            self._executor = (self._encoder.worker_threads(self._workers, "synctalk-pool") if self._workers > 1 else
                              ThreadPoolExecutor(max_workers=1, thread_name_prefix="synctalk-pool"))
        if self._workers == 1:
            return (self._executor.submit(_encode, self._encoder, batch, batch_size=self.batch_size,
                                          threads=self._engine_threads),)
        k = batch.shape[0]
        bs = self.batch_size or self._encoder.batch_size
        # overlap >= workers: a push's encoding may take that many ticks, so each runs whole on one
        # worker (larger batches cost less per window); else split so the workers finish it together
        split = 1 if self._depth >= self._workers else min(self._workers, k // _MIN_SPLIT)
        parts = max(split, -(-k // bs), 1)
        bounds = [k * i // parts for i in range(parts + 1)]
        runs: list[Future] = []
        try:  # threads=None: each worker's own torch setting (1)
            for lo, hi in zip(bounds[:-1], bounds[1:]):
                runs.append(self._executor.submit(_encode, self._encoder, batch[lo:hi], batch_size=bs, threads=None))
        except BaseException:  # e.g. at interpreter shutdown: nothing left running behind the error
            wait(runs)
            raise
        return tuple(runs)

    def __enter__(self) -> "StreamPool":
        return self

    def __exit__(self, *exc: Any) -> None:
        """``with StreamPool(...) as pool:`` stops the pool's threads at the end (:meth:`close`)."""
        self.close()

    def close(self) -> None:
        """Stop the pool's worker threads (they start again when needed); the streams stay open.

        With ``overlap``, the frames still in flight are collected first and come with the next
        push (an encoding that failed raises here, as it would from :meth:`push`)."""
        with self._lock:
            try:
                self._hold(self._collect(all_=True))  # overlapped pushes' frames come with the next push
            finally:  # the threads stop even when an encoding in flight failed
                if self._executor is not None:
                    self._executor.shutdown(wait=True)
                    self._executor = None

    def push(self, chunks: Mapping[Hashable, Any]) -> dict[Hashable, np.ndarray]:
        """Advance every stream in ``chunks``; return ``{key: frames that became final}``.

        With ``overlap=N`` the frames returned are those of the windows of the push N before
        (and any a :meth:`flush` collected for other keys): every key of this push and of that
        one is in the result, possibly with no frames.

        Raises
        ------
        PoolError
            One or more chunks were bad: ``.errors`` maps their keys to the library error;
            ``.frames`` holds every frame the call produced — the keys that succeeded and, with
            ``overlap``, the failing keys' frames of earlier pushes: deliver all of them.
        Exception
            The encoder failed (e.g. ShapeError on NaN rows): no stream of the failing push
            advanced (with ``overlap=N``, the streams of the pushes in flight — :attr:`in_flight`
            before the call, at most N: those since the last :meth:`flush`/:meth:`close` — go back
            to before the oldest of them, a note on the exception says how many, and nothing of
            this call was consumed). Frames already collected come with the next call.
        """
        if not isinstance(chunks, Mapping):
            raise ConfigError(f"push() takes a mapping {{key: chunk}}, got {type(chunks).__name__}")
        for key in chunks:  # a custom Mapping may yield unhashable keys: refuse the push before anything
            _check_key(key)
        with self._lock:
            # 1. every chunk checked first: a bad one is its key's error before anything moves
            checked: dict[Hashable, np.ndarray] = {}
            errors: dict[Hashable, Exception] = {}
            for key, samples in chunks.items():
                try:
                    checked[key] = _check_chunk(samples)
                except (AudioError, StreamError) as exc:
                    errors[key] = exc
            # 2. the rows of the push `overlap` pushes ago (overlap=1: its encoding had the cores to
            #    itself since that push returned; a mel step running beside it measured a worse p99 tick)
            out = self._collect()
            if self._held:
                out = _merged(self._held, out)
                self._held = {}
            try:
                self._advance(checked, out)
            except BaseException:  # e.g. the encoder failed: what was collected comes with the next call
                self._hold(out)
                raise
        if errors:
            raise PoolError(errors, out)
        return out

    def _advance(self, chunks: "dict[Hashable, np.ndarray]", out: "dict[Hashable, np.ndarray]") -> None:
        """Advance every stream by its checked chunk: each stream's STFT frames, the mel columns of all
        of them in one go, the windows, then one engine run (``overlap``: started in the background).
        Adds ``{key: frames}`` to ``out``; commits the streams' states only once their rows are
        known (``overlap``: once the run started)."""
        staged: dict[Hashable, tuple[Any, Any]] = {}
        for key, chunk in chunks.items():
            if chunk.shape[0] > _PIECE or not self._geo.batched_mel:  # cut piece by piece below
                staged[key] = (None, chunk)
            else:
                state = self._states.get(key)
                staged[key] = mel_frames(state.carry if state is not None else mel_init(self.config), chunk,
                                         self.config)
        keys = list(staged)
        columns = self._columns([staged[k] for k in keys])
        states, windows = [], []
        for key, cols in zip(keys, columns):
            state = (self._states.get(key) or self._geo.new_state()).copy()
            carry, chunk = staged[key]
            windows.append(self._geo.ready(state, carry, cols, final=False) if cols is not None else
                           np.concatenate([self._geo.windows(state, chunk[lo:lo + _PIECE], final=False)
                                           for lo in range(0, max(chunk.shape[0], 1), _PIECE)]))
            states.append(state)
        if self.overlap:
            self._submit(keys, states, windows)
            for key in keys:
                out.setdefault(key, self._geo.empty())
            return
        for key, state, r in zip(keys, states, self._encode(windows)):
            # no rows, no frames: a frame needs a new row (every second 20 ms push)
            out[key] = self._geo.frames(state, r, final=False) if r is not None else self._geo.empty()
            self._commit(key, state)

    def _commit(self, key: Hashable, state: Any) -> None:
        """Make ``state`` ``key``'s stream state (a new key opens a stream with a new identity)."""
        if key not in self._states:
            self._ids[key] = object()
        self._states[key] = state

    def _submit(self, keys: list, states: list, windows: list[np.ndarray]) -> None:
        """overlap: start encoding the streams' windows in the background, then commit their mel step
        (a start that fails, e.g. threads that cannot start, leaves every stream as it was)."""
        sizes = tuple(w.shape[0] for w in windows)
        before = tuple(self._states.get(k) for k in keys)
        batch = _stacked(windows)
        rows = self._start(batch) if batch is not None else ()
        for key, state in zip(keys, states):
            self._commit(key, state)
        self._pending.append(_Pending(keys=tuple(keys), ids=tuple(self._ids[k] for k in keys), before=before,
                                      sizes=sizes, rows=rows))

    def _collect(self, all_: bool = False) -> dict[Hashable, np.ndarray]:
        """overlap: wait for the oldest pushes' encodings until fewer than ``overlap`` are in flight
        (``all_``: until none is) and apply their rows in order: ``{key: frames}``. If an encoding
        failed, nothing is applied: the streams of every push in flight are rolled back and its
        exception raised."""
        out: dict[Hashable, np.ndarray] = {}
        n = len(self._pending) if all_ else len(self._pending) - self._depth + 1
        if not self._pending or n <= 0:
            return out
        runs = [f for p in list(self._pending)[:n] for f in p.rows]
        wait(runs)
        error = next((f.exception() for f in runs if f.exception() is not None), None)
        if error is not None:
            n_back = len(self._pending)
            self._rewind(self._pending.popleft())
            if hasattr(error, "add_note"):  # Python >= 3.11
                error.add_note(f"StreamPool: the encoder failed; the streams of the {n_back} push(es) in flight went "
                               f"back to before them: push those chunks again")
            raise error
        for _ in range(n):
            pending = self._pending.popleft()
            parts = _split(_joined(pending.rows), pending.sizes) if pending.rows else [None] * len(pending.keys)
            got = {}
            for key, sid, part in zip(pending.keys, pending.ids, parts):
                if self._ids.get(key) is not sid:  # reset (and maybe reopened) since: its rows are dropped
                    continue
                if part is None:  # no rows, no frames
                    got[key] = self._geo.empty()
                    continue
                state = self._states[key].copy()  # later pushes may have cut more windows: rows go in order
                got[key] = self._geo.frames(state, part, final=False)
                self._states[key] = state
            out = _merged(out, got) if out else got
        return out

    def _rewind(self, failed: _Pending) -> None:
        """The encoder failed on ``failed``, the oldest push in flight: drop the pushes after it
        (waiting for their runs) and put each of their streams' input side back to before the
        oldest of these pushes that advanced it (a stream opened by them is closed). Rows and
        frames already applied stay: they belong to pushes before ``failed``."""
        later = list(self._pending)
        self._pending.clear()
        wait([f for p in later for f in p.rows])
        done: set = set()
        for push in [failed, *later]:
            for key, sid, before in zip(push.keys, push.ids, push.before):
                if (key, sid) in done or self._ids.get(key) is not sid:  # done, or reset since
                    continue
                done.add((key, sid))
                if before is None:
                    del self._states[key], self._ids[key]
                    continue
                state = self._states[key].copy()
                for name in type(state).FRONT:
                    setattr(state, name, getattr(before, name))
                self._states[key] = state

    def _hold(self, frames: Mapping[Hashable, np.ndarray]) -> None:
        """Keep frames collected outside a push for the next push's result."""
        self._held = _merged(self._held, frames)

    def flush(self, key: Hashable) -> np.ndarray:
        """End ``key``'s stream: return its remaining frames and close it.

        With ``overlap=True`` that includes the frames of its last push's windows (the other
        keys' frames of that push come with the next :meth:`push`).

        Raises
        ------
        StreamError : unknown key
        AudioError : fewer than 3000 samples in all (the stream stays open)
        Exception : an encoding still in flight failed (``overlap``): as for :meth:`push`, the
            streams of the pushes in flight went back to before the oldest of them; the stream
            stays open
        """
        with self._lock:
            if _check_key(key) not in self._states:
                raise StreamError(f"no open stream {key!r}")
            self._hold(self._collect(all_=True))
            state = self._states[key]
            self._geo.check_length(state)  # too short: AudioError
            state = state.copy()
            windows = self._geo.windows(state, np.empty(0, np.float32), final=True)
            frames = self._geo.frames(state, self._encode([windows])[0], final=True)
            del self._states[key], self._ids[key]
            own = self._held.pop(key, None)
        return frames if own is None or not own.shape[0] else np.concatenate([own, frames])


def _stacked(windows: list[np.ndarray]) -> "np.ndarray | None":
    """The windows of all streams as one batch (the one array itself when a single stream has
    any); None when there are none."""
    full = [w for w in windows if w.shape[0]]
    return None if not full else full[0] if len(full) == 1 else np.concatenate(full)


def _joined(runs: "tuple[Future, ...]") -> np.ndarray:
    """The rows of engine runs (each checked by :func:`_encode`), in order, as one array. Waits for
    every run before it returns or raises, so nothing is left running behind the caller."""
    wait(runs)
    rows = [f.result() for f in runs]
    return rows[0] if len(rows) == 1 else np.concatenate(rows)


def _split(rows: np.ndarray, sizes: "list[int] | tuple[int, ...]") -> "list[np.ndarray | None]":
    """A batch's rows back per stream, ``sizes[i]`` each (None for a stream without windows)."""
    out, lo = [], 0
    for n in sizes:
        out.append(rows[lo:lo + n] if n else None)
        lo += n
    return out


def _merged(first: Mapping[Hashable, np.ndarray], then: Mapping[Hashable, np.ndarray]) -> dict[Hashable, np.ndarray]:
    """``{key: first[key] followed by then[key]}`` over the keys of both (frames in stream order)."""
    out = dict(first)
    for key, frames in then.items():
        have = out.get(key)
        out[key] = frames if have is None or not have.shape[0] else \
            have if not frames.shape[0] else np.concatenate([have, frames])
    return out


def _check_key(key: Any) -> Hashable:
    """``key`` if it can name a stream (hashable), else one StreamError line."""
    try:
        hash(key)
    except TypeError:
        raise StreamError(f"a stream key must be hashable (a str, int, tuple…), got {type(key).__name__} "
                          f"{key!r:.60}") from None
    return key


class PoolError(StreamError):
    """Some chunks of a :meth:`StreamPool.push` were bad.

    Attributes
    ----------
    errors : dict key → library error (those streams are unchanged)
    frames : dict key → frames: everything the push produced (the keys that succeeded, and with
        ``overlap`` the failing keys' frames of earlier pushes)
    """

    def __init__(self, errors: Mapping[Hashable, Exception], frames: Mapping[Hashable, np.ndarray]) -> None:
        self.errors, self.frames = dict(errors), dict(frames)
        first = next(iter(self.errors.items()))
        super().__init__(f"{len(self.errors)} stream(s) rejected their chunk, e.g. {first[0]!r}: {first[1]}")

    def __reduce__(self) -> tuple:
        """Pickled with its errors and frames (a pool in a worker process raises it to the parent)."""
        return type(self), (self.errors, self.frames), self.__dict__


