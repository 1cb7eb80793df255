"""Streaming: push 16 kHz audio chunks, get exactly the offline frames, with a stated latency.

:class:`StreamingPipeline` keeps only the state that the next frames still need — the last
input sample (pre-emphasis), the STFT overlap (under ``n_fft`` samples), the mel columns of
pending windows and the ±8 rows of encoder features of pending frames — so every chunk costs
work proportional to its own length, never to the history. Everything ``push`` and ``flush``
return, concatenated, equals ``pipeline(audio).frames`` for the same audio (N + 2 frames,
first/last row repeated, clamped last windows, zeros — or edges — outside the padded rows).

Where the latency comes from (defaults: hop 200, n_fft 800, 16-column windows, radius 8)::

    frame j (shown at t_j = j/fps) = context rows [j-8, j+8) of padded, its last row j+7 is
    feature j+6 (padded row r = feature r-1), whose mel window starts at s = int(80·(j+6)/fps)
    ≤ 80·(j+6)/fps and ends at column s+15, centred on sample 200·(s+15), which needs input up
    to 200·(s+15) + n_fft//2.  Hence input needed for frame j − t_j·16000
        ≤ 6·16000/fps  +  15·200  +  400      (look-ahead context + window + STFT centring)
        = 3840 + 3000 + 400 = 7240 samples = 452.5 ms at 25 fps (equality every 5th frame).

The last few frames — those whose context reaches the final padded row, or whose window is
clamped to the last 16 mel columns — depend on the total length and only come out of
:meth:`StreamingPipeline.flush`.

Encoder numerics. Offline, ``encode_batch`` runs windows in batches of 64 and PyTorch picks the
convolution kernels from the batch size: with more than one thread (or 16 or more windows) it
uses oneDNN for every layer, but a batch of 1 (the last batch when N ≡ 1 mod 64; and with one
thread any batch under 16) takes PyTorch's native kernels for some layers, which round
differently (up to ~4e-5 on features of magnitude ~100). The stream calls the oneDNN
convolution directly on the encoder's own weights — bit-identical to the offline full-batch rows
for any number of windows — and at flush recomputes the pending rows of offline's last (partial)
batch with the module itself at exactly that batch size. Rows streamed out before the flush
can still differ (~2e-5) in one case: one torch thread and a last batch of 2–15 windows, where
offline itself takes other kernels for the 1x1 layer. On other devices (CUDA) the module runs
the windows as they come; exactness there is not verified.
"""

from __future__ import annotations

import math
import numbers
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .batches import check_positive_int
from .config import MODE_FPS, SYNCTALK_2D, MelConfig, check_context, check_fps, check_mode, mode_shape
from .dsp import amp_to_db, center_pad, linear_to_mel, normalize, stft_frames
from .errors import AudioError, ConfigError, OutputError, StreamError
from .frames import MEL_FPS, MEL_STEP, frame_count

__all__ = ["StreamingPipeline", "Latency", "latency_for", "RADIUS", "StreamReport", "run_stream", "save_frames",
           "check_frames_path"]

#: Context rows each side of a frame (upstream's ``get_audio_features``: rows [i-8, i+8)).
RADIUS = 8
#: Largest piece of a push processed at once (bounds the temporary STFT/encoder memory).
_PIECE = 4096 * 200
_ENCODER_MODE = "ave"


# --------------------------------------------------------------------------- latency


@dataclass(frozen=True)
class Latency:
    """Algorithmic latency of a stream: how much input past a frame's own time it needs.

    Frame ``j`` belongs at ``t_j = j / fps``; it is final once the input reaches
    ``t_j·sample_rate + samples`` (at most; exactly that every few frames). Chunking adds up to
    one chunk on top, compute time adds the rest.

    Attributes
    ----------
    samples : int
        Total, ``ceil(context + window + stft)`` (7240 at 25 fps).
    sample_rate : int
    fps : float
    context_samples : float
        Look-ahead of the ±radius context: its last row is ``radius - 2`` video frames ahead
        (``6·sr/fps`` = 3840 at 25 fps).
    window_samples : int
        The mel window reaches ``mel_step - 1`` hops past its start (``15·200`` = 3000).
    stft_samples : int
        STFT centring: column ``t`` is centred on sample ``t·hop`` and needs ``n_fft // 2``
        more (400).
    """

    samples: int
    sample_rate: int
    fps: float
    context_samples: float
    window_samples: int
    stft_samples: int

    @property
    def ms(self) -> float:
        """``samples`` in milliseconds (452.5 at 25 fps)."""
        return 1000.0 * self.samples / self.sample_rate

    @property
    def seconds(self) -> float:
        """``samples`` in seconds."""
        return self.samples / self.sample_rate

    @property
    def frames(self) -> float:
        """``samples`` in video frames (11.3 at 25 fps)."""
        return self.samples * float(self.fps) / self.sample_rate


def latency_for(fps: float = 25, config: MelConfig = SYNCTALK_2D, *, radius: int = RADIUS,
                mel_step: int = MEL_STEP) -> Latency:
    """The :class:`Latency` of a stream at ``fps`` with ``config``, from the geometry alone.

    ``(radius - 2)·80·hop/fps + (mel_step - 1)·hop + n_fft // 2`` (80·hop = sr for the
    presets), rounded up to a sample. Frame ``j`` needs
    ``hop·(int(80·(j + radius - 2)/fps) + mel_step - 1) + n_fft // 2`` samples, and
    ``int(x) <= x`` bounds that by ``j·sr/fps`` plus this.

    Examples
    --------
    >>> lat = latency_for(25)
    >>> lat.samples, lat.ms
    (7240, 452.5)
    """
    fps = check_fps(fps)
    sr = config.sample_rate
    context = (radius - 2) * MEL_FPS * config.hop_length / float(fps)
    window = (mel_step - 1) * config.hop_length
    stft = config.n_fft // 2
    return Latency(samples=int(math.ceil(context + window + stft - 1e-9)), sample_rate=sr, fps=fps,
                   context_samples=context, window_samples=window, stft_samples=stft)


# --------------------------------------------------------------------------- encoder rows


# --------------------------------------------------------------------------- the stream


def _check_chunk(samples: Any) -> np.ndarray:
    """Validate one pushed chunk; return it as a 1-D float array (not yet float64)."""
    if isinstance(samples, (str, bytes)) or samples is None:
        raise AudioError(f"push() needs a 1-D float array of samples, got {type(samples).__name__}")
    arr = np.asarray(samples)
    if arr.dtype.kind != "f":
        hint = " (int PCM: divide by 32768 as float32 first)" if arr.dtype.kind in "iu" else ""
        raise AudioError(f"pushed samples must be floating point (float32 at 16 kHz), got dtype {arr.dtype}{hint}")
    if arr.ndim != 1:
        hint = " (mix channels first, e.g. synctalk_audio.to_mono(chunk) for (n, channels))" if arr.ndim == 2 else ""
        raise AudioError(f"pushed samples must be a 1-D mono array, got shape {arr.shape}{hint}")
    if arr.size:
        bad = ~np.isfinite(arr)
        if bad.any():
            first = int(np.argmax(bad))
            raise AudioError(f"pushed chunk has {int(bad.sum())} non-finite samples "
                             f"(first at index {first}: {arr[first]!r}); the chunk was not consumed")
    return arr


class _State:
    """Mutable stream state; :meth:`StreamingPipeline.push` works on a copy and commits at the end."""

    __slots__ = ("n_in", "last", "buf", "buf_at", "n_cols", "mel", "mel_at", "n_win", "ctx", "ctx_at",
                 "n_out", "finished")

    def __init__(self, config: MelConfig) -> None:
        pad = config.n_fft // 2
        self.n_in = 0                  # samples received
        self.last: float | None = None  # last input sample (pre-emphasis carry), float64
        # Centre-padded pre-emphasised signal from padded index buf_at; buf_at is None while a
        # reflect-padded stream still waits for n_fft//2 + 1 samples (buf then holds y only).
        if config.pad_mode == "constant":
            self.buf = np.zeros(pad, np.float64)
            self.buf_at: int | None = 0
        else:
            self.buf = np.empty(0, np.float64)
            self.buf_at = None
        self.n_cols = 0                # final mel columns so far
        self.mel = np.empty((config.n_mels, 0), np.float32)  # float32 columns [mel_at, n_cols)
        self.mel_at = 0
        self.n_win = 0                 # windows encoded (features known) so far
        self.ctx: np.ndarray | None = None  # padded rows [ctx_at, ...), incl. the rows before 0
        self.ctx_at = -RADIUS
        self.n_out = 0                 # frames emitted
        self.finished = False

    def copy(self) -> "_State":
        new = object.__new__(_State)
        for name in self.__slots__:
            setattr(new, name, getattr(self, name))  # arrays are replaced, never mutated in place
        return new


class StreamingPipeline:
    """Push 16 kHz mono chunks, get the final U-Net frames as soon as they are exact.

    Parameters
    ----------
    checkpoint : path, state dict, AudioEncoder or OnnxEncoder
        As for :func:`synctalk_audio.pipeline`; an exported ``.onnx`` encoder streams through
        onnxruntime without torch.
    mode : "ave"
        The conv encoder feeds ave frames (32, 16, 16).
    fps : float, optional
        Video frame rate (default the mode's: 25).
    device : "auto", "cpu", "cuda", …
    precision : "exact", "fast" or "onnx"; default the checkpoint's own (see ``pipeline``)
    context : "zeros" (upstream) or "edge"
    config : MelConfig
        ``SYNCTALK_2D`` (default, zero STFT padding) or ``WAV2LIP`` (reflect padding).
    batch_size : int, optional
        The largest encoder batch run at once (default the device's best). Exact features do
        not depend on it on CPU (the encoder is batch-invariant bit for bit).
    threads : int or None
        PyTorch intra-op threads for the per-window encoder calls (CPU): set around each call
        and restored (``torch.set_num_threads`` is process-wide, so other threads using torch
        meanwhile see it too). 1 (default) costs the least CPU per window and does not stall
        when the cores are busy (a 2-thread oneDNN call waits for the second core); ``None``
        leaves torch's setting alone. For an .onnx checkpoint: onnxruntime's intra-op threads
        (``None``: the usable cores). The frames do not depend on it.

    Notes
    -----
    ``concat(push(c0), push(c1), …, flush())`` equals ``pipeline(concat(c0, c1, …)).frames``
    (≤ 1e-5; bit-identical on CPU in every case measured). The stream is not thread-safe.

    Examples
    --------
    >>> from synctalk_audio import StreamingPipeline, seeded_state_dict
    >>> sp = StreamingPipeline(checkpoint=seeded_state_dict(0), device="cpu")
    >>> sp.latency.samples, sp.latency.ms
    (7240, 452.5)
    >>> wav = np.zeros(16000, np.float32)
    >>> parts = [sp.push(wav[i:i + 320]) for i in range(0, 16000, 320)]   # 20 ms chunks
    >>> frames = np.concatenate(parts + [sp.flush()])
    >>> frames.shape                      # N + 2 = 22 + 2
    (24, 32, 16, 16)
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
        config: MelConfig = SYNCTALK_2D,
        batch_size: int | None = None,
        threads: int | None = 1,
    ) -> None:
        from .pipeline import _prepare

        check_mode(mode)
        if mode != _ENCODER_MODE:
            raise ConfigError(f"mode {mode!r} takes precomputed features; the streaming conv encoder only feeds 'ave'")
        self.mode = mode
        self.fps = check_fps(MODE_FPS[mode] if fps is None else fps)
        self.context = check_context(context)
        if not isinstance(config, MelConfig):
            raise ConfigError(f"config must be a MelConfig (e.g. SYNCTALK_2D), got {type(config).__name__}")
        self.config = config
        self.batch_size = check_positive_int("batch_size", batch_size)
        self.threads = check_positive_int("threads", threads)
        self._shape = mode_shape(mode)
        from .runtime import OnnxEncoder

        # A loaded OnnxEncoder keeps the threads it was loaded with; a path loads with ours.
        self._encoder = _prepare(checkpoint, precision=precision, device=device,
                                 threads=None if isinstance(checkpoint, OnnxEncoder) else self.threads)
        self.precision = self._encoder.precision
        self.device = str(self._encoder.device)
        self._latency = latency_for(self.fps, config)
        self._state = _State(config)
        self._warm_up()

    # ----------------------------------------------------------------- public API

    @property
    def latency(self) -> Latency:
        """The algorithmic :class:`Latency` (``.samples``, ``.ms``), from the geometry."""
        return self._latency

    @property
    def frame_shape(self) -> tuple[int, ...]:
        """Shape of one frame, (32, 16, 16) for ave."""
        return self._shape

    @property
    def samples_in(self) -> int:
        """Samples pushed so far."""
        return self._state.n_in

    @property
    def frames_out(self) -> int:
        """Frames returned so far."""
        return self._state.n_out

    @property
    def finished(self) -> bool:
        """True after :meth:`flush`, until :meth:`reset`."""
        return self._state.finished

    def needed_samples(self, frame: int) -> int:
        """Input samples that frame ``frame`` needs before it can be final (if not a tail frame).

        ``hop·(s + mel_step - 1) + n_fft//2`` with ``s = int(80·((frame + radius - 2)/fps))``.
        """
        s = self._start(frame + RADIUS - 2)
        return self.config.hop_length * (s + MEL_STEP - 1) + self.config.n_fft // 2

    def reset(self) -> None:
        """Forget all input and start a new stream (the encoder stays loaded)."""
        self._state = _State(self.config)

    def push(self, samples: Any) -> np.ndarray:
        """Feed the next chunk; return the frames that became final.

        Parameters
        ----------
        samples : ndarray, float (float32 expected), shape (n,), n >= 0
            The next 16 kHz mono samples, any length.

        Returns
        -------
        ndarray, float32, shape (k, *frame_shape), k >= 0
            Frames ``frames_out .. frames_out + k - 1`` (a new array).

        Raises
        ------
        AudioError
            Not a 1-D float array, or NaN/Inf samples; the stream is unchanged.
        StreamError
            After :meth:`flush` (call :meth:`reset` first).
        """
        if self._state.finished:
            raise StreamError("push() after flush(): the stream has ended; call reset() to start a new one")
        chunk = _check_chunk(samples)
        state = self._state.copy()
        out = []
        for lo in range(0, chunk.shape[0], _PIECE):
            out.append(self._advance(state, chunk[lo:lo + _PIECE]))
        self._state = state
        return self._concat(out)

    def flush(self) -> np.ndarray:
        """End the stream: return the remaining frames (the tail that depends on the length).

        Returns
        -------
        ndarray, float32, shape (k, *frame_shape)
            Afterwards ``frames_out == N + 2``, the offline frame count.

        Raises
        ------
        AudioError
            Fewer than 16 mel frames in all (< 3000 samples), as offline; the stream stays
            open (push more, or reset).
        StreamError
            Already flushed.
        """
        if self._state.finished:
            raise StreamError("flush() called twice: the stream has already ended; call reset() to start a new one")
        state = self._state.copy()
        frames = self._finish(state)
        self._state = state
        return frames

    def __repr__(self) -> str:
        st = self._state
        return (f"StreamingPipeline(mode={self.mode!r}, fps={self.fps}, context={self.context!r}, "
                f"device={self.device!r}, pad_mode={self.config.pad_mode!r}, samples_in={st.n_in}, "
                f"frames_out={st.n_out}, finished={st.finished}, latency={self._latency.ms:g} ms)")

    # ----------------------------------------------------------------- internals

    def _warm_up(self) -> None:
        """Pay the one-off costs now (window/basis caches, oneDNN kernel set-up), not in the first push."""
        cfg = self.config
        state = _State(cfg)
        self._advance(state, np.zeros(cfg.n_fft + cfg.hop_length, np.float32))
        self._rows(np.zeros((1, cfg.n_mels, MEL_STEP), np.float32))

    def _rows(self, windows: np.ndarray) -> np.ndarray:
        """float32 (k, 80, 16) windows → (k, 512) rows, equal to offline's (the exact CPU encoder
        is batch-invariant bit for bit, so any grouping of windows gives the same rows)."""
        from .pipeline import _windows_encoder

        encode = _windows_encoder(self._encoder, self.threads)  # torch-free for an OnnxEncoder
        return encode(windows.shape[0], lambda lo, hi: windows[lo:hi], self._encoder, batch_size=self.batch_size)

    def _start(self, i: int) -> int:
        """Unclamped first mel column of window ``i``: upstream's ``int(80.0 * (i / fps))``."""
        return int(MEL_FPS * (i / float(self.fps)))

    def _concat(self, parts: list[np.ndarray]) -> np.ndarray:
        parts = [p for p in parts if p.shape[0]]
        if not parts:
            return np.empty((0, *self._shape), np.float32)
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    def _emphasize(self, state: _State, x: np.ndarray) -> np.ndarray:
        """Pre-emphasis of the new samples with the carried last sample (same float64 ops as offline)."""
        k = self.config.preemphasis
        x64 = x.astype(np.float64, copy=False)
        y = x64.copy()
        if k != 0.0 and y.shape[0]:
            y[1:] -= k * x64[:-1]
            if state.last is not None:
                y[0] -= k * state.last
        if x64.shape[0]:
            state.last = float(x64[-1])
        return y

    def _mel_columns(self, state: _State, stop: int) -> None:
        """Compute mel columns ``[n_cols, stop)`` from the padded buffer; trim the buffer."""
        cfg = self.config
        hop, pad = cfg.hop_length, cfg.n_fft // 2
        if stop > state.n_cols:
            offset = hop * state.n_cols - state.buf_at
            spec = stft_frames(state.buf[offset:], 0, stop - state.n_cols, n_fft=cfg.n_fft,
                               hop_length=hop, win_length=cfg.win_length)
            db = amp_to_db(linear_to_mel(np.abs(spec), cfg), ref_level_db=cfg.ref_level_db,
                           min_level_db=cfg.min_level_db)
            cols = normalize(db, min_level_db=cfg.min_level_db, max_abs_value=cfg.max_abs_value,
                             symmetric=cfg.symmetric, clip=cfg.clip).astype(np.float32)
            state.mel = np.concatenate([state.mel, cols], axis=1)
            state.n_cols = stop
        # Keep what the next column needs, and the last n_fft//2 + 1 signal samples (reflect end pad).
        end = state.buf_at + state.buf.shape[0]
        keep_from = min(hop * state.n_cols, end - (pad + 1))
        if keep_from > state.buf_at:
            state.buf = state.buf[keep_from - state.buf_at:]
            state.buf_at = keep_from

    def _windows(self, state: _State, starts: np.ndarray) -> np.ndarray:
        """float32 (k, n_mels, 16) windows at mel columns ``starts`` from the kept columns."""
        rel = np.asarray(starts, dtype=np.intp) - state.mel_at
        view = np.lib.stride_tricks.sliding_window_view(state.mel.T, MEL_STEP, axis=0)
        return view[rel]

    def _add_features(self, state: _State, feats: np.ndarray) -> None:
        """Append feature rows (padded rows n_win+1, …); the first also fills row 0 and the rows before."""
        if feats.shape[0] == 0:
            return
        if state.ctx is None:
            first = feats[:1]
            before = np.zeros((RADIUS, feats.shape[1]), np.float32) if self.context == "zeros" \
                else np.repeat(first, RADIUS, axis=0)
            state.ctx = np.concatenate([before, first, feats])
            state.ctx_at = -RADIUS
        else:
            state.ctx = np.concatenate([state.ctx, feats])
        state.n_win += feats.shape[0]

    def _emit(self, state: _State, stop: int) -> np.ndarray:
        """Frames ``[n_out, stop)``: context rows [j-8, j+8) reshaped to the mode; trims the rows."""
        k = stop - state.n_out
        if k <= 0:
            return np.empty((0, *self._shape), np.float32)
        first = state.n_out - RADIUS - state.ctx_at
        idx = first + np.arange(k)[:, None] + np.arange(2 * RADIUS)[None, :]
        frames = state.ctx[idx].reshape(k, *self._shape)
        state.n_out = stop
        drop = state.n_out - RADIUS - state.ctx_at
        if drop > 0:
            state.ctx = state.ctx[drop:]
            state.ctx_at += drop
        return frames

    def _trim_mel(self, state: _State, keep_from: int) -> None:
        keep_from = max(keep_from, 0)
        if keep_from > state.mel_at:
            state.mel = state.mel[:, keep_from - state.mel_at:]
            state.mel_at = keep_from

    def _advance(self, state: _State, chunk: np.ndarray) -> np.ndarray:
        """Consume one validated piece: pre-emphasis → STFT/mel → windows → encoder → frames."""
        cfg = self.config
        hop, pad, n_fft = cfg.hop_length, cfg.n_fft // 2, cfg.n_fft
        y = self._emphasize(state, chunk)
        state.n_in += chunk.shape[0]
        state.buf = np.concatenate([state.buf, y])
        if state.buf_at is None:
            if state.buf.shape[0] < pad + 1:
                return self._concat([])
            # Reflect padding at the start: y[pad], y[pad-1], …, y[1].
            state.buf = np.concatenate([state.buf[pad:0:-1], state.buf])
            state.buf_at = 0
        # Column t covers padded[t·hop, t·hop + n_fft): final once that lies inside the input.
        received = pad + state.n_in
        self._mel_columns(state, (received - n_fft) // hop + 1 if received >= n_fft else 0)
        # Windows that can be final whatever comes next: all 16 columns final (hence never
        # clamped: T >= n_cols + 2) and the window exists for the shortest possible total length.
        t_min = 1 + state.n_in // hop
        n_min = frame_count(t_min, self.fps) if t_min >= MEL_STEP else 0
        i = state.n_win
        starts = []
        while i < n_min:
            s = self._start(i)
            if s + MEL_STEP > state.n_cols:
                break
            starts.append(s)
            i += 1
        if starts:
            self._add_features(state, self._rows(self._windows(state, np.asarray(starts))))
        # Future windows need columns >= their start, or >= T - 16 >= n_cols - 14 if clamped.
        self._trim_mel(state, min(self._start(state.n_win), state.n_cols - MEL_STEP))
        # Frame j is final once its last context row j + radius - 1 (feature j + radius - 2) is known.
        if state.ctx is None:
            return self._concat([])
        return self._emit(state, state.n_win - RADIUS + 2)

    def _finish(self, state: _State) -> np.ndarray:
        cfg = self.config
        hop, pad = cfg.hop_length, cfg.n_fft // 2
        n = state.n_in
        T = 1 + n // hop
        N = frame_count(T, self.fps)  # AudioError (too short) before anything changes
        if state.buf_at is None:  # reflect stream shorter than n_fft//2 + 1 samples: pad it whole
            state.buf = center_pad(state.buf, cfg.n_fft, cfg.pad_mode)
            state.buf_at = 0
        elif cfg.pad_mode == "constant":
            state.buf = np.concatenate([state.buf, np.zeros(pad, np.float64)])
        else:  # reflect end: y[n-2], y[n-3], …, y[n-1-pad]
            state.buf = np.concatenate([state.buf, state.buf[-pad - 1:-1][::-1]])
        self._mel_columns(state, T)
        # The remaining windows, clamped to the last 16 columns like offline.
        idx = np.arange(state.n_win, N)
        starts = np.minimum((MEL_FPS * (idx.astype(np.float64) / float(self.fps))).astype(np.int64), T - MEL_STEP)
        feats = self._rows(self._windows(state, starts))
        self._add_features(state, feats)
        # Padded row N+1 repeats the last feature; then the rows after the end.
        tail = state.ctx[-1:]
        after = np.zeros((RADIUS, tail.shape[1]), np.float32) if self.context == "zeros" \
            else np.repeat(tail, RADIUS, axis=0)
        state.ctx = np.concatenate([state.ctx, tail, after])
        frames = self._emit(state, N + 2)
        state.finished = True
        state.buf = np.empty(0, np.float64)
        state.mel = np.empty((cfg.n_mels, 0), np.float32)
        state.ctx = None
        return frames


# --------------------------------------------------------------------------- measuring a stream


def _stats(values: np.ndarray) -> dict[str, float]:
    v = np.asarray(values, dtype=np.float64)
    if v.size == 0:
        return {"median": 0.0, "p95": 0.0, "max": 0.0, "mean": 0.0}
    return {"median": float(np.median(v)), "p95": float(np.percentile(v, 95)), "max": float(v.max()),
            "mean": float(v.mean())}


@dataclass(frozen=True)
class StreamReport:
    """Timings of one audio stream through a :class:`StreamingPipeline` (see :func:`run_stream`).

    Attributes
    ----------
    n_samples, sample_rate, chunk_samples : int
    fps : float
    latency : Latency
        The algorithmic latency.
    n_frames : int
        Frames in all (N + 2); ``n_tail`` of them came from ``flush()``.
    n_tail : int
    chunk_wall_ms, chunk_cpu_ms : ndarray (pushes,)
        Wall-clock and process CPU time (all threads) of every ``push``.
    frame_compute_ms : ndarray (n_frames - n_tail,)
        Per streamed frame: wall time of the push that returned it / frames it returned.
    frame_lag_ms : ndarray (n_frames - n_tail,)
        Per streamed frame: audio received when it was returned, past its own time
        ``j / fps`` (the algorithmic latency plus chunking), in ms of audio.
    frame_ready_ms : ndarray (n_frames - n_tail,)
        ``frame_lag_ms`` + wall time of the push that returned it: how far behind a live input
        the frame is available.
    flush_wall_ms : float
    total_cpu_s, total_wall_s : float
        Over all pushes and the flush.
    """

    n_samples: int
    sample_rate: int
    chunk_samples: int
    fps: float
    latency: Latency
    n_frames: int
    n_tail: int
    chunk_wall_ms: np.ndarray
    chunk_cpu_ms: np.ndarray
    frame_compute_ms: np.ndarray
    frame_lag_ms: np.ndarray
    frame_ready_ms: np.ndarray
    flush_wall_ms: float
    total_cpu_s: float
    total_wall_s: float

    @property
    def cpu_ms_per_frame(self) -> float:
        """Process CPU time per output video frame (all pushes and the flush)."""
        return 1000.0 * self.total_cpu_s / max(self.n_frames, 1)

    @property
    def wall_ms_per_frame(self) -> float:
        """Wall-clock time per output video frame."""
        return 1000.0 * self.total_wall_s / max(self.n_frames, 1)

    @property
    def real_time_factor(self) -> float:
        """Compute wall time / audio duration (< 1: faster than real time)."""
        return self.total_wall_s / max(self.n_samples / self.sample_rate, 1e-12)

    def summary(self) -> dict[str, Any]:
        """JSON-ready dict: latency, totals and median/p95/max/mean of every per-chunk/frame series."""
        return {
            "audio_s": self.n_samples / self.sample_rate,
            "chunk_ms": 1000.0 * self.chunk_samples / self.sample_rate,
            "fps": self.fps,
            "n_chunks": int(self.chunk_wall_ms.shape[0]),
            "n_frames": self.n_frames,
            "n_frames_at_flush": self.n_tail,
            "algorithmic_latency": {"samples": self.latency.samples, "ms": self.latency.ms,
                                    "context_samples": self.latency.context_samples,
                                    "window_samples": self.latency.window_samples,
                                    "stft_samples": self.latency.stft_samples},
            "cpu_ms_per_frame": self.cpu_ms_per_frame,
            "wall_ms_per_frame": self.wall_ms_per_frame,
            "real_time_factor": self.real_time_factor,
            "chunk_wall_ms": _stats(self.chunk_wall_ms),
            "chunk_cpu_ms": _stats(self.chunk_cpu_ms),
            "frame_compute_ms": _stats(self.frame_compute_ms),
            "frame_lag_ms": _stats(self.frame_lag_ms),
            "frame_ready_ms": _stats(self.frame_ready_ms),
            "flush_wall_ms": self.flush_wall_ms,
        }


def run_stream(stream: StreamingPipeline, wav: np.ndarray, chunk_samples: int, *,
               keep_frames: bool = True) -> "tuple[np.ndarray | None, StreamReport]":
    """Feed ``wav`` to ``stream`` in chunks of ``chunk_samples``, flush, and time every call.

    ``stream`` is reset first. The chunks are views of ``wav``; timings are only the
    ``push``/``flush`` calls.

    Parameters
    ----------
    stream : StreamingPipeline
    wav : ndarray, float32, shape (n,)
    chunk_samples : int
        Samples per push (320 = 20 ms at 16 kHz).
    keep_frames : bool
        Return the concatenated frames (else None; saves memory on long inputs).

    Returns
    -------
    frames : ndarray float32 (N + 2, *frame_shape) or None
    report : StreamReport
    """
    if isinstance(chunk_samples, bool) or not isinstance(chunk_samples, numbers.Integral) or chunk_samples <= 0:
        raise ConfigError(f"chunk_samples must be a positive integer, got {chunk_samples!r}")
    from .audio import check_waveform

    wav = check_waveform(wav)
    stream.reset()
    sr = stream.config.sample_rate
    step = sr / float(stream.fps)  # samples per video frame
    kept: list[np.ndarray] = []
    walls, cpus, f_compute, f_lag, f_ready = [], [], [], [], []
    n_out = 0
    wall0, cpu0 = time.perf_counter(), time.process_time()
    for lo in range(0, wav.shape[0], int(chunk_samples)):
        chunk = wav[lo:lo + int(chunk_samples)]
        t, c = time.perf_counter(), time.process_time()
        frames = stream.push(chunk)
        dt, dc = time.perf_counter() - t, time.process_time() - c
        walls.append(dt)
        cpus.append(dc)
        k = frames.shape[0]
        if k:
            received = lo + chunk.shape[0]
            for j in range(n_out, n_out + k):
                lag = 1000.0 * (received - j * step) / sr
                f_lag.append(lag)
                f_compute.append(1000.0 * dt / k)
                f_ready.append(lag + 1000.0 * dt)
            n_out += k
            if keep_frames:
                kept.append(frames)
    t = time.perf_counter()
    tail = stream.flush()
    flush_wall = time.perf_counter() - t
    total_wall, total_cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    if keep_frames:
        kept.append(tail)
    report = StreamReport(
        n_samples=int(wav.shape[0]), sample_rate=sr, chunk_samples=int(chunk_samples), fps=stream.fps,
        latency=stream.latency, n_frames=n_out + tail.shape[0], n_tail=int(tail.shape[0]),
        chunk_wall_ms=1000.0 * np.asarray(walls), chunk_cpu_ms=1000.0 * np.asarray(cpus),
        frame_compute_ms=np.asarray(f_compute), frame_lag_ms=np.asarray(f_lag), frame_ready_ms=np.asarray(f_ready),
        flush_wall_ms=1000.0 * flush_wall, total_cpu_s=total_cpu, total_wall_s=total_wall,
    )
    return (np.concatenate(kept) if keep_frames else None), report


def check_frames_path(path: "str | os.PathLike") -> Path:
    """Check that ``path`` can take a frames ``.npy`` (parent folder exists, not a directory)."""
    p = Path(path)
    if p.is_dir():
        raise OutputError(f"output {p} is a directory, expected a .npy file path")
    if not p.parent.is_dir():
        raise OutputError(f"output folder {p.parent} does not exist (for {p})")
    return p


def save_frames(frames: np.ndarray, path: "str | os.PathLike") -> Path:
    """Write ``frames`` to ``path`` as .npy, atomically (temp sibling + rename).

    The file is written at exactly ``path`` (no ``.npy`` is appended).

    Raises
    ------
    OutputError
        The folder is missing or not writable, ``path`` is a directory, or the disk is full;
        nothing is left behind.
    """
    p = check_frames_path(path)
    fd, tmp = None, None
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".tmp", dir=p.parent)
        with os.fdopen(fd, "wb") as fh:
            fd = None
            np.save(fh, np.asarray(frames), allow_pickle=False)
        mask = os.umask(0)
        os.umask(mask)
        os.chmod(tmp, 0o666 & ~mask)  # mkstemp makes 0600; give the file the usual permissions
        os.replace(tmp, p)
        tmp = None
    except OSError as exc:
        raise OutputError(f"cannot write {p}: {exc.strerror or exc}") from None
    finally:
        if fd is not None:
            os.close(fd)
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)
    return p
