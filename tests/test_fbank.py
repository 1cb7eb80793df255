"""Kaldi fbank in numpy against torchaudio's compliance.kaldi.fbank (golden/wenet, independent oracle)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from synctalk_audio.errors import AudioError, ConfigError
from synctalk_audio.kaldi_fbank import (
    FLOAT32_EPS,
    fbank,
    fbank_frame_count,
    kaldi_frames,
    kaldi_mel_banks,
    povey_window,
)
from synctalk_audio.wenet import load_wenet_audio, wenet_pcm

from .conftest import GOLDEN, ROOT

WENET = GOLDEN / "wenet"
MANIFEST = json.loads((WENET / "manifest.json").read_text())
CLIPS = sorted(MANIFEST["clips"])
#: Bounds against torchaudio (float32 FFTs from different libraries): per frame, the largest
#: mel-energy difference relative to the frame's largest mel energy (measured <= 9.6e-6), the
#: mean |log| difference (measured <= 3.2e-6) and the largest |log| difference, which sits in
#: bands ~10 orders of magnitude below their frame's peak (measured 0.017 on the 45 s clip;
#: kaldi-native-fbank differs from torchaudio by 0.0196 there).
ENERGY_REL = 5e-5
MEAN_LOG = 2e-5
MAX_LOG = 0.05


def _one_line(exc: pytest.ExceptionInfo) -> str:
    msg = str(exc.value)
    assert msg and "\n" not in msg
    return msg


@pytest.fixture(scope="module", params=CLIPS)
def clip(request):
    info = MANIFEST["clips"][request.param]
    wav = load_wenet_audio(ROOT / info["file"])
    return request.param, info, fbank(wenet_pcm(wav)), np.load(WENET / request.param / "fbank.npy")


def test_golden_fbank(clip):
    _, info, ours, ref = clip
    assert ours.dtype == np.float32 and ours.shape == ref.shape == (info["n_fbank_frames"], 80)
    diff = np.abs(ours - ref)
    e_ours, e_ref = np.exp(ours.astype(np.float64)), np.exp(ref.astype(np.float64))
    energy_rel = (np.abs(e_ours - e_ref).max(axis=1) / e_ref.max(axis=1)).max()
    assert energy_rel <= ENERGY_REL
    assert diff.mean() <= MEAN_LOG
    assert diff.max() <= MAX_LOG


def test_silence_is_log_eps_exactly():
    out = fbank(np.zeros(16000, np.float32))
    assert out.shape == (98, 80)
    assert np.all(out == np.float32(np.log(np.float32(FLOAT32_EPS))))


@settings(max_examples=40, deadline=None)
@given(n=st.integers(min_value=400, max_value=6000))
def test_frame_count_property(n):
    f = 1 + (n - 400) // 160
    assert fbank_frame_count(n) == f
    assert kaldi_frames(np.zeros(n, np.float32)).shape == (f, 400)
    assert fbank(np.zeros(n)).shape == (f, 80)


def test_frames_are_a_readonly_view():
    x = np.arange(1000, dtype=np.float32)
    frames = kaldi_frames(x)
    assert np.shares_memory(frames, x) and not frames.flags.writeable
    assert frames[2, 0] == 320 and frames[-1, -1] == 160 * (frames.shape[0] - 1) + 399


def test_blocks_do_not_change_rows():
    from synctalk_audio.kaldi_fbank import _BLOCK_FRAMES

    rng = np.random.default_rng(3)
    n_frames = 2 * _BLOCK_FRAMES + 50  # three blocks
    x = np.round(rng.standard_normal(160 * n_frames + 240) * 3000).astype(np.float32)
    whole = fbank(x)
    first = _BLOCK_FRAMES - 6  # a piece straddling the first block boundary, frame-aligned
    piece = fbank(x[160 * first:160 * (first + 20) + 240])
    np.testing.assert_array_equal(piece, whole[first:first + piece.shape[0]])


def test_povey_window():
    w = povey_window(400)
    assert w.dtype == np.float32 and w.shape == (400,) and not w.flags.writeable
    i = np.arange(400)
    kaldi = (0.5 - 0.5 * np.cos(2 * np.pi * i / 399)) ** 0.85  # Kaldi computes in double
    np.testing.assert_allclose(w, kaldi, rtol=0, atol=3e-7)
    assert w[0] == 0 and w[-1] < 1e-6
    assert povey_window(400) is w  # cached


@pytest.mark.parametrize("length", [400, 200, 2])
def test_povey_window_is_correctly_rounded(length):
    """torchaudio's float32 steps, each elementary function correctly rounded to float32.

    ``arange · float32(2π/(L-1))`` → cos → ``0.5 - 0.5·c`` → ``pow(·, float32(0.85))``: the
    products and differences are IEEE float32 (numpy gives the same bits everywhere); cos and
    pow are checked here in 60-bit arithmetic rounded once to 24 bits. numpy's own float32
    cos/pow (SIMD kernels chosen per CPU) missed this in 118 of 400 entries (1 ulp each), and
    those ulps leak into bands ~10 orders below a near-silent frame's peak (docs/exactness.md).
    """
    mpmath = pytest.importorskip("mpmath")

    def to_f32(x) -> np.float32:
        with mpmath.workprec(24):  # one rounding of the 60-bit value to float32's 24-bit significand
            return np.float32(float(+x))

    arg = np.arange(length, dtype=np.float32) * np.float32(2.0 * np.pi / (length - 1))
    exponent = np.float32(0.85)
    expected = np.empty(length, np.float32)
    with mpmath.workprec(60):
        for i, a in enumerate(arg):
            c = to_f32(mpmath.cos(mpmath.mpf(float(a))))
            hann = np.float32(0.5) - np.float32(0.5) * c
            power = mpmath.power(mpmath.mpf(float(hann)), mpmath.mpf(float(exponent)))
            expected[i] = 0.0 if hann == 0 else to_f32(power)
    np.testing.assert_array_equal(povey_window(length), expected)


def test_mel_banks():
    b = kaldi_mel_banks(80, 512, 16000)
    assert b.shape == (80, 257) and b.dtype == np.float32 and not b.flags.writeable
    assert np.all(b[:, -1] == 0) and np.all(b >= 0) and np.all(b.max(axis=1) <= 1)
    assert np.all(b[:, 0] == 0)  # 0 Hz lies below the first edge (20 Hz)
    # triangle peaks rise with the bin index, each covers consecutive FFT bins
    peaks = b.argmax(axis=1)
    assert np.all(np.diff(peaks) >= 0)
    for row in b:
        nz = np.flatnonzero(row)
        assert nz.size and np.all(np.diff(nz) == 1)


def test_float_input_dtypes_agree():
    x = np.round(np.random.default_rng(0).standard_normal(4000) * 1000)
    np.testing.assert_array_equal(fbank(x), fbank(x.astype(np.float32)))
    np.testing.assert_array_equal(fbank(x.astype(np.int16)), fbank(x.astype(np.float32)))


@pytest.mark.parametrize("bad, kind, needle", [
    (np.zeros(399), AudioError, "399 samples"),
    (np.zeros((2, 1000)), AudioError, "1-D"),
    (np.array([0.0, np.nan] * 300), AudioError, "non-finite"),
])
def test_bad_waveforms(bad, kind, needle):
    with pytest.raises(kind) as exc:
        fbank(bad)
    assert needle in _one_line(exc)


@pytest.mark.parametrize("kwargs, needle", [
    (dict(num_mel_bins=3), "num_mel_bins"),
    (dict(preemphasis=1.5), "preemphasis"),
    (dict(frame_length_ms=0), "frame_length_ms"),
    (dict(sample_rate=0), "sample_rate"),
    (dict(low_freq=9000.0), "low_freq"),
])
def test_bad_config(kwargs, needle):
    with pytest.raises(ConfigError) as exc:
        fbank(np.zeros(4000), **kwargs)
    assert needle in _one_line(exc)


def test_the_package_name_fbank_stays_the_function():
    """``synctalk_audio.fbank`` is the function before and after the wenet modules are imported
    (a submodule of that name once replaced it on first import)."""
    import subprocess
    import sys

    code = ("import synctalk_audio as sa, numpy as np\nf = sa.fbank\nimport synctalk_audio.wenet, synctalk_audio.wenet_stream\n"
            "from synctalk_audio import fbank\nassert callable(sa.fbank) and sa.fbank is f is fbank, sa.fbank\n"
            "print(sa.fbank(np.zeros(1600, np.float32)).shape)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "(8, 80)"
