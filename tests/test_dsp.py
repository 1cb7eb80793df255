"""Unit tests of the DSP stages and their composition."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.signal import lfilter

import synctalk_audio as sa
from synctalk_audio import dsp


def test_preemphasis_matches_lfilter_bitwise():
    x = np.random.default_rng(1).standard_normal(5000).astype(np.float32)
    assert np.array_equal(sa.preemphasis(x), lfilter([1, -0.97], [1], x))
    assert sa.preemphasis(x).dtype == np.float64


def test_preemphasis_bad_coefficient():
    with pytest.raises(sa.ConfigError, match="preemphasis"):
        sa.preemphasis(np.zeros(4), 1.5)


def test_stft_shape_and_window():
    spec = sa.stft(np.zeros(3001))
    assert spec.shape == (401, 16) and spec.dtype == np.complex128
    win = dsp.hann_window(800, 800)
    assert win[0] == 0.0 and win[400] == 1.0 and not win.flags.writeable  # periodic Hann


def test_stft_impulse_sees_constant_padding():
    x = np.zeros(2000)
    x[0] = 1.0
    # frame 0 is centred on sample 0: the impulse meets window[400] = 1 → flat magnitude 1
    assert np.allclose(np.abs(sa.stft(x)[:, 0]), 1.0)
    x[0], x[5] = 0.0, 1.0
    # zero padding: one impulse in frame 0; reflect padding mirrors it to sample -5 as well
    assert np.allclose(np.abs(sa.stft(x)[:, 0]), dsp.hann_window()[405])
    assert not np.allclose(np.abs(sa.stft(x, pad_mode="reflect")[:, 0]), dsp.hann_window()[405])


def test_stft_short_window_is_centred():
    spec = sa.stft(np.ones(1000), n_fft=800, win_length=400)
    assert spec.shape == (401, 6)
    assert dsp.hann_window(800, 400)[:200].sum() == 0.0


def test_amp_to_db_floor_and_normalize():
    assert float(sa.amp_to_db(np.array(0.0))) == pytest.approx(-120.0)
    assert float(sa.amp_to_db(np.array(10.0))) == pytest.approx(0.0)
    assert sa.normalize(np.array([-200.0, -100.0, -50.0, 0.0, 50.0])).tolist() == [-4.0, -4.0, 0.0, 4.0, 4.0]
    assert sa.normalize(np.array([-50.0, 50.0]), symmetric=False).tolist() == [2.0, 4.0]
    assert sa.normalize(np.array([50.0]), clip=False).tolist() == [8.0]


def test_melspectrogram_blocks_equal_one_shot(monkeypatch):
    wav = np.random.default_rng(3).standard_normal(40000).astype(np.float32) * 0.1
    whole = sa.melspectrogram(wav)
    monkeypatch.setattr(dsp, "_BLOCK_FRAMES", 7)
    blocked = sa.melspectrogram(wav)
    assert np.allclose(whole, blocked, rtol=0, atol=1e-12)
    manual = sa.normalize(sa.amp_to_db(sa.linear_to_mel(np.abs(sa.stft(sa.preemphasis(wav))))))
    assert np.allclose(whole, manual, rtol=0, atol=1e-12)


def test_melspectrogram_rejects_bad_config_and_input():
    with pytest.raises(sa.ConfigError):
        sa.melspectrogram(np.zeros(4000), config="synctalk")
    with pytest.raises(sa.AudioError, match="non-finite"):
        sa.melspectrogram(np.array([0.0, np.inf] * 2000))
    with pytest.raises(sa.AudioError, match="1-D"):
        sa.melspectrogram(np.zeros((2, 4000)))


def test_linear_to_mel_shape_error():
    with pytest.raises(sa.ShapeError, match="401"):
        sa.linear_to_mel(np.zeros((400, 3)))


def test_mel_basis_cached_and_validated():
    assert sa.mel_basis() is sa.mel_basis()
    with pytest.raises(sa.ConfigError):
        sa.mel_basis(fmin=8000, fmax=7600)


def test_wav2lip_preset_differs_at_edges_only():
    wav = np.random.default_rng(5).standard_normal(16000).astype(np.float32) * 0.1
    a, b = sa.melspectrogram(wav, sa.SYNCTALK_2D), sa.melspectrogram(wav, sa.WAV2LIP)
    assert np.array_equal(a[:, 3:-3], b[:, 3:-3])
    assert not np.array_equal(a[:, 0], b[:, 0])


def _composed(x, preset):
    """The whole-signal composition of the public stages (no blocks, no carry)."""
    spec = sa.stft(sa.preemphasis(x, preset.preemphasis), pad_mode=preset.pad_mode)
    return sa.normalize(sa.amp_to_db(sa.linear_to_mel(np.abs(spec), preset)))


@pytest.mark.parametrize("n", [1, 2, 399, 400, 401, 402, 1000, 5001])
@pytest.mark.parametrize("preset", [sa.SYNCTALK_2D, sa.WAV2LIP])
def test_mel_step_blocks_equal_the_whole_composition(n, preset):
    """Any split of the signal into blocks gives the composition's columns: the same float64
    operations per column, so equal after the float32 cast that feeds the encoder (float64 may
    differ by one ulp where BLAS picks another dgemm kernel for a few columns)."""
    if preset.pad_mode == "reflect" and n < 2:
        return
    x = np.random.default_rng(n).standard_normal(n).astype(np.float32)
    whole = _composed(x, preset)
    assert np.array_equal(sa.melspectrogram(x, preset), whole)
    rng = np.random.default_rng(n + 1)
    for _ in range(5):
        cuts = np.sort(rng.integers(0, n + 1, rng.integers(0, 6)))
        carry, cols = sa.mel_init(preset), []
        for lo, hi in zip(np.r_[0, cuts], np.r_[cuts, n]):
            carry, c = sa.mel_step(carry, x[lo:hi], preset)
            cols.append(c)
        carry, c = sa.mel_step(carry, x[:0], preset, final=True)
        got = np.concatenate(cols + [c], axis=1)
        assert np.abs(got - whole).max() <= 1e-14
        assert np.array_equal(got.astype(np.float32), whole.astype(np.float32))
        assert carry.n_cols == whole.shape[1] == 1 + n // 200
