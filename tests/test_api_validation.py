"""Bad arguments at the public API: one library exception, one line naming the argument and its value.

Every public function of the front end (stft, mel_basis, amp_to_db, normalize, preemphasis,
MelWindows indexing, encode_batch, mel_step/mel_init, load_audio/resample, frame_count,
window_starts) refuses a bad argument with ConfigError (settings, keywords), ShapeError (arrays)
or AudioError (audio) — never a raw TypeError/ValueError/ZeroDivisionError/IndexError/MemoryError
from numpy, and never a silently wrong, NaN or empty result.
"""

from __future__ import annotations

import math
import re

import numpy as np
import pytest

import synctalk_audio as sa
from synctalk_audio.errors import SyncTalkAudioError

NAN, INF = float("nan"), float("inf")
WAV = np.random.default_rng(0).standard_normal(4000).astype(np.float32) * 0.1


def _raises(error, name, value, call):
    """``call()`` raises exactly ``error`` (a library error), on one line naming ``name`` and ``value``."""
    with pytest.raises(SyncTalkAudioError) as info:
        call()
    assert type(info.value) is error, f"{type(info.value).__name__}: {info.value}"
    msg = str(info.value)
    assert "\n" not in msg and name in msg, msg
    if value is not None and not isinstance(value, np.ndarray):
        assert repr(value) in msg or str(value) in msg, msg
    return msg


# ---------------------------------------------------------------------------------------- stft


@pytest.mark.parametrize("value", [0, -5, 800.0, "800", 10**9, 1 << 17, True, None, NAN])
def test_stft_bad_n_fft(value):
    _raises(sa.ConfigError, "n_fft", value, lambda: sa.stft(WAV, n_fft=value, win_length=400))


@pytest.mark.parametrize("value", [0, -1, 2.5, "200", None, False])
def test_stft_bad_hop_length(value):
    _raises(sa.ConfigError, "hop_length", value, lambda: sa.stft(WAV, hop_length=value))


@pytest.mark.parametrize("value", [0, -400, 801, 400.0, "400", None])
def test_stft_bad_win_length(value):
    _raises(sa.ConfigError, "win_length", value, lambda: sa.stft(WAV, win_length=value))


def test_stft_numpy_ints_accepted_and_unchanged():
    ref = sa.stft(WAV)
    assert np.array_equal(sa.stft(WAV, n_fft=np.int64(800), hop_length=np.int32(200), win_length=np.int16(800)), ref)


# ------------------------------------------------------------------------------------ mel_basis


@pytest.mark.parametrize("kwargs,name", [
    (dict(n_fft=0), "n_fft"),
    (dict(n_fft=-800), "n_fft"),
    (dict(n_fft=10**8), "n_fft"),
    (dict(n_fft="800"), "n_fft"),
    (dict(n_fft=800.0), "n_fft"),
    (dict(n_fft=np.array([800])), "n_fft"),  # unhashable: once a raw TypeError from the cache
    (dict(sr="16000"), "sr"),
    (dict(sr=0), "sr"),
    (dict(sr=16000.0), "sr"),
    (dict(sr=10**9), "sr"),
    (dict(n_mels=0), "n_mels"),
    (dict(n_mels=-1), "n_mels"),
    (dict(n_mels=2.5), "n_mels"),
    (dict(n_mels=True), "n_mels"),
    (dict(n_mels=10**6), "n_mels"),
    (dict(n_mels=402), "n_mels"),  # more bands than the 401 frequency bins
    (dict(fmax=None), "fmax"),
    (dict(fmax=NAN), "fmax"),
    (dict(fmax="7600"), "fmax"),
    (dict(fmin=INF), "fmin"),
    (dict(fmin=None), "fmin"),
    (dict(fmin=-1.0), "fmin"),
    (dict(fmin=8000.0, fmax=7600.0), "fmin"),
    (dict(fmin=7600.0), "fmin"),
    (dict(fmax=9000.0), "fmax"),
    (dict(htk="yes"), "htk"),
])
def test_mel_basis_bad_arguments(kwargs, name):
    _raises(sa.ConfigError, name, kwargs[name], lambda: sa.mel_basis(**kwargs))


def test_mel_basis_still_cached_and_numpy_scalars_accepted():
    assert sa.mel_basis() is sa.mel_basis()
    assert np.array_equal(sa.mel_basis(sr=np.int64(16000), n_fft=np.int64(800), n_mels=np.int32(80),
                                       fmin=np.float64(55.0), fmax=np.float32(7600.0)), sa.mel_basis())


# ---------------------------------------------------------------------------- amp_to_db, normalize


@pytest.mark.parametrize("kwargs,name", [
    (dict(ref_level_db=NAN), "ref_level_db"),
    (dict(ref_level_db=INF), "ref_level_db"),
    (dict(ref_level_db="20"), "ref_level_db"),
    (dict(ref_level_db=None), "ref_level_db"),
    (dict(min_level_db=NAN), "min_level_db"),
    (dict(min_level_db=-INF), "min_level_db"),
    (dict(min_level_db=0), "min_level_db"),
    (dict(min_level_db=10.0), "min_level_db"),
    (dict(min_level_db="-100"), "min_level_db"),
])
def test_amp_to_db_bad_keywords(kwargs, name):
    _raises(sa.ConfigError, name, kwargs[name], lambda: sa.amp_to_db(np.ones(4), **kwargs))


def test_amp_to_db_refuses_negative_amplitudes():
    _raises(sa.ShapeError, "amplitude", None, lambda: sa.amp_to_db(np.array([0.5, -0.25])))
    assert sa.amp_to_db(np.array([0, 3], np.uint8)).shape == (2,)  # unsigned: nothing to check


@pytest.mark.parametrize("kwargs,name", [
    (dict(min_level_db=0), "min_level_db"),
    (dict(min_level_db=0.0), "min_level_db"),
    (dict(min_level_db=NAN), "min_level_db"),
    (dict(min_level_db=-INF), "min_level_db"),
    (dict(min_level_db="-100"), "min_level_db"),
    (dict(max_abs_value=0), "max_abs_value"),
    (dict(max_abs_value=-4.0), "max_abs_value"),
    (dict(max_abs_value=NAN), "max_abs_value"),
    (dict(max_abs_value=INF), "max_abs_value"),
    (dict(max_abs_value="4"), "max_abs_value"),
    (dict(symmetric="no"), "symmetric"),
    (dict(clip=None), "clip"),
])
def test_normalize_bad_keywords(kwargs, name):
    _raises(sa.ConfigError, name, kwargs[name], lambda: sa.normalize(np.array([-50.0, 0.0]), **kwargs))


def test_normalize_and_amp_to_db_numpy_scalars_unchanged():
    S = np.array([-120.0, -50.0, 0.0, 10.0])
    assert np.array_equal(sa.normalize(S, min_level_db=np.float64(-100.0), max_abs_value=np.float64(4.0),
                                       symmetric=np.bool_(True), clip=np.bool_(True)), sa.normalize(S))
    x = np.array([0.0, 1e-6, 1.0, 10.0])
    assert np.array_equal(sa.amp_to_db(x, ref_level_db=np.float64(20.0), min_level_db=-100), sa.amp_to_db(x))


# ----------------------------------------------------------------------------------- preemphasis


@pytest.mark.parametrize("k", ["0.97", None, np.array([0.9, 0.9]), NAN, INF, 1.0, -0.1, True, 1 + 0j])
def test_preemphasis_bad_coefficient(k):
    _raises(sa.ConfigError, "preemphasis", k, lambda: sa.preemphasis(WAV, k))


def test_preemphasis_numpy_coefficient():
    assert np.array_equal(sa.preemphasis(WAV, np.float64(0.97)), sa.preemphasis(WAV, 0.97))


# ------------------------------------------------------------------------------- MelWindows[...]


@pytest.fixture(scope="module")
def wins():
    return sa.window(np.random.default_rng(1).uniform(-4, 4, (80, 81)))


@pytest.mark.parametrize("key", ["len", "-len-1", 10**20, -(10**20), np.int64(22)])
def test_melwindows_index_out_of_range(wins, key):
    n = len(wins)
    key = {"len": n, "-len-1": -n - 1}.get(key, key) if isinstance(key, str) else key
    msg = _raises(sa.ShapeError, "index", key, lambda: wins[key])
    assert str(n) in msg


@pytest.mark.parametrize("key", [1.5, "a", True, np.bool_(False), None, Ellipsis, np.array([0.5]), {"a": 1}])
def test_melwindows_bad_index_type(wins, key):
    _raises(sa.ConfigError, "index", None, lambda: wins[key])


def test_melwindows_bad_array_index_and_tuple(wins):
    _raises(sa.ShapeError, "index", None, lambda: wins[np.array([0, 99])])
    _raises(sa.ShapeError, "index", None, lambda: wins[0, 100])
    _raises(sa.ConfigError, "index", None, lambda: wins[::0.5])


def test_melwindows_valid_indexing_unchanged(wins):
    full = np.asarray(wins)
    n = len(wins)
    assert np.array_equal(wins[-1], full[-1]) and np.array_equal(wins[-n], full[0])
    assert np.array_equal(wins[np.int64(2)], full[2]) and np.array_equal(wins[np.uint8(3)], full[3])
    assert np.array_equal(wins[1:3], full[1:3]) and np.array_equal(wins[::-2], full[::-2])
    assert np.array_equal(wins[np.array([0, 2])], full[[0, 2]]) and np.array_equal(wins[[1, -1]], full[[1, -1]])
    assert np.array_equal(wins[0, :, 0], full[0, :, 0]) and np.array_equal(wins[1:3, 5], full[1:3, 5])
    mask = np.zeros(n, bool)
    mask[[1, 4]] = True
    assert np.array_equal(wins[mask], full[mask])
    assert wins[[]].shape == (0, 80, 16)


# ---------------------------------------------------------------------------------- encode_batch


class FakeEngine:
    """An ave engine of the seam that needs no torch: zero rows, counting its calls."""

    mode, precision, batch_invariant, batch_size, compute = "ave", "exact", False, 8, "fake"
    row_shape = (512,)
    provenance: dict = {}

    def __init__(self, device="cpu"):
        self.device = device
        self.calls = 0

    def __call__(self, batch):
        self.calls += 1
        return np.zeros((len(batch), 512), np.float32)


@pytest.mark.parametrize("margin", [-1, 1.5, "2", 10**9, True, None, NAN])
def test_encode_batch_bad_margin(wins, margin):
    engine = FakeEngine()
    msg = _raises(sa.ConfigError, "margin", margin, lambda: sa.encode_batch(wins, engine, margin=margin))
    assert "positive" not in msg and "got 0" not in msg and "got 2.5" not in msg
    assert engine.calls == 0


def test_encode_batch_margin_ok(wins):
    out = sa.encode_batch(wins, FakeEngine(), margin=np.int64(9))
    assert out.shape == (len(wins), 512) and out.base.shape == (len(wins) + 18, 512)
    assert sa.encode_batch(wins, FakeEngine(), margin=0).shape == (len(wins), 512)


@pytest.mark.parametrize("device", ["gpu", "cuda", "cuda:1", "tpu"])
def test_encode_batch_device_differs_from_engine(wins, device):
    engine = FakeEngine("cpu")
    msg = _raises(sa.ConfigError, "device", device, lambda: sa.encode_batch(wins, engine, device=device))
    assert engine.calls == 0 and ("'cpu'" in msg or "unknown device" in msg)


@pytest.mark.parametrize("engine_device,device", [("cpu", "cpu"), ("cpu", "auto"), ("cuda:0", "cuda"),
                                                  ("cuda", "cuda:0"), ("cuda:1", "cuda:1")])
def test_encode_batch_matching_device(wins, engine_device, device):
    assert sa.encode_batch(wins, FakeEngine(engine_device), device=device).shape == (len(wins), 512)


def test_encode_batch_wrong_band_count_names_80_bands():
    w79 = sa.window(np.zeros((79, 81)))
    msg = _raises(sa.ShapeError, "80", None, lambda: sa.encode_batch(w79, FakeEngine()))
    assert "79" in msg


# -------------------------------------------------------------------------- mel_init, mel_step


@pytest.mark.parametrize("config", [None, "synctalk_2d", {}])
def test_mel_init_bad_config(config):
    _raises(sa.ConfigError, "config", None, lambda: sa.mel_init(config))


@pytest.mark.parametrize("carry", [None, (0, None), "carry"])
def test_mel_step_bad_carry(carry):
    _raises(sa.ConfigError, "carry", None, lambda: sa.mel_step(carry, WAV[:320]))


def test_mel_step_bad_config_and_final():
    carry = sa.mel_init()
    _raises(sa.ConfigError, "config", None, lambda: sa.mel_step(carry, WAV[:320], None))
    _raises(sa.ConfigError, "final", "yes", lambda: sa.mel_step(carry, WAV[:320], final="yes"))


@pytest.mark.parametrize("samples,match", [
    (np.array([0.0, NAN, 0.1], np.float32), "non-finite"),
    (np.array([0.0, INF], np.float64), "non-finite"),
    (np.zeros(320, np.int16), "integer samples"),
    (np.zeros((2, 160), np.float32), "1-D"),
    (np.array([0.0, 1e300]), "float32 range"),
    (np.array(["a"]), "real samples"),
])
def test_mel_step_refuses_audio_offline_refuses(samples, match):
    carry = sa.mel_init()
    with pytest.raises(sa.AudioError, match=match):
        sa.mel_step(carry, samples)
    with pytest.raises(sa.AudioError, match=match):  # the same check as offline
        sa.melspectrogram(samples)


def test_mel_step_large_finite_float32_accepted_and_unchanged():
    """Large finite samples overflow the cheap first check (x·x): the full check takes them."""
    x = np.full(400, 1e20, np.float32)
    carry, cols = sa.mel_step(sa.mel_init(), x, final=True)
    assert cols.shape == (80, 3) and np.isfinite(cols).all()
    np.testing.assert_allclose(cols, sa.melspectrogram(x), rtol=0, atol=1e-12)


def test_mel_step_blocks_equal_offline():
    carry, parts = sa.mel_init(), []
    for lo in range(0, WAV.shape[0], 320):
        carry, cols = sa.mel_step(carry, WAV[lo:lo + 320])
        parts.append(cols)
    carry, cols = sa.mel_step(carry, np.empty(0, np.float32), final=True)
    parts.append(cols)
    # to BLAS round-off: the mel product of 2 columns and of 21 may round differently
    np.testing.assert_allclose(np.concatenate(parts, axis=1), sa.melspectrogram(WAV), rtol=0, atol=1e-12)


# ------------------------------------------------------------------------- load_audio, resample


@pytest.mark.parametrize("sr", [10**9, 999, 768001, 16000.5, "16000", None])
def test_load_audio_rate_bounded(tmp_path, sr):
    _raises(sa.ConfigError, "sr", sr, lambda: sa.load_audio(tmp_path / "x.wav", sr=sr))
    _raises(sa.ConfigError, "sr", sr, lambda: sa.load_channel(tmp_path / "x.wav", sr=sr))


@pytest.mark.parametrize("name", ["orig_sr", "target_sr"])
@pytest.mark.parametrize("value", [0, -1, "44100", 44100.0, None, 10**9, True])
def test_resample_bad_rates(name, value):
    rates = {"orig_sr": 44100, "target_sr": 16000, name: value}
    _raises(sa.ConfigError, name, value, lambda: sa.resample(WAV, **rates))


@pytest.mark.parametrize("wav,match", [
    (None, "real samples"),
    (np.zeros((441, 2), np.float32), "1-D"),
    (np.array([0.0, NAN], np.float32), "non-finite"),
    (np.zeros(441, np.float16), "float16"),
    (np.zeros(441, np.int64), "int64"),
])
def test_resample_bad_audio(wav, match):
    with pytest.raises(sa.AudioError, match=match):
        sa.resample(wav, 44100, 16000)


def test_resample_valid_unchanged():
    x = np.random.default_rng(2).standard_normal(4410).astype(np.float32)
    assert sa.resample(x, 44100, 44100) is x
    assert sa.resample(x, np.int64(44100), 16000).shape == (1600,)
    assert sa.resample(np.zeros(441, np.int16), 44100, 16000).dtype == np.int16


# -------------------------------------------------------------------- frame_count, window_starts


@pytest.mark.parametrize("T", [None, "100", 100.0, -1000, -1, True, 10**40, np.array([100])])
@pytest.mark.parametrize("fn", [sa.frame_count, sa.window_starts])
def test_frame_count_bad_length(fn, T):
    _raises(sa.ConfigError, "n_mel_frames", T, lambda: fn(T, 25))


@pytest.mark.parametrize("kwargs,name", [(dict(mel_step=0), "mel_step"), (dict(mel_step=1.5), "mel_step"),
                                         (dict(mel_fps=0), "mel_fps"), (dict(mel_fps=NAN), "mel_fps"),
                                         (dict(mel_fps="80"), "mel_fps")])
def test_frame_count_bad_keywords(kwargs, name):
    _raises(sa.ConfigError, name, kwargs[name], lambda: sa.frame_count(100, 25, **kwargs))


def test_frame_count_valid_unchanged():
    assert sa.frame_count(np.int64(81), 25) == sa.frame_count(81, 25) == 22
    assert sa.window_starts(np.int32(40), 25).tolist() == [0, 3, 6, 9, 12, 16, 19, 22, 24]
    with pytest.raises(sa.AudioError, match="too short"):
        sa.frame_count(0, 25)


# -------------------------------------------------------------------------- messages: one line


def test_messages_name_the_value_not_a_shifted_one():
    """margin=-1 once said "got 0" and 1.5 "got 2.5" (the check ran on margin + 1)."""
    msg = _raises(sa.ConfigError, "margin", -1, lambda: sa.encode_batch(np.zeros((2, 80, 16), np.float32),
                                                                         FakeEngine(), margin=-1))
    assert re.search(r"got -1\b", msg)
    assert math.isfinite(float(sa.amp_to_db(np.array(1.0))))
