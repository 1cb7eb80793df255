"""Temporal padding, ±8-row context windows and the per-mode reshape.

Upstream repeats the first and last feature rows once (N → N+2 rows, one video frame each),
then gives frame ``i`` the rows ``[i-8, i+8)`` with zeros outside the padded range.
"""

from __future__ import annotations

import numpy as np

from .config import MODES, check_context, check_mode
from .errors import ShapeError

__all__ = ["pad_context", "context_windows", "window_view", "context_window", "reshape_for_mode", "frames_for_mode"]


def _check_features(features: np.ndarray, name: str = "features") -> np.ndarray:
    arr = np.asarray(features)
    if arr.ndim != 2:
        raise ShapeError(f"{name} must have shape (N, D), got {arr.shape}")
    if arr.shape[0] == 0:
        raise ShapeError(f"{name} is empty (0 rows)")
    if arr.dtype.kind != "f":
        raise ShapeError(f"{name} must be a float array, got dtype {arr.dtype}")
    if not np.isfinite(arr).all():
        raise ShapeError(f"{name} contains NaN or Inf values")
    return arr


def pad_context(features: np.ndarray) -> np.ndarray:
    """Repeat the first and last rows once: one row per output video frame.

    Parameters
    ----------
    features : ndarray, shape (N, D)

    Returns
    -------
    ndarray, shape (N + 2, D), same dtype

    Examples
    --------
    >>> pad_context(np.array([[1.0], [2.0]])).ravel().tolist()
    [1.0, 1.0, 2.0, 2.0]
    """
    arr = _check_features(features)
    return np.concatenate([arr[:1], arr, arr[-1:]], axis=0)


def _radius_padded(padded: np.ndarray, radius: int, context: str) -> np.ndarray:
    mode = "constant" if context == "zeros" else "edge"
    return np.pad(padded, ((radius, radius), (0, 0)), mode=mode)


def context_windows(padded: np.ndarray, *, context: str = "zeros", radius: int = 8) -> np.ndarray:
    """Every frame's ``2·radius``-row context window, as a read-only zero-copy view.

    Frame ``i`` sees rows ``[i - radius, i + radius)`` of ``padded``; rows outside are zeros
    (``context="zeros"``, upstream) or the nearest edge row (``context="edge"``, a fork's
    variant). Only ``padded`` plus ``2·radius`` rows are allocated, whatever N is.

    Parameters
    ----------
    padded : ndarray, shape (M, D)
        Usually :func:`pad_context` output (M = N + 2), or precomputed hubert/wenet features.

    Returns
    -------
    ndarray view, shape (M, 2·radius, D); each window's ``2·radius·D`` values are contiguous

    Examples
    --------
    >>> w = context_windows(np.ones((3, 4)))
    >>> w.shape, float(w[0, 7, 0]), float(w[0, 8, 0])
    ((3, 16, 4), 0.0, 1.0)
    """
    arr = _check_features(padded, "padded")
    check_context(context)
    if isinstance(radius, bool) or not isinstance(radius, int) or radius < 1:
        raise ShapeError(f"radius must be a positive integer, got {radius!r}")
    return window_view(np.ascontiguousarray(_radius_padded(arr, radius, context)), arr.shape[0], radius)


def window_view(buffer: np.ndarray, m: int, radius: int = 8) -> np.ndarray:
    """The ``m`` context windows of a buffer already padded with ``radius`` rows each side.

    Parameters
    ----------
    buffer : C-contiguous ndarray, shape (m + 2·radius, D)

    Returns
    -------
    read-only view, shape (m, 2·radius, D): window i is ``buffer[i : i + 2·radius]``
    """
    d = buffer.shape[1]
    span = 2 * radius
    flat = buffer.reshape(-1)
    return np.lib.stride_tricks.sliding_window_view(flat, span * d)[::d][:m].reshape(m, span, d)


def context_window(padded: np.ndarray, index: int, *, context: str = "zeros", radius: int = 8) -> np.ndarray:
    """One frame's context window (a copy), upstream's ``get_audio_features(padded, index)``.

    Parameters
    ----------
    padded : ndarray, shape (M, D)
    index : int, 0 <= index < M

    Returns
    -------
    ndarray, shape (2·radius, D)
    """
    arr = _check_features(padded, "padded")
    check_context(context)
    m = arr.shape[0]
    if isinstance(index, bool) or not isinstance(index, (int, np.integer)) or not (0 <= index < m):
        raise ShapeError(f"frame index {index!r} is out of range for {m} frames (0..{m - 1})")
    lo, hi = index - radius, index + radius
    rows = np.arange(lo, hi)
    inside = (rows >= 0) & (rows < m)
    if context == "edge":
        return arr[np.clip(rows, 0, m - 1)].copy()
    out = np.zeros((2 * radius, arr.shape[1]), dtype=arr.dtype)
    out[inside] = arr[rows[inside]]
    return out


def reshape_for_mode(window: np.ndarray, mode: str) -> np.ndarray:
    """Row-major reshape of context window(s) to the U-Net's per-mode audio tensor.

    ave → (32, 16, 16) from 16×512, hubert → (32, 32, 32) from 16×2048 (2×1024),
    wenet → (256, 16, 32) from 16×8192. A view whenever the input's windows are contiguous
    (as :func:`context_windows` gives).

    Parameters
    ----------
    window : ndarray, shape (16, D) or (M, 16, D) (or any leading shape + one window)
    mode : {"ave", "hubert", "wenet"}

    Returns
    -------
    ndarray, shape MODES[mode] or (M, *MODES[mode])

    Raises
    ------
    ShapeError
        If one window's size differs from the mode's.
    """
    shape = MODES[check_mode(mode)]
    arr = np.asarray(window)
    need = int(np.prod(shape))
    if arr.ndim < 2:
        raise ShapeError(f"window must be at least 2-D (16, D), got shape {arr.shape}")
    size = int(np.prod(arr.shape[-2:]))
    if size != need:
        raise ShapeError(
            f"a {mode} frame needs {need} values {shape}, but the window {arr.shape[-2:]} has {size}"
        )
    return arr.reshape(*arr.shape[:-2], *shape)


def frames_for_mode(padded: np.ndarray, mode: str, *, context: str = "zeros") -> np.ndarray:
    """All frames of ``padded`` for ``mode``: context windows reshaped, a read-only view.

    For hubert pass precomputed (T, 2, 1024) features flattened to (T, 2048); wenet (T, 512).

    Parameters
    ----------
    padded : ndarray, shape (M, D) or (M, a, b) (trailing dims are flattened)

    Returns
    -------
    ndarray view, shape (M, *MODES[mode])
    """
    arr = np.asarray(padded)
    if arr.ndim > 2:
        arr = arr.reshape(arr.shape[0], -1)
    return reshape_for_mode(context_windows(arr, context=context), mode)
