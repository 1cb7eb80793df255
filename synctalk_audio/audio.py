"""Audio loading with ``librosa.load(path, sr=16000)`` semantics, without librosa.

Decode with soundfile as float32, mix channels by their plain mean, resample with soxr
("soxr_hq") and fix the length to ``ceil(n * sr / rate)`` — exactly what librosa 0.10.1 does.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .errors import AudioError, ConfigError

__all__ = ["load_audio", "load_channel", "read_audio", "resample", "to_mono", "check_waveform"]

_FLOAT32_MAX = float(np.finfo(np.float32).max)


def check_waveform(wav: np.ndarray, *, name: str = "audio") -> np.ndarray:
    """Validate a mono waveform and return it as a 1-D float array (no copy if already fine).

    Parameters
    ----------
    wav : array_like, shape (n,)
        Real samples.

    Raises
    ------
    AudioError
        If ``wav`` is not 1-D, not real, holds NaN/Inf, or values beyond float32 range
        (such values would overflow the float64 STFT into Inf).
    """
    arr = np.asarray(wav)
    if arr.dtype.kind not in "fiu":
        raise AudioError(f"{name} must hold real samples, got dtype {arr.dtype}")
    if arr.ndim != 1:
        raise AudioError(
            f"{name} must be a 1-D mono waveform, got shape {arr.shape}"
            + (" (mix stereo with to_mono(samples) first)" if arr.ndim == 2 else "")
        )
    if arr.dtype.kind == "f":
        bad = ~np.isfinite(arr)
        if bad.any():
            first = int(np.argmax(bad))
            raise AudioError(
                f"{name} has {int(bad.sum())} non-finite samples (first at index {first}: {arr[first]!r})"
            )
        if arr.size and arr.dtype.itemsize > 4:
            peak = float(np.max(np.abs(arr)))
            if peak > _FLOAT32_MAX:
                raise AudioError(
                    f"{name} has sample magnitude {peak:.3g}, beyond float32 range (|x| <= 3.4e38); "
                    "audio samples are expected in about [-1, 1]"
                )
    return arr


def to_mono(samples: np.ndarray) -> np.ndarray:
    """Mix a (n, channels) float32 array to mono by the plain channel mean, as librosa does.

    Parameters
    ----------
    samples : ndarray, shape (n, channels) or (n,)

    Returns
    -------
    ndarray, shape (n,), same dtype.
    """
    arr = np.asarray(samples)
    if arr.ndim == 1:
        return arr
    if arr.ndim != 2:
        raise AudioError(f"expected (n, channels) samples, got shape {arr.shape}")
    # librosa reads (n, c), transposes to (c, n) and averages over axis 0, channel by channel.
    return np.mean(arr.T, axis=0)


def resample(wav: np.ndarray, orig_sr: int, target_sr: int) -> np.ndarray:
    """Resample like ``librosa.resample(res_type="soxr_hq")``: soxr HQ, then fix the length.

    Parameters
    ----------
    wav : ndarray, shape (n,)
    orig_sr, target_sr : int
        Rates in Hz.

    Returns
    -------
    ndarray, shape (ceil(n * target_sr / orig_sr),), the dtype of ``wav``.

    Examples
    --------
    >>> resample(np.zeros(441, np.float32), 44100, 16000).shape
    (160,)
    """
    import soxr

    if orig_sr == target_sr:
        return wav
    ratio = float(target_sr) / orig_sr
    n_out = int(np.ceil(wav.shape[-1] * ratio))
    out = soxr.resample(wav, orig_sr, target_sr, quality="soxr_hq")
    if out.shape[-1] > n_out:
        out = out[:n_out]
    elif out.shape[-1] < n_out:
        out = np.pad(out, (0, n_out - out.shape[-1]))
    return np.asarray(out, dtype=wav.dtype)


def read_audio(path: str | os.PathLike, *, dtype: str = "float32") -> tuple[np.ndarray, int]:
    """Decode an audio file with soundfile: ``(samples (n, channels), rate)``, checked.

    The one decoder behind :func:`load_audio` (ave: channel mean, float32) and
    :func:`load_channel` (hubert/wenet: channel 0, float64, like upstream's ``sf.read``).

    Parameters
    ----------
    path : str or PathLike
    dtype : "float32" or "float64"

    Returns
    -------
    samples : ndarray, ``dtype``, shape (n, channels), n >= 1
    rate : int

    Raises
    ------
    AudioError
        Missing, a directory, empty, undecodable or without samples.
    """
    import soundfile as sf

    p = Path(path)
    if not p.exists():
        raise AudioError(f"audio file not found: {p}")
    if p.is_dir():
        raise AudioError(f"audio path is a directory, expected a file: {p}")
    try:
        size = p.stat().st_size
    except OSError as exc:
        raise AudioError(f"cannot read audio file {p}: {exc.strerror or exc}") from None
    if size == 0:
        raise AudioError(f"audio file is empty (0 bytes): {p}")
    try:
        data, rate = sf.read(str(p), dtype=dtype, always_2d=True)
    except Exception as exc:  # soundfile raises LibsndfileError, RuntimeError, TypeError...
        reason = " ".join(str(exc).split()) or type(exc).__name__
        raise AudioError(f"cannot decode audio file {p}: {reason}") from None
    if data.shape[0] == 0:
        raise AudioError(f"audio file has no samples: {p}")
    return data, int(rate)


def _check_sr(sr: int) -> int:
    if isinstance(sr, bool) or not isinstance(sr, (int, np.integer)) or sr <= 0:
        raise ConfigError(f"sr must be a positive integer sample rate, got {sr!r}")
    return int(sr)


def load_audio(path: str | os.PathLike, sr: int = 16000) -> np.ndarray:
    """Read an audio file as float32 mono at ``sr`` Hz, like ``librosa.load(path, sr=sr)``.

    wav, flac, ogg and mp3 (libsndfile >= 1.1) at any rate and channel count.

    Parameters
    ----------
    path : str or PathLike
        Audio file.
    sr : int
        Target rate in Hz (16000 for SyncTalk_2D).

    Returns
    -------
    ndarray, float32, shape (n,)
        ``n = ceil(n_file * sr / file_rate)``.

    Raises
    ------
    AudioError
        Missing, a directory, empty, undecodable, without samples, or with NaN/Inf samples.

    Examples
    --------
    >>> wav = load_audio("speech.wav")            # doctest: +SKIP
    >>> wav.dtype, wav.ndim                       # doctest: +SKIP
    (dtype('float32'), 1)
    """
    sr = _check_sr(sr)
    data, rate = read_audio(path, dtype="float32")
    wav = to_mono(data)
    if not np.isfinite(wav).all():
        check_waveform(wav, name=f"audio file {path}")
    wav = resample(np.ascontiguousarray(wav), rate, sr)
    return np.ascontiguousarray(wav, dtype=np.float32)


def load_channel(path: str | os.PathLike, sr: int = 16000, *, channel: int = 0) -> np.ndarray:
    """Read one channel of an audio file as float64 at ``sr`` Hz (the hubert/wenet scripts' load).

    Upstream's ``data_utils`` scripts read with ``soundfile.read`` (float64) and keep channel 0;
    a rate other than ``sr`` is resampled like ``librosa.resample`` (soxr_hq, length fixed) —
    *after* picking the channel, which avoids upstream's stereo resample crash.

    Parameters
    ----------
    path : str or PathLike
    sr : int
        Target rate (16000).
    channel : int
        Channel index (0, as upstream).

    Returns
    -------
    ndarray, float64, shape (n,), ``n = ceil(n_file * sr / file_rate)``

    Raises
    ------
    AudioError
        As :func:`read_audio`, a channel the file does not have, or NaN/Inf samples.
    """
    sr = _check_sr(sr)
    data, rate = read_audio(path, dtype="float64")
    if isinstance(channel, bool) or not isinstance(channel, (int, np.integer)) or not 0 <= channel < data.shape[1]:
        raise AudioError(f"audio file {path} has {data.shape[1]} channel(s); channel {channel!r} does not exist")
    wav = np.ascontiguousarray(data[:, channel])
    if not np.isfinite(wav).all():
        check_waveform(wav, name=f"audio file {path}")
    return resample(wav, rate, sr)
