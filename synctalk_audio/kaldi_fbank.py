"""Kaldi log-mel filterbank ("fbank") in numpy: the wenet front end's features.

Reproduces ``torchaudio.compliance.kaldi.fbank(w, num_mel_bins=80, frame_length=25,
frame_shift=10, dither=0, energy_floor=0.0, sample_frequency=16000)`` with its other
defaults, the call in Ultralight-Digital-Human's ``FeaturePipeline.py``:

1. frames of 400 samples every 160 (``snip_edges``): ``F = 1 + (n - 400) // 160``;
2. per-frame DC removal, then pre-emphasis 0.97 with the frame's first sample replicated
   (``y[0] = x[0] - 0.97·x[0]``);
3. the povey window ``(0.5 - 0.5·cos(2πi/399)) ** 0.85``, zero padding to a 512-point FFT;
4. the power spectrum ``|rfft|²`` (257 bins) times Kaldi's triangular mel banks
   (``mel = 1127·ln(1 + f/700)``, 20 Hz to Nyquist, the Nyquist bin weighted 0), summed over
   each filter's band in a fixed order (:func:`bank_energies`), so that a frame's row never
   depends on the block it is computed in (streams equal whole files bit for bit);
5. ``log(max(energy, float32 eps))``.

Like torchaudio, everything runs in float32 in the same order (window and banks included),
so the result matches it to float32 round-off. The window's cos and pow are correctly rounded
(torch's own are within one ulp of that); the FFTs are different libraries (docs/exactness.md). Long
audio is walked in blocks of frames, so peak memory stays bounded.
"""

from __future__ import annotations

import math
import numbers
from functools import lru_cache

import numpy as np

from .audio import check_waveform
from .errors import AudioError, ConfigError

__all__ = [
    "fbank",
    "fbank_frame_count",
    "kaldi_frames",
    "povey_window",
    "kaldi_mel_banks",
    "bank_bands",
    "bank_energies",
    "mel_scale",
    "FLOAT32_EPS",
]

#: ``std::numeric_limits<float>::epsilon()``: the floor under every mel energy before the log.
FLOAT32_EPS = float(np.finfo(np.float32).eps)
#: Frames per block when :func:`fbank` walks long audio: a block's temporaries stay in L2 (256–512
#: frames: 11 ms for a 45 s clip against 22 ms at 1024 on an AMD EPYC). Rows do not depend on it.
_BLOCK_FRAMES = 384


def _positive_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value <= 0:
        raise ConfigError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def _samples(ms: float, sample_rate: int, name: str) -> int:
    """Kaldi's ``int(sample_rate * ms * 0.001)`` (truncation, as torchaudio)."""
    if isinstance(ms, bool) or not isinstance(ms, numbers.Real) or not ms > 0:
        raise ConfigError(f"{name} must be a positive number of milliseconds, got {ms!r}")
    return int(sample_rate * float(ms) * 0.001)


def fbank_frame_count(n_samples: int, *, frame_length: int = 400, frame_shift: int = 160) -> int:
    """Frames Kaldi's ``snip_edges`` framing gives for ``n_samples``: ``1 + (n - L) // S``, 0 if n < L.

    Examples
    --------
    >>> fbank_frame_count(16000)
    98
    >>> fbank_frame_count(399)
    0
    """
    n = int(n_samples)
    return 0 if n < frame_length else 1 + (n - frame_length) // frame_shift


def kaldi_frames(waveform: np.ndarray, *, frame_length: int = 400, frame_shift: int = 160) -> np.ndarray:
    """Kaldi ``snip_edges`` frames as a zero-copy, read-only strided view.

    Parameters
    ----------
    waveform : ndarray, shape (n,), n >= frame_length
    frame_length, frame_shift : int
        In samples (400 and 160 at 16 kHz).

    Returns
    -------
    ndarray, shape (F, frame_length), a view of ``waveform``, ``F = 1 + (n - frame_length) // frame_shift``

    Raises
    ------
    AudioError
        If ``waveform`` is not 1-D or shorter than one frame.

    Examples
    --------
    >>> kaldi_frames(np.arange(10.0), frame_length=4, frame_shift=3)[:, 0]
    array([0., 3., 6.])
    """
    frame_length = _positive_int("frame_length", frame_length)
    frame_shift = _positive_int("frame_shift", frame_shift)
    x = np.asarray(waveform)
    if x.ndim != 1:
        raise AudioError(f"waveform must be 1-D (n,), got shape {x.shape}")
    n_frames = fbank_frame_count(x.shape[0], frame_length=frame_length, frame_shift=frame_shift)
    if n_frames == 0:
        raise AudioError(f"waveform has {x.shape[0]} samples; one fbank frame needs at least {frame_length}")
    return np.lib.stride_tricks.as_strided(
        x, shape=(n_frames, frame_length), strides=(frame_shift * x.strides[0], x.strides[0]), writeable=False
    )


def _f32_of_double(fn, x: np.ndarray, *args: float) -> np.ndarray:
    """``fn`` (a ``math`` function) of each float32 ``x`` in double precision, rounded to float32.

    The platform's double ``cos``/``pow`` are within one double ulp, so the float32 result is the
    correctly rounded one (tested in 60-bit arithmetic), whatever SIMD kernels numpy picks for
    float32 on this CPU. x: float32 (n,) → float32 (n,).
    """
    return np.array([fn(float(v), *args) for v in x], dtype=np.float64).astype(np.float32)


@lru_cache(maxsize=16)
def povey_window(frame_length: int = 400) -> np.ndarray:
    """Kaldi's povey window, float32 (frame_length,), computed as torchaudio does (read-only).

    torchaudio's ``hann_window(L, periodic=False).pow(0.85)`` in float32, step by step: the
    angle ``i · float32(2π/(L-1))``, its cosine ``c``, ``0.5 - 0.5·c``, then the power with the
    float32 exponent ``float32(0.85)``. The products and differences are IEEE float32 (the same
    bits everywhere); cos and pow are correctly rounded to float32 (:func:`_f32_of_double`).
    torch's own float32 cos/pow are within one ulp of that (its pow is exactly that on CPUs
    without AVX2); numpy's float32 kernels differed from torch in 118 of 400 entries.

    Examples
    --------
    >>> w = povey_window(400)
    >>> w.shape, w.dtype, float(w[0])
    ((400,), dtype('float32'), 0.0)
    """
    frame_length = _positive_int("frame_length", frame_length)
    if frame_length < 2:
        raise ConfigError(f"frame_length must be at least 2 samples, got {frame_length}")
    step = np.float32(2.0 * math.pi / (frame_length - 1))
    cosine = _f32_of_double(math.cos, np.arange(frame_length, dtype=np.float32) * step)
    hann = np.float32(0.5) - np.float32(0.5) * cosine
    window = _f32_of_double(math.pow, hann, float(np.float32(0.85)))
    window.setflags(write=False)
    return window


def mel_scale(freq: np.ndarray) -> np.ndarray:
    """Kaldi's mel scale ``1127 · ln(1 + f / 700)`` (elementwise, the input's float dtype).

    Examples
    --------
    >>> round(float(mel_scale(np.float64(700.0))), 6)
    781.176872
    """
    f = np.asarray(freq)
    return f.dtype.type(1127.0) * np.log(f.dtype.type(1.0) + f / f.dtype.type(700.0))


@lru_cache(maxsize=16)
def kaldi_mel_banks(
    num_mel_bins: int = 80,
    n_fft: int = 512,
    sample_rate: int = 16000,
    low_freq: float = 20.0,
    high_freq: float = 0.0,
) -> np.ndarray:
    """Kaldi's triangular mel filterbank, float32 (num_mel_bins, n_fft // 2 + 1), read-only.

    As torchaudio's ``get_mel_banks`` (no VTLN) followed by its zero column for the Nyquist bin:
    the edges ``mel_low + k·Δ`` with ``Δ = (mel_high - mel_low) / (num_mel_bins + 1)`` and the
    FFT bin mels are float32; each row is ``max(0, min(up_slope, down_slope))``.

    Parameters
    ----------
    num_mel_bins : int, > 3
    n_fft : int, even
        Padded frame length (512 for 25 ms at 16 kHz).
    sample_rate : int
    low_freq : float
        Lowest edge in Hz (Kaldi's 20).
    high_freq : float
        Highest edge in Hz; <= 0 means an offset from Nyquist (0: Nyquist).

    Returns
    -------
    ndarray, float32, shape (num_mel_bins, n_fft // 2 + 1); the last column is 0.

    Examples
    --------
    >>> kaldi_mel_banks().shape
    (80, 257)
    """
    num_mel_bins = _positive_int("num_mel_bins", num_mel_bins)
    n_fft = _positive_int("n_fft", n_fft)
    sample_rate = _positive_int("sample_rate", sample_rate)
    if num_mel_bins <= 3:
        raise ConfigError(f"num_mel_bins must be more than 3, got {num_mel_bins}")
    if n_fft % 2:
        raise ConfigError(f"n_fft must be even, got {n_fft}")
    nyquist = 0.5 * sample_rate
    high = float(high_freq) + nyquist if high_freq <= 0.0 else float(high_freq)
    low = float(low_freq)
    if not (0.0 <= low < nyquist and 0.0 < high <= nyquist and low < high):
        raise ConfigError(f"mel bank edges low_freq={low_freq!r}, high_freq={high_freq!r} must satisfy "
                          f"0 <= low < high <= Nyquist ({nyquist:g} Hz)")
    mel_low = 1127.0 * math.log(1.0 + low / 700.0)
    mel_high = 1127.0 * math.log(1.0 + high / 700.0)
    delta = np.float32((mel_high - mel_low) / (num_mel_bins + 1))
    k = np.arange(num_mel_bins, dtype=np.float32)[:, None]
    f_low = np.float32(mel_low)
    left = f_low + k * delta
    center = f_low + (k + np.float32(1.0)) * delta
    right = f_low + (k + np.float32(2.0)) * delta
    bin_width = np.float32(sample_rate / n_fft)
    mel = mel_scale(bin_width * np.arange(n_fft // 2, dtype=np.float32))[None, :]
    up = (mel - left) / (center - left)
    down = (right - mel) / (right - center)
    banks = np.zeros((num_mel_bins, n_fft // 2 + 1), dtype=np.float32)
    banks[:, :-1] = np.maximum(np.float32(0.0), np.minimum(up, down))
    banks.setflags(write=False)
    return banks


@lru_cache(maxsize=16)
def bank_bands(num_mel_bins: int = 80, n_fft: int = 512, sample_rate: int = 16000, low_freq: float = 20.0,
               high_freq: float = 0.0) -> tuple[np.ndarray, np.ndarray, tuple[int, ...]]:
    """The non-zero band of every mel filter of :func:`kaldi_mel_banks`, for :func:`bank_energies`.

    Returns
    -------
    bins : int (num_mel_bins, W), read-only — filter m's FFT bins in increasing order, padded
        with bin 0; W is the widest filter's width
    weights : float32 (num_mel_bins, W), read-only — their weights, 0 on the padding
    starts : W ints — ``starts[j]``: the first filter wider than j (the filters before it have
        only padding in column j, so a sum may skip them there)
    """
    banks = kaldi_mel_banks(num_mel_bins, n_fft, sample_rate, low_freq, high_freq)
    nonzero = [np.flatnonzero(row) for row in banks]
    widths = np.array([len(nz) for nz in nonzero])
    width = max(1, int(widths.max()))
    bins = np.zeros((banks.shape[0], width), np.intp)
    weights = np.zeros((banks.shape[0], width), np.float32)
    for m, nz in enumerate(nonzero):
        bins[m, :len(nz)] = nz
        weights[m, :len(nz)] = banks[m, nz]
    bins.setflags(write=False)
    weights.setflags(write=False)
    starts = tuple(int(np.argmax(widths > j)) for j in range(width))
    return bins, weights, starts


def bank_energies(power: np.ndarray, bands: tuple[np.ndarray, np.ndarray, tuple[int, ...]]) -> np.ndarray:
    """Mel energies ``power @ banks.T`` summed in one fixed order, whatever the number of frames.

    Filter m's energy is ``((p[b0]·w0 + p[b1]·w1) + p[b2]·w2) + …`` over its band in float32
    (padding terms add +0.0, which changes nothing): every row is computed alone, so a frame's
    energies do not depend on which other frames share the call (a BLAS product picks other
    kernels for a few rows than for many, and its low bits move). That is what lets a stream's
    fbank equal the whole file's bit for bit.

    Parameters
    ----------
    power : float32 (m, n_fft // 2 + 1)
    bands : from :func:`bank_bands`

    Returns
    -------
    float32 (m, num_mel_bins), a transposed view
    """
    bins, weights, starts = bands
    columns = np.ascontiguousarray(power.T)  # (n_bins, m): a filter's bins are whole rows
    energies = columns[bins[:, 0]] * weights[:, :1]
    for j in range(1, bins.shape[1]):
        s = starts[j]
        energies[s:] += columns[bins[s:, j]] * weights[s:, j:j + 1]
    return energies.T


def _next_power_of_two(n: int) -> int:
    return 1 if n == 0 else 2 ** (n - 1).bit_length()


def _fbank_block(frames: np.ndarray, window: np.ndarray, bands: tuple, *, n_fft: int,
                 preemphasis: float, remove_dc_offset: bool) -> np.ndarray:
    """float32 frames (m, L) → log mel energies float32 (m, num_mel_bins); torchaudio's op order."""
    x = frames - frames.mean(axis=1, keepdims=True, dtype=np.float32) if remove_dc_offset else frames
    if preemphasis != 0.0:
        previous = np.concatenate([x[:, :1], x[:, :-1]], axis=1)
        x = x - np.float32(preemphasis) * previous
    padded = np.zeros((x.shape[0], n_fft), np.float32)  # the zero padding, written once (rfft's own n= is slower)
    np.multiply(x, window, out=padded[:, :x.shape[1]])
    spectrum = np.abs(np.fft.rfft(padded, axis=1))
    power = spectrum * spectrum
    energies = bank_energies(power, bands)
    return np.log(np.maximum(energies, np.float32(FLOAT32_EPS)))


def fbank(
    waveform: np.ndarray,
    *,
    num_mel_bins: int = 80,
    frame_length_ms: float = 25.0,
    frame_shift_ms: float = 10.0,
    sample_rate: int = 16000,
    preemphasis: float = 0.97,
    low_freq: float = 20.0,
    high_freq: float = 0.0,
    remove_dc_offset: bool = True,
) -> np.ndarray:
    """Kaldi log-mel filterbank of a waveform, as ``torchaudio.compliance.kaldi.fbank``.

    The defaults are wenet's call (``num_mel_bins=80, frame_length=25, frame_shift=10,
    dither=0, energy_floor=0.0, sample_frequency=16000``) with torchaudio's other defaults
    (povey window, 512-point FFT, power spectrum, ``snip_edges``, no energy column).

    Parameters
    ----------
    waveform : array_like, shape (n,)
        Samples on any scale; wenet gives int16-valued samples (see
        :func:`synctalk_audio.wenet.wenet_pcm`). Converted to float32 first, as torch's ``.float()``.
    num_mel_bins : int
    frame_length_ms, frame_shift_ms : float
        Frame length and shift in ms (``int(sample_rate * ms / 1000)`` samples).
    sample_rate : int
    preemphasis : float in [0, 1]
    low_freq, high_freq : float
        Mel bank edges in Hz (``high_freq <= 0``: offset from Nyquist).
    remove_dc_offset : bool
        Subtract each frame's mean first (Kaldi's default).

    Returns
    -------
    ndarray, float32, shape (F, num_mel_bins), ``F = 1 + (n - L) // S`` with ``L = 400``,
    ``S = 160`` at the defaults.

    Raises
    ------
    AudioError
        Not 1-D, not real, NaN/Inf, or fewer samples than one frame.
    ConfigError
        A parameter out of range.

    Examples
    --------
    >>> fbank(np.zeros(16000)).shape
    (98, 80)
    """
    sample_rate = _positive_int("sample_rate", sample_rate)
    frame_length = _samples(frame_length_ms, sample_rate, "frame_length_ms")
    frame_shift = _samples(frame_shift_ms, sample_rate, "frame_shift_ms")
    if frame_length < 2 or frame_shift < 1:
        raise ConfigError(f"frame_length_ms={frame_length_ms!r}, frame_shift_ms={frame_shift_ms!r} give "
                          f"{frame_length} and {frame_shift} samples; expected at least 2 and 1")
    if isinstance(preemphasis, bool) or not isinstance(preemphasis, numbers.Real) or not 0.0 <= preemphasis <= 1.0:
        raise ConfigError(f"preemphasis must be in [0, 1], got {preemphasis!r}")
    n_fft = _next_power_of_two(frame_length)
    bands = bank_bands(num_mel_bins, n_fft, sample_rate, float(low_freq), float(high_freq))
    window = povey_window(frame_length)
    x = check_waveform(waveform, name="waveform", integers=True).astype(np.float32, copy=False)
    frames = kaldi_frames(x, frame_length=frame_length, frame_shift=frame_shift)
    out = np.empty((frames.shape[0], bands[0].shape[0]), dtype=np.float32)
    for lo in range(0, frames.shape[0], _BLOCK_FRAMES):
        block = frames[lo:lo + _BLOCK_FRAMES]
        out[lo:lo + block.shape[0]] = _fbank_block(block, window, bands, n_fft=n_fft, preemphasis=float(preemphasis),
                                                   remove_dc_offset=bool(remove_dc_offset))
    return out
