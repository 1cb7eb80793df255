"""Temporal padding, context windows and the per-mode reshape (einops patterns).

ave repeats its first and last feature rows once (N → N+2 rows, one video frame each); every
mode then gives frame ``i`` the rows ``[i - r, i + r)`` (r = 8, or 4 for Ultralight since
mid-2025) with zeros outside (upstream) or the edge rows (``context="edge"``).
"""

from __future__ import annotations

import numpy as np
from einops import rearrange

from .config import DEFAULT_RADIUS, FRAME_SPLIT, RADII, check_context, check_mode, check_radius, mode_shape
from .errors import ShapeError

__all__ = ["pad_context", "margin_rows", "with_margin", "context_windows", "window_view", "context_window",
           "reshape_for_mode", "frames_for_mode", "FRAME_PATTERN"]

#: One context window (t rows of s·h·w values) → the U-Net's (t·s, h, w) tensor, row-major.
FRAME_PATTERN = "... t (s h w) -> ... (t s) h w"


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


def _check_radius(radius: int) -> int:
    if isinstance(radius, bool) or not isinstance(radius, (int, np.integer)) or radius < 1:
        raise ShapeError(f"radius must be a positive integer, got {radius!r}")
    return int(radius)


def margin_rows(edge: np.ndarray, radius: int, context: str) -> np.ndarray:
    """The ``radius`` rows beyond an end of the padded features: zeros, or ``edge`` repeated.

    Parameters
    ----------
    edge : ndarray, shape (1, D) — the first (or last) padded row
    radius : int
    context : "zeros" or "edge"

    Returns
    -------
    ndarray, shape (radius, D), edge's dtype
    """
    if context == "edge":
        return np.repeat(edge, radius, axis=0)
    return np.zeros((radius, edge.shape[1]), dtype=edge.dtype)


def with_margin(rows: np.ndarray, radius: int, context: str, *, repeat_ends: bool = False) -> np.ndarray:
    """``rows`` (optionally with first/last repeated) inside a buffer with ``radius`` margin rows.

    Returns the padded rows as a view into a C-contiguous buffer of ``M + 2·radius`` rows whose
    margins already hold the context fill, so :func:`context_windows` needs no second copy.

    Parameters
    ----------
    rows : ndarray, shape (N, D)
    radius : int
    context : "zeros" or "edge"
    repeat_ends : bool
        Repeat the first and last rows once (ave's :func:`pad_context`): M = N + 2, else M = N.

    Returns
    -------
    ndarray view, shape (M, D)
    """
    n, d = rows.shape
    extra = 1 if repeat_ends else 0
    m = n + 2 * extra
    buf = np.empty((m + 2 * radius, d), dtype=rows.dtype)
    buf[radius + extra: radius + extra + n] = rows
    if repeat_ends:
        buf[radius] = rows[0]
        buf[radius + m - 1] = rows[-1]
    buf[:radius] = margin_rows(buf[radius: radius + 1], radius, context)
    buf[radius + m:] = margin_rows(buf[radius + m - 1: radius + m], radius, context)
    return buf[radius: radius + m]


def pad_context(features: np.ndarray, *, margin: int = 0, context: str = "zeros") -> np.ndarray:
    """Repeat the first and last rows once: one row per output video frame (ave).

    Parameters
    ----------
    features : ndarray, shape (N, D)
    margin : int
        Context rows to reserve beyond each end (the radius): the result is then a view into
        a buffer whose margins hold the ``context`` fill, and :func:`context_windows` of it
        is a zero-copy view. 0 gives a plain array. When ``features`` itself lies in a buffer
        with ``margin + 1`` spare rows each side (``encode_batch(..., margin=r + 1)``), those
        rows are filled in place and nothing is copied.
    context : "zeros" or "edge"
        The margin fill.

    Returns
    -------
    ndarray, shape (N + 2, D), same dtype

    Examples
    --------
    >>> pad_context(np.array([[1.0], [2.0]])).ravel().tolist()
    [1.0, 1.0, 2.0, 2.0]
    """
    arr = _check_features(features)
    check_context(context)
    if isinstance(margin, bool) or not isinstance(margin, (int, np.integer)) or margin < 0:
        raise ShapeError(f"margin must be a non-negative integer, got {margin!r}")
    if margin == 0:
        return np.concatenate([arr[:1], arr, arr[-1:]], axis=0)
    room = _room(arr, int(margin) + 1)
    if room is None:
        return with_margin(arr, int(margin), context, repeat_ends=True)
    # ``features`` already lies in a buffer with spare rows around it (encode_batch(margin=...)):
    # fill them in place — rows outside ``features`` itself, no copy of the features.
    base, top = room
    n, m = arr.shape[0], int(margin)
    padded = base[top - 1: top + n + 1]
    padded[0], padded[-1] = arr[0], arr[-1]
    base[top - 1 - m: top - 1] = margin_rows(padded[:1], m, context)
    base[top + n + 1: top + n + 1 + m] = margin_rows(padded[-1:], m, context)
    return padded


def _room(arr: np.ndarray, rows: int) -> "tuple[np.ndarray, int] | None":
    """(base, index of arr's first row in it) when ``arr`` is a row slice of a C-contiguous 2-D
    base with at least ``rows`` rows of room before and after it; else None."""
    base = arr.base
    if not (isinstance(base, np.ndarray) and base.ndim == 2 and base.flags.c_contiguous and arr.flags.c_contiguous
            and base.flags.writeable and base.dtype == arr.dtype and base.shape[1] == arr.shape[1]):
        return None
    row = arr.shape[1] * arr.itemsize
    offset = arr.__array_interface__["data"][0] - base.__array_interface__["data"][0]
    if row == 0 or offset % row:
        return None
    above = offset // row
    if above < rows or base.shape[0] - above - arr.shape[0] < rows:
        return None
    return base, above


def _margin_buffer(arr: np.ndarray, radius: int, context: str) -> "np.ndarray | None":
    """The buffer around ``arr`` if its base already holds ``radius`` margin rows of ``context``."""
    room = _room(arr, radius)
    if room is None:
        return None
    base, above = room
    buf = base[above - radius: above + arr.shape[0] + radius]
    if not (np.array_equal(buf[:radius], margin_rows(arr[:1], radius, context))
            and np.array_equal(buf[-radius:], margin_rows(arr[-1:], radius, context))):
        return None
    return buf


def context_windows(padded: np.ndarray, *, context: str = "zeros", radius: int = DEFAULT_RADIUS) -> np.ndarray:
    """Every frame's ``2·radius``-row context window, as a read-only zero-copy view.

    Frame ``i`` sees rows ``[i - radius, i + radius)`` of ``padded``; rows outside are zeros
    (``context="zeros"``, upstream) or the nearest edge row (``context="edge"``). Only
    ``padded`` plus ``2·radius`` rows are allocated, whatever N is — none when ``padded`` came
    from :func:`pad_context` with ``margin >= radius`` and the same ``context``.

    Parameters
    ----------
    padded : ndarray, shape (M, D)
        :func:`pad_context` output (ave, M = N + 2), or hubert/wenet feature rows.
    radius : int
        8 (SyncTalk_2D) or 4 (Ultralight since mid-2025); any positive integer is accepted.

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
    radius = _check_radius(radius)
    buf = _margin_buffer(arr, radius, context)
    if buf is None:
        buf = with_margin(np.ascontiguousarray(arr), radius, context).base
    return window_view(buf, arr.shape[0], radius)


def window_view(buffer: np.ndarray, m: int, radius: int = DEFAULT_RADIUS) -> np.ndarray:
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


def context_window(padded: np.ndarray, index: int, *, context: str = "zeros", radius: int = DEFAULT_RADIUS) -> np.ndarray:
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
    radius = _check_radius(radius)
    m = arr.shape[0]
    if isinstance(index, bool) or not isinstance(index, (int, np.integer)) or not (0 <= index < m):
        raise ShapeError(f"frame index {index!r} is out of range for {m} frames (0..{m - 1})")
    rows = np.arange(index - radius, index + radius)
    if context == "edge":
        return arr[np.clip(rows, 0, m - 1)].copy()
    inside = (rows >= 0) & (rows < m)
    out = np.zeros((2 * radius, arr.shape[1]), dtype=arr.dtype)
    out[inside] = arr[rows[inside]]
    return out


def reshape_for_mode(window: np.ndarray, mode: str) -> np.ndarray:
    """Row-major reshape of context window(s) to the U-Net's per-mode audio tensor.

    The einops pattern :data:`FRAME_PATTERN` ``"... t (s h w) -> ... (t s) h w"`` with
    (s, h, w) = ave (2, 16, 16), hubert (2, 32, 32), wenet (16, 16, 32): t = 2·radius rows of
    512 / 2×1024 / 16×512 values. r = 8 → ave (32, 16, 16), hubert (32, 32, 32), wenet
    (256, 16, 32); r = 4 → (16, 16, 16), (16, 32, 32), (128, 16, 32). A view whenever the
    input's windows are contiguous (as :func:`context_windows` gives).

    Parameters
    ----------
    window : ndarray, shape (2r, D) or (M, 2r, D) (any leading shape + one window)
    mode : {"ave", "hubert", "wenet"}

    Returns
    -------
    ndarray, shape ``mode_shape(mode, r)`` or (M, *mode_shape(mode, r))

    Raises
    ------
    ShapeError
        If one window's size is not the mode's for radius 8 or 4.
    """
    s, h, w = FRAME_SPLIT[check_mode(mode)]
    arr = np.asarray(window)
    if arr.ndim < 2:
        raise ShapeError(f"window must be at least 2-D (2·radius, D), got shape {arr.shape}")
    size = int(np.prod(arr.shape[-2:]))
    sizes = {r: int(np.prod(mode_shape(mode, r))) for r in RADII}
    if size not in sizes.values():
        expected = " or ".join(f"{n} {mode_shape(mode, r)} (radius {r})" for r, n in sizes.items())
        raise ShapeError(f"{'an' if mode[:1] in 'aeiou' else 'a'} {mode} frame needs {expected} values, but the window {arr.shape[-2:]} has {size}")
    if arr.shape[-1] != s * h * w:  # rows of another width: regroup row-major, as upstream's reshape
        arr = arr.reshape(*arr.shape[:-2], -1, s * h * w)
    return rearrange(arr, FRAME_PATTERN, s=s, h=h, w=w)


def frames_for_mode(padded: np.ndarray, mode: str, *, context: str = "zeros", radius: int = DEFAULT_RADIUS) -> np.ndarray:
    """All frames of ``padded`` for ``mode``: context windows reshaped, a read-only view.

    For hubert pass (T, 2, 1024) features (``aud_hu.npy``), for wenet (K, 16, 512)
    (``aud_wenet.npy``); trailing dims are flattened to one row each.

    Parameters
    ----------
    padded : ndarray, shape (M, D) or (M, a, b)
    radius : 8 or 4

    Returns
    -------
    ndarray view, shape (M, *mode_shape(mode, radius))

    Raises
    ------
    ShapeError
        Rows that are not the mode's (512 ave, 2×1024 hubert, 16×512 wenet values), e.g. raw
        (T, 1024) HuBERT rows before pairing.
    ConfigError
        A radius other than 8 or 4, an unknown mode.
    """
    radius = check_radius(radius)
    arr = np.asarray(padded)
    shape = arr.shape
    if arr.ndim > 2:
        arr = rearrange(arr, "m ... -> m (...)")
    _check_features(arr, name="padded features" if check_mode(mode) == "ave" else f"{mode} features")  # for the caller
    width = int(np.prod(FRAME_SPLIT[mode]))
    if arr.shape[1] != width:  # else a row of another width could pass for the other radius' window
        raise ShapeError(f"{mode} frames are made of {_ROWS[mode]}, {width} values per row; got shape {shape} "
                         f"({arr.shape[1]} per row)")
    return reshape_for_mode(context_windows(arr, context=context, radius=radius), mode)


#: What each mode's frames are made of (one row per frame, before the context).
_ROWS = {"ave": "(N + 2, 512) padded encoder rows", "hubert": "(T, 2, 1024) HuBERT pairs (aud_hu.npy)",
         "wenet": "(K, 16, 512) wenet encoder outputs (aud_wenet.npy)"}
