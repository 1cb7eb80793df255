"""Every stage against the independent librosa 0.10.1 oracle (golden/make_golden.py).

Tolerance 1e-5 absolute everywhere (the promise); frame counts exactly equal.
"""

from __future__ import annotations

import numpy as np
import pytest

import synctalk_audio as sa
from synctalk_audio.config import SYNCTALK_2D, WAV2LIP
from synctalk_audio.dsp import n_mel_frames

from .conftest import CLIPS, FULL_CLIPS, GOLDEN, MANIFEST, golden_array, golden_input

TOL = 1e-5


def _maxdiff(a: np.ndarray, b: np.ndarray) -> float:
    assert a.shape == b.shape, (a.shape, b.shape)
    return float(np.max(np.abs(a.astype(np.float64) - b.astype(np.float64)))) if a.size else 0.0


@pytest.fixture(scope="module")
def loaded():
    return {clip: sa.load_audio(golden_input(clip)) for clip in CLIPS}


@pytest.mark.parametrize("clip", CLIPS)
def test_samples(clip, loaded):
    ours = loaded[clip]
    ref = golden_array(clip, "samples.npy")
    assert ours.dtype == np.float32 and ours.shape == ref.shape
    assert _maxdiff(ours, ref) <= TOL


def test_mel_basis():
    ref = np.load(GOLDEN / "out" / "mel_basis.npy")
    ours = sa.mel_basis(sr=16000, n_fft=800, n_mels=80, fmin=55, fmax=7600)
    assert ours.dtype == np.float32 and ref.dtype == np.float32
    assert _maxdiff(ours, ref) <= 1e-9


@pytest.mark.parametrize("clip", FULL_CLIPS)
def test_preemphasis_and_stft(clip):
    samples = golden_array(clip, "samples.npy")
    pre = sa.preemphasis(samples, 0.97)
    assert pre.dtype == np.float64
    assert _maxdiff(pre, golden_array(clip, "preemph.npy")) <= 1e-12
    mag = np.abs(sa.stft(pre, n_fft=800, hop_length=200, win_length=800))
    ref = golden_array(clip, "stft_mag.npy")
    assert mag.shape == ref.shape == (401, n_mel_frames(samples.shape[0]))
    assert _maxdiff(mag, ref) <= 1e-9


@pytest.mark.parametrize("clip", FULL_CLIPS)
@pytest.mark.parametrize("preset,name", [(SYNCTALK_2D, "mel.npy"), (WAV2LIP, "mel_reflect.npy")])
def test_melspectrogram(clip, preset, name):
    mel = sa.melspectrogram(golden_array(clip, "samples.npy"), preset)
    ref = golden_array(clip, name)
    assert mel.dtype == np.float64 and mel.shape == ref.shape
    assert _maxdiff(mel, ref) <= 1e-9


@pytest.mark.parametrize("clip", FULL_CLIPS)
@pytest.mark.parametrize("fps", [25, 20])
def test_windows(clip, fps):
    mel = golden_array(clip, "mel.npy")
    ref = golden_array(clip, f"windows_fps{fps}.npy")
    assert sa.frame_count(mel.shape[1], fps) == ref.shape[0] == MANIFEST["clips"][clip][f"N_fps{fps}"]
    win = sa.window(mel, fps=fps)
    assert win.dtype == np.float32
    assert _maxdiff(win, ref) == 0.0


@pytest.mark.parametrize("clip", FULL_CLIPS)
def test_features_padded_frames(clip, seeded_encoder):
    result = sa.pipeline(golden_input(clip), checkpoint=seeded_encoder, device="cpu")
    ref_feat = golden_array(clip, "features.npy")
    ref_pad = golden_array(clip, "padded.npy")
    ref_frames = golden_array(clip, "frames_ave.npy")
    assert result.features.shape == ref_feat.shape
    assert result.padded.shape[0] == ref_feat.shape[0] + 2 == MANIFEST["clips"][clip]["n_video_frames"]
    assert _maxdiff(result.mel, golden_array(clip, "mel.npy")) <= TOL
    assert _maxdiff(result.features, ref_feat) <= TOL
    assert _maxdiff(result.padded, ref_pad) <= TOL
    assert _maxdiff(result.frames, ref_frames) <= TOL


def test_seeded_weights_match_oracle_hash():
    from synctalk_audio.encoder import seeded_state_dict, state_dict_sha256

    assert state_dict_sha256(seeded_state_dict(0)) == MANIFEST["weights"]["sha256"]


@pytest.mark.parametrize("mode,name,aud", [("hubert", "frames_hubert.npy", "aud_hu.npy"),
                                           ("wenet", "frames_wenet.npy", "aud_wenet.npy")])
def test_precomputed_modes(mode, name, aud):
    clip = next(c for c in FULL_CLIPS if (golden_input(c).parent.parent / "out" / c / name).exists())
    feats = golden_array(clip, aud)
    frames = sa.frames_for_mode(feats, mode)
    ref = golden_array(clip, name)
    assert frames.shape == ref.shape
    assert _maxdiff(frames, ref) == 0.0


def test_too_short_clip_is_a_clear_error():
    wav = sa.load_audio(golden_input("too_short_0p15s_16k"))
    assert wav.shape == golden_array("too_short_0p15s_16k", "samples.npy").shape
    with pytest.raises(sa.AudioError, match="too short"):
        sa.window(sa.melspectrogram(wav))
