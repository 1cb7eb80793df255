"""pipeline() and the seed's AudioPipeline facade."""

from __future__ import annotations

import numpy as np
import pytest

import synctalk_audio as sa

from .conftest import golden_input

CLIP = golden_input("speech_16k_mono")


@pytest.fixture(scope="module")
def result(seeded_encoder):
    return sa.pipeline(CLIP, checkpoint=seeded_encoder, device="cpu")


def test_shapes_and_dtypes(result):
    n = result.features.shape[0]
    assert result.mel.shape[0] == 80 and result.mel.dtype == np.float64
    assert result.features.shape == (n, 512) and result.features.dtype == np.float32
    assert result.padded.shape == (n + 2, 512) and result.n_frames == n + 2
    assert result.frames.shape == (n + 2, 32, 16, 16) and result.frames.dtype == np.float32
    assert result.windows.shape == (n, 80, 16)
    assert result.starts.shape == (n,)
    assert result.metadata["n_frames"] == n + 2 and result.metadata["mode"] == "ave"


def test_result_is_immutable(result):
    for arr in (result.mel, result.features, result.padded, result.frames):
        assert not arr.flags.writeable
    with pytest.raises(TypeError):
        result.metadata["mode"] = "x"
    with pytest.raises(AttributeError):
        result.mode = "hubert"


def test_array_input_equals_file_input(result, seeded_encoder):
    wav = sa.load_audio(CLIP)
    again = sa.pipeline(wav, checkpoint=seeded_encoder, device="cpu")
    assert np.array_equal(again.frames, result.frames)


def test_frame_accessor(result):
    assert np.array_equal(result.frame(5), result.frames[5])
    assert result.frame(5, reshape=False).shape == (16, 512)


def test_facade_matches_pipeline_bitwise(result, tmp_path):
    facade = sa.AudioPipeline(sa.seeded_state_dict(), device="cpu", mode="ave", fps=25)
    padded, meta = facade.process_audio_file(CLIP)
    assert np.array_equal(padded, result.padded)
    assert meta["n_frames"] == result.n_frames
    for i in (0, 7, result.n_frames - 1):
        assert np.array_equal(facade.get_frame_features(padded, i), result.frames[i])
    assert facade.get_frame_features(padded, 3, reshape=False).shape == (16, 512)


def test_facade_checkpoint_file(tmp_path, result):
    import torch

    path = tmp_path / "audio_visual_encoder.pth"
    torch.save(sa.seeded_state_dict(), path)
    padded, _ = sa.AudioPipeline(str(path), device="cpu").process_audio_file(str(CLIP))
    assert np.array_equal(padded, result.padded)


def test_edge_context(seeded_encoder, result):
    edge = sa.pipeline(CLIP, checkpoint=seeded_encoder, device="cpu", context="edge")
    assert np.array_equal(edge.padded, result.padded)
    assert np.array_equal(edge.frames[0].reshape(16, 512)[:8], np.repeat(result.padded[:1], 8, axis=0))


@pytest.mark.parametrize("kwargs,err,match", [
    ({"mode": "hubert"}, sa.CheckpointError, "HubertModel"),
    ({"mode": []}, sa.ConfigError, "unknown mode"),
    ({"fps": 1e-300}, sa.ConfigError, "fps"),
    ({"radius": 3}, sa.ConfigError, "radius"),
    ({"mode": "nope"}, sa.ConfigError, "unknown mode"),
    ({"fps": 0}, sa.ConfigError, "fps"),
    ({"fps": -25}, sa.ConfigError, "fps"),
    ({"precision": "sloppy"}, sa.ConfigError, "precision"),
    ({"context": "mirror"}, sa.ConfigError, "context"),
    ({"checkpoint": None}, sa.ConfigError, "checkpoint is required"),
])
def test_bad_arguments(kwargs, err, match, seeded_encoder):
    args = {"checkpoint": seeded_encoder, "device": "cpu", **kwargs}
    with pytest.raises(err, match=match):
        sa.pipeline(CLIP, **args)


def test_too_short_audio(seeded_encoder):
    with pytest.raises(sa.AudioError, match="too short"):
        sa.pipeline(np.zeros(2999, np.float32), checkpoint=seeded_encoder, device="cpu")
    ok = sa.pipeline(np.zeros(3000, np.float32), checkpoint=seeded_encoder, device="cpu")
    assert ok.n_frames == 4


def test_deterministic_across_runs(seeded_encoder, result):
    again = sa.pipeline(CLIP, checkpoint=seeded_encoder, device="cpu")
    assert again.frames.tobytes() == result.frames.tobytes()


def test_seeded_checkpoint_everywhere(result):
    """checkpoint="seeded" works wherever a checkpoint goes, with the UNTRAINED warning."""
    with pytest.warns(UserWarning, match="UNTRAINED"):
        out = sa.pipeline(CLIP, checkpoint="seeded", device="cpu")
    assert np.array_equal(out.frames, result.frames)
    with pytest.warns(UserWarning, match="UNTRAINED"):
        padded, meta = sa.AudioPipeline("seeded", device="cpu").process_audio_file(str(CLIP))
    assert np.array_equal(padded, result.padded)
    with pytest.warns(UserWarning, match="UNTRAINED"):
        rows = sa.encode_batch(result.windows[:3], "seeded", device="cpu")
    assert np.array_equal(rows, result.features[:3])


def test_engine_cache_reuses_a_file_and_reloads_a_changed_one(tmp_path):
    import os

    import torch

    path = tmp_path / "audio_visual_encoder.pth"
    torch.save(sa.seeded_state_dict(0), path)
    a = sa.resolve_encoder(path, device="cpu")
    assert sa.resolve_encoder(str(path), device="cpu") is a  # the one-line call does not reload
    assert sa.resolve_encoder(path, device="cpu", precision="fast") is not a
    torch.save(sa.seeded_state_dict(1), path)
    os.utime(path, ns=(0, os.stat(path).st_mtime_ns + 10**9))
    b = sa.resolve_encoder(path, device="cpu")
    assert b is not a and b.provenance["state_dict_sha256"] != a.provenance["state_dict_sha256"]


def test_features_are_sealed_picklable_and_compared_by_identity(seeded_encoder):
    """Features arrays cannot be made writeable again (setflags once succeeded: they were
    read-only views of writeable memory); pickle and deepcopy round-trip (the metadata proxy once
    refused), with frames rebuilt as a view of padded; == is identity, never numpy's ambiguity."""
    import copy
    import pickle

    out = sa.pipeline(golden_input("speech_16k_mono"), checkpoint=seeded_encoder, device="cpu")
    for name in ("mel", "features", "padded", "frames"):
        arr = getattr(out, name)
        for view in (arr, arr.view(), arr[1:]):
            with pytest.raises(ValueError):
                view.setflags(write=True)
    for twin in (pickle.loads(pickle.dumps(out)), copy.deepcopy(out)):
        for name in ("mel", "features", "padded", "frames"):
            np.testing.assert_array_equal(getattr(twin, name), getattr(out, name))
        assert not twin.frames.flags.owndata and twin.metadata == out.metadata  # a view, as built
        with pytest.raises(ValueError):
            twin.padded.setflags(write=True)
        assert twin != out and twin == twin
    assert len(pickle.dumps(out)) < 4 * out.padded.nbytes + out.mel.nbytes  # frames not stored
