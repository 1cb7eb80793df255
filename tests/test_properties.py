"""Hypothesis properties of the stages (shapes, ranges, linearity, upstream index formulas)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

import synctalk_audio as sa
from synctalk_audio.dsp import hz_to_mel, mel_to_hz

SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])

finite = st.floats(-1e4, 1e4, allow_nan=False, allow_infinity=False, width=32)


def _upstream_windows(mel: np.ndarray, fps: float) -> np.ndarray:
    """The AudDataset loop of SyncTalk_2D, verbatim in spirit: the reference for `window`."""
    spec = mel.T
    n = int((spec.shape[0] - 16) / 80.0 * float(fps)) + 2
    out = []
    for i in range(n):
        start = int(80.0 * (i / float(fps)))
        end = start + 16
        if end > spec.shape[0]:
            end = spec.shape[0]
            start = end - 16
        out.append(np.asarray(spec[start:end, :], dtype=np.float32).T)
    return np.stack(out)


@SETTINGS
@given(arrays(np.float32, st.integers(1, 6000), elements=finite))
def test_mel_shape_and_range(wav):
    mel = sa.melspectrogram(wav)
    assert mel.shape == (80, 1 + wav.shape[0] // 200)
    assert mel.dtype == np.float64
    assert np.all(mel >= -4.0) and np.all(mel <= 4.0)


@SETTINGS
@given(arrays(np.float64, st.integers(1, 2000), elements=st.floats(-1, 1)),
       arrays(np.float64, st.integers(1, 2000), elements=st.floats(-1, 1)),
       st.floats(-3, 3), st.floats(0.0, 0.99))
def test_preemphasis_linear_and_invertible(x, y, a, k):
    n = min(x.shape[0], y.shape[0])
    x, y = x[:n], y[:n]
    lhs = sa.preemphasis(a * x + y, k)
    rhs = a * sa.preemphasis(x, k) + sa.preemphasis(y, k)
    np.testing.assert_allclose(lhs, rhs, atol=1e-12)
    from scipy.signal import lfilter

    np.testing.assert_allclose(lfilter([1.0], [1.0, -k], sa.preemphasis(x, k)), x, atol=1e-9)


@settings(max_examples=25, deadline=None)
@given(st.sampled_from([8000, 16000, 22050, 44100]), st.sampled_from([512, 800, 1024]),
       st.integers(10, 128), st.floats(0, 300), st.floats(0.5, 1.0))
def test_mel_basis_slaney(sr, n_fft, n_mels, fmin, top):
    fmax = top * sr / 2
    basis = sa.mel_basis(sr=sr, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax)
    assert basis.shape == (n_mels, 1 + n_fft // 2) and basis.dtype == np.float32
    assert np.all(basis >= 0)
    assert not basis.flags.writeable
    edges = mel_to_hz(np.linspace(hz_to_mel(fmin), hz_to_mel(fmax), n_mels + 2))
    freqs = np.fft.rfftfreq(n_fft, 1.0 / sr)
    df = sr / n_fft
    heights = 2.0 / (edges[2:] - edges[:-2])
    for i in range(n_mels):
        support = freqs[basis[i] > 0]
        if support.size:
            assert support.min() > edges[i] - 1e-6 and support.max() < edges[i + 2] + 1e-6
        assert basis[i].max() <= heights[i] * (1 + 1e-6)
        if edges[i + 2] - edges[i] >= 20 * df:  # wide triangles: discrete area ≈ 1 (Slaney norm)
            assert abs(basis[i].sum() * df - 1.0) < 0.02


def test_mel_scale_round_trip():
    f = np.linspace(0, 8000, 1001)
    np.testing.assert_allclose(mel_to_hz(hz_to_mel(f)), f, atol=1e-8)
    assert hz_to_mel(1000.0) == pytest.approx(15.0)


@SETTINGS
@given(st.integers(3000, 40000), st.sampled_from([20, 25, 30, 50, 60]))
def test_window_equals_upstream_loop(n_samples, fps):
    T = 1 + n_samples // 200
    mel = np.random.default_rng(n_samples).uniform(-4, 4, (80, T))
    ours = sa.window(mel, fps=fps)
    ref = _upstream_windows(mel, fps)
    assert ours.shape == ref.shape == (sa.frame_count(T, fps), 80, 16)
    assert np.array_equal(ours, ref)
    starts = sa.window_starts(T, fps)
    for i, s in enumerate(starts):  # each window is exactly the mel columns at the upstream start
        assert np.array_equal(ours[i], mel[:, s : s + 16].astype(np.float32))
    assert starts.min() >= 0 and starts.max() <= T - 16


@settings(max_examples=200, deadline=None)
@given(st.integers(16, 2_000_000), st.sampled_from([20, 25, 30, 50, 60]))
def test_window_starts_integer_form(T, fps):
    starts = sa.window_starts(min(T, 4000), fps)
    i = np.arange(starts.shape[0])
    assert np.array_equal(starts, np.minimum((80 * i) // fps, min(T, 4000) - 16))
    k = T // 2  # the float formula equals the integer one far out too
    assert int(80.0 * (k / float(fps))) == (80 * k) // fps


@settings(max_examples=15, deadline=None)
@given(st.integers(1, 20000))
def test_silence_is_minus_four(n):
    assert np.all(sa.melspectrogram(np.zeros(n, np.float32)) == -4.0)


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 60), st.integers(1, 64), st.sampled_from(["zeros", "edge"]))
def test_context_rows(n_rows, dim, context):
    padded = np.random.default_rng(n_rows * 100 + dim).standard_normal((n_rows, dim)).astype(np.float32) + 10
    wins = sa.context_windows(padded, context=context)
    assert wins.shape == (n_rows, 16, dim)
    for i in range(n_rows):
        assert np.array_equal(wins[i, 8], padded[i])  # row 8 of frame i is padded[i]
        for r in range(16):
            src = i - 8 + r
            if 0 <= src < n_rows:
                assert np.array_equal(wins[i, r], padded[src])
            elif context == "zeros":
                assert np.all(wins[i, r] == 0)  # zeros exactly outside
            else:
                assert np.array_equal(wins[i, r], padded[min(max(src, 0), n_rows - 1)])
        assert np.array_equal(wins[i], sa.context_window(padded, i, context=context))


@settings(max_examples=20, deadline=None)
@given(st.sampled_from(sorted(sa.MODES)), st.integers(1, 5))
def test_reshape_round_trip(mode, m):
    shape = sa.MODES[mode]
    d = int(np.prod(shape)) // 16
    wins = np.random.default_rng(m).standard_normal((m, 16, d)).astype(np.float32)
    frames = sa.reshape_for_mode(wins, mode)
    assert frames.shape == (m, *shape)
    assert np.array_equal(frames.reshape(m, 16, d), wins)
    assert np.array_equal(frames.reshape(-1), wins.reshape(-1))  # row-major
