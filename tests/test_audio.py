"""load_audio: formats, channel mix, resampling length, and every bad-input error."""

from __future__ import annotations

import math

import numpy as np
import pytest
import soundfile as sf
from hypothesis import given, settings
from hypothesis import strategies as st

import synctalk_audio as sa
from synctalk_audio.audio import check_waveform

from .conftest import golden_array, golden_input


def test_returns_float32_mono(tmp_path):
    path = tmp_path / "s.wav"
    sf.write(path, np.stack([np.full(3200, 0.5), np.full(3200, -0.25)], axis=1), 16000, subtype="FLOAT")
    wav = sa.load_audio(path)
    assert wav.dtype == np.float32 and wav.shape == (3200,)
    assert np.allclose(wav, 0.125)


def test_int16_scaling(tmp_path):
    path = tmp_path / "i.wav"
    sf.write(path, np.array([16384, -32768, 0], dtype=np.int16), 16000, subtype="PCM_16")
    assert sa.load_audio(path).tolist() == [0.5, -1.0, 0.0]


@settings(max_examples=20, deadline=None)
@given(st.integers(1, 5000), st.sampled_from([8000, 11025, 22050, 24000, 32000, 44100, 48000]))
def test_resample_length(n, rate):
    out = sa.resample(np.zeros(n, np.float32), rate, 16000)
    assert out.dtype == np.float32
    assert out.shape == (int(math.ceil(n * (16000 / rate))),)


def test_mp3_length_is_the_decoded_length():
    wav = sa.load_audio(golden_input("speech_mp3"))
    assert wav.shape == golden_array("speech_mp3", "samples.npy").shape


def test_native_rate_kept_when_sr_matches(tmp_path):
    path = tmp_path / "r.flac"
    sf.write(path, np.linspace(-0.5, 0.5, 4000), 22050)
    assert sa.load_audio(path, sr=22050).shape == (4000,)


@pytest.mark.parametrize("maker,match", [
    (lambda p: None, "not found"),
    (lambda p: p.mkdir(), "directory"),
    (lambda p: p.write_bytes(b""), "empty"),
    (lambda p: p.write_text("this is not audio\n" * 20), "cannot decode"),
    (lambda p: p.write_bytes(np.random.default_rng(0).bytes(4096)), "cannot decode"),
    (lambda p: sf.write(p, np.zeros((0,), np.float32), 16000), "no samples"),
    (lambda p: sf.write(p, np.array([0.0, np.nan, 0.1, np.inf], np.float32), 16000, subtype="FLOAT"),
     "non-finite"),
])
def test_bad_files(tmp_path, maker, match):
    path = tmp_path / "bad.wav"
    maker(path)
    with pytest.raises(sa.AudioError, match=match) as info:
        sa.load_audio(path)
    assert "\n" not in str(info.value)
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize("sr", [0, -16000, 1.5, True, "16000"])
def test_bad_rate(tmp_path, sr):
    with pytest.raises(sa.ConfigError):
        sa.load_audio(tmp_path / "x.wav", sr=sr)


@pytest.mark.parametrize("bad,match", [
    (np.zeros((10, 2), np.float32), "1-D"),
    (np.array(["a", "b"]), "real samples"),
    (np.array([1 + 1j]), "real samples"),
    (np.array([0.0, np.nan]), "non-finite"),
])
def test_check_waveform(bad, match):
    with pytest.raises(sa.AudioError, match=match):
        check_waveform(bad)


def test_to_mono_is_channel_mean():
    x = np.arange(12, dtype=np.float32).reshape(4, 3)
    assert np.array_equal(sa.to_mono(x), x.mean(axis=1))


@pytest.mark.parametrize("rate,channels,subtype", [(48000, 3, "FLOAT"), (8000, 2, "PCM_24"), (16000, 1, "PCM_16"),
                                                   (44100, 1, "DOUBLE")])
def test_block_decoding_equals_decoding_whole(tmp_path, rate, channels, subtype):
    """load_audio/load_channel decode, mix and resample block by block: bit-identical to the
    whole-file path (soundfile.read → channel mean → one soxr_hq resample → length fix)."""
    rng = np.random.default_rng(rate)
    n = 3 * (1 << 16) + 12345  # several blocks and a partial one
    path = tmp_path / "multi.wav"
    sf.write(path, 0.3 * rng.standard_normal((n, channels)), rate, subtype=subtype)
    data32, _ = sf.read(path, dtype="float32", always_2d=True)
    whole = sa.resample(np.ascontiguousarray(sa.to_mono(data32)), rate, 16000).astype(np.float32)
    got = sa.load_audio(path)
    assert got.dtype == np.float32 and np.array_equal(got, whole)
    data64, _ = sf.read(path, dtype="float64", always_2d=True)
    assert np.array_equal(sa.load_channel(path, channel=channels - 1),
                          sa.resample(np.ascontiguousarray(data64[:, channels - 1]), rate, 16000))


@pytest.mark.parametrize("bad", [np.zeros(4, np.int16), np.zeros(4, np.uint8), np.zeros(4, np.int32)])
def test_check_waveform_refuses_integer_pcm(bad):
    with pytest.raises(sa.AudioError, match="integer samples"):
        check_waveform(bad)
    assert check_waveform(bad, integers=True) is bad


def test_a_truncated_wav_warns_with_the_numbers(tmp_path, capsys):
    """A cut-off WAV (header declares more samples than the file holds) is decoded as far as it
    goes, with a warning naming both lengths — once silently half the features. The CLI shows it
    as one `synctalk-audio: warning:` line."""
    import warnings

    from synctalk_audio.audio import truncated_wav
    from synctalk_audio.cli import main

    whole = sa.load_audio(golden_input("speech_16k_mono"))
    src = tmp_path / "whole.wav"
    sf.write(src, whole, 16000, subtype="PCM_16")
    data = src.read_bytes()
    cut = tmp_path / "cut.wav"
    cut.write_bytes(data[: len(data) // 2])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sa.load_audio(src)  # complete: no warning
        assert truncated_wav(src, len(data)) is None
    with pytest.warns(UserWarning, match=r"is truncated: its header declares \d+ bytes of samples, the file holds \d+"):
        half = sa.load_audio(cut)
    assert 0 < half.shape[0] < whole.shape[0]
    declared, present = truncated_wav(cut, len(data) // 2)
    assert declared == 2 * whole.shape[0] and present == len(data) // 2 - 44
    unknown = tmp_path / "stream.wav"  # a streaming writer's "unknown length": not a truncation
    unknown.write_bytes(data[:40] + (0xFFFFFFFF).to_bytes(4, "little") + data[44:])
    assert truncated_wav(unknown, len(data)) is None
    assert main(["features", str(cut), "-c", "seeded", "--device", "cpu", "-o", str(tmp_path / "out"), "-q"]) == 0
    err = [line for line in capsys.readouterr().err.splitlines() if "truncated" in line]
    assert len(err) == 1 and err[0].startswith("synctalk-audio: warning: audio file ") and "cut.wav" in err[0]


@settings(max_examples=60, deadline=None)
@given(dtype=st.sampled_from([np.float32, np.float64, ">f4", ">f8"]), n=st.integers(1, 3000),
       at=st.floats(0, 1), bad=st.sampled_from([np.nan, np.inf, -np.inf, 1e39, -3.5e38]))
def test_check_waveform_fast_verdict_refuses_every_bad_sample(dtype, n, at, bad):
    """The one-dot-product accept path never lets a NaN, an Inf or a sample beyond float32 through
    (a float32 Inf once compared as <= float32 max² and passed)."""
    x = np.random.default_rng(n).uniform(-1, 1, n).astype(dtype)
    if np.dtype(dtype).itemsize == 4 and abs(bad) > 3.4e38 and np.isfinite(bad):
        bad = np.inf  # float32 cannot hold it: the closest float32 is Inf
    x[min(int(at * n), n - 1)] = bad
    with pytest.raises(sa.AudioError, match="non-finite|beyond float32 range"):
        check_waveform(x)


@pytest.mark.parametrize("x", [
    np.array([3.4e38, -3.4e38, 1.0]),          # x·x beyond float32 max²: the full check accepts it
    np.full(4, 1e30, np.float32),              # float32 x·x overflows: the full check accepts it
    np.float32([0.5, -1.0])[::-1],             # a negative stride
    np.empty(0, np.float64),
])
def test_check_waveform_accepts_large_but_valid_samples(x):
    assert check_waveform(x) is x or np.shares_memory(check_waveform(x), x)
