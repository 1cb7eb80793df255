"""Frozen config dataclasses and presets."""

from __future__ import annotations

import dataclasses

import pytest

import synctalk_audio as sa


def test_presets():
    assert sa.SYNCTALK_2D.pad_mode == "constant" and sa.WAV2LIP.pad_mode == "reflect"
    assert sa.PRESETS["synctalk_2d"] is sa.SYNCTALK_2D
    assert sa.SYNCTALK_2D.n_freqs == 401 and sa.SYNCTALK_2D.frames_per_second == 80.0
    assert hash(sa.SYNCTALK_2D) == hash(sa.MelConfig())


def test_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        sa.SYNCTALK_2D.n_fft = 1024
    with pytest.raises(TypeError):
        sa.MODES["new"] = (1,)


@pytest.mark.parametrize("kwargs,match", [
    ({"n_fft": 0}, "n_fft"),
    ({"win_length": 1000}, "win_length"),
    ({"fmax": 9000}, "fmax"),
    ({"fmin": -1}, "fmin"),
    ({"preemphasis": 1.0}, "preemphasis"),
    ({"pad_mode": "edge"}, "pad_mode"),
    ({"min_level_db": 10}, "min_level_db"),
    ({"max_abs_value": 0}, "max_abs_value"),
])
def test_invalid_mel_config(kwargs, match):
    with pytest.raises(sa.ConfigError, match=match):
        sa.MelConfig(**kwargs)


def test_modes_and_radii():
    assert sa.mode_shape("wenet") == (256, 16, 32) and sa.MODE_FPS["wenet"] == 20
    assert {m: sa.mode_shape(m, 4) for m in sa.MODES} == {"ave": (16, 16, 16), "hubert": (16, 32, 32),
                                                         "wenet": (128, 16, 32)}
    assert all(sa.mode_shape(m) == s for m, s in sa.MODES.items())
    with pytest.raises(sa.ConfigError, match="radius"):
        sa.mode_shape("ave", 6)
    with pytest.raises(sa.ConfigError, match="unknown mode"):
        sa.mode_shape(["ave"])


def test_error_family():
    for err in (sa.AudioError, sa.CheckpointError, sa.ConfigError, sa.ShapeError, sa.OutputError, sa.StreamError):
        assert issubclass(err, sa.SyncTalkAudioError) and issubclass(err, ValueError)


def test_import_does_not_load_torch():
    import subprocess
    import sys

    code = "import sys, synctalk_audio; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("change,match", [
    (dict(sample_rate=22050), "80 mel bands at 80 columns per second"),  # once: 132 frames for 96, silently
    (dict(hop_length=160), "gives 80 bands at 100"),
    (dict(n_mels=64), "gives 64 bands"),                                   # once: a raw torch error in a stream
])
def test_the_encoder_refuses_a_mel_it_cannot_take(change, match):
    import dataclasses

    import numpy as np

    import synctalk_audio as sa

    config = dataclasses.replace(sa.SYNCTALK_2D, **change)
    sa.melspectrogram(np.zeros(3200), config)  # the mel itself is fine
    with pytest.raises(sa.ConfigError, match=match):
        sa.pipeline(np.zeros(16000, np.float32), checkpoint="seeded", device="cpu", config=config)
    with pytest.raises(sa.ConfigError, match=match):
        sa.StreamingPipeline(checkpoint="seeded", device="cpu", config=config)


def test_n_fft_must_be_even():
    import synctalk_audio as sa

    with pytest.raises(sa.ConfigError, match="n_fft must be even"):
        sa.MelConfig(n_fft=801, win_length=800)
