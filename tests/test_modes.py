"""The three modes end to end through the one seam: pipeline(), the seed API and the CLI run
hubert and wenet on real speech with the UNTRAINED stand-in models, in both radius generations;
their frames equal upstream's per-frame loop."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import synctalk_audio as sa

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

ROOT = Path(__file__).resolve().parents[1]
CLIP = ROOT / "synctalk_audio" / "data" / "demo_speech.wav"
STEREO_44K = ROOT / "golden" / "inputs" / "speech_44k_stereo_24bit.wav"


@pytest.fixture(scope="module")
def wenet_model(tmp_path_factory) -> Path:
    from synctalk_audio.wenet import write_standin_wenet_onnx

    return write_standin_wenet_onnx(tmp_path_factory.mktemp("wenet") / "encoder.onnx", seed=0)


@pytest.fixture(scope="module")
def hubert_dir(tmp_path_factory) -> Path:
    pytest.importorskip("transformers")
    from synctalk_audio.hubert import write_standin_hubert

    return write_standin_hubert(tmp_path_factory.mktemp("hubert") / "standin", seed=0)


@pytest.fixture(scope="module")
def checkpoints(wenet_model, hubert_dir) -> dict[str, Path]:
    return {"wenet": wenet_model, "hubert": hubert_dir}


def upstream_frames(rows: np.ndarray, radius: int, shape: tuple[int, ...]) -> np.ndarray:
    """Upstream's per-frame loop: rows [i - r, i + r) with zero rows outside, raw reshape."""
    flat = rows.reshape(rows.shape[0], -1)
    out = []
    for i in range(flat.shape[0]):
        win = np.zeros((2 * radius, flat.shape[1]), flat.dtype)
        for k, j in enumerate(range(i - radius, i + radius)):
            if 0 <= j < flat.shape[0]:
                win[k] = flat[j]
        out.append(win.reshape(shape))
    return np.stack(out)


@pytest.mark.parametrize("mode", ["hubert", "wenet"])
@pytest.mark.parametrize("radius", [8, 4])
def test_pipeline_frames_equal_the_upstream_loop(mode, radius, checkpoints):
    out = sa.pipeline(CLIP, checkpoint=checkpoints[mode], mode=mode, radius=radius, device="cpu")
    shape = sa.mode_shape(mode, radius)
    assert out.frames.shape == (out.features.shape[0], *shape)
    assert out.features.shape[1:] == {"hubert": (2, 1024), "wenet": (16, 512)}[mode]
    np.testing.assert_array_equal(out.frames, upstream_frames(out.features, radius, shape))
    assert out.fps == sa.MODE_FPS[mode] and out.metadata["radius"] == radius
    assert not out.frames.flags.writeable


def test_row_counts_follow_the_upstream_formulas(checkpoints):
    wav = sa.load_channel(CLIP, 16000)
    n = wav.shape[0]
    hub = sa.pipeline(CLIP, checkpoint=checkpoints["hubert"], mode="hubert", device="cpu")
    assert hub.features.shape[0] == ((n - 80) // 320) // 2
    wen = sa.pipeline(CLIP, checkpoint=checkpoints["wenet"], mode="wenet", device="cpu")
    f = 1 + (n + 10720 - 400) // 160
    assert wen.features.shape[0] == 1 + -(-max(0, f - 67) // 5)
    assert wen.mel.shape == (f, 80)  # the Kaldi fbank


def test_pipeline_equals_the_front_end_functions(checkpoints):
    from synctalk_audio.hubert import hubert_features
    from synctalk_audio.wenet import wenet_features

    wav = sa.load_channel(STEREO_44K, 16000)  # channel 0, resampled: both modes' loading
    hub = sa.pipeline(STEREO_44K, checkpoint=checkpoints["hubert"], mode="hubert", device="cpu")
    engine = sa.resolve_encoder(checkpoints["hubert"], mode="hubert", device="cpu")
    np.testing.assert_array_equal(hub.features, hubert_features(wav, engine))
    wen = sa.pipeline(wav, checkpoint=checkpoints["wenet"], mode="wenet", device="cpu")
    np.testing.assert_array_equal(wen.features, wenet_features(wav, checkpoints["wenet"]))


def test_hubert_odd_row_option(checkpoints):
    drop = sa.pipeline(CLIP, checkpoint=checkpoints["hubert"], mode="hubert", device="cpu")
    pad = sa.pipeline(CLIP, checkpoint=checkpoints["hubert"], mode="hubert", device="cpu", hubert_odd="pad")
    n_rows = (sa.load_channel(CLIP, 16000).shape[0] - 80) // 320
    assert pad.features.shape[0] == drop.features.shape[0] + (n_rows % 2)


@pytest.mark.parametrize("mode", ["hubert", "wenet"])
def test_bad_settings_are_one_line_errors(mode, checkpoints):
    with pytest.raises(sa.ConfigError, match="fixed"):
        sa.pipeline(CLIP, checkpoint=checkpoints[mode], mode=mode, fps=30)
    with pytest.raises(sa.ConfigError, match="radius"):
        sa.pipeline(CLIP, checkpoint=checkpoints[mode], mode=mode, radius=6)
    with pytest.raises(sa.ConfigError, match="stand-in"):
        sa.pipeline(CLIP, checkpoint="seeded", mode=mode)
    with pytest.raises(sa.AudioError):
        sa.pipeline(np.zeros(100, np.float32), checkpoint=checkpoints[mode], mode=mode, device="cpu")


def test_wrong_model_for_the_mode(checkpoints, tmp_path):
    with pytest.raises(sa.CheckpointError):
        sa.pipeline(CLIP, checkpoint=checkpoints["wenet"], mode="hubert")
    onnx_ave = tmp_path / "ave.onnx"
    from synctalk_audio.export import export_onnx

    export_onnx(sa.seeded_state_dict(0), onnx_ave, verify=False)
    with pytest.raises(sa.CheckpointError, match="chunk|input"):
        sa.pipeline(CLIP, checkpoint=onnx_ave, mode="wenet")


@pytest.mark.parametrize("mode", ["hubert", "wenet"])
def test_seed_api_runs_the_mode(mode, checkpoints, tmp_path):
    p = sa.AudioPipeline(str(checkpoints[mode]), device="cpu", mode=mode, radius=4)
    assert p.fps == sa.MODE_FPS[mode]
    rows, meta = p.process_audio_file(str(CLIP))
    assert meta["mode"] == mode and rows.ndim == 2
    frame = p.get_frame_features(rows, 3)
    assert frame.shape == sa.mode_shape(mode, 4)
    np.testing.assert_array_equal(frame, p.run(CLIP).frames[3])
    out = tmp_path / "ref"
    p.process_and_save_all_frames(str(CLIP), out)
    with pytest.raises(sa.OutputError, match="overwrite"):
        p.process_and_save_all_frames(str(CLIP), out)
    p.process_and_save_all_frames(str(CLIP), out, overwrite=True)
    report = sa.validate(out, out)
    assert report.ok


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "synctalk_audio", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=300)


@pytest.mark.parametrize("mode,upstream", [("hubert", "aud_hu.npy"), ("wenet", "aud_wenet.npy")])
def test_cli_features_reference_validate_frames(mode, upstream, checkpoints, tmp_path):
    ckpt = str(checkpoints[mode])
    proc = _cli("features", str(CLIP), "--mode", mode, "-c", ckpt, "-o", "feat", "--radius", "4", "--json",
                cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "UNTRAINED" in proc.stderr
    feats = np.load(tmp_path / "feat" / upstream)  # what existing training code loads
    want = sa.pipeline(CLIP, checkpoint=checkpoints[mode], mode=mode, device="cpu").features
    np.testing.assert_array_equal(feats, want)
    meta = json.loads((tmp_path / "feat" / "metadata.json").read_text())
    assert meta["mode"] == mode and meta["radius"] == 4 and meta["weights"]["untrained_seeded"] is True
    proc = _cli("reference", str(CLIP), "--mode", mode, "-c", ckpt, "-o", "ref", "-q", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    proc = _cli("validate", "ref", "ref", "--require", "all", cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"(one per {mode} feature row)" in proc.stdout and "(N+2)" not in proc.stdout  # no first/last repeat
    proc = _cli("frames", str(tmp_path / "feat" / upstream), "--mode", mode, "--radius", "4", "-o", "fr.npy",
                cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "±4 rows of context" in proc.stdout + proc.stderr
    np.testing.assert_array_equal(np.load(tmp_path / "fr.npy"), upstream_frames(want, 4, sa.mode_shape(mode, 4)))
    proc = _cli("frames", str(tmp_path / "feat" / upstream), "--mode", mode, "-o", "fr.npy", cwd=tmp_path)
    assert proc.returncode == 2 and "--force" in proc.stderr and proc.stderr.count("\n") == 1


@pytest.mark.parametrize("mode", ["hubert", "wenet"])
def test_cli_features_frames_summary_names_the_frames_shape(mode, checkpoints, tmp_path):
    """`features --frames` listed audio_frames.npy with the raw features' shape."""
    proc = _cli("features", str(CLIP), "--mode", mode, "-c", str(checkpoints[mode]), "--frames", "-o", "feat",
                cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    frames = np.load(tmp_path / "feat" / "audio_frames.npy")
    shape = "(" + ", ".join(map(str, frames.shape)) + ")"
    assert f"audio_frames.npy  float32  {shape}" in proc.stdout + proc.stderr


def test_wenet_messages(checkpoints, tmp_path):
    """A .pth given as the wenet encoder is named as such; NaN rows from a wenet encoder do not
    blame mel windows."""
    import torch

    from synctalk_audio.batches import encode_in_batches

    pth = tmp_path / "x.pth"
    torch.save({"w": torch.zeros(3)}, pth)
    with pytest.raises(sa.CheckpointError, match=r"zip archive \(a PyTorch \.pth checkpoint\?\), not an ONNX model"):
        sa.pipeline(np.zeros(16000, np.float32) + 0.01, mode="wenet", checkpoint=pth)
    nan = lambda w: np.full((w.shape[0], 16, 512), np.nan, np.float32)  # noqa: E731
    with pytest.raises(sa.ShapeError, match="finite fbank windows") as exc:
        encode_in_batches(2, lambda lo, hi: np.zeros((hi - lo, 1)), nan, batch_size=2, row_shape=(16, 512))
    assert "mel" not in str(exc.value)
    with pytest.raises(sa.ConfigError, match="wenet offers onnx"):
        sa.pipeline(np.zeros(16000, np.float32), mode="wenet", checkpoint=checkpoints["wenet"], precision="bf16")
