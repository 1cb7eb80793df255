"""Fuzzing: arbitrary bytes as audio files and arbitrary float arrays into every stage.

Only the library's own error types may come out, or a finite result.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

import synctalk_audio as sa

nasty = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True, width=64),
    st.sampled_from([0.0, 5e-324, 1e-310, 1e38, -3.4e38, 1e300, -1e300, np.nan, np.inf]),
)
SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _ok_or_library_error(fn, *args, **kwargs):
    try:
        out = fn(*args, **kwargs)
    except sa.SyncTalkAudioError as exc:
        assert str(exc) and "\n" not in str(exc)
        return None
    arr = np.asarray(out)
    if arr.dtype.kind in "fc":
        assert np.isfinite(arr).all(), f"{fn.__name__} returned non-finite values"
    return out


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=3000), st.sampled_from([".wav", ".flac", ".ogg", ".mp3", ".bin"]))
@example(b"RIFF\x24\x00\x00\x00WAVEfmt ", ".wav")
@example(b"RIFF" + b"\xff" * 40, ".wav")
@example(b"fLaC" + bytes(100), ".flac")
@example(b"OggS" + bytes(100), ".ogg")
@example(b"ID3" + bytes(100), ".mp3")
def test_arbitrary_bytes_as_audio(tmp_path, data, suffix):
    path = tmp_path / f"fuzz{suffix}"
    path.write_bytes(data)
    _ok_or_library_error(sa.load_audio, path)


@SETTINGS
@given(arrays(np.float64, st.integers(0, 1200), elements=nasty))
def test_dsp_stages_on_arbitrary_floats(x):
    for fn in (sa.preemphasis, sa.stft, sa.melspectrogram):
        _ok_or_library_error(fn, x)
    _ok_or_library_error(sa.melspectrogram, x, sa.WAV2LIP)
    _ok_or_library_error(sa.amp_to_db, x)
    _ok_or_library_error(sa.normalize, x)
    _ok_or_library_error(sa.linear_to_mel, np.resize(x, (401, 2)) if x.size else x.reshape(0, 0))


@SETTINGS
@given(arrays(np.float64, st.tuples(st.sampled_from([80, 79]), st.integers(0, 40)), elements=nasty),
       st.sampled_from([25, 20, 0, -1, float("nan")]))
def test_window_on_arbitrary_mels(mel, fps):
    _ok_or_library_error(sa.window, mel, fps=fps)


@pytest.mark.filterwarnings("ignore:overflow encountered in cast")  # float64 extremes → float32 ±inf, on purpose
@SETTINGS
@given(arrays(np.float32, st.tuples(st.integers(0, 12), st.sampled_from([512, 2048, 7])), elements=nasty),
       st.sampled_from(["ave", "hubert", "wenet", "x"]))
def test_context_stages_on_arbitrary_features(feats, mode):
    padded = _ok_or_library_error(sa.pad_context, feats)
    if padded is not None:
        wins = _ok_or_library_error(sa.context_windows, padded)
        _ok_or_library_error(sa.reshape_for_mode, wins, mode)


@pytest.mark.parametrize("value", [np.nan, np.inf, 1e38, 5e-324, 0.0])
def test_encoder_inputs(value, seeded_encoder):
    windows = np.full((2, 80, 16), value, dtype=np.float32)
    _ok_or_library_error(sa.encode_batch, windows, seeded_encoder, device="cpu")
