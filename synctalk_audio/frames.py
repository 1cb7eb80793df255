"""Video-frame count and 16-column mel windows, exactly as upstream's ``AudDataset``.

For video frame ``i`` the window starts at mel column ``int(80.0 * (i / fps))``; windows that
would run past the end are clamped to the last 16 columns. :func:`window` returns the windows
as a lazy zero-copy view (:class:`MelWindows`) that the encoder cuts batch by batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .batches import check_positive_int
from .config import MEL_FPS, MEL_STEP, check_fps, check_number
from .errors import AudioError, ConfigError, ShapeError

__all__ = ["MEL_STEP", "MEL_FPS", "frame_count", "window_start", "window_starts", "window", "MelWindows",
           "gather_windows", "check_mel", "MAX_WINDOWS"]

#: Largest mel length :func:`frame_count` takes: 2**53, where float64 stops counting exactly.
_MAX_MEL_FRAMES = 1 << 53
#: Most windows :func:`window_starts` lays out (1 GB of int64 starts; 62 days of video at 25 fps).
MAX_WINDOWS = 1 << 27


def check_mel(mel: np.ndarray, *, n_mels: "int | None" = 80) -> np.ndarray:
    """Validate a mel spectrogram ``(n_mels, T)`` with finite values; return it as an array.

    ``n_mels=None`` accepts any number of mel bands (rows).
    """
    arr = np.asarray(mel)
    if arr.ndim != 2 or (n_mels is not None and arr.shape[0] != n_mels):
        raise ShapeError(f"mel must have shape ({n_mels or 'n_mels'}, T), got {arr.shape}")
    if arr.dtype.kind != "f":
        raise ShapeError(f"mel must be a float array, got dtype {arr.dtype}")
    if not np.isfinite(arr).all():
        raise ShapeError("mel contains NaN or Inf values")
    if arr.size and arr.dtype.itemsize > 4 and float(np.max(np.abs(arr))) > float(np.finfo(np.float32).max):
        raise ShapeError("mel values exceed float32 range; a normalised mel lies in [-4, 4]")
    return arr


def frame_count(n_mel_frames: int, fps: float = 25, *, mel_step: int = MEL_STEP, mel_fps: float = MEL_FPS) -> int:
    """Number of video frames N for a mel of ``n_mel_frames`` columns.

    ``N = int((T - 16) / 80.0 * fps) + 2`` (Python float math, truncation toward zero).

    Parameters
    ----------
    n_mel_frames : int
        T, the mel length: a non-negative integer (a NumPy integer too; not a bool, float or str).
    fps : float
        Video frame rate (25 for ave/hubert, 20 for wenet).
    mel_step : int
        Columns per window (16), positive.
    mel_fps : float
        Mel columns per second (80.0), positive.

    Returns
    -------
    int

    Raises
    ------
    ConfigError
        ``n_mel_frames`` not a non-negative integer, or a bad ``fps``, ``mel_step`` or ``mel_fps``.
    AudioError
        If ``T < 16``: no window fits (audio shorter than 3000 samples at 16 kHz).

    Examples
    --------
    >>> frame_count(81, 25)
    22
    """
    fps = check_fps(fps)
    T = check_number("n_mel_frames", n_mel_frames, lo=0, integer=True)
    if T > _MAX_MEL_FRAMES:
        raise ConfigError(f"n_mel_frames must be at most 2**53 (where float64 stops counting exactly), got {T}")
    if mel_step is not MEL_STEP:  # the defaults (every per-push call of a stream) need no check
        mel_step = check_positive_int("mel_step", mel_step, allow_none=False)
    if mel_fps is not MEL_FPS:
        mel_fps = check_number("mel_fps", mel_fps, lo=0, lo_open=True)
    if T < mel_step:
        min_samples = (mel_step - 1) * int(round(16000 / mel_fps))
        raise AudioError(
            f"audio too short: {T} mel frame{'' if T == 1 else 's'} (fewer than {T * 200} samples at 16 kHz), "
            f"need at least {mel_step} mel frames ({min_samples} samples, "
            f"{min_samples / 16000:.4f} s) for one window"
        )
    return int((T - mel_step) / float(mel_fps) * float(fps)) + 2


def window_start(index: "int | np.ndarray", fps: float = 25, *, mel_fps: float = MEL_FPS) -> "int | np.ndarray":
    """Unclamped first mel column of window ``index``: upstream's ``int(80.0 * (index / fps))``.

    The one statement of the window geometry, used offline (:func:`window_starts`) and by the
    streams; IEEE float64 operations in upstream's order.

    Parameters
    ----------
    index : int or int ndarray (k,)
    fps : float

    Returns
    -------
    int, or int64 ndarray (k,)

    Examples
    --------
    >>> window_start(4, 25), window_start(np.arange(3), 25).tolist()
    (12, [0, 3, 6])
    """
    if isinstance(index, np.ndarray):
        return (float(mel_fps) * (index.astype(np.float64) / float(fps))).astype(np.int64)
    return int(float(mel_fps) * (index / float(fps)))


def window_starts(n_mel_frames: int, fps: float = 25, *, mel_step: int = MEL_STEP,
                  mel_fps: float = MEL_FPS) -> np.ndarray:
    """First mel column of every video frame's window.

    ``start_i = int(80.0 * (i / fps))``, clamped to ``T - 16`` where the window would overrun.

    Returns
    -------
    ndarray, int64, shape (N,)

    Raises
    ------
    ConfigError, AudioError
        As :func:`frame_count`; ConfigError also for more than :data:`MAX_WINDOWS` windows.

    Examples
    --------
    >>> window_starts(40, 25).tolist()
    [0, 3, 6, 9, 12, 16, 19, 22, 24]
    """
    n = frame_count(n_mel_frames, fps, mel_step=mel_step, mel_fps=mel_fps)
    T = int(n_mel_frames)
    if n > MAX_WINDOWS:
        raise ConfigError(f"n_mel_frames={T} at fps={fps!r} gives {n} windows, more than {MAX_WINDOWS} "
                          f"(a GB of window starts); cut the audio into parts")
    return np.minimum(window_start(np.arange(n), fps, mel_fps=mel_fps), T - mel_step)


def gather_windows(mel: np.ndarray, starts: np.ndarray, *, mel_step: int = MEL_STEP) -> np.ndarray:
    """Cut ``mel[:, s:s+16]`` for each start, as float32 (what upstream feeds the encoder).

    Cast first, then gather: the float32 values equal upstream's ``FloatTensor(window)``.
    Pass a float32 ``mel`` to gather many batches without re-casting.

    Parameters
    ----------
    mel : ndarray, shape (n_mels, T)
    starts : ndarray of int, shape (k,), each in [0, T - 16]

    Returns
    -------
    ndarray, float32, shape (k, n_mels, 16)
    """
    mel32 = np.asarray(mel, dtype=np.float32)  # no copy when the caller cast once already
    view = np.lib.stride_tricks.sliding_window_view(mel32.T, mel_step, axis=0)  # (T-15, n_mels, 16)
    return view[np.asarray(starts, dtype=np.intp)]


@dataclass(frozen=True, eq=False)
class MelWindows:
    """Every video frame's mel window, cut on demand: a lazy (N, n_mels, 16) float32 array.

    Holds the float32 mel once (half the float64 mel's size) and the N window starts; a
    slice or an index gathers just those windows, ``np.asarray(w)`` all of them. The encoder
    (:func:`synctalk_audio.encode_batch`) cuts it batch by batch, so a 1-hour clip never
    materialises its 460 MB of windows.

    Attributes
    ----------
    mel32 : float32 (n_mels, T), read-only
    starts : int64 (N,), read-only
    """

    mel32: np.ndarray
    starts: np.ndarray

    @property
    def shape(self) -> tuple[int, int, int]:
        """(N, n_mels, 16)."""
        return (int(self.starts.shape[0]), int(self.mel32.shape[0]), MEL_STEP)

    dtype = np.dtype(np.float32)
    ndim = 3

    @property
    def size(self) -> int:
        n, m, c = self.shape
        return n * m * c

    def __len__(self) -> int:
        return int(self.starts.shape[0])

    def __getitem__(self, key: Any) -> np.ndarray:
        """Windows by an int (negative from the end), a slice, an int array or list, or a bool mask
        of length N; a tuple indexes further into the windows. Otherwise a ShapeError (an index
        out of range) or a ConfigError (a key of another type: float, str, bool, None, …)."""
        if isinstance(key, tuple):
            if not key:
                return np.asarray(self)
            head, rest = key[0], key[1:]
            got = self[head]
            try:
                return got[rest] if _is_int(head) else got[(slice(None), *rest)]
            except IndexError as exc:
                raise ShapeError(f"MelWindows index {key!r:.80} is out of range for windows of shape {self.shape}: "
                                 f"{exc}") from None
            except TypeError:
                raise ConfigError(f"MelWindows index {key!r:.80} is not an index; expected ints or slices") from None
        n = self.starts.shape[0]
        if _is_int(key):
            if not -n <= key < n:
                raise ShapeError(f"MelWindows index {key!r} is out of range for {n} windows (expected {-n}..{n - 1})")
            return gather_windows(self.mel32, self.starts[[key]])[0]
        if isinstance(key, slice):
            try:
                starts = self.starts[key]
            except TypeError:
                raise ConfigError(f"MelWindows index {key!r:.80} has a non-integer start, stop or step") from None
            return gather_windows(self.mel32, starts)
        if isinstance(key, (list, np.ndarray)):
            try:
                idx = np.asarray(key)
            except (TypeError, ValueError):  # a ragged list
                raise ConfigError(f"MelWindows index list must hold integers, got {key!r:.80}") from None
            if idx.size == 0 and idx.dtype.kind == "f":  # [] is float64 to numpy; it selects nothing
                idx = idx.astype(np.intp)
            if idx.dtype.kind not in "iub":
                raise ConfigError(f"MelWindows index array must hold integers (or be a bool mask), got dtype "
                                  f"{idx.dtype}: {key!r:.80}")
            try:
                starts = self.starts[idx]
            except IndexError as exc:
                raise ShapeError(f"MelWindows index array is out of range for {n} windows: {exc}") from None
            return gather_windows(self.mel32, starts)
        raise ConfigError(f"MelWindows index must be an int, a slice or an int array, got {type(key).__name__} "
                          f"{key!r:.80}")

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        out = gather_windows(self.mel32, self.starts)
        return out if dtype is None else out.astype(dtype, copy=False)

    def astype(self, dtype: Any, copy: bool = True) -> np.ndarray:
        """All windows as an array of ``dtype`` (as ``ndarray.astype``)."""
        return np.asarray(self).astype(dtype, copy=False)

    def __iter__(self):
        for i in range(len(self)):
            yield self[i]

    def __repr__(self) -> str:
        return f"MelWindows(shape={self.shape}, dtype=float32)"

    def constant_runs(self) -> "tuple[np.ndarray | None, np.ndarray, np.ndarray]":
        """Split the windows into varying ones and those holding one value everywhere.

        Digital silence gives many windows of one value (-4); a batch-invariant encoder runs
        each distinct one once.

        Returns
        -------
        varying : int ndarray (k,), or None when no window is constant
        constant : int ndarray (N - k,)
        values : float32 ndarray (N - k,), the value of each constant window
        """
        mel32 = self.mel32
        lo, hi = mel32.min(axis=0), mel32.max(axis=0)
        flat = np.lib.stride_tricks.sliding_window_view(lo == hi, MEL_STEP)[self.starts].all(axis=1)
        if not flat.any():
            return None, np.empty(0, np.intp), np.empty(0, mel32.dtype)
        vals = np.lib.stride_tricks.sliding_window_view(lo, MEL_STEP)[self.starts]
        const = flat & (vals == vals[:, :1]).all(axis=1)
        return np.flatnonzero(~const), np.flatnonzero(const), vals[const, 0]


def _is_int(key: Any) -> bool:
    """An integer index (NumPy's too), not a bool."""
    return isinstance(key, (int, np.integer)) and not isinstance(key, bool)


def readonly(arr: np.ndarray) -> np.ndarray:
    """``arr`` as a read-only array: itself when already read-only, else a read-only view."""
    if arr.flags.writeable:
        arr = arr.view()
        arr.setflags(write=False)
    return arr


def window(mel: np.ndarray, fps: float = 25) -> MelWindows:
    """Every video frame's 16-column mel window, as the encoder input (a lazy view).

    Parameters
    ----------
    mel : ndarray, shape (n_mels, T), T >= 16
        Any number of mel bands is cut the same way: this function does not know the preset,
        so it cannot tell a transposed ``(T, 80)`` mel or a 79-band one from a mel of that many
        bands. The ave encoder (:func:`~synctalk_audio.encode_batch`) takes 80 bands and refuses
        other windows with a ShapeError naming the band count.
    fps : float
        Video frame rate.

    Returns
    -------
    MelWindows, float32, shape (N, 80, 16) with ``N = frame_count(T, fps)``; index or slice it
    for arrays, ``np.asarray`` for all windows.

    Examples
    --------
    >>> window(np.zeros((80, 81)), fps=25).shape
    (22, 80, 16)
    """
    arr = check_mel(mel, n_mels=None)
    starts = window_starts(arr.shape[1], fps)
    return MelWindows(mel32=readonly(np.ascontiguousarray(arr, dtype=np.float32)), starts=readonly(starts))
