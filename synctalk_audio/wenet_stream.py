"""wenet streams: the state machine :class:`~synctalk_audio.StreamingPipeline` and
:class:`~synctalk_audio.StreamPool` run for ``mode="wenet"``.

The offline recipe (:func:`~synctalk_audio.wenet.wenet_features`) is per-sample int16
truncation, 32·160 zeros before and 35·160 after, Kaldi fbank frames of 400 samples every 160,
windows of 67 fbank frames every 5, one encoder row (16, 512) per window, then the ±r context
rows. Every step is local — a sample's PCM value, a frame's fbank row (:func:`fbank` sums its
mel bands in a fixed order, so a row never depends on the block it is computed in), a window's
row — so a stream computes each of them once, as soon as its input is known, and the frames
equal ``pipeline(audio, mode="wenet").frames`` bit for bit.

Latency (radius r, 20 fps, 800 samples a video frame): frame j needs feature row j + r − 1,
whose window ends at fbank frame 5(j + r − 1) + 66, which ends at padded sample
160·(5(j + r − 1) + 66) + 400, i.e. input sample 800·(j + r − 1) + 10960 − 5120. Hence
``800·(r − 1) + 5840`` samples past the frame's own time: 11440 (715 ms) at r = 8, 8240
(515 ms) at r = 4, for every frame. The last frames (whose context or window reaches past the
end) come out of ``flush``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import AudioError
from .kaldi_fbank import fbank, fbank_frame_count
from .wenet import PAD_AFTER, PAD_BEFORE, WENET_MIN_SAMPLES, WENET_SAMPLE_RATE, WINDOW_FRAMES, WINDOW_STEP, \
    wenet_pcm, wenet_window_count, wenet_windows

__all__ = ["WenetGeometry", "wenet_latency"]

_SHIFT = 160            # fbank frame shift (10 ms)
_LENGTH = 400           # fbank frame length (25 ms)
_N_MELS = 80
#: Input samples per feature row / video frame (5 fbank frames, 50 ms).
ROW_SAMPLES = WINDOW_STEP * _SHIFT
#: Input samples a window reaches past its start, less the zeros before the audio (5840).
WINDOW_REACH = (WINDOW_FRAMES - 1) * _SHIFT + _LENGTH - PAD_BEFORE


def wenet_latency(radius: int) -> "object":
    """The :class:`~synctalk_audio.stream.Latency` of a wenet stream: ``800·(r − 1) + 5840`` samples."""
    from .stream import Latency

    context = ROW_SAMPLES * (radius - 1)
    return Latency(samples=context + WINDOW_REACH, sample_rate=WENET_SAMPLE_RATE, fps=20.0,
                   context_samples=float(context), window_samples=WINDOW_REACH, stft_samples=0)


class _WenetState:
    """One wenet stream's state (shallow :meth:`copy`; buffers are only written past the committed rows).

    pcm[pcm_lo:pcm_hi, 0] : padded PCM samples from padded index pcm_at
    fb[fb_lo:fb_hi] : fbank rows from row fb_at; n_fb rows computed so far
    n_cut : windows cut so far (handed to the encoder)
    ctx… / n_win / n_out / finished : as the ave state (see stream.context_frames)
    """

    __slots__ = ("n_in", "pcm", "pcm_lo", "pcm_hi", "pcm_at", "fb", "fb_lo", "fb_hi", "fb_at", "n_fb", "n_cut", "n_win",
                 "ctx", "ctx_lo", "ctx_hi", "ctx_at", "n_out", "finished")
    #: The input side (PCM, fbank rows, windows cut); the rest is the output side (as the ave state's).
    FRONT = ("n_in", "pcm", "pcm_lo", "pcm_hi", "pcm_at", "fb", "fb_lo", "fb_hi", "fb_at", "n_fb", "n_cut")

    def __init__(self, radius: int) -> None:
        from .stream import _append

        self.n_in = 0
        self.pcm, self.pcm_lo, self.pcm_hi = _append(np.empty((PAD_BEFORE + 1024, 1), np.float32), 0, 0,
                                                     np.zeros((PAD_BEFORE, 1), np.float32))
        self.pcm_at = 0
        self.fb = np.empty((128, _N_MELS), np.float32)
        self.fb_lo = self.fb_hi = self.fb_at = self.n_fb = 0
        self.n_cut = 0
        self.n_win = 0
        self.ctx: "np.ndarray | None" = None
        self.ctx_lo = self.ctx_hi = 0
        self.ctx_at = -radius
        self.n_out = 0
        self.finished = False

    def copy(self) -> "_WenetState":
        new = object.__new__(_WenetState)
        for name in self.__slots__:
            setattr(new, name, getattr(self, name))
        return new


@dataclass(frozen=True)
class WenetGeometry:
    """What a wenet stream's state machine needs: radius, context, frame shape (fps is 20)."""

    radius: int
    context: str
    shape: tuple[int, ...]
    fps: float = 20.0

    batched_mel = False  # each stream computes its own fbank rows

    def new_state(self) -> _WenetState:
        return _WenetState(self.radius)

    def empty(self) -> np.ndarray:
        return np.empty((0, *self.shape), np.float32)

    def no_windows(self) -> np.ndarray:
        return np.empty((0, WINDOW_FRAMES, _N_MELS), np.float32)

    def windows(self, state: _WenetState, chunk: np.ndarray, *, final: bool) -> np.ndarray:
        """Consume ``chunk`` (and end the signal if ``final``); return the windows that became ready.

        Returns
        -------
        float32 (k, 67, 80): windows ``n_cut … n_cut + k − 1`` (a new array)
        """
        from .stream import _append

        n = chunk.shape[0]
        if n:  # upstream's int16 truncation is per sample: the chunk's own PCM is the whole file's
            pcm = wenet_pcm(chunk)[PAD_BEFORE:PAD_BEFORE + n, None]
            state.pcm, state.pcm_lo, state.pcm_hi = _append(state.pcm, state.pcm_lo, state.pcm_hi, pcm)
            state.n_in += n
        if final:
            state.pcm, state.pcm_lo, state.pcm_hi = _append(state.pcm, state.pcm_lo, state.pcm_hi,
                                                            np.zeros((PAD_AFTER, 1), np.float32))
        n_fb = fbank_frame_count(state.pcm_at + state.pcm_hi - state.pcm_lo)
        if n_fb > state.n_fb:  # the new fbank rows: frames [n_fb_old, n_fb) of the padded PCM
            lo = state.pcm_lo + _SHIFT * state.n_fb - state.pcm_at
            rows = fbank(state.pcm[lo:lo + _SHIFT * (n_fb - state.n_fb - 1) + _LENGTH, 0])
            state.fb, state.fb_lo, state.fb_hi = _append(state.fb, state.fb_lo, state.fb_hi, rows)
            state.n_fb = n_fb
            drop = _SHIFT * n_fb - state.pcm_at  # the next frame starts at padded sample 160·n_fb
            state.pcm_lo += drop
            state.pcm_at += drop
        j = state.n_cut
        if final:  # the remaining windows; the last ones zero-padded to 67 rows, as upstream
            stop = wenet_window_count(state.n_fb)
        else:  # windows whose 67 rows are all known: they exist and are final whatever comes next
            stop = max(j, (state.n_fb - WINDOW_FRAMES) // WINDOW_STEP + 1) if state.n_fb >= WINDOW_FRAMES else j
        if stop <= j:
            return self.no_windows()
        state.n_cut = stop
        # offline's windowing on the rows from window j's start (the last ones zero-padded when final)
        out = np.array(wenet_windows(state.fb[state.fb_lo + WINDOW_STEP * j - state.fb_at:state.fb_hi])[:stop - j])
        keep = min(WINDOW_STEP * stop, state.n_fb)  # rows before the next window's start are done with
        state.fb_lo += keep - state.fb_at
        state.fb_at = keep
        return out

    def frames(self, state: _WenetState, rows: "np.ndarray | None", *, final: bool) -> np.ndarray:
        """Append the encoder rows (k, 16, 512) of the windows :meth:`windows` gave; return the frames now final."""
        from .stream import context_frames

        return context_frames(state, rows, final=final, radius=self.radius, context=self.context, shape=self.shape,
                              repeat_ends=False)

    def check_length(self, state: _WenetState) -> None:
        """Raise AudioError if the stream is too short to end (one 67-frame window needs 240 samples)."""
        if state.n_in < WENET_MIN_SAMPLES:
            raise AudioError(f"stream has {state.n_in} samples; wenet needs at least {WENET_MIN_SAMPLES} at 16 kHz "
                             f"({1000 * WENET_MIN_SAMPLES / WENET_SAMPLE_RATE:g} ms) to fill one 67-frame window; "
                             "push more or reset()")

    def needed_samples(self, frame: int) -> int:
        """Input samples frame ``frame`` needs before it can be final: ``800·(frame + r − 1) + 5840``."""
        return ROW_SAMPLES * (frame + self.radius - 1) + WINDOW_REACH

    def latency(self) -> "object":
        return wenet_latency(self.radius)

    def warm_up(self) -> tuple[int, tuple[int, ...]]:
        """(samples to push through a scratch state, one window's shape) that pay the one-off costs."""
        return WINDOW_REACH + ROW_SAMPLES, (WINDOW_FRAMES, _N_MELS)
