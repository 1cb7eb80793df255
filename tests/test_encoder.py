"""AudioEncoder layout, checkpoint loading (every spelling and every bad case), encode_batch."""

from __future__ import annotations

import os
import pickle

import numpy as np
import pytest
import torch

import synctalk_audio as sa
from synctalk_audio.encoder import AudioEncoder, load_encoder, resolve_device, state_dict_sha256
from synctalk_audio.engines import encode_batch
from synctalk_audio.seeded import seeded_state_dict

from .conftest import golden_array


@pytest.fixture(scope="module")
def windows():
    return golden_array("speech_16k_mono", "windows_fps25.npy")[:9]


def test_parameter_count_and_keys():
    model = AudioEncoder()
    assert sum(p.numel() for p in model.parameters()) == 2_812_672
    keys = list(model.state_dict())
    assert keys[0] == "audio_encoder.0.conv_block.0.weight"
    assert keys[-1] == "audio_encoder.12.conv_block.1.num_batches_tracked"
    assert list(seeded_state_dict()) == [k[len("audio_encoder."):] for k in keys]


def test_seeded_weights_deterministic():
    assert state_dict_sha256(seeded_state_dict(0)) == state_dict_sha256(seeded_state_dict(0))
    assert state_dict_sha256(seeded_state_dict(0)) != state_dict_sha256(seeded_state_dict(1))


@pytest.mark.parametrize("wrap", [
    lambda sd: sd,
    lambda sd: {f"audio_encoder.{k}": v for k, v in sd.items()},
    lambda sd: {f"module.audio_encoder.{k}": v for k, v in sd.items()},
    lambda sd: {"state_dict": sd},
    lambda sd: {"model": {f"audio_encoder.{k}": v for k, v in sd.items()}, "epoch": 3},
])
def test_checkpoint_spellings(tmp_path, wrap, windows, seeded_encoder):
    path = tmp_path / "ckpt.pth"
    torch.save(wrap(seeded_state_dict()), path)
    enc = load_encoder(path, device="cpu")
    assert not enc.training
    assert np.array_equal(encode_batch(windows, enc, device="cpu"), encode_batch(windows, seeded_encoder, device="cpu"))


class _Evil:
    def __reduce__(self):
        return (os.system, ("touch PWNED_BY_PICKLE",))


def _bad_state(kind):
    sd = seeded_state_dict()
    if kind == "wrong_keys":
        sd["extra.weight"] = torch.zeros(1)
        del sd["0.conv_block.0.weight"]
    elif kind == "wrong_shape":
        sd["3.conv_block.0.weight"] = torch.zeros(64, 32, 5, 5)
    elif kind == "nonfinite":
        sd["5.conv_block.1.running_var"][0] = float("nan")
    elif kind == "empty":
        sd = {}
    elif kind == "not_tensor":
        sd["0.conv_block.0.bias"] = [0.0] * 32
    elif kind == "list":
        sd = [1, 2, 3]
    return sd


@pytest.mark.parametrize("kind,match", [
    ("wrong_keys", "missing keys: 0.conv_block.0.weight.*unexpected keys: extra.weight"),
    ("wrong_shape", r"3.conv_block.0.weight has shape \(64, 32, 5, 5\), expected \(64, 32, 3, 3\)"),
    ("nonfinite", "NaN or Inf"),
    ("empty", "empty state dict"),
    ("not_tensor", "expected a tensor"),
    ("list", "not a state dict"),
])
def test_bad_state_dicts(tmp_path, kind, match):
    path = tmp_path / "bad.pth"
    torch.save(_bad_state(kind), path)
    with pytest.raises(sa.CheckpointError, match=match) as info:
        load_encoder(path)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("maker,match", [
    (lambda p: None, "not found"),
    (lambda p: p.mkdir(), "directory"),
    (lambda p: p.write_bytes(b""), "empty"),
    (lambda p: p.write_bytes(np.random.default_rng(0).bytes(2048)), "cannot load checkpoint"),
    (lambda p: p.write_text("hello"), "cannot load checkpoint"),
])
def test_bad_checkpoint_files(tmp_path, maker, match):
    path = tmp_path / "c.pth"
    maker(path)
    with pytest.raises(sa.CheckpointError, match=match):
        load_encoder(path)


@pytest.mark.parametrize("saver", ["torch", "pickle"])
def test_code_running_pickle_is_refused(tmp_path, monkeypatch, saver):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "evil.pth"
    payload = {"0.conv_block.0.weight": _Evil()}
    if saver == "torch":
        torch.save(payload, path)
    else:
        path.write_bytes(pickle.dumps(payload))
    with pytest.raises(sa.CheckpointError, match="cannot load checkpoint"):
        load_encoder(path)
    assert not (tmp_path / "PWNED_BY_PICKLE").exists()


def test_encode_batch_shapes_and_batch_invariance(windows, seeded_encoder):
    ref = encode_batch(windows, seeded_encoder, batch_size=64, device="cpu")
    assert ref.shape == (9, 512) and ref.dtype == np.float32
    for bs in (1, 4, 9):
        assert np.abs(encode_batch(windows, seeded_encoder, batch_size=bs, device="cpu") - ref).max() <= 1e-6
    four_d = encode_batch(windows[:, None], seeded_encoder, device="cpu")
    assert np.array_equal(four_d, ref)
    assert encode_batch(np.zeros((0, 80, 16), np.float32), seeded_encoder, device="cpu").shape == (0, 512)


@pytest.mark.parametrize("bad,err", [
    (np.zeros((2, 80, 15), np.float32), sa.ShapeError),
    (np.zeros((2, 2, 80, 16), np.float32), sa.ShapeError),
    (np.full((2, 80, 16), np.nan, np.float32), sa.ShapeError),
    (np.zeros((2, 80, 16), np.int32), sa.ShapeError),
])
def test_encode_batch_bad_input(bad, err, seeded_encoder):
    with pytest.raises(err):
        encode_batch(bad, seeded_encoder, device="cpu")


@pytest.mark.parametrize("bs", [0, -1, 2.5, True])
def test_encode_batch_bad_batch_size(bs, seeded_encoder):
    with pytest.raises(sa.ConfigError, match="batch_size"):
        encode_batch(np.zeros((1, 80, 16), np.float32), seeded_encoder, batch_size=bs, device="cpu")


def test_resolve_device():
    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(sa.ConfigError, match="device"):
        resolve_device("tpu9")
    if not torch.cuda.is_available():
        with pytest.raises(sa.ConfigError, match="CUDA is not available"):
            resolve_device("cuda")


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_matches_cpu(windows):
    cpu = encode_batch(windows, load_encoder(seeded_state_dict(), device="cpu"), device="cpu")
    gpu = encode_batch(windows, load_encoder(seeded_state_dict(), device="cuda"), device="cuda")
    assert np.abs(cpu - gpu).max() <= 1e-6 * max(1.0, float(np.abs(cpu).max())) * 10
