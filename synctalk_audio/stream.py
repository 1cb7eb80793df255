"""Streaming: push 16 kHz audio chunks, get exactly the offline frames, with a stated latency.

:class:`StreamingPipeline` runs the offline recipe's own step functions on each chunk —
:func:`~synctalk_audio.dsp.mel_step` (pre-emphasis, centring, STFT, mel), the window geometry of
:func:`~synctalk_audio.frames.window_start`, the encoder seam
(:func:`~synctalk_audio.engines.resolve_encoder`) and the context fill of
:func:`~synctalk_audio.context.margin_rows` — and keeps only what the next frames still need,
so every chunk costs work proportional to its own length. Everything ``push`` and ``flush``
return, concatenated, equals ``pipeline(audio).frames`` for the same audio (N + 2 frames, first/
last row repeated, clamped last windows, zeros — or edges — outside the padded rows).
:class:`StreamPool` runs many such streams and encodes the windows of all of them in one call.
``mode="wenet"`` streams run :mod:`synctalk_audio.wenet_stream`'s state machine (fbank rows,
67-frame windows) through the same context step (:func:`context_frames`).

Where the latency comes from (defaults: hop 200, n_fft 800, 16-column windows, radius 8)::

    frame j (shown at t_j = j/fps) = context rows [j-8, j+8) of padded, its last row j+7 is
    feature j+6 (padded row r = feature r-1), whose mel window starts at s = int(80·(j+6)/fps)
    ≤ 80·(j+6)/fps and ends at column s+15, centred on sample 200·(s+15), which needs input up
    to 200·(s+15) + n_fft//2.  Hence input needed for frame j − t_j·16000
        ≤ 6·16000/fps  +  15·200  +  400      (look-ahead context + window + STFT centring)
        = 3840 + 3000 + 400 = 7240 samples = 452.5 ms at 25 fps (equality every 5th frame).

With radius 4 the look-ahead context is 2 frames: 1280 + 3000 + 400 = 4680 samples (292.5 ms).
The last few frames — those whose context reaches the final padded row, or whose window is
clamped to the last 16 mel columns — depend on the total length and only come out of
:meth:`StreamingPipeline.flush`.

Encoder numerics: the exact CPU engine (oneDNN) and the onnxruntime CPU engine are
batch-invariant — a window's row does not depend on the batch it runs in — so streamed rows
equal offline's bit for bit however the audio is chunked (tested). On CUDA, exactness of the
streamed rows is not verified.
"""

from __future__ import annotations

import math
import threading
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

import numpy as np

from .audio import check_waveform, refuse_masked
from .batches import check_positive_int
from .config import DEFAULT_RADIUS, MEL_FPS, MEL_STEP, MODE_FPS, SYNCTALK_2D, MelConfig, check_context, check_fps, \
    check_encoder_config, check_mode, check_radius, mode_shape
from .context import margin_rows, window_view
from .dsp import MelCarry, _mel_step, mel_init
from .engines import resolve_encoder, run_engine
from .errors import AudioError, ConfigError, ShapeError, StreamError
from .frames import frame_count, gather_windows, window_start

__all__ = ["StreamingPipeline", "StreamPool", "PoolError", "Latency", "latency_for", "RADIUS", "StreamReport",
           "run_stream", "save_frames", "check_frames_path"]

#: Default context rows each side of a frame (upstream's ``get_audio_features``: rows [i-8, i+8)).
RADIUS = DEFAULT_RADIUS
#: Why hubert does not stream (see docs/serving.md).
_NOT_STREAMED = {
    "hubert": "HuBERT normalises the whole file by its mean and variance (and attends over 20 s chunks), so no "
              "frame is exact before the audio has ended",
}
#: Largest piece of a push processed at once (bounds the temporary STFT/encoder memory).
_PIECE = 4096 * 200


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
        Total, ``ceil(context + window + stft)`` (7240 at 25 fps, radius 8).
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
                mel_step: int = MEL_STEP, mode: str = "ave") -> Latency:
    """The :class:`Latency` of a stream at ``fps`` with ``config``, from the geometry alone.

    ``mode="wenet"`` (20 fps): ``800·(radius − 1) + 5840`` samples — ``context_samples`` the
    look-ahead rows, ``window_samples`` the 67-frame fbank window past the 320 ms of zeros
    upstream puts before the audio, ``stft_samples`` 0 (see :mod:`synctalk_audio.wenet_stream`).

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
    if check_mode(mode) == "wenet":
        from .wenet_stream import wenet_latency

        _check_wenet_fps(fps)
        return wenet_latency(check_radius(radius))
    if mode != "ave":
        raise ConfigError(f"mode {mode!r} does not stream: {_NOT_STREAMED[mode]}")
    fps = check_fps(fps)
    sr = config.sample_rate
    context = max(radius - 2, 0) * MEL_FPS * config.hop_length / float(fps)
    window = (mel_step - 1) * config.hop_length
    stft = config.n_fft // 2
    return Latency(samples=int(math.ceil(context + window + stft - 1e-9)), sample_rate=sr, fps=fps,
                   context_samples=context, window_samples=window, stft_samples=stft)


# --------------------------------------------------------------------------- one stream's state


def _check_chunk(samples: Any) -> np.ndarray:
    """Validate one pushed chunk; return it as a 1-D float array (not yet float64)."""
    if isinstance(samples, (str, bytes)) or samples is None:
        raise AudioError(f"push() needs a 1-D float array of samples, got {type(samples).__name__}")
    refuse_masked(samples, name="pushed chunk")
    try:
        arr = np.asarray(samples)
    except Exception as exc:  # a ragged list, a tensor that requires grad or of a dtype numpy lacks, …
        why = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
        raise AudioError(f"push() needs a 1-D float array of samples; numpy cannot make an array of this "
                         f"{type(samples).__name__} ({why}); the chunk was not consumed") from None
    if arr.dtype.kind != "f":
        hint = " (int PCM: divide by 32768 as float32 first)" if arr.dtype.kind in "iu" else ""
        raise AudioError(f"pushed samples must be floating point (float32 at 16 kHz), got dtype {arr.dtype}{hint}")
    if arr.ndim != 1:
        hint = " (mix channels first, e.g. synctalk_audio.to_mono(chunk) for (n, channels))" if arr.ndim == 2 else ""
        raise AudioError(f"pushed samples must be a 1-D mono array, got shape {arr.shape}{hint}")
    try:  # offline's value checks: finite samples within float32's range
        check_waveform(arr, name="pushed chunk")
    except AudioError as exc:
        raise AudioError(f"{exc}; the chunk was not consumed") from None
    return arr


class _State:
    """One stream's state.

    A push works on a shallow :meth:`copy` and commits it by replacing the stream's state at
    the end. The mel and context buffers are shared by the copies, but a push only writes past
    the committed rows (or into a new buffer when full), so a push that fails leaves the
    committed state intact.
    """

    __slots__ = ("carry", "mel", "mel_lo", "mel_hi", "mel_at", "n_cut", "n_win", "ctx", "ctx_lo", "ctx_hi", "ctx_at",
                 "n_out", "finished")
    #: The input side (mel step, windows cut); the rest is the output side (rows applied, frames out).
    FRONT = ("carry", "mel", "mel_lo", "mel_hi", "mel_at", "n_cut")

    def __init__(self, config: MelConfig, radius: int) -> None:
        self.carry: MelCarry = mel_init(config)
        # float32 mel columns [mel_at, carry.n_cols) as the rows mel[mel_lo:mel_hi] (one row per column)
        self.mel = np.empty((_MIN_ROWS, config.n_mels), np.float32)
        self.mel_lo = self.mel_hi = self.mel_at = 0
        self.n_cut = 0                      # windows cut (handed to the encoder) so far
        self.n_win = 0                      # windows encoded (features known) so far: <= n_cut
        # padded rows [ctx_at, …) incl. the margin rows before row 0, as ctx[ctx_lo:ctx_hi]
        self.ctx: np.ndarray | None = None
        self.ctx_lo = self.ctx_hi = 0
        self.ctx_at = -radius
        self.n_out = 0                      # frames emitted
        self.finished = False

    @property
    def n_in(self) -> int:
        """Samples pushed so far."""
        return self.carry.n_in

    def copy(self) -> "_State":
        new = object.__new__(_State)
        new.carry, new.n_cut, new.n_win, new.n_out, new.finished = \
            self.carry, self.n_cut, self.n_win, self.n_out, self.finished
        new.mel, new.mel_lo, new.mel_hi, new.mel_at = self.mel, self.mel_lo, self.mel_hi, self.mel_at
        new.ctx, new.ctx_lo, new.ctx_hi, new.ctx_at = self.ctx, self.ctx_lo, self.ctx_hi, self.ctx_at
        return new


#: Rows a stream buffer starts with (it doubles when a big push needs more).
_MIN_ROWS = 64


def _append(buf: np.ndarray, lo: int, hi: int, rows: np.ndarray) -> tuple[np.ndarray, int, int]:
    """``buf[lo:hi]`` followed by ``rows`` (k, D): the buffer and its new ``(lo, hi)``.

    Writes only past ``hi``; when that does not fit, the kept rows move to a new buffer (the
    old one, which a committed state may still hold, is left as it was).
    """
    k = rows.shape[0]
    if hi + k > buf.shape[0]:
        n = hi - lo
        new = np.empty((max(2 * (n + k), _MIN_ROWS), buf.shape[1]), buf.dtype)
        new[:n] = buf[lo:hi]
        buf, lo, hi = new, 0, n
    buf[hi:hi + k] = rows
    return buf, lo, hi + k


def _mel_windows(mel: np.ndarray, starts: "list[int]") -> np.ndarray:
    """Windows ``mel[s:s+16].T`` of a (columns, n_mels) buffer: float32 (k, n_mels, 16), a new array."""
    if len(starts) > 8:
        return gather_windows(mel.T, np.asarray(starts, dtype=np.intp))
    out = np.empty((len(starts), mel.shape[1], MEL_STEP), mel.dtype)
    for i, s in enumerate(starts):
        out[i] = mel[s:s + MEL_STEP].T
    return out


def _context(ctx: np.ndarray, first: int, k: int, radius: int) -> np.ndarray:
    """Rows ``ctx[first+i : first+i+2r]`` for i < k: float32 (k, 2r, D), a new array."""
    if k == 1:
        return ctx[first:first + 2 * radius][None].copy()
    return np.array(window_view(ctx[first:first + k + 2 * radius - 1], k, radius))


@dataclass(frozen=True)
class _Geometry:
    """What a stream's state machine needs to know: mel preset, fps, radius, context, frame shape."""

    config: MelConfig
    fps: float
    radius: int
    context: str
    shape: tuple[int, ...]

    def empty(self) -> np.ndarray:
        return np.empty((0, *self.shape), np.float32)

    def no_windows(self) -> np.ndarray:
        return np.empty((0, self.config.n_mels, MEL_STEP), np.float32)

    def windows(self, state: _State, chunk: np.ndarray, *, final: bool) -> np.ndarray:
        """Consume ``chunk`` (and end the signal if ``final``); return the windows that became ready.

        Returns
        -------
        float32 (k, n_mels, 16): windows ``n_cut … n_cut + k − 1`` (a new array); their rows go
        to :meth:`frames`, in order (a pool may cut later windows before it applies them).
        """
        carry, cols = _mel_step(state.carry, chunk, self.config, final)  # the chunk was checked on entry
        return self.ready(state, carry, cols, final=final)

    def ready(self, state: _State, carry: MelCarry, cols: np.ndarray, *, final: bool) -> np.ndarray:
        """:meth:`windows` after the mel step: take the new carry and columns (n_mels, c)."""
        state.carry = carry
        if cols.shape[1]:  # float32 cast on the copy, as offline's gather_windows does
            state.mel, state.mel_lo, state.mel_hi = _append(state.mel, state.mel_lo, state.mel_hi, cols.T)
        T, fps, j = carry.n_cols, self.fps, state.n_cut
        if final:  # the remaining windows, clamped to the last 16 columns like offline
            starts = [min(window_start(i, fps), T - MEL_STEP) for i in range(j, frame_count(T, fps))]
        else:
            # Windows final whatever comes next: all 16 columns known (so never clamped: the
            # total T >= n_cols + 2) and the window exists for the shortest possible total length.
            starts = []
            s = window_start(j, fps)
            if s + MEL_STEP <= T:  # else nothing is ready (every other 20 ms push): skip the rest
                t_min = 1 + carry.n_in // self.config.hop_length
                n_min = frame_count(t_min, fps) if t_min >= MEL_STEP else 0
                while j < n_min and s + MEL_STEP <= T:
                    starts.append(s)
                    j += 1
                    s = window_start(j, fps)
        if not starts:
            return self.no_windows()
        state.n_cut += len(starts)
        shift = state.mel_lo - state.mel_at  # buffer row of mel column c: c + shift
        return _mel_windows(state.mel, [s + shift for s in starts])

    def frames(self, state: _State, rows: "np.ndarray | None", *, final: bool) -> np.ndarray:
        """Append the encoder rows of the windows :meth:`windows` gave; return the frames now final.

        Returns
        -------
        float32 (k, *shape): frames ``n_out … n_out + k − 1`` (a new array)
        """
        n_win = state.n_win + (rows.shape[0] if rows is not None else 0)
        # Future windows need columns >= their start, or >= T - 16 >= n_cols - 14 if clamped.
        keep_from = max(min(window_start(n_win, self.fps), state.carry.n_cols - MEL_STEP), 0)
        if keep_from > state.mel_at:
            state.mel_lo += keep_from - state.mel_at
            state.mel_at = keep_from
        frames = context_frames(state, rows, final=final, radius=self.radius, context=self.context, shape=self.shape,
                                repeat_ends=True)
        if final:
            state.mel_lo = state.mel_hi
        return frames

    # the ave specifics StreamingPipeline and StreamPool ask of a geometry

    batched_mel = True  # a pool computes the mel columns of all its streams together

    def new_state(self) -> _State:
        return _State(self.config, self.radius)

    def check_length(self, state: _State) -> None:
        """Raise AudioError if the stream is too short to end (fewer than 16 mel columns)."""
        frame_count(1 + state.carry.n_in // self.config.hop_length, self.fps)

    def needed_samples(self, frame: int) -> int:
        """Input samples frame ``frame`` needs before it can be final (if not a tail frame)."""
        s = window_start(frame + self.radius - 2, self.fps)
        return self.config.hop_length * (s + MEL_STEP - 1) + self.config.n_fft // 2

    def latency(self) -> Latency:
        return latency_for(self.fps, self.config, radius=self.radius)

    def warm_up(self) -> tuple[int, tuple[int, ...]]:
        """(samples to push through a scratch state, one window's shape) that pay the one-off costs."""
        return self.config.n_fft + self.config.hop_length, (self.config.n_mels, MEL_STEP)


def context_frames(state: Any, rows: "np.ndarray | None", *, final: bool, radius: int, context: str,
                   shape: tuple[int, ...], repeat_ends: bool) -> np.ndarray:
    """Append a stream's new encoder rows to its context buffer; return the frames now final.

    The context step of every mode: frame j is rows ``[j − r, j + r)`` of the padded features,
    ``margin_rows`` outside. ave (``repeat_ends``) pads the features with their first and last
    row repeated (N + 2 frames); hubert and wenet do not (K frames).

    Parameters
    ----------
    state : a stream state with ``ctx, ctx_lo, ctx_hi, ctx_at, n_win, n_out, finished``
    rows : (k, *row_shape) float32 encoder rows of the next k windows, or None
    final : the stream ended: emit the tail frames

    Returns
    -------
    float32 (k', *shape): frames ``n_out … n_out + k' − 1`` (a new array)
    """
    r, rep = radius, int(repeat_ends)
    if rows is not None and rows.shape[0]:
        rows = rows.reshape(rows.shape[0], -1)
        if state.ctx is None:  # margin rows before padded row 0 (ave: row 0 repeats the first feature)
            head = margin_rows(rows[:1], r, context)
            head = np.concatenate([head, rows[:1]]) if repeat_ends else head
            state.ctx = np.empty((_MIN_ROWS, rows.shape[1]), np.float32)
            state.ctx, state.ctx_lo, state.ctx_hi = _append(state.ctx, 0, 0, head)
        state.ctx, state.ctx_lo, state.ctx_hi = _append(state.ctx, state.ctx_lo, state.ctx_hi, rows)
        state.n_win += rows.shape[0]
    if state.ctx is None:
        return np.empty((0, *shape), np.float32)
    if final:  # margin rows after the last padded row (ave: it repeats the last feature)
        tail = state.ctx[state.ctx_hi - 1:state.ctx_hi]
        tail = np.concatenate([tail, margin_rows(tail, r, context)]) if repeat_ends else margin_rows(tail, r, context)
        state.ctx, state.ctx_lo, state.ctx_hi = _append(state.ctx, state.ctx_lo, state.ctx_hi, tail)
        stop = state.n_win + 2 * rep
    else:  # frame j is final once its last context row j + r - 1 (feature j + r - 1 - rep) is known
        stop = state.n_win - r + 1 + rep
    k = stop - state.n_out
    if k <= 0:
        if final:
            state.finished, state.ctx = True, None
        return np.empty((0, *shape), np.float32)
    first = state.ctx_lo + state.n_out - r - state.ctx_at  # buffer row of frame n_out's first context row
    # (k, 2r, D) context windows; a row-major reshape of each gives the mode's frame
    frames = _context(state.ctx, first, k, r).reshape(k, *shape)
    state.n_out = stop
    drop = state.n_out - r - state.ctx_at
    if drop > 0:
        state.ctx_lo += drop
        state.ctx_at += drop
    if final:
        state.finished, state.ctx = True, None
    return frames


def _concat(parts: list[np.ndarray], geometry: _Geometry) -> np.ndarray:
    parts = [p for p in parts if p.shape[0]]
    if not parts:
        return geometry.empty()
    return parts[0] if len(parts) == 1 else np.concatenate(parts)


def _check_wenet_fps(fps: Any) -> None:
    """ConfigError unless ``fps`` is wenet's fixed 20 (one feature row per 50 ms)."""
    if check_fps(fps) != MODE_FPS["wenet"]:
        raise ConfigError(f"wenet runs at {MODE_FPS['wenet']} fps (one feature row per 50 ms), got fps={fps!r}")


def _geometry(mode: str, fps: "float | None", radius: int, context: str, config: Any) -> Any:
    """The state machine of a stream of ``mode``: :class:`_Geometry` (ave) or ``WenetGeometry``."""
    check_mode(mode)
    if mode == "hubert":
        raise ConfigError(f"mode 'hubert' does not stream: {_NOT_STREAMED[mode]}; streams run modes 'ave' and "
                          "'wenet' (run pipeline(..., mode='hubert') on whole files)")
    if mode == "wenet":
        from .wenet_stream import WenetGeometry

        if fps is not None:
            _check_wenet_fps(fps)
        if config is not SYNCTALK_2D:
            raise ConfigError("config (the mel preset) applies to mode 'ave'; wenet's Kaldi fbank is fixed")
        radius = check_radius(radius)
        return WenetGeometry(radius=radius, context=check_context(context), shape=mode_shape(mode, radius))
    check_encoder_config(config)
    radius = check_radius(radius)
    return _Geometry(config=config, fps=check_fps(MODE_FPS[mode] if fps is None else fps), radius=radius,
                     context=check_context(context), shape=mode_shape(mode, radius))


# --------------------------------------------------------------------------- the stream


class StreamingPipeline:
    """Push 16 kHz mono chunks, get the final U-Net frames as soon as they are exact.

    Parameters
    ----------
    checkpoint : path, state dict, AudioEncoder, "seeded", an .onnx, or an engine
        As for :func:`synctalk_audio.pipeline`; an exported ``.onnx`` encoder streams through
        onnxruntime without torch. wenet: the wenet ``encoder.onnx`` (or its engine).
    mode : "ave" or "wenet"
        ave: mel → conv encoder, (N + 2) frames; wenet: Kaldi fbank → 67-frame windows →
        ``encoder.onnx``, K frames of (256, 16, 32) / (128, 16, 32) at 20 fps, latency
        ``800·(radius − 1) + 5840`` samples (:mod:`synctalk_audio.wenet_stream`). hubert does
        not stream (whole-file normalisation): ConfigError.
    fps : float, optional
        Video frame rate (default the mode's: 25; wenet is fixed at 20).
    device : "auto", "cpu", "cuda", …
    precision : "exact", "fast" or "onnx"; default the checkpoint's own (see ``pipeline``)
    context : "zeros" (upstream) or "edge"
    radius : 8 or 4
        Context rows each side of a frame ((32, 16, 16) or (16, 16, 16) frames).
    config : MelConfig
        ``SYNCTALK_2D`` (default, zero STFT padding) or ``WAV2LIP`` (reflect padding).
    batch_size : int, optional
        The largest encoder batch run at once (default the engine's).
    threads : int or None
        CPU threads of the encoder calls: 1 (default) costs the least CPU per window and does
        not stall when the cores are busy; ``None`` leaves torch's setting alone. For an .onnx
        checkpoint: onnxruntime's intra-op threads (``None``: the usable cores). The frames do
        not depend on it.

    Notes
    -----
    ``concat(push(c0), push(c1), …, flush())`` equals ``pipeline(concat(c0, c1, …)).frames``
    bit for bit on CPU. Calls from several threads are serialised (a lock), never interleaved.

    Examples
    --------
    >>> from synctalk_audio import StreamingPipeline
    >>> sp = StreamingPipeline(checkpoint="seeded", device="cpu")          # doctest: +SKIP
    >>> sp.latency.samples, sp.latency.ms                                   # doctest: +SKIP
    (7240, 452.5)
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
    ) -> None:
        _configure(self, checkpoint, mode=mode, fps=fps, device=device, precision=precision, context=context,
                   radius=radius, config=config, batch_size=batch_size, threads=threads)
        self._state = self._geo.new_state()
        self._warm_up()

    # ----------------------------------------------------------------- public API

    @property
    def latency(self) -> Latency:
        """The algorithmic :class:`Latency` (``.samples``, ``.ms``), from the geometry."""
        return self._latency

    @property
    def frame_shape(self) -> tuple[int, ...]:
        """Shape of one frame, (32, 16, 16) for ave at radius 8."""
        return self._geo.shape

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

        ave: ``hop·(s + mel_step - 1) + n_fft//2`` with ``s = int(80·((frame + radius - 2)/fps))``;
        wenet: ``800·(frame + radius − 1) + 5840``.

        Raises
        ------
        ConfigError : ``frame`` not a non-negative integer (a bool, float or str is refused)
        """
        if isinstance(frame, bool) or not isinstance(frame, (int, np.integer)) or frame < 0:
            raise ConfigError(f"frame must be a non-negative integer, got {frame!r}")
        return self._geo.needed_samples(int(frame))

    def reset(self) -> None:
        """Forget all input and start a new stream (the encoder stays loaded)."""
        with self._lock:
            self._state = self._geo.new_state()

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
        chunk = _check_chunk(samples)
        with self._lock:
            if self._state.finished:
                raise StreamError("push() after flush(): the stream has ended; call reset() to start a new one")
            state = self._state.copy()
            if chunk.shape[0] <= _PIECE:
                out = self._advance(state, chunk, final=False)
            else:
                out = _concat([self._advance(state, chunk[lo:lo + _PIECE], final=False)
                               for lo in range(0, chunk.shape[0], _PIECE)], self._geo)
            self._state = state
        return out

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
        with self._lock:
            if self._state.finished:
                raise StreamError("flush() called twice: the stream has already ended; call reset() to start a new one")
            self._geo.check_length(self._state)  # too short: AudioError
            state = self._state.copy()
            frames = self._advance(state, np.empty(0, np.float32), final=True)
            self._state = state
        return frames

    def __repr__(self) -> str:
        st = self._state
        pad = f"pad_mode={self.config.pad_mode!r}, " if self.mode == "ave" else ""
        return (f"StreamingPipeline(mode={self.mode!r}, fps={self.fps}, context={self.context!r}, "
                f"radius={self.radius}, precision={self.precision!r}, device={self.device!r}, {pad}"
                f"samples_in={st.n_in}, frames_out={st.n_out}, finished={st.finished}, "
                f"latency={self._latency.ms:g} ms)")

    # ----------------------------------------------------------------- internals

    def _warm_up(self) -> None:
        """Pay the one-off costs now (window/basis caches, kernel set-up), not in the first push."""
        samples, window = self._geo.warm_up()
        self._advance(self._geo.new_state(), np.zeros(samples, np.float32), final=False)
        self._rows(np.zeros((1, *window), np.float32))

    def _rows(self, windows: np.ndarray) -> np.ndarray:
        """float32 (k, 80, 16) windows → (k, 512) rows through the seam (batch-invariant engines
        give offline's rows for any grouping)."""
        return _encode(self._encoder, windows, batch_size=self.batch_size, threads=self._engine_threads)

    def _advance(self, state: _State, chunk: np.ndarray, *, final: bool) -> np.ndarray:
        windows = self._geo.windows(state, chunk, final=final)
        return self._geo.frames(state, self._rows(windows) if windows.shape[0] else None, final=final)


def _encode(engine: Any, windows: np.ndarray, *, batch_size: "int | None", threads: "int | None") -> np.ndarray:
    """float32 (k, 80, 16) windows → (k, 512) rows: one direct engine call when they fit one batch
    (a 20 ms push needs none of :func:`run_engine`'s batching), else :func:`run_engine`."""
    k = windows.shape[0]
    bs = batch_size or engine.batch_size
    if k > bs:
        return run_engine(engine, k, lambda lo, hi: windows[lo:hi], batch_size=bs, threads=threads)
    running = getattr(engine, "running", None)
    with (running(k, bs, threads) if running is not None else nullcontext()):
        return _checked(engine(windows))


def _checked(rows: np.ndarray) -> np.ndarray:
    if not np.isfinite(rows).all():
        raise ShapeError("encoder output overflowed to NaN/Inf; expected normalised inputs (mel windows in [-4, 4])")
    return rows


def _configure(obj: Any, checkpoint: Any, *, mode: str, fps: "float | None", device: str, precision: "str | None",
               context: str, radius: int, config: Any, batch_size: "int | None", threads: "int | None") -> None:
    """The settings :class:`StreamingPipeline` and :class:`~synctalk_audio.StreamPool` share:
    validated, their geometry, their engine (through the seam) and the lock serialising calls."""
    obj._geo = _geometry(mode, fps, radius, context, config)
    obj.mode, obj.fps, obj.context, obj.radius, obj.config = mode, obj._geo.fps, context, radius, config
    obj.batch_size = check_positive_int("batch_size", batch_size)
    obj.threads = check_positive_int("threads", threads)
    obj._encoder = _stream_engine(checkpoint, mode, precision, device, obj.threads)
    obj._engine_threads = None if obj._encoder.precision == "onnx" else obj.threads
    obj.precision = obj._encoder.precision
    obj.device = str(obj._encoder.device)
    obj._latency = obj._geo.latency()
    obj._lock = threading.Lock()


def _stream_engine(checkpoint: Any, mode: str, precision: "str | None", device: str, threads: "int | None") -> Any:
    """The engine of a stream: a loaded ONNX engine keeps its threads, a path loads with ours."""
    from .engines import is_engine

    onnx_loaded = is_engine(checkpoint) and checkpoint.precision == "onnx"
    return resolve_encoder(checkpoint, mode=mode, precision=precision, device=device,
                           threads=None if onnx_loaded else threads)


def __getattr__(name: str) -> Any:
    """``StreamPool`` / ``PoolError``, re-exported from :mod:`synctalk_audio.pool` on first use (pool
    imports this module, so importing it here eagerly breaks ``import synctalk_audio.pool`` first)."""
    if name in ("StreamPool", "PoolError"):
        from . import pool

        return getattr(pool, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# Re-exported: the measuring helpers live in their own module.
from .stream_report import StreamReport, check_frames_path, run_stream, save_frames  # noqa: E402
