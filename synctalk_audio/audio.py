"""Audio loading with ``librosa.load(path, sr=16000)`` semantics, without librosa.

Decode with soundfile as float32, mix channels by their plain mean, resample with soxr
("soxr_hq") and fix the length to ``ceil(n * sr / rate)`` — exactly what librosa 0.10.1 does.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from ._io import check_input_file
from .config import check_number
from .errors import AudioError, ConfigError

__all__ = ["load_audio", "load_channel", "read_audio", "resample", "to_mono", "check_waveform",
           "MAX_AUDIO_SECONDS", "MAX_SECONDS_ENV", "SAMPLE_RATE_RANGE", "max_audio_seconds", "check_input_file",
           "check_number", "check_rate"]

_FLOAT32_MAX = float(np.finfo(np.float32).max)
#: ``x·x`` of a 1-D float32/float64 array at most this (float32's largest value, squared) proves
#: every sample finite and within float32 range: :func:`check_waveform`'s one-call verdict.
_DOT_LIMIT = _FLOAT32_MAX ** 2

#: Sample rates (Hz, inclusive) a file may declare. Outside this range the header is taken as
#: broken or hostile: a 40 KB WAV declaring 1 Hz would resample to 5.5 h at 16 kHz.
SAMPLE_RATE_RANGE = (1000, 768000)
#: Longest audio file (seconds, from its header) that is decoded: 3 hours. Every stage holds
#: the whole clip (decoded samples, mel, features), so peak memory grows with the duration —
#: about 0.5 GB per hour of 16 kHz audio for the decode and mel (see docs/troubleshooting.md);
#: the ceiling keeps a small compressed file from claiming gigabytes. Raise it per call with
#: ``max_seconds=`` or per process with the environment variable :data:`MAX_SECONDS_ENV`.
MAX_AUDIO_SECONDS = 3 * 3600.0
#: Environment variable overriding :data:`MAX_AUDIO_SECONDS` (seconds; ``inf`` for no ceiling).
MAX_SECONDS_ENV = "SYNCTALK_AUDIO_MAX_SECONDS"
# Frames decoded per block: the (block, channels) buffer is mixed to mono at once, so only one
# mono copy of the clip is ever held, whatever the channel count.
_BLOCK_FRAMES = 1 << 16
# The sample dtypes soxr resamples.
_SOXR_DTYPES = ("float32", "float64", "int16", "int32")
# The integer PCM dtypes a decoder produces and how soundfile scales them to float.
_PCM_FIX = {
    "int8": "wav.astype(np.float32) / 128",
    "uint8": "(wav.astype(np.float32) - 128) / 128",
    "int16": "wav.astype(np.float32) / 32768",
    "int32": "wav.astype(np.float32) / 2**31",
}


def check_rate(name: str, value: Any) -> int:
    """A sample rate in Hz as an int: an integer within :data:`SAMPLE_RATE_RANGE`, else ConfigError."""
    return check_number(name, value, lo=SAMPLE_RATE_RANGE[0], hi=SAMPLE_RATE_RANGE[1], integer=True)


def max_audio_seconds(max_seconds: "float | None" = None) -> float:
    """The duration ceiling in force: ``max_seconds``, else ``$SYNCTALK_AUDIO_MAX_SECONDS``, else 3 h.

    Raises
    ------
    ConfigError
        A ceiling that is not a positive number (``inf`` is allowed: no ceiling).
    """
    source = "max_seconds"
    if max_seconds is None:
        text = os.environ.get(MAX_SECONDS_ENV, "").strip()
        if not text:
            return MAX_AUDIO_SECONDS
        source = f"environment variable {MAX_SECONDS_ENV}"
        try:
            max_seconds = float(text)
        except ValueError:
            raise ConfigError(f"{source} must be a positive number of seconds (or inf), got {text!r}") from None
    if isinstance(max_seconds, bool) or not isinstance(max_seconds, (int, float, np.integer, np.floating)) \
            or not max_seconds > 0:
        raise ConfigError(f"{source} must be a positive number of seconds (or inf), got {max_seconds!r}")
    return float(max_seconds)


def refuse_masked(wav: object, *, name: str = "audio") -> None:
    """AudioError for a numpy masked array: ``np.asarray`` would drop its mask and use the
    samples under it as they are."""
    if isinstance(wav, np.ma.MaskedArray):
        raise AudioError(f"{name} is a masked array; its mask would be ignored: fill the masked samples first "
                         f"(e.g. samples.filled(0.0))")


#: What a 2-D array should become in the ave recipe (librosa mixes channels) and in the hubert and
#: wenet recipes (their scripts take channel 0).
MIX_HINT = "mix stereo with to_mono(samples) first"
CHANNEL0_HINT = "take channel 0 first, samples[:, 0], as upstream's script does"


def check_waveform(wav: np.ndarray, *, name: str = "audio", integers: bool = False,
                   mono_hint: str = MIX_HINT) -> np.ndarray:
    """Validate a mono waveform and return it as a 1-D array (no copy).

    Samples are floats on soundfile's scale (about [-1, 1]). Integer PCM (int16, int32, uint8…)
    is refused with the conversion that a decoded file gets (int16 / 32768, …): taken as it
    is, int16 saturates the mel at +4 and changes every feature. :class:`StreamingPipeline`
    and :class:`StreamPool` refuse integer chunks the same way.

    Parameters
    ----------
    wav : array_like, shape (n,)
        Real samples.
    name : str
        What the error messages call the array.
    integers : bool
        Accept integer samples as they are: only for stages whose result does not depend on
        the scale (Kaldi fbank, HuBERT's normalisation).
    mono_hint : str
        What the error for a 2-D array suggests (:data:`CHANNEL0_HINT` for hubert and wenet).

    Raises
    ------
    AudioError
        If ``wav`` is not 1-D, not real, integer PCM (unless ``integers``), holds NaN/Inf, or
        values beyond float32 range (such values would overflow the float64 STFT into Inf).
    """
    if type(wav) is not np.ndarray:
        refuse_masked(wav, name=name)
    arr = np.asarray(wav)
    if arr.ndim == 1 and arr.dtype.char in "fd":
        # the common case in one numpy call and no temporary (a 20 ms stream push notices the
        # cost of min/max): x·x <= float32 max² holds only if every sample is finite and within
        # float32 range; a NaN, Inf or huge sample (or an overflowing sum) takes the checks below
        with np.errstate(over="ignore", invalid="ignore"):
            if float(arr.dot(arr)) <= _DOT_LIMIT:  # float(): a float32 inf against a Python float
                return arr
    if arr.dtype.kind not in "fiu":
        raise AudioError(f"{name} must hold real samples, got dtype {arr.dtype}")
    if arr.dtype.kind in "iu" and not integers:
        fix = _PCM_FIX.get(arr.dtype.name)
        raise AudioError(
            f"{name} holds integer samples (dtype {arr.dtype}); expected float samples in about [-1, 1] "
            + (f"as a decoded file gives them: convert PCM with {fix}" if fix else
               "as a decoded file gives them: divide by the format's full scale as float32")
        )
    if arr.ndim != 1:
        raise AudioError(
            f"{name} must be a 1-D mono waveform, got shape {arr.shape}"
            + (f" ({mono_hint})" if arr.ndim == 2 else "")
        )
    if arr.dtype.kind == "f" and arr.size:
        # min/max first: no temporary of the clip's size unless something is wrong.
        lo, hi = float(np.min(arr)), float(np.max(arr))
        if not (np.isfinite(lo) and np.isfinite(hi)):
            bad = ~np.isfinite(arr)
            first = int(np.argmax(bad))
            raise AudioError(
                f"{name} has {int(bad.sum())} non-finite samples (first at index {first}: {arr[first]!r})"
            )
        peak = max(abs(lo), abs(hi))
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
        float32 or float64 samples (int16/int32 PCM is resampled as it is).
    orig_sr, target_sr : int
        Rates in Hz, within :data:`SAMPLE_RATE_RANGE` (1–768 kHz).

    Returns
    -------
    ndarray, shape (ceil(n * target_sr / orig_sr),), the dtype of ``wav``.

    Raises
    ------
    ConfigError
        A rate that is not an integer in 1000–768000 Hz.
    AudioError
        Samples that are not 1-D, hold NaN/Inf, or have a dtype soxr does not take.

    Examples
    --------
    >>> resample(np.zeros(441, np.float32), 44100, 16000).shape
    (160,)
    """
    import soxr

    orig_sr, target_sr = check_rate("orig_sr", orig_sr), check_rate("target_sr", target_sr)
    wav = check_waveform(wav, name="wav", integers=True)
    if wav.dtype.name not in _SOXR_DTYPES:
        raise AudioError(f"resample takes {', '.join(_SOXR_DTYPES)} samples, got dtype {wav.dtype}; "
                         "convert with wav.astype(np.float32)")
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


def truncated_wav(path: "str | os.PathLike", size: int) -> "tuple[int, int] | None":
    """``(declared, present)`` bytes of a RIFF/WAVE file's ``data`` chunk when the file ends
    before the length its header declares (a cut-off copy or download); None otherwise, and for
    other formats or a streaming writer's "unknown length" (0 or 0xFFFFFFFF)."""
    with open(path, "rb") as fh:
        head = fh.read(1 << 16)
    if head[:4] != b"RIFF" or head[8:12] != b"WAVE":
        return None
    pos = 12
    while pos + 8 <= len(head):
        chunk, n = head[pos:pos + 4], int.from_bytes(head[pos + 4:pos + 8], "little")
        if chunk == b"data":
            present = size - (pos + 8)
            return (n, present) if 0 < n < 0xFFFFFFFF and n > present else None
        pos += 8 + n + (n & 1)
    return None


def _open(path: "str | os.PathLike", max_seconds: "float | None") -> tuple[Path, Any]:
    """Open an audio file and check its header (rate, duration) before anything is decoded."""
    import soundfile as sf

    limit = max_audio_seconds(max_seconds)
    p, size = check_input_file(path, what="audio file", error=AudioError, expected="an audio file")
    cut = truncated_wav(p, size)
    if cut is not None:
        warnings.warn(f"audio file {p} is truncated: its header declares {cut[0]} bytes of samples, the file "
                      f"holds {max(cut[1], 0)}; using the samples that are there", stacklevel=4)
    try:
        f = sf.SoundFile(str(p))
    except Exception as exc:  # soundfile raises LibsndfileError, RuntimeError, TypeError...
        reason = " ".join(str(exc).split()) or type(exc).__name__
        raise AudioError(f"cannot decode audio file {p}: {reason}") from None
    rate, frames = int(f.samplerate), int(f.frames)
    lo, hi = SAMPLE_RATE_RANGE
    if not lo <= rate <= hi:
        f.close()
        raise AudioError(f"audio file {p} declares a sample rate of {rate} Hz; expected {lo}-{hi} Hz "
                         "(the header is broken: re-export the audio)")
    if frames / rate > limit:
        f.close()
        raise AudioError(f"audio file {p} lasts {frames / rate:.6g} s ({frames} frames at {rate} Hz) by its header, "
                         f"over the {limit:g} s ceiling; split it, or raise the ceiling with max_seconds= or the "
                         f"environment variable {MAX_SECONDS_ENV} (seconds, 'inf' for none)")
    return p, f


def read_audio(path: str | os.PathLike, *, dtype: str = "float32",
               max_seconds: "float | None" = None) -> tuple[np.ndarray, int]:
    """Decode an audio file with soundfile: ``(samples (n, channels), rate)``, checked.

    The header is checked before decoding: a rate in :data:`SAMPLE_RATE_RANGE` and a duration
    within the ceiling (:func:`max_audio_seconds`). :func:`load_audio` and
    :func:`load_channel` decode block by block instead, holding one mono copy only.

    Parameters
    ----------
    path : str or PathLike
    dtype : "float32" or "float64"
    max_seconds : float, optional
        Longest duration accepted (default ``$SYNCTALK_AUDIO_MAX_SECONDS`` or 3 h).

    Returns
    -------
    samples : ndarray, ``dtype``, shape (n, channels), n >= 1
    rate : int

    Raises
    ------
    AudioError
        Missing, a directory, empty, undecodable, without samples, a sample rate outside
        1–768 kHz, or longer than the ceiling.
    """
    p, f = _open(path, max_seconds)
    try:
        with f:
            data = f.read(dtype=dtype, always_2d=True)
    except Exception as exc:
        reason = " ".join(str(exc).split()) or type(exc).__name__
        raise AudioError(f"cannot decode audio file {p}: {reason}") from None
    if data.shape[0] == 0:
        raise AudioError(f"audio file has no samples: {p}")
    return data, int(f.samplerate)


def _check_sr(sr: int) -> int:
    return check_rate("sr", sr)


def _check_block(mono: np.ndarray, offset: int, p: Path) -> None:
    """Non-finite or beyond-float32 samples in one decoded mono block → AudioError."""
    lo, hi = float(np.min(mono)), float(np.max(mono))
    if np.isfinite(lo) and np.isfinite(hi):
        peak = max(abs(lo), abs(hi))
        if peak > _FLOAT32_MAX:
            index = offset + int(np.argmax(np.abs(mono)))
            raise AudioError(f"audio file {p} has sample magnitude {peak:.3g} (at index {index}), beyond float32 "
                             "range (|x| <= 3.4e38); audio samples are expected in about [-1, 1]")
        return
    first = int(np.argmax(~np.isfinite(mono)))
    index = offset + first
    if mono.dtype == np.float32:  # finite in the file but too large for float32 (a DOUBLE WAV)?
        import soundfile as sf

        try:
            with sf.SoundFile(str(p)) as g:
                g.seek(index)
                exact = g.read(1, dtype="float64", always_2d=True)
        except Exception:  # the probe is only for the message
            exact = np.array([[np.nan]])
        if exact.size and np.isfinite(exact).all():
            peak = float(np.max(np.abs(exact)))
            if peak <= _FLOAT32_MAX:  # each channel fits float32, their float32 mean overflows
                raise AudioError(f"audio file {p} has samples near the float32 limit ({peak:.3g} at index {index}) "
                                 "whose channel mix overflows; audio samples are expected in about [-1, 1]")
            raise AudioError(f"audio file {p} has sample magnitude {peak:.3g} (at index {index}), beyond float32 "
                             "range (|x| <= 3.4e38); audio samples are expected in about [-1, 1]")
    raise AudioError(f"audio file {p} has non-finite samples (first at index {index}: {mono[first]!r})")


def _decode(path: "str | os.PathLike", sr: int, *, dtype: str, channel: "int | None",
            max_seconds: "float | None") -> np.ndarray:
    """Decode block by block to one mono signal (channel mean, or one channel) and resample it
    with a soxr_hq stream as it goes (bit-identical to one :func:`resample` call), so peak
    memory is the output plus one block, whatever the file's rate and channel count."""
    import soxr

    p, f = _open(path, max_seconds)
    with f:
        rate, n_channels = int(f.samplerate), int(f.channels)
        if channel is not None and (isinstance(channel, bool) or not isinstance(channel, (int, np.integer))
                                    or not 0 <= channel < n_channels):
            raise AudioError(f"audio file {path} has {n_channels} channel(s); channel {channel!r} does not exist")
        ratio = float(sr) / rate
        try:
            out = np.empty(int(np.ceil(int(f.frames) * ratio)), dtype=dtype)
        except (MemoryError, ValueError, OverflowError):
            raise AudioError(f"audio file {p} declares {int(f.frames)} frames at {rate} Hz: too many to hold "
                             "in memory") from None
        stream = None if rate == sr else soxr.ResampleStream(rate, sr, 1, dtype=dtype, quality="soxr_hq")
        n_in = n_out = 0
        while True:
            try:  # read() returns fewer frames at the real end (an mp3 header may over-count)
                block = f.read(_BLOCK_FRAMES, dtype=dtype, always_2d=True)
            except Exception as exc:
                reason = " ".join(str(exc).split()) or type(exc).__name__
                raise AudioError(f"cannot decode audio file {p}: {reason}") from None
            if block.shape[0] == 0:
                block = None
                mono = np.empty(0, dtype)
            elif channel is not None:
                mono = np.ascontiguousarray(block[:, channel])
            elif n_channels == 1:
                mono = np.ascontiguousarray(block[:, 0])
            else:  # librosa's mix: (c, n) averaged over axis 0, the same per sample in any block
                with np.errstate(over="ignore"):  # an overflow is reported by _check_block
                    mono = np.ascontiguousarray(np.mean(block.T, axis=0))
            if mono.size:
                _check_block(mono, n_in, p)
            n_in += mono.shape[0]
            y = mono if stream is None else stream.resample_chunk(mono, last=block is None)
            if n_out + y.shape[0] > out.shape[0]:  # the header under-counted (e.g. mp3): grow
                grown = np.empty(max(2 * out.shape[0], n_out + y.shape[0]), dtype=dtype)
                grown[:n_out] = out[:n_out]
                out = grown
            out[n_out:n_out + y.shape[0]] = y
            n_out += y.shape[0]
            if block is None:
                break
    if n_in == 0:
        raise AudioError(f"audio file has no samples: {p}")
    n_fix = n_in if stream is None else int(np.ceil(n_in * ratio))  # resample()'s length fix
    if n_fix > out.shape[0]:
        grown = np.zeros(n_fix, dtype=dtype)
        grown[:n_out] = out[:n_out]
        return grown
    if n_out < n_fix:
        out[n_out:n_fix] = 0
    return out if out.shape[0] == n_fix else out[:n_fix].copy()


def load_audio(path: str | os.PathLike, sr: int = 16000, *, max_seconds: "float | None" = None) -> np.ndarray:
    """Read an audio file as float32 mono at ``sr`` Hz, like ``librosa.load(path, sr=sr)``.

    wav, flac, ogg and mp3 (libsndfile >= 1.1) at any rate in 1–768 kHz and any channel count.
    The file is decoded, mixed and resampled block by block (bit-identical to decoding it whole),
    so peak memory is the float32 result (230 MB per hour at 16 kHz) plus a block.

    Parameters
    ----------
    path : str or PathLike
        Audio file.
    sr : int
        Target rate in Hz (16000 for SyncTalk_2D), within :data:`SAMPLE_RATE_RANGE` (1–768 kHz).
    max_seconds : float, optional
        Longest file accepted, from its header before decoding (default
        ``$SYNCTALK_AUDIO_MAX_SECONDS`` or :data:`MAX_AUDIO_SECONDS`, 3 h; ``math.inf``: none).

    Returns
    -------
    ndarray, float32, shape (n,)
        ``n = ceil(n_file * sr / file_rate)``.

    Raises
    ------
    ConfigError
        ``sr`` not an integer in 1000–768000 Hz.
    AudioError
        Missing, a directory, empty, undecodable, without samples, a declared rate outside
        1–768 kHz, longer than the ceiling, or with NaN/Inf (or beyond-float32) samples.

    Examples
    --------
    >>> wav = load_audio("speech.wav")            # doctest: +SKIP
    >>> wav.dtype, wav.ndim                       # doctest: +SKIP
    (dtype('float32'), 1)
    """
    sr = _check_sr(sr)
    return _decode(path, sr, dtype="float32", channel=None, max_seconds=max_seconds)


def load_channel(path: str | os.PathLike, sr: int = 16000, *, channel: int = 0,
                 max_seconds: "float | None" = None) -> np.ndarray:
    """Read one channel of an audio file as float64 at ``sr`` Hz (the hubert/wenet scripts' load).

    Upstream's ``data_utils`` scripts read with ``soundfile.read`` (float64) and keep channel 0;
    a rate other than ``sr`` is resampled like ``librosa.resample`` (soxr_hq, length fixed) —
    *after* picking the channel, which avoids upstream's stereo resample crash. Decoded block by
    block like :func:`load_audio`.

    Parameters
    ----------
    path : str or PathLike
    sr : int
        Target rate (16000), within :data:`SAMPLE_RATE_RANGE` (1–768 kHz).
    channel : int
        Channel index (0, as upstream).
    max_seconds : float, optional
        Longest file accepted (see :func:`load_audio`).

    Returns
    -------
    ndarray, float64, shape (n,), ``n = ceil(n_file * sr / file_rate)``

    Raises
    ------
    AudioError
        As :func:`load_audio`, or a channel the file does not have.
    """
    sr = _check_sr(sr)
    return _decode(path, sr, dtype="float64", channel=channel, max_seconds=max_seconds)
