"""The torch-free encoder backend: an exported .onnx run by onnxruntime (precision "onnx")."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

import synctalk_audio as sa  # noqa: E402
from synctalk_audio import cli  # noqa: E402
from synctalk_audio.pipeline import PRECISIONS  # noqa: E402
from synctalk_audio.engines import run_engine  # noqa: E402
from synctalk_audio.runtime import OnnxEncoder, is_onnx_model, load_onnx_encoder  # noqa: E402


def encode_windows_onnx(n, get, encoder, **kw):
    """The seam's batching loop on an OnnxEncoder."""
    return run_engine(encoder, n, get, **kw)

from .conftest import FULL_CLIPS, ROOT, golden_array, golden_input  # noqa: E402

BOUND = PRECISIONS["onnx"].max_rel
CLIP = "speech_16k_mono"


@pytest.fixture(scope="module")
def onnx_model(tmp_path_factory):
    """The seeded (UNTRAINED) weights exported with export_onnx, its .json beside it."""
    from synctalk_audio.export import export_onnx

    path = tmp_path_factory.mktemp("onnx") / "encoder.onnx"
    export_onnx(sa.seeded_state_dict(0), path)
    return path


@pytest.fixture(scope="module")
def onnx_encoder(onnx_model) -> OnnxEncoder:
    return load_onnx_encoder(onnx_model, device="cpu")


def _rel(a: np.ndarray, ref: np.ndarray) -> float:
    return float(np.abs(a.astype(np.float64) - ref).max() / np.abs(ref).max())


@pytest.mark.parametrize("clip", FULL_CLIPS)
def test_golden_clips_within_bound(clip, onnx_encoder):
    """Against the independent oracle's features: within the documented 5e-6 of max|features|."""
    out = sa.pipeline(str(golden_input(clip)), checkpoint=onnx_encoder)
    ref = golden_array(clip, "features.npy")
    assert out.features.shape == ref.shape
    assert _rel(out.features, ref) <= BOUND
    assert _rel(out.padded, golden_array(clip, "padded.npy")) <= BOUND
    assert out.frames.shape == (ref.shape[0] + 2, 32, 16, 16)
    assert out.metadata["precision"] == "onnx"
    assert out.metadata["encoder_compute"].startswith("float32 onnxruntime")


def test_measured_error_is_far_inside_the_bound(onnx_encoder, seeded_encoder):
    """Measured on speech: 7e-7 to 9e-7 of max|features| from exact; the bound keeps a margin >= 2x."""
    wav = sa.load_audio(golden_input(CLIP))
    exact = sa.pipeline(wav, checkpoint=seeded_encoder, device="cpu")
    onnx = sa.pipeline(wav, checkpoint=onnx_encoder)
    assert _rel(onnx.features, exact.features) <= BOUND / 2


def test_batch_and_thread_invariant(onnx_model):
    """On the CPU provider a window's row does not depend on its batch or the thread count."""
    mel = sa.melspectrogram(sa.load_audio(golden_input(CLIP)))
    windows = sa.window(mel)[:200]
    results = []
    for threads in (1, 2):
        enc = load_onnx_encoder(onnx_model, device="cpu", threads=threads)
        assert enc.batch_invariant
        for bs in (1, 7, 64, 512):
            results.append(encode_windows_onnx(len(windows), lambda lo, hi: windows[lo:hi], enc, batch_size=bs))
    for other in results[1:]:
        np.testing.assert_array_equal(other, results[0])


def test_stream_equals_offline(onnx_model):
    rng = np.random.default_rng(5)
    wav = sa.load_audio(golden_input(CLIP))
    offline = sa.pipeline(wav, checkpoint=onnx_model, device="cpu")
    stream = sa.StreamingPipeline(onnx_model, device="cpu")
    assert stream.precision == "onnx"
    parts, at = [], 0
    while at < wav.shape[0]:
        step = int(rng.integers(1, 2000))
        parts.append(stream.push(wav[at:at + step]))
        at += step
    parts.append(stream.flush())
    np.testing.assert_array_equal(np.concatenate(parts), offline.frames)


def test_never_imports_torch(onnx_model, tmp_path):
    """pipeline(), the stream and the CLI with an .onnx encoder run without torch."""
    audio = golden_input(CLIP)
    code = f"""
import sys
import numpy as np
from synctalk_audio import pipeline, StreamingPipeline, AudioPipeline
from synctalk_audio.cli import main
r = pipeline({str(audio)!r}, checkpoint={str(onnx_model)!r})
s = StreamingPipeline({str(onnx_model)!r})
s.push(np.zeros(16000, np.float32)); s.flush()
AudioPipeline({str(onnx_model)!r}).process_audio_file({str(audio)!r})
assert main(["features", {str(audio)!r}, "-c", {str(onnx_model)!r}, "-o", {str(tmp_path / "out")!r}, "-q"]) == 0
print("torch" in sys.modules)
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "False"
    assert (tmp_path / "out" / "audio_features_padded.npy").exists()


def test_cli_features_records_onnx_weights(onnx_model, tmp_path):
    proc = subprocess.run([sys.executable, "-m", "synctalk_audio", "features", str(golden_input(CLIP)), "-c",
                           str(onnx_model), "-o", str(tmp_path / "feat"), "--json"],
                          capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["precision"] == "onnx"
    weights = summary["weights"]
    assert weights["format"] == "onnx" and weights["untrained_seeded"] is True
    assert weights["state_dict_sha256"] == sa.encoder.state_dict_sha256(sa.seeded_state_dict(0))
    assert "UNTRAINED" in proc.stderr  # the export's record carries the seeded flag through
    ref = golden_array(CLIP, "padded.npy")
    assert _rel(np.load(tmp_path / "feat" / "audio_features_padded.npy"), ref) <= BOUND


def test_provenance_needs_matching_metadata(onnx_model, tmp_path):
    copy = tmp_path / "copy.onnx"
    shutil.copy(onnx_model, copy)
    bare = load_onnx_encoder(copy, device="cpu")
    assert dict(bare.provenance) == {}
    from synctalk_audio.dataset import weights_info

    info = weights_info(bare)
    assert info["untrained_seeded"] is None and "not recorded" in info["note"]
    meta = json.loads((onnx_model.parent / (onnx_model.name + ".json")).read_text())
    meta["sha256"] = "0" * 64  # describes another model: ignored
    (tmp_path / "copy.onnx.json").write_text(json.dumps(meta))
    assert dict(load_onnx_encoder(copy, device="cpu").provenance) == {}
    shutil.copy(onnx_model.parent / (onnx_model.name + ".json"), tmp_path / "copy.onnx.json")
    assert load_onnx_encoder(copy, device="cpu").provenance["untrained_seeded"] is True


def test_facade_and_path_forms(onnx_model):
    assert is_onnx_model(onnx_model) and is_onnx_model(str(onnx_model).upper().replace(".ONNX", ".OnNx"))
    assert not is_onnx_model("model.pth") and not is_onnx_model(sa.seeded_state_dict(0))
    facade = sa.AudioPipeline(str(onnx_model), mode="ave", fps=25)
    padded, meta = facade.process_audio_file(str(golden_input(CLIP)))
    assert meta["precision"] == "onnx" and facade.device == "cpu"
    assert _rel(padded, golden_array(CLIP, "padded.npy")) <= BOUND


# --------------------------------------------------------------------------- errors


def _wrong_io_model(path, in_shape, out_shape):
    import onnx
    from onnx import TensorProto, helper

    node = helper.make_node("Identity", ["x"], ["y"])
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, in_shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, out_shape)])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def test_load_errors_name_the_problem(tmp_path):
    with pytest.raises(sa.CheckpointError, match="not found"):
        load_onnx_encoder(tmp_path / "missing.onnx")
    (tmp_path / "dir.onnx").mkdir()
    with pytest.raises(sa.CheckpointError, match="not a file"):
        load_onnx_encoder(tmp_path / "dir.onnx")
    (tmp_path / "empty.onnx").write_bytes(b"")
    with pytest.raises(sa.CheckpointError, match="empty"):
        load_onnx_encoder(tmp_path / "empty.onnx")
    (tmp_path / "junk.onnx").write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(sa.CheckpointError, match="cannot load ONNX encoder"):
        load_onnx_encoder(tmp_path / "junk.onnx")
    wrong_in = _wrong_io_model(tmp_path / "in.onnx", ["b", 1, 80, 20], ["b", 1, 80, 20])
    with pytest.raises(sa.CheckpointError, match=r"takes tensor\(float\) \(b, 1, 80, 20\)"):
        load_onnx_encoder(wrong_in)
    wrong_out = _wrong_io_model(tmp_path / "out.onnx", ["b", 1, 80, 16], ["b", 1, 80, 16])
    with pytest.raises(sa.CheckpointError, match="gives"):
        load_onnx_encoder(wrong_out)


def test_option_errors(onnx_model, onnx_encoder, seeded_encoder):
    wav = np.zeros(8000, np.float32)
    for precision in ("exact", "fast"):
        with pytest.raises(sa.ConfigError, match="needs the PyTorch checkpoint"):
            sa.pipeline(wav, checkpoint=onnx_encoder, precision=precision)
    with pytest.raises(sa.ConfigError, match="needs an exported .onnx"):
        sa.pipeline(wav, checkpoint=seeded_encoder, precision="onnx", device="cpu")
    with pytest.raises(sa.ConfigError, match="loaded with"):
        sa.pipeline(wav, checkpoint=load_onnx_encoder(onnx_model, device="cpu", threads=1), threads=2)
    with pytest.raises(sa.ConfigError, match="unknown device"):
        load_onnx_encoder(onnx_model, device="tpu")
    with pytest.raises(sa.ConfigError, match="threads"):
        load_onnx_encoder(onnx_model, threads=0)
    with pytest.raises(sa.ConfigError, match="batch_size"):
        load_onnx_encoder(onnx_model, batch_size=-1)
    with pytest.raises(sa.ConfigError, match="needs an engine"):
        encode_windows_onnx(1, lambda lo, hi: None, seeded_encoder)
    with pytest.raises(sa.CheckpointError, match="is an ONNX model"):
        sa.load_encoder(onnx_model)


def test_missing_onnxruntime_is_one_clear_error(onnx_model, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import fails like an absent package
    with pytest.raises(sa.ConfigError, match=r"pip install -e '\.\[onnx\]'"):
        load_onnx_encoder(onnx_model)


def test_cuda_without_gpu_provider(onnx_model):
    import onnxruntime

    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        pytest.skip("this onnxruntime has the CUDA provider")
    with pytest.raises(sa.ConfigError, match="onnxruntime-gpu"):
        load_onnx_encoder(onnx_model, device="cuda")


def test_cli_errors_are_one_line(onnx_model, tmp_path, capsys):
    audio = str(golden_input(CLIP))
    assert cli.main(["features", audio, "-c", str(onnx_model), "-o", str(tmp_path / "a"), "--precision", "fast"]) == 2
    assert cli.main(["export", "-c", str(onnx_model), "-f", "onnx", "-o", str(tmp_path / "b")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and "needs the PyTorch checkpoint" in err[0] and "is an ONNX model" in err[1]
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_encode_batch_takes_an_onnx_encoder(onnx_encoder):
    """The stage function accepts the ONNX encoder too (numpy or torch windows)."""
    import torch

    lazy = sa.window(sa.melspectrogram(sa.load_audio(golden_input(CLIP))))
    windows = np.asarray(lazy)
    np.testing.assert_array_equal(sa.encode_batch(lazy, onnx_encoder), sa.encode_batch(windows, onnx_encoder))
    want = encode_windows_onnx(len(windows), lambda lo, hi: windows[lo:hi], onnx_encoder)
    np.testing.assert_array_equal(sa.encode_batch(windows, onnx_encoder, batch_size=5), want)
    np.testing.assert_array_equal(sa.encode_batch(torch.from_numpy(windows)[:, None], onnx_encoder), want)
    np.testing.assert_array_equal(onnx_encoder(windows), want)
    with pytest.raises(sa.ConfigError, match="needs the PyTorch checkpoint"):
        sa.encode_batch(windows, onnx_encoder, precision="exact")
    with pytest.raises(sa.ShapeError, match="overflowed"):
        sa.encode_batch(np.full((2, 80, 16), 3e38, np.float32), onnx_encoder)
