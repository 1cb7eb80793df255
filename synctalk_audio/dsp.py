"""The mel front end as small pure stages, and their composition :func:`melspectrogram`.

Every stage reproduces SyncTalk_2D's ``audio.py`` on librosa 0.10.1 to floating-point
round-off: float64 arithmetic throughout, a float32 mel basis like librosa's default.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from .audio import check_rate, check_waveform
from .batches import check_positive_int
from .config import SYNCTALK_2D, MelConfig, _positive, check_flag, check_mel_config, check_number
from .errors import ConfigError, ShapeError

__all__ = [
    "preemphasis",
    "center_pad",
    "stft",
    "stft_frames",
    "hann_window",
    "mel_basis",
    "hz_to_mel",
    "mel_to_hz",
    "linear_to_mel",
    "amp_to_db",
    "normalize",
    "melspectrogram",
    "n_mel_frames",
    "MelCarry",
    "mel_init",
    "mel_step",
    "mel_frames",
    "mel_columns",
    "MAX_N_FFT",
    "MAX_N_MELS",
]

#: Largest ``n_fft`` accepted (4 s at 16 kHz): beyond it a frame or a mel basis takes gigabytes.
MAX_N_FFT = 1 << 16
#: Most mel bands :func:`mel_basis` builds (and never more than the ``1 + n_fft // 2`` bins).
MAX_N_MELS = 1024

def _check_finite(arr: np.ndarray, name: str) -> np.ndarray:
    a = np.asarray(arr)
    if a.dtype.kind not in "fiu":
        raise ShapeError(f"{name} must be a real array, got dtype {a.dtype}")
    if a.dtype.kind == "f" and not np.isfinite(a).all():
        raise ShapeError(f"{name} contains NaN or Inf values")
    return a


#: Frames per block when :func:`melspectrogram` walks long audio (bounds peak memory).
_BLOCK_FRAMES = 4096


def _check_n_fft(n_fft: object) -> int:
    return check_number("n_fft", n_fft, lo=1, hi=MAX_N_FFT, integer=True)


def _check_n_mels(n_mels: object, n_fft: int) -> int:
    return check_number("n_mels", n_mels, lo=1, hi=min(MAX_N_MELS, 1 + n_fft // 2), integer=True,
                        note=f"at most the 1 + n_fft // 2 frequency bins of n_fft={n_fft}, and {MAX_N_MELS}")


def _check_config(config: object) -> MelConfig:
    """``config`` if it is a MelConfig whose n_fft and n_mels are within the bounds, else ConfigError."""
    check_mel_config(config)
    if config.n_fft > MAX_N_FFT or config.n_mels > min(MAX_N_MELS, config.n_freqs):
        _check_n_mels(config.n_mels, _check_n_fft(config.n_fft))
    return config


def preemphasis(wav: np.ndarray, k: float = 0.97) -> np.ndarray:
    """First-order pre-emphasis ``y[0] = x[0]``, ``y[n] = x[n] - k·x[n-1]``.

    Equal, bit for bit, to ``scipy.signal.lfilter([1, -k], [1], wav)``; the result is float64
    whatever the input dtype (upstream's float64 coefficients promote it).

    Parameters
    ----------
    wav : ndarray, shape (n,)
    k : float
        Coefficient in [0, 1) (a real number: a string or an array is a ConfigError).

    Returns
    -------
    ndarray, float64, shape (n,)

    Examples
    --------
    >>> preemphasis(np.array([1.0, 1.0, 1.0]))
    array([1.  , 0.03, 0.03])
    """
    x = check_waveform(wav)
    check_number("preemphasis coefficient k", k, lo=0.0, hi=1.0, hi_open=True)
    x64 = x.astype(np.float64, copy=False)
    return _preemphasize(x64, k, None, np.empty_like(x64))


def _preemphasize(x64: np.ndarray, k: float, last: "float | None", out: np.ndarray) -> np.ndarray:
    """:func:`preemphasis` of float64 (n,) samples into ``out`` (n,): ``out[i] = x[i] - k·x[i-1]``,
    ``out[0] = x[0] - k·last`` (``x[0]`` when ``last`` is None: the signal's first sample)."""
    if not x64.shape[0]:
        return out
    if k == 0.0:
        out[:] = x64
        return out
    np.multiply(x64[:-1], k, out=out[1:])
    np.subtract(x64[1:], out[1:], out=out[1:])
    out[0] = x64[0] - k * last if last is not None else x64[0]
    return out


def center_pad(y: np.ndarray, n_fft: int = 800, pad_mode: str = "constant") -> np.ndarray:
    """Pad ``n_fft // 2`` samples each side, as ``librosa.stft(center=True)`` does.

    Parameters
    ----------
    y : ndarray, shape (n,)
    n_fft : int
    pad_mode : {"constant", "reflect"}
        Zeros (librosa >= 0.10) or mirror (librosa < 0.10, Wav2Lip).

    Returns
    -------
    ndarray, shape (n + 2 * (n_fft // 2),)
    """
    pad = n_fft // 2
    if pad_mode == "constant":
        return np.pad(y, (pad, pad), mode="constant")
    if pad_mode == "reflect":
        if y.shape[0] < 2:
            raise ShapeError(f"reflect padding needs at least 2 samples, got {y.shape[0]}")
        return np.pad(y, (pad, pad), mode="reflect")
    raise ConfigError(f"pad_mode must be 'constant' or 'reflect', got {pad_mode!r}")


@lru_cache(maxsize=16)
def hann_window(n_fft: int = 800, win_length: int = 800) -> np.ndarray:
    """Periodic Hann window of ``win_length`` centred in ``n_fft`` samples (read-only float64).

    Returns
    -------
    ndarray, float64, shape (n_fft,)
    """
    # scipy.signal.get_window("hann", win_length, fftbins=True), operation for operation (its
    # general_cosine on win_length + 1 points, truncated): bit-identical, and it spares the CLI
    # the ~0.5 s import of scipy.signal at start-up.
    if win_length <= 1:
        win = np.ones(win_length, dtype=np.float64)
    else:
        fac = np.linspace(-np.pi, np.pi, win_length + 1, dtype=np.float64)
        win = np.zeros(win_length + 1, dtype=np.float64)
        for k, a in enumerate((0.5, 0.5)):
            win += a * np.cos(k * fac)
        win = win[:-1]
    if win_length < n_fft:
        left = (n_fft - win_length) // 2
        win = np.pad(win, (left, n_fft - win_length - left))
    win.setflags(write=False)
    return win


def n_mel_frames(n_samples: int, hop_length: int = 200) -> int:
    """Number of STFT/mel frames for ``n_samples`` with centring: ``1 + n_samples // hop``."""
    return 1 + int(n_samples) // int(hop_length)


def stft_frames(
    padded: np.ndarray,
    start: int,
    stop: int,
    *,
    n_fft: int = 800,
    hop_length: int = 200,
    win_length: int = 800,
) -> np.ndarray:
    """STFT columns ``start:stop`` of an already centre-padded signal.

    Parameters
    ----------
    padded : ndarray, shape (n + 2 * (n_fft // 2),)
    start, stop : int
        Frame range; frame t covers ``padded[t * hop : t * hop + n_fft]``.

    Returns
    -------
    ndarray, complex128, shape (1 + n_fft // 2, stop - start)
    """
    win = hann_window(n_fft, win_length)
    segment = padded[start * hop_length : (stop - 1) * hop_length + n_fft]
    frames = np.lib.stride_tricks.sliding_window_view(segment, n_fft)[::hop_length]
    return np.fft.rfft(frames * win, axis=-1).T


def stft(
    y: np.ndarray,
    *,
    n_fft: int = 800,
    hop_length: int = 200,
    win_length: int = 800,
    pad_mode: str = "constant",
) -> np.ndarray:
    """Short-time Fourier transform like ``librosa.stft`` (center=True, periodic Hann).

    Parameters
    ----------
    y : ndarray, shape (n,)
    n_fft : int
        In [1, :data:`MAX_N_FFT`] (65536).
    hop_length : int
        Positive.
    win_length : int
        In [1, n_fft].
    pad_mode : {"constant", "reflect"}

    Returns
    -------
    ndarray, complex128, shape (1 + n_fft // 2, 1 + n // hop_length)

    Raises
    ------
    ConfigError
        ``n_fft``, ``hop_length`` or ``win_length`` not an integer in its range, or an unknown
        ``pad_mode``.
    AudioError
        ``y`` not a 1-D real waveform with finite samples.

    Examples
    --------
    >>> stft(np.zeros(16000)).shape
    (401, 81)
    """
    n_fft = _check_n_fft(n_fft)
    hop_length = check_positive_int("hop_length", hop_length, allow_none=False)
    win_length = check_number("win_length", win_length, lo=1, hi=n_fft, integer=True, note="at most n_fft")
    x = check_waveform(y).astype(np.float64, copy=False)
    padded = center_pad(x, n_fft, pad_mode)
    return stft_frames(padded, 0, n_mel_frames(x.shape[0], hop_length), n_fft=n_fft,
                       hop_length=hop_length, win_length=win_length)


def hz_to_mel(frequencies: np.ndarray, *, htk: bool = False) -> np.ndarray:
    """Hz → mel, Slaney scale (linear below 1 kHz, logarithmic above) or HTK.

    Parameters
    ----------
    frequencies : array_like, any shape

    Returns
    -------
    ndarray of float64, same shape
    """
    f = np.asarray(frequencies, dtype=np.float64)
    if htk:
        return 2595.0 * np.log10(1.0 + f / 700.0)
    f_sp = 200.0 / 3
    mels = f / f_sp
    min_log_hz = 1000.0
    min_log_mel = min_log_hz / f_sp
    logstep = np.log(6.4) / 27.0
    log_t = f >= min_log_hz
    return np.where(log_t, min_log_mel + np.log(np.where(log_t, f, min_log_hz) / min_log_hz) / logstep, mels)


def mel_to_hz(mels: np.ndarray, *, htk: bool = False) -> np.ndarray:
    """Mel → Hz, the inverse of :func:`hz_to_mel`.

    Parameters
    ----------
    mels : array_like, any shape

    Returns
    -------
    ndarray of float64, same shape
    """
    m = np.asarray(mels, dtype=np.float64)
    if htk:
        return 700.0 * (10.0 ** (m / 2595.0) - 1.0)
    f_sp = 200.0 / 3
    freqs = f_sp * m
    min_log_hz = 1000.0
    min_log_mel = min_log_hz / f_sp
    logstep = np.log(6.4) / 27.0
    log_t = m >= min_log_mel
    return np.where(log_t, min_log_hz * np.exp(logstep * (m - min_log_mel)), freqs)


def mel_basis(
    *,
    sr: int = 16000,
    n_fft: int = 800,
    n_mels: int = 80,
    fmin: float = 55.0,
    fmax: float = 7600.0,
    htk: bool = False,
) -> np.ndarray:
    """Triangular mel filterbank with Slaney area normalisation, as ``librosa.filters.mel``.

    Built in float64 and returned as float32 (librosa's default dtype), read-only and cached.

    Parameters
    ----------
    sr : int
        Sample rate in Hz, in 1000–768000.
    n_fft : int
        In [1, :data:`MAX_N_FFT`].
    n_mels : int
        In [1, min(1 + n_fft // 2, :data:`MAX_N_MELS`)].
    fmin, fmax : float
        Band edges in Hz, ``0 <= fmin < fmax <= sr / 2`` (no ``None``: give ``sr / 2``).
    htk : bool
        HTK mel scale instead of Slaney's.

    Returns
    -------
    ndarray, float32, shape (n_mels, 1 + n_fft // 2)

    Raises
    ------
    ConfigError
        Any argument of the wrong type or out of its range.

    Examples
    --------
    >>> mel_basis().shape
    (80, 401)
    """
    sr = check_rate("sr", sr)
    n_fft = _check_n_fft(n_fft)
    n_mels = _check_n_mels(n_mels, n_fft)
    check_number("fmin", fmin)
    check_number("fmax", fmax)
    htk = check_flag("htk", htk)
    if not (0 <= fmin < fmax <= sr / 2):
        raise ConfigError(f"mel_basis needs 0 <= fmin < fmax <= sr/2, got fmin={fmin}, fmax={fmax}, sr={sr}")
    return _mel_basis(sr, n_fft, n_mels, fmin, fmax, htk)


@lru_cache(maxsize=16)
def _mel_basis(sr: int, n_fft: int, n_mels: int, fmin: float, fmax: float, htk: bool) -> np.ndarray:
    """:func:`mel_basis` of checked arguments, cached."""
    fft_freqs = np.fft.rfftfreq(n=n_fft, d=1.0 / sr)
    mel_pts = np.linspace(hz_to_mel(fmin, htk=htk), hz_to_mel(fmax, htk=htk), n_mels + 2)
    mel_f = mel_to_hz(mel_pts, htk=htk)
    fdiff = np.diff(mel_f)
    ramps = np.subtract.outer(mel_f, fft_freqs)
    lower = -ramps[:-2] / fdiff[:-1, None]
    upper = ramps[2:] / fdiff[1:, None]
    # librosa writes each row into a float32 array, then scales it in place (float64 math,
    # float32 store): two roundings that we keep for bit-exactness.
    weights = np.maximum(0.0, np.minimum(lower, upper)).astype(np.float32)
    enorm = 2.0 / (mel_f[2 : n_mels + 2] - mel_f[:n_mels])
    weights = (weights * enorm[:, None]).astype(np.float32)
    weights.setflags(write=False)
    return weights


def linear_to_mel(magnitude: np.ndarray, config: MelConfig = SYNCTALK_2D) -> np.ndarray:
    """Project an STFT magnitude onto the mel basis: ``mel_basis(config) @ magnitude``.

    Parameters
    ----------
    magnitude : ndarray, float64, shape (1 + n_fft // 2, T)

    Returns
    -------
    ndarray, float64, shape (n_mels, T)
    """
    return _linear_to_mel(magnitude, _check_config(config))


def _linear_to_mel(magnitude: np.ndarray, config: MelConfig) -> np.ndarray:
    """:func:`linear_to_mel` with a checked ``config``."""
    basis = _mel_basis(config.sample_rate, config.n_fft, config.n_mels, config.fmin, config.fmax, config.htk)
    mag = _check_finite(magnitude, "magnitude")
    if mag.ndim != 2 or mag.shape[0] != basis.shape[1]:
        raise ShapeError(f"magnitude must have shape ({basis.shape[1]}, T), got {mag.shape}")
    return np.dot(basis, mag)


def amp_to_db(x: np.ndarray, *, ref_level_db: float = 20.0, min_level_db: float = -100.0) -> np.ndarray:
    """Amplitude → decibels relative to ``ref_level_db``: ``20·log10(max(floor, x)) − ref``.

    The floor is ``exp(min_level_db / 20 · ln 10)`` (1e-5 by default), as upstream computes it.

    Parameters
    ----------
    x : ndarray, any shape, non-negative
    ref_level_db : float
        Finite.
    min_level_db : float
        Finite and negative.

    Returns
    -------
    ndarray, float64, same shape

    Raises
    ------
    ConfigError
        A keyword that is not a finite number (or ``min_level_db >= 0``).
    ShapeError
        ``x`` not real, with NaN/Inf, or negative.

    Examples
    --------
    >>> float(amp_to_db(np.array(1.0)))
    -20.0
    """
    check_number("ref_level_db", ref_level_db)
    check_number("min_level_db", min_level_db, hi=0, hi_open=True)
    x = _check_finite(x, "amplitude")
    if x.dtype.kind != "u" and x.size:
        lowest = x.min()
        if lowest < 0:
            raise ShapeError(f"amplitude must be non-negative (a magnitude), got a minimum of {float(lowest)!r}")
    return _amp_to_db(x, ref_level_db, min_level_db)


def _amp_to_db(x: np.ndarray, ref_level_db: float, min_level_db: float) -> np.ndarray:
    """:func:`amp_to_db`'s formula on a checked ``x``."""
    min_level = np.exp(min_level_db / 20 * np.log(10))
    return 20 * np.log10(np.maximum(min_level, x)) - ref_level_db


def normalize(
    S: np.ndarray,
    *,
    min_level_db: float = -100.0,
    max_abs_value: float = 4.0,
    symmetric: bool = True,
    clip: bool = True,
) -> np.ndarray:
    """Map decibels to ``[-max_abs, max_abs]`` (symmetric) or ``[0, max_abs]``, optionally clipped.

    Symmetric: ``clip(2·max_abs·((S − min_db) / −min_db) − max_abs, −max_abs, max_abs)``.

    Parameters
    ----------
    S : ndarray, any shape (dB)
    min_level_db : float
        Finite and negative.
    max_abs_value : float
        Finite and positive.
    symmetric, clip : bool

    Returns
    -------
    ndarray, float64, same shape

    Raises
    ------
    ConfigError
        A keyword of the wrong type or out of its range.
    ShapeError
        ``S`` not real, or with NaN/Inf.

    Examples
    --------
    >>> normalize(np.array([-100.0, 0.0]))
    array([-4.,  4.])
    """
    check_number("min_level_db", min_level_db, hi=0, hi_open=True)
    _positive("max_abs_value", max_abs_value)
    symmetric, clip = check_flag("symmetric", symmetric), check_flag("clip", clip)
    return _normalize(_check_finite(S, "decibels"), min_level_db, max_abs_value, symmetric, clip)


def _normalize(S: np.ndarray, min_level_db: float, max_abs_value: float, symmetric: bool, clip: bool) -> np.ndarray:
    """:func:`normalize`'s formula on a checked ``S``."""
    scaled = (S - min_level_db) / (-min_level_db)
    if symmetric:
        out = (2 * max_abs_value) * scaled - max_abs_value
        return np.clip(out, -max_abs_value, max_abs_value) if clip else out
    out = max_abs_value * scaled
    return np.clip(out, 0, max_abs_value) if clip else out


@dataclass(frozen=True)
class MelCarry:
    """What :func:`mel_step` carries from one block of samples to the next (never mutated).

    Attributes
    ----------
    n_in : int
        Samples consumed so far.
    last : float or None
        The last input sample (the pre-emphasis filter's memory), float64.
    buf : float64 ndarray (k,)
        Centre-padded, pre-emphasised signal from padded index ``buf_at`` on: what the next
        columns still need (under ``n_fft`` samples, plus the last ``n_fft//2 + 1`` for
        reflect padding at the end).
    buf_at : int or None
        None while a reflect-padded signal still waits for ``n_fft//2 + 1`` samples (``buf``
        then holds the pre-emphasised samples only).
    n_cols : int
        Final mel columns returned so far.
    """

    n_in: int
    last: "float | None"
    buf: np.ndarray
    buf_at: "int | None"
    n_cols: int


def mel_init(config: MelConfig = SYNCTALK_2D) -> MelCarry:
    """The carry before the first sample: zero left padding (constant) or nothing yet (reflect).

    Raises
    ------
    ConfigError
        ``config`` not a :class:`MelConfig`.
    """
    _check_config(config)
    if config.pad_mode == "constant":
        return MelCarry(0, None, np.zeros(config.n_fft // 2, np.float64), 0, 0)
    return MelCarry(0, None, np.empty(0, np.float64), None, 0)


def mel_columns(frames: np.ndarray, config: MelConfig = SYNCTALK_2D) -> np.ndarray:
    """The column half of :func:`mel_step`: STFT frames → normalised mel columns.

    Each column depends on its own frame only (Hann window, real FFT, mel, dB, normalisation),
    so the frames of many streams may be stacked into one call, as
    :class:`~synctalk_audio.StreamPool` does.

    Parameters
    ----------
    frames : float64 (c, n_fft), from :func:`mel_frames`

    Returns
    -------
    float64 (n_mels, c)
    """
    win = hann_window(config.n_fft, config.win_length)
    spec = np.fft.rfft(frames * win, axis=-1).T  # what stft_frames computes
    # the stages without their argument checks (the config's were checked when it was made)
    db = _amp_to_db(_check_finite(_linear_to_mel(np.abs(spec), config), "amplitude"), config.ref_level_db,
                    config.min_level_db)
    return _normalize(_check_finite(db, "decibels"), config.min_level_db, config.max_abs_value, config.symmetric,
                      config.clip)


def mel_step(carry: MelCarry, samples: np.ndarray, config: MelConfig = SYNCTALK_2D, *,
             final: bool = False) -> tuple[MelCarry, np.ndarray]:
    """Advance the mel recipe by one block of samples: :func:`mel_frames` then :func:`mel_columns`.

    Pre-emphasis (with the carried last sample), centre padding, STFT, mel, dB and
    normalisation of every column that the samples so far make final — the same float64
    operations per sample and column as the whole-signal composition, so any split of the
    signal into blocks gives the same columns bit for bit. :func:`melspectrogram` walks long
    audio with it; the streams push their chunks through it.

    Parameters
    ----------
    carry : MelCarry
        From :func:`mel_init` or the previous step.
    samples : float ndarray (k,), k >= 0
        Checked as offline (:func:`~synctalk_audio.audio.check_waveform`): 1-D, floating point,
        finite, within float32 range — at a cost of one dot product per call when they are.
    config : MelConfig
    final : bool
        The signal ends after ``samples``: pad the end and return the remaining columns up to
        ``T = 1 + n // hop``.

    Returns
    -------
    carry : MelCarry
    columns : float64 (n_mels, c), the columns ``[carry.n_cols, carry.n_cols + c)``

    Raises
    ------
    ConfigError
        ``carry`` not a :class:`MelCarry`, ``config`` not a :class:`MelConfig`, ``final`` not a bool.
    AudioError
        ``samples`` that offline would refuse: integer PCM, not 1-D, NaN/Inf, beyond float32.
        The carry given is never changed, so the stream may go on with good samples.
    """
    if not isinstance(carry, MelCarry):
        raise ConfigError(f"carry must be a MelCarry (from mel_init(config) or the previous mel_step), "
                          f"got {type(carry).__name__}")
    if not isinstance(config, MelConfig):
        _check_config(config)
    if final is not False and final is not True:
        final = check_flag("final", final)
    return _mel_step(carry, check_waveform(samples, name="mel_step samples"), config, final)


def _mel_step(carry: MelCarry, samples: np.ndarray, config: MelConfig, final: bool) -> tuple[MelCarry, np.ndarray]:
    """:func:`mel_step` of checked arguments (for callers that checked the samples already)."""
    carry, frames = mel_frames(carry, samples, config, final=final)
    if not frames.shape[0]:
        return carry, np.empty((config.n_mels, 0), np.float64)
    return carry, mel_columns(frames, config)


def _frames_view(span: np.ndarray, count: int, n_fft: int, hop: int) -> np.ndarray:
    """Read-only (count, n_fft) view of the contiguous 1-D ``span``, rows ``hop`` samples apart
    (``as_strided`` without its per-call cost, which a 20 ms push notices)."""
    if not span.flags.c_contiguous:
        span = np.ascontiguousarray(span)
    view = np.ndarray((count, n_fft), span.dtype, buffer=span, strides=(hop * span.itemsize, span.itemsize))
    view.flags.writeable = False
    return view


def mel_frames(carry: MelCarry, samples: np.ndarray, config: MelConfig = SYNCTALK_2D, *,
               final: bool = False) -> tuple[MelCarry, np.ndarray]:
    """The sample half of :func:`mel_step`: the STFT frames of the columns these samples make final.

    Pre-emphasis (with the carried last sample) and centre padding, then the ``n_fft``-sample
    frames of every column the samples so far make final. Cheap per call; the FFT and mel
    work is :func:`mel_columns`, which may run on the frames of many streams at once.

    Parameters
    ----------
    carry : MelCarry
        From :func:`mel_init` or the previous step.
    samples : float ndarray (k,), k >= 0 (validated by the caller)
    config : MelConfig
    final : bool
        The signal ends after ``samples``: pad the end and return the remaining columns up to
        ``T = 1 + n // hop``.

    Returns
    -------
    carry : MelCarry
    frames : float64 (c, n_fft), read-only views of the centre-padded, pre-emphasised signal:
        the frames of columns ``[carry.n_cols, carry.n_cols + c)`` (:func:`mel_columns` turns
        them into the columns)
    """
    hop, n_fft, pad, k = config.hop_length, config.n_fft, config.n_fft // 2, config.preemphasis
    x64 = samples.astype(np.float64, copy=False)
    n, m = x64.shape[0], carry.buf.shape[0]
    buf, buf_at = carry.buf, carry.buf_at
    if n:  # the carried samples, then the pre-emphasised new ones written in place (no temporaries)
        buf = np.empty(m + n, np.float64)
        buf[:m] = carry.buf
        _preemphasize(x64, k, carry.last, buf[m:])
    last = float(x64[-1]) if n else carry.last
    n_in = carry.n_in + n
    if buf_at is None and buf.shape[0] >= pad + 1:  # reflect start: y[pad], y[pad-1], …, y[1]
        buf, buf_at = np.concatenate([buf[pad:0:-1], buf]), 0
    if final:
        if buf_at is None:  # reflect signal of at most n_fft//2 samples: pad it whole, as np.pad does
            buf, buf_at = center_pad(buf, n_fft, config.pad_mode), 0
        elif config.pad_mode == "constant":
            buf = np.concatenate([buf, np.zeros(pad, np.float64)])
        else:  # reflect end: y[n-2], y[n-3], …, y[n-1-pad]
            buf = np.concatenate([buf, buf[-pad - 1:-1][::-1]])
        stop = n_mel_frames(n_in, hop)
    elif buf_at is None:
        return MelCarry(n_in, last, buf, None, carry.n_cols), np.empty((0, n_fft), np.float64)
    else:  # column t covers padded[t·hop, t·hop + n_fft): final once that lies inside the input
        stop = (pad + n_in - n_fft) // hop + 1 if pad + n_in >= n_fft else 0
    count = max(stop - carry.n_cols, 0)
    lo = hop * carry.n_cols - buf_at  # frame t covers padded[t·hop, t·hop + n_fft), as stft_frames cuts it
    # the frames as sliding_window_view(buf[lo:], n_fft)[::hop][:count] cuts them, without its checks
    frames = (_frames_view(buf[lo:lo + (count - 1) * hop + n_fft], count, n_fft, hop) if count
              else np.empty((0, n_fft), np.float64))
    n_cols = carry.n_cols + count
    if final:
        return MelCarry(n_in, last, np.empty(0, np.float64), hop * n_cols, n_cols), frames
    # keep what the next column needs, and the last n_fft//2 + 1 samples (reflect end padding)
    keep_from = min(hop * n_cols, buf_at + buf.shape[0] - (pad + 1))
    if keep_from > buf_at:
        buf, buf_at = buf[keep_from - buf_at:], keep_from
    return MelCarry(n_in, last, buf, buf_at, n_cols), frames


def melspectrogram(wav: np.ndarray, config: MelConfig = SYNCTALK_2D) -> np.ndarray:
    """Normalised log-mel spectrogram, the composition of the stages above.

    ``normalize(amp_to_db(linear_to_mel(|stft(preemphasis(wav))|)))``, walked with
    :func:`mel_step` in blocks of 4096 frames so that hours of audio never hold the full
    complex STFT (or a padded float64 copy of the signal) in memory.

    Parameters
    ----------
    wav : ndarray, shape (n,)
        Mono samples at ``config.sample_rate`` (float32 from :func:`load_audio`).
    config : MelConfig
        ``SYNCTALK_2D`` (default) or ``WAV2LIP``.

    Returns
    -------
    ndarray, float64, shape (n_mels, 1 + n // hop_length), values in [−4, 4]

    Examples
    --------
    >>> melspectrogram(np.zeros(16000, np.float32)).shape
    (80, 81)
    """
    _check_config(config)
    x = check_waveform(wav)
    if config.pad_mode == "reflect" and x.shape[0] < 2:
        raise ShapeError(f"reflect padding needs at least 2 samples, got {x.shape[0]}")
    out = np.empty((config.n_mels, n_mel_frames(x.shape[0], config.hop_length)), dtype=np.float64)
    carry, block = mel_init(config), _BLOCK_FRAMES * config.hop_length
    for lo in range(0, x.shape[0] + 1, block):
        carry_in = carry.n_cols
        carry, cols = _mel_step(carry, x[lo:lo + block], config, lo + block > x.shape[0])  # x checked whole
        out[:, carry_in:carry.n_cols] = cols
    return out
