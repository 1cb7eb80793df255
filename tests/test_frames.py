"""frame_count, window_starts, window: counts, clamping and errors."""

from __future__ import annotations

import numpy as np
import pytest

import synctalk_audio as sa


def test_frame_count_formula():
    assert sa.frame_count(16, 25) == 2
    assert sa.frame_count(81, 25) == int(65 / 80.0 * 25) + 2
    assert sa.frame_count(81, 20) == int(65 / 80.0 * 20) + 2


@pytest.mark.parametrize("fps", [20, 25, 30, 50, 60])
def test_float_start_formula_equals_integer_form_up_to_2e6(fps):
    i = np.arange(2_000_000, dtype=np.int64)
    float_form = (80.0 * (i.astype(np.float64) / float(fps))).astype(np.int64)
    assert np.array_equal(float_form, (80 * i) // fps)


def test_last_windows_clamped():
    T = 40
    starts = sa.window_starts(T, 25)
    assert starts[-1] == T - 16
    mel = np.arange(80 * T, dtype=np.float64).reshape(80, T)
    assert np.array_equal(sa.window(mel)[-1], mel[:, -16:].astype(np.float32))


@pytest.mark.parametrize("T", [0, 1, 15])
def test_too_short(T):
    with pytest.raises(sa.AudioError, match="too short.*3000 samples"):
        sa.frame_count(T, 25)


@pytest.mark.parametrize("fps", [0, -25, float("nan"), float("inf"), "25", True])
def test_bad_fps(fps):
    with pytest.raises(sa.ConfigError, match="fps"):
        sa.frame_count(100, fps)


@pytest.mark.parametrize("mel,err", [
    (np.zeros((80,)), sa.ShapeError),
    (np.zeros((80, 20), dtype=np.int64), sa.ShapeError),
    (np.full((80, 20), np.nan), sa.ShapeError),
    (np.zeros((80, 10)), sa.AudioError),
])
def test_window_bad_mel(mel, err):
    with pytest.raises(err):
        sa.window(mel)


def test_window_float_fps():
    mel = np.zeros((80, 200))
    assert sa.window(mel, fps=29.97).shape == (sa.frame_count(200, 29.97), 80, 16)


def test_window_any_band_count_and_shape_message():
    """window() cuts any number of mel bands the same way; a non-2-D input names the shape."""
    mel = np.random.default_rng(0).uniform(-4, 4, (40, 120))
    win = sa.window(mel)
    assert win.shape == (sa.frame_count(120, 25), 40, 16)
    np.testing.assert_array_equal(win[3], mel[:, sa.window_starts(120, 25)[3]:][:, :16].astype(np.float32))
    with pytest.raises(sa.ShapeError, match=r"mel must have shape \(n_mels, T\), got \(80,\)"):
        sa.window(np.zeros(80))
    from synctalk_audio.frames import check_mel

    with pytest.raises(sa.ShapeError, match=r"\(80, T\), got \(40, 120\)"):
        check_mel(mel)
