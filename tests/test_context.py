"""pad_context, context windows (zero-copy), reshape_for_mode and their errors."""

from __future__ import annotations

import numpy as np
import pytest

import synctalk_audio as sa


def test_pad_context_repeats_edges():
    f = np.arange(6, dtype=np.float32).reshape(3, 2)
    p = sa.pad_context(f)
    assert p.shape == (5, 2)
    assert np.array_equal(p[0], f[0]) and np.array_equal(p[-1], f[-1]) and np.array_equal(p[1:-1], f)


def test_frames_are_a_small_readonly_view():
    padded = np.random.default_rng(0).standard_normal((5000, 512)).astype(np.float32)
    frames = sa.frames_for_mode(padded, "ave")
    assert frames.shape == (5000, 32, 16, 16)
    assert not frames.flags.writeable
    base = frames
    while base.base is not None:
        base = base.base
    # one copy of the padded rows (+16 context rows), not 16 copies
    assert base.nbytes <= (5000 + 16) * 512 * 4
    with pytest.raises(ValueError):
        frames[0, 0, 0, 0] = 1.0


def test_short_audio_gets_intended_zero_rows():
    padded = np.ones((6, 512), np.float32)  # fewer than 8 rows: upstream crashes here
    wins = sa.context_windows(padded)
    assert wins.shape == (6, 16, 512)
    assert np.all(wins[0, :8] == 0) and np.all(wins[0, 8:14] == 1) and np.all(wins[0, 14:] == 0)


def test_precomputed_hubert_3d_input():
    aud = np.random.default_rng(1).standard_normal((20, 2, 1024)).astype(np.float32)
    frames = sa.frames_for_mode(aud, "hubert")
    assert frames.shape == (20, 32, 32, 32)
    assert np.array_equal(frames[10].reshape(16, 2, 1024), aud[2:18])


@pytest.mark.parametrize("mode,d", [("ave", 2048), ("hubert", 512), ("wenet", 512)])
def test_mode_size_mismatch_names_both_sizes(mode, d):
    need = int(np.prod(sa.MODES[mode]))
    with pytest.raises(sa.ShapeError, match=f"{need}.*{16 * d}"):
        sa.reshape_for_mode(np.zeros((16, d), np.float32), mode)


def test_unknown_mode_and_context():
    with pytest.raises(sa.ConfigError, match="unknown mode 'avee'"):
        sa.reshape_for_mode(np.zeros((16, 512)), "avee")
    with pytest.raises(sa.ConfigError, match="unknown context"):
        sa.context_windows(np.zeros((3, 4)), context="wrap")


@pytest.mark.parametrize("bad", [np.zeros((0, 512)), np.zeros(512), np.full((3, 4), np.inf), np.zeros((3, 4), int)])
def test_bad_features(bad):
    with pytest.raises(sa.ShapeError):
        sa.pad_context(bad)


def test_context_window_index_range():
    with pytest.raises(sa.ShapeError, match="out of range"):
        sa.context_window(np.zeros((3, 4)), 3)


@pytest.mark.parametrize("context", ["zeros", "edge"])
def test_pad_context_fills_reserved_rows_without_copying(context):
    """Features in a buffer with spare rows (encode_batch(margin=r + 1)) are padded in place."""
    rng = np.random.default_rng(3)
    f = rng.standard_normal((7, 512)).astype(np.float32)
    buf = np.full((7 + 2 * 9, 512), np.nan, np.float32)
    held = buf[9:16]
    held[:] = f
    padded = sa.pad_context(held, margin=8, context=context)
    assert np.shares_memory(padded, buf) and np.array_equal(padded, sa.pad_context(f))
    wins = sa.context_windows(padded, context=context)
    assert np.shares_memory(wins, buf)
    assert np.array_equal(wins, sa.context_windows(sa.pad_context(f), context=context))
    assert np.array_equal(held, f)  # the features themselves are untouched
    small = np.zeros((4, 512), np.float32)[1:3]  # too little room: a fresh buffer, the input untouched
    out = sa.pad_context(small, margin=8)
    assert not np.shares_memory(out, small) and np.array_equal(out, sa.pad_context(np.zeros((2, 512), np.float32)))


@pytest.mark.parametrize("shape,mode,radius", [((40, 1024), "hubert", 8), ((40, 2, 512), "hubert", 8),
                                               ((30, 4096), "wenet", 8), ((30, 16384), "wenet", 4),
                                               ((30, 4096), "hubert", 4), ((12, 256), "ave", 8)])
def test_frames_for_mode_refuses_rows_of_another_width(shape, mode, radius):
    """A row width that fits the *other* radius' window once gave frames of that radius' shape."""
    with pytest.raises(sa.ShapeError, match=r"values per row; got shape"):
        sa.frames_for_mode(np.zeros(shape, np.float32), mode, radius=radius)


def test_frames_for_mode_takes_radius_8_or_4():
    with pytest.raises(sa.ConfigError, match="radius must be 8"):
        sa.frames_for_mode(np.zeros((40, 2, 1024), np.float32), "hubert", radius=32)
    assert sa.frames_for_mode(np.zeros((40, 2, 1024), np.float32), "hubert", radius=4).shape == (40, 16, 32, 32)
