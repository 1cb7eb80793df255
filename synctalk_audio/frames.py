"""Video-frame count and 16-frame mel windows, exactly as upstream's ``AudDataset``.

For video frame ``i`` the window starts at mel frame ``int(80.0 * (i / fps))``; windows that
would run past the end are clamped to the last 16 mel frames.
"""

from __future__ import annotations

import numpy as np

from .config import check_fps
from .errors import AudioError, ShapeError

__all__ = ["MEL_STEP", "MEL_FPS", "frame_count", "window_starts", "window", "gather_windows", "check_mel"]

MEL_STEP = 16
MEL_FPS = 80.0


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
        T, the mel length.
    fps : float
        Video frame rate (25 for ave/hubert, 20 for wenet).

    Returns
    -------
    int

    Raises
    ------
    AudioError
        If ``T < 16``: no window fits (audio shorter than 3000 samples at 16 kHz).

    Examples
    --------
    >>> frame_count(81, 25)
    22
    """
    fps = check_fps(fps)
    T = int(n_mel_frames)
    if T < mel_step:
        min_samples = (mel_step - 1) * int(round(16000 / mel_fps))
        raise AudioError(
            f"audio too short: {T} mel frames (~{max(T - 1, 0) * 200} samples at 16 kHz), "
            f"need at least {mel_step} mel frames ({min_samples} samples, "
            f"{min_samples / 16000:.4f} s) for one window"
        )
    return int((T - mel_step) / float(mel_fps) * float(fps)) + 2


def window_starts(n_mel_frames: int, fps: float = 25, *, mel_step: int = MEL_STEP, mel_fps: float = MEL_FPS) -> np.ndarray:
    """First mel column of every video frame's window.

    ``start_i = int(80.0 * (i / fps))``, clamped to ``T - 16`` where the window would overrun.
    Vectorised with the same IEEE float64 operations as the upstream loop.

    Returns
    -------
    ndarray, int64, shape (N,)

    Examples
    --------
    >>> window_starts(40, 25).tolist()
    [0, 3, 6, 9, 12, 16, 19, 22, 24]
    """
    T = int(n_mel_frames)
    n = frame_count(T, fps, mel_step=mel_step, mel_fps=mel_fps)
    idx = np.arange(n, dtype=np.float64)
    starts = (float(mel_fps) * (idx / float(fps))).astype(np.int64)
    return np.minimum(starts, T - mel_step)


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


def window(mel: np.ndarray, fps: float = 25) -> np.ndarray:
    """Every video frame's 16-column mel window, as the encoder input.

    Parameters
    ----------
    mel : ndarray, shape (80, T), T >= 16 (any number of mel bands is cut the same way)
    fps : float
        Video frame rate.

    Returns
    -------
    ndarray, float32, shape (N, 80, 16) with ``N = frame_count(T, fps)``

    Examples
    --------
    >>> window(np.zeros((80, 81)), fps=25).shape
    (22, 80, 16)
    """
    arr = check_mel(mel, n_mels=None)
    starts = window_starts(arr.shape[1], fps)
    return gather_windows(arr, starts)
