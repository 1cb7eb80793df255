"""ONNX / TorchScript / CoreML export: graphs, metadata, numerical equality with PyTorch, CLI.

Tolerances: the seeded (untrained) weights give features up to ~100, where float32 round-off of
two correct implementations is ~5e-5 absolute, so float32 artifacts are held to
``FLOAT32_REL_TOL × max|features|`` (see synctalk_audio/export.py); the TorchScript export runs
the very PyTorch ops and is held to the absolute 1e-5 (it is bit-identical).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from synctalk_audio.encoder import fold_batchnorm, seeded_state_dict
from synctalk_audio.errors import CheckpointError, ConfigError, OutputError, ShapeError
from synctalk_audio.export import (
    FLOAT16_REL_TOL,
    FLOAT32_REL_TOL,
    INPUT_NAME,
    OUTPUT_NAME,
    describe_coreml,
    export_all,
    export_coreml,
    export_onnx,
    export_torchscript,
    run_coreml,
    run_onnx,
    run_torchscript,
    verification_windows,
    verify_onnx,
    verify_coreml,
    verify_torchscript,
)

from .conftest import FULL_CLIPS, MANIFEST, ROOT, golden_array, golden_input

CLIP = "speech_16k_mono"


def _torch(model, x: np.ndarray) -> np.ndarray:
    with torch.inference_mode():
        return model(torch.from_numpy(x)).numpy()


@pytest.fixture(scope="module")
def real() -> np.ndarray:
    return golden_array(CLIP, "windows_fps25.npy")[:, None]  # (32, 1, 80, 16)


@pytest.fixture(scope="module")
def batches(real) -> dict[str, np.ndarray]:
    rand = np.random.default_rng(123).uniform(-4, 4, (7, 1, 80, 16)).astype(np.float32)
    return {"real1": real[5:6], "real7": real[10:17], "random1": rand[:1], "random7": rand}


@pytest.fixture(scope="module")
def folded(seeded_encoder):
    return fold_batchnorm(seeded_encoder)


def _available(module: str) -> bool:
    try:
        __import__(module)
    except ImportError:
        return False
    return True


@pytest.fixture(scope="module")
def checkpoint_file(tmp_path_factory) -> Path:
    """The seeded weights saved the way upstream checkpoints are (with the prefix)."""
    path = tmp_path_factory.mktemp("ckpt") / "audio_visual_encoder.pth"
    torch.save({f"audio_encoder.{k}": v for k, v in seeded_state_dict(0).items()}, path)
    return path


@pytest.fixture(scope="module")
def exported(tmp_path_factory, checkpoint_file) -> dict:
    """One export_all run (every format whose packages are installed), shared by the tests."""
    formats = ["torchscript"]
    if _available("onnx") and _available("onnxruntime"):
        formats.insert(0, "onnx")
    if _available("coremltools"):
        formats.append("coreml")
    out = tmp_path_factory.mktemp("exported")
    return {r.format: r for r in export_all(checkpoint_file, out, formats=formats)}


def _result(exported: dict, fmt: str, module: str):
    if fmt not in exported:
        pytest.skip(f"{module} is not installed")
    return exported[fmt]


@pytest.fixture(scope="module")
def onnx_path(exported) -> Path:
    return _result(exported, "onnx", "onnx/onnxruntime").path


@pytest.fixture(scope="module")
def ts_path(exported) -> Path:
    return _result(exported, "torchscript", "torch").path


@pytest.fixture(scope="module")
def coreml_result(exported):
    return _result(exported, "coreml", "coremltools")


def _within(got: np.ndarray, want: np.ndarray, rel: float) -> tuple[float, float]:
    """Assert max|got − want| ≤ rel × max|want|; return (abs diff, bound)."""
    assert got.shape == want.shape and got.dtype == np.float32
    diff = float(np.max(np.abs(got.astype(np.float64) - want)))
    bound = rel * float(np.max(np.abs(want)))
    assert diff <= bound, (diff, bound)
    return diff, bound


# --------------------------------------------------------------------------- ONNX


def test_onnx_graph(onnx_path):
    onnx = pytest.importorskip("onnx")
    model = onnx.load(os.fspath(onnx_path))
    onnx.checker.check_model(model, full_check=True)
    assert max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) >= 17
    ops = [n.op_type for n in model.graph.node]
    assert "BatchNormalization" not in ops
    assert ops.count("Conv") == 13 and ops.count("Relu") == 13 and ops.count("Add") == 7
    (inp,), (out,) = model.graph.input, model.graph.output
    assert inp.name == INPUT_NAME and out.name == OUTPUT_NAME
    assert inp.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    in_dims = [d.dim_param or d.dim_value for d in inp.type.tensor_type.shape.dim]
    out_dims = [d.dim_param or d.dim_value for d in out.type.tensor_type.shape.dim]
    assert in_dims == ["batch", 1, 80, 16] and out_dims == ["batch", 512]
    props = {p.key: p.value for p in model.metadata_props}
    assert props["author"] == "synctalk-audio" and props["preset"] == "synctalk_2d"
    assert props["state_dict_sha256"] == MANIFEST["weights"]["sha256"]


@pytest.mark.parametrize("name", ["real1", "real7", "random1", "random7"])
def test_onnxruntime_matches_pytorch(onnx_path, batches, name, seeded_encoder, folded):
    x = batches[name]
    got = run_onnx(onnx_path, x)
    # the same math (BN folded) and the exact upstream encoder, both to float32 round-off
    _within(got, _torch(folded, x), FLOAT32_REL_TOL)
    _within(got, _torch(seeded_encoder, x), FLOAT32_REL_TOL)
    assert verify_onnx(onnx_path, folded, x) <= FLOAT32_REL_TOL * np.abs(got).max()


@pytest.mark.parametrize("clip", FULL_CLIPS)
def test_onnx_matches_oracle_features(onnx_path, clip):
    """Every golden clip (README's exactness table: "on the golden clips"): the oracle's windows in
    one batch against its features.npy, and the whole pipeline on the .onnx against padded.npy."""
    import synctalk_audio as sa

    windows = golden_array(clip, "windows_fps25.npy")[:, None]
    _within(run_onnx(onnx_path, windows), golden_array(clip, "features.npy"), FLOAT32_REL_TOL)
    padded = sa.pipeline(golden_input(clip), checkpoint=str(onnx_path)).padded
    _within(padded, golden_array(clip, "padded.npy"), FLOAT32_REL_TOL)


def test_onnx_port_passes_validate(onnx_path, tmp_path, seeded_encoder):
    """The porting loop of the README: reference dataset → the port runs encoder.onnx → validate."""
    from synctalk_audio import pipeline
    from synctalk_audio.dataset import validate, write_reference

    write_reference(pipeline(golden_input(CLIP), checkpoint=seeded_encoder, device="cpu"), tmp_path / "ref",
                    frames=False, checkpoint=seeded_encoder)
    port = tmp_path / "port"
    port.mkdir()
    features = run_onnx(onnx_path, np.load(tmp_path / "ref" / "mel_windows.npy"))
    np.save(port / "audio_features_raw.npy", features)
    assert validate(tmp_path / "ref", port, required=["audio_features_raw"]).ok
    np.save(port / "audio_features_raw.npy", features + np.float32(0.01) * (features > 0))  # a slightly wrong port
    assert not validate(tmp_path / "ref", port).ok


def test_onnx_refuses_wrong_input(onnx_path):
    with pytest.raises(ShapeError):
        run_onnx(onnx_path, np.zeros((2, 80, 15), np.float32))
    with pytest.raises(ShapeError):
        run_onnx(onnx_path, np.full((1, 80, 16), np.nan, np.float32))


# --------------------------------------------------------------------------- TorchScript


def test_torchscript_matches_pytorch(ts_path, batches, seeded_encoder):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        module = torch.jit.load(os.fspath(ts_path))
    for name, x in batches.items():  # batch 1 and 7, real and random windows
        got = _torch(module, x)
        # unfolded: the very same ops, so the absolute 1e-5 of the issue holds (measured: 0.0)
        assert np.max(np.abs(got - _torch(seeded_encoder, x))) <= 1e-5, name
    assert verify_torchscript(ts_path, seeded_encoder, batches["real7"]) <= 1e-5


def test_torchscript_embeds_metadata(ts_path):
    extra = {"synctalk_audio.json": ""}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.load(os.fspath(ts_path), _extra_files=extra)
    meta = json.loads(extra["synctalk_audio.json"])
    assert meta["format"] == "torchscript" and meta["batchnorm_folded"] is False
    assert meta["input"] == {"name": INPUT_NAME, "dtype": "float32", "shape": ["batch", 1, 80, 16]}


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_export_from_a_cuda_encoder(tmp_path, batches, seeded_encoder):
    """Exports always run on a CPU copy: the caller's CUDA encoder stays where it is."""
    from synctalk_audio.encoder import load_encoder

    gpu = load_encoder(seeded_state_dict(0), device="cuda")
    res = export_torchscript(gpu, tmp_path / "encoder.pt")
    assert next(gpu.parameters()).is_cuda and res.metadata["verification"]["max_abs_diff"] == 0.0
    x = batches["real7"]
    assert np.max(np.abs(run_torchscript(res.path, x) - _torch(seeded_encoder, x))) <= 1e-5


def test_torchscript_folded_option(tmp_path, batches, folded):
    res = export_torchscript(seeded_state_dict(0), tmp_path / "folded.pt", fold_bn=True, verify=False)
    assert res.metadata["batchnorm_folded"] is True
    x = batches["real7"]
    assert np.max(np.abs(run_torchscript(res.path, x) - _torch(folded, x))) <= 1e-5


# --------------------------------------------------------------------------- CoreML


def test_coreml_spec(coreml_result):
    info = describe_coreml(coreml_result.path)
    assert info["type"] == "mlProgram"
    assert list(info["inputs"]) == [INPUT_NAME] and list(info["outputs"]) == [OUTPUT_NAME]
    inp = info["inputs"][INPUT_NAME]
    assert inp["dtype"] == "FLOAT32" and inp["shape"] == [1, 1, 80, 16]
    assert inp["shape_range"] == [[1, 64], [1, 1], [80, 80], [16, 16]]
    assert info["outputs"][OUTPUT_NAME]["dtype"] == "FLOAT32"
    assert info["ops"]["conv"] == 13 and info["ops"]["relu"] == 13 and info["ops"]["add"] == 7
    assert "batch_norm" not in info["ops"] and info["compute_precision"] == "float32"
    meta = info["metadata"]
    assert meta["author"] == "synctalk-audio" and meta["version"] and meta["short_description"]
    user = meta["user_defined"]
    assert user["preset"] == "synctalk_2d" and user["input_shape"] == "(1..64, 1, 80, 16)"
    assert user["output_shape"] == "(1..64, 512)" and user["compute_precision"] == "float32"
    assert user["state_dict_sha256"] == MANIFEST["weights"]["sha256"]


@pytest.mark.parametrize("name", ["real1", "real7"])
def test_coreml_program_matches_pytorch(coreml_result, batches, name, seeded_encoder, folded):
    """The saved program (graph + weights) evaluated op by op equals the folded encoder."""
    x = batches[name]
    got = run_coreml(coreml_result.path, x, backend="interpreter")
    _within(got, _torch(folded, x), FLOAT32_REL_TOL)
    _within(got, _torch(seeded_encoder, x), FLOAT32_REL_TOL)
    assert verify_coreml(coreml_result.path, folded, x, backend="interpreter") <= FLOAT32_REL_TOL * np.abs(got).max()


@pytest.mark.skipif(sys.platform != "darwin", reason="Core ML prediction needs macOS")
def test_coreml_predicts_on_macos(coreml_result, batches, folded):
    from synctalk_audio.coreml import _coreml_can_predict

    if not _coreml_can_predict():
        pytest.skip("coremltools' native Core ML module is not available")
    x = batches["real7"]
    _within(run_coreml(coreml_result.path, x, backend="coreml"), _torch(folded, x), FLOAT32_REL_TOL)


def test_coreml_via_torch_export(tmp_path, batches, folded):
    """coremltools' beta torch.export path gives the same program as the default trace path."""
    pytest.importorskip("coremltools")
    res = export_coreml(seeded_state_dict(0), tmp_path / "e.mlpackage", capture="export", max_batch=8, verify=False)
    assert res.metadata["captured_with"] == "torch.export" and "verification" not in res.metadata
    info = describe_coreml(res.path)
    assert info["inputs"][INPUT_NAME]["shape_range"][0] == [1, 8]
    assert {k: info["ops"][k] for k in ("conv", "relu", "add")} == {"conv": 13, "relu": 13, "add": 7}
    x = batches["random7"]
    _within(run_coreml(res.path, x, backend="interpreter"), _torch(folded, x), FLOAT32_REL_TOL)


def test_coreml_conversion_failure_is_one_clear_error(tmp_path, monkeypatch):
    ct = pytest.importorskip("coremltools")

    def broken_convert(*args, **kwargs):
        raise RuntimeError("unsupported op 'aten::something'\nlong traceback text")

    monkeypatch.setattr(ct, "convert", broken_convert)
    with pytest.raises(OutputError, match=r"CoreML conversion .* failed with torch .*, coremltools .*: "
                                          r"RuntimeError: unsupported op 'aten::something'$"):
        export_coreml("seeded", tmp_path / "encoder.mlpackage")
    assert list(tmp_path.iterdir()) == []


def test_coreml_options_rejected(tmp_path):
    pytest.importorskip("coremltools")
    with pytest.raises(ConfigError):
        export_coreml("seeded", tmp_path / "a.mlpackage", compute_precision="int8")
    with pytest.raises(ConfigError):
        export_coreml("seeded", tmp_path / "a.mlpackage", max_batch=0)
    with pytest.raises(ConfigError):
        export_coreml("seeded", tmp_path / "a.mlpackage", capture="onnx")
    with pytest.raises(ConfigError):
        run_coreml(tmp_path / "a.mlpackage", np.zeros((1, 80, 16), np.float32), backend="metal")
    assert not (tmp_path / "a.mlpackage").exists()


# --------------------------------------------------------------------------- metadata, atomicity, errors


def test_export_all_metadata_and_replace(exported, checkpoint_file, real):
    results = list(exported.values())
    out = results[0].path.parent
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted(n for r in results for n in (r.path.name, r.metadata_path.name))  # no temp leftovers
    file_sha = hashlib.sha256(checkpoint_file.read_bytes()).hexdigest()
    for res in results:
        meta = json.loads(res.metadata_path.read_text())
        assert meta == json.loads(json.dumps(dict(res.metadata)))
        assert res.metadata_path.name == res.path.name + ".json"
        assert meta["file"] == res.path.name and meta["format"] == res.format
        assert meta["input"]["name"] == INPUT_NAME and meta["output"]["name"] == OUTPUT_NAME
        assert meta["input"]["shape"][1:] == [1, 80, 16] and meta["output"]["shape"][1:] == [512]
        assert meta["checkpoint"]["checkpoint_sha256"] == file_sha
        assert meta["checkpoint"]["state_dict_sha256"] == MANIFEST["weights"]["sha256"]
        assert meta["checkpoint"]["untrained_seeded"] is True
        assert meta["library_version"] and meta["versions"]["torch"] == torch.__version__
        ver = meta["verification"]
        assert ver["passed"] and ver["max_abs_diff"] <= ver["tolerance_relative"] * ver["feature_scale"]
        assert ver["windows"]["batch"] == 8
    if "onnx" in exported:
        assert exported["onnx"].metadata["opset"] >= 17 and exported["onnx"].metadata["versions"]["onnxruntime"]
    if "coreml" in exported:
        assert exported["coreml"].metadata["versions"]["coremltools"]
        # re-exporting is refused without overwrite; with it, it replaces the .mlpackage folder and
        # leaves nothing else behind
        with pytest.raises(OutputError, match="overwrite=True"):
            export_all(checkpoint_file, out, formats="coreml")
        (again,) = export_all(checkpoint_file, out, formats="coreml", overwrite=True)
        assert again.format == "coreml" and sorted(p.name for p in out.iterdir()) == names
        _within(run_coreml(again.path, real[:3], backend="interpreter"), golden_array(CLIP, "features.npy")[:3],
                FLOAT32_REL_TOL)


def test_failed_verification_writes_nothing(tmp_path, monkeypatch, seeded_encoder):
    """An export that does not reproduce the encoder is refused and leaves no file."""
    pytest.importorskip("onnxruntime")
    import synctalk_audio.export as ex

    def broken_fold(encoder):
        model = fold_batchnorm(encoder)
        with torch.no_grad():
            model.blocks[12].conv.bias.add_(0.5)  # a 0.5 offset on features of magnitude ~100
        return model

    def honest_reference(encoder):  # what the exported graph is compared with
        return fold_batchnorm(encoder)

    calls = iter([broken_fold, honest_reference])
    monkeypatch.setattr(ex, "fold_batchnorm", lambda enc: next(calls)(enc))
    with pytest.raises(OutputError, match="does not reproduce"):
        ex.export_onnx(seeded_encoder, tmp_path / "encoder.onnx")
    assert list(tmp_path.iterdir()) == []


def test_export_errors(tmp_path):
    with pytest.raises(ConfigError, match="unknown export format"):
        export_all("seeded", tmp_path / "x", formats="tflite")
    (tmp_path / "file").write_text("x")
    with pytest.raises(OutputError):
        export_all("seeded", tmp_path / "file", formats="torchscript")
    with pytest.raises(OutputError):
        export_torchscript("seeded", tmp_path / "encoder.onnx")
    (tmp_path / "encoder.pt").mkdir()
    with pytest.raises(OutputError):
        export_torchscript("seeded", tmp_path / "encoder.pt")
    with pytest.raises(CheckpointError):
        export_torchscript(tmp_path / "missing.pth", tmp_path / "m.pt")
    with pytest.raises(CheckpointError):
        export_torchscript(42, tmp_path / "m.pt")
    with pytest.raises(ConfigError):
        export_torchscript("seeded", tmp_path / "m.pt", preset="nope")
    with pytest.raises(ConfigError):
        verification_windows(0)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["encoder.pt", "file"]


@pytest.mark.parametrize("fmt, module", [("onnx", "onnx"), ("onnx", "onnxruntime"), ("coreml", "coremltools")])
def test_missing_extra_is_a_clear_error(tmp_path, monkeypatch, fmt, module):
    monkeypatch.setitem(sys.modules, module, None)  # makes `import module` fail
    with pytest.raises(ConfigError, match=r"needs the \w+ package, which is not installed: .*\.\[export\]"):
        export_all("seeded", tmp_path / "out", formats=["torchscript", fmt])
    assert not (tmp_path / "out").exists()  # checked before anything is written


@pytest.mark.parametrize("opset", [13, 999, True, "17"])
def test_onnx_opset_checked(tmp_path, capfd, opset):
    """Out of [17, the exporter's highest] is one line before any work (999 once made torch print
    ~90 lines of graph before our error)."""
    pytest.importorskip("onnx")
    with pytest.raises(ConfigError, match="opset"):
        export_onnx("seeded", tmp_path / "e.onnx", opset=opset)
    assert capfd.readouterr().err.count("\n") <= 1 and list(tmp_path.iterdir()) == []


def test_verification_windows():
    w = verification_windows(5)
    assert w.shape == (5, 1, 80, 16) and w.dtype == np.float32
    assert np.all(w[0] == -4) and w.min() >= -4 and w.max() <= 4
    assert np.array_equal(w, verification_windows(5))


# --------------------------------------------------------------------------- CLI


def test_cli_export(tmp_path):
    out = tmp_path / "cli"
    proc = subprocess.run([sys.executable, "-m", "synctalk_audio", "export", "--checkpoint", "seeded",
                           "--format", "torchscript", "--output-dir", str(out), "--json"],
                          capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert proc.returncode == 0, proc.stderr
    (entry,) = json.loads(proc.stdout)
    assert entry["format"] == "torchscript" and Path(entry["path"]) == out / "encoder.pt"
    assert entry["verification"]["max_abs_diff"] == 0.0
    assert sorted(p.name for p in out.iterdir()) == ["encoder.pt", "encoder.pt.json"]


def test_cli_export_error_is_one_line(tmp_path, capsys):
    from synctalk_audio.cli import main

    code = main(["export", "--checkpoint", str(tmp_path / "nope.pth"), "--format", "torchscript",
                 "-o", str(tmp_path / "o")])
    captured = capsys.readouterr()
    assert code == 2 and captured.out == ""
    assert captured.err.count("\n") == 1 and "checkpoint not found" in captured.err
    assert not (tmp_path / "o").exists()


def test_cli_export_coreml_fp16_fixed_batch(tmp_path, batches, folded):
    pytest.importorskip("coremltools")
    from synctalk_audio.cli import main

    args = ["export", "-c", "seeded", "-f", "coreml", "--fp16", "--max-batch", "1", "-o", str(tmp_path), "--quiet"]
    assert main(args) == 0
    meta = json.loads((tmp_path / "encoder.mlpackage.json").read_text())
    assert meta["compute_precision"] == "float16" and meta["verification"]["passed"]
    assert meta["input"]["shape"] == [1, 1, 80, 16] and meta["output"]["shape"] == [1, 512]
    path = tmp_path / "encoder.mlpackage"
    info = describe_coreml(path)
    assert info["compute_precision"] == "float16" and info["ops"]["cast"] == 2
    inp = info["inputs"][INPUT_NAME]
    assert inp["shape"] == [1, 1, 80, 16] and inp["shape_range"] in (None, [[1, 1], [1, 1], [80, 80], [16, 16]])
    assert inp["dtype"] == "FLOAT32"  # fp16 inside, float32 interface
    x = batches["real1"]
    got = run_coreml(path, x, backend="interpreter")
    want = _torch(folded, x)
    _within(got, want, FLOAT16_REL_TOL)
    assert np.max(np.abs(got - want)) > FLOAT32_REL_TOL * np.abs(want).max()  # fp16 really applied


def test_output_rule_for_exports(tmp_path):
    """An existing artifact is replaced only with overwrite=True, and only one we exported."""
    dest = tmp_path / "encoder.pt"
    export_torchscript("seeded", dest, verify=False)
    with pytest.raises(OutputError, match=r"overwrite=True, CLI --force"):
        export_torchscript("seeded", dest, verify=False)
    again = export_torchscript("seeded", dest, verify=False, overwrite=True)
    assert again.path == dest and json.loads(again.metadata_path.read_text())["file"] == "encoder.pt"
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "encoder.pt").write_bytes(b"someone else's model")
    with pytest.raises(OutputError, match="not written by synctalk-audio"):
        export_all("seeded", foreign, formats="torchscript", overwrite=True)
    assert (foreign / "encoder.pt").read_bytes() == b"someone else's model"
    os.mkfifo(tmp_path / "fifo.pt")
    with pytest.raises(OutputError, match="FIFO"):
        export_torchscript("seeded", tmp_path / "fifo.pt", verify=False, overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["encoder.pt", "encoder.pt.json", "fifo.pt", "foreign"]


@pytest.mark.parametrize("args,match", [
    (["-f", "onnx", "-o", "x.onnx"], "a file suffix; expected a directory name"),
    (["-f", "onnx", "-o", ""], "output directory path is empty"),
    (["-f", "onnx", "--fp16", "-o", "out"], "--fp16 applies to --format coreml"),
    (["-f", "torchscript", "--max-batch", "7", "-o", "out"], "--max-batch applies to --format coreml"),
])
def test_export_cli_output_and_option_errors(tmp_path, monkeypatch, capsys, args, match):
    """export once made a directory named x.onnx, wrote into the current directory for -o "", and
    ignored the CoreML-only options for other formats."""
    from synctalk_audio.cli import main

    monkeypatch.chdir(tmp_path)
    assert main(["export", "-c", "seeded", *args, "-q"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and match in err, err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(not _available("coremltools"), reason="needs coremltools")
def test_cli_coreml_export_leaves_nothing_in_tmpdir(tmp_path):
    """coremltools converts into a temp .mlpackage it removes only at interpreter exit, which the CLI
    skips (os._exit): every export once left ~11 MB in $TMPDIR."""
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    done = subprocess.run([sys.executable, "-c", "from synctalk_audio.cli import entry; entry()", "export",
                           "--checkpoint", "seeded", "--format", "coreml", "-o", str(tmp_path / "out"), "--quiet"],
                          capture_output=True, text=True, timeout=300, env={**os.environ, "TMPDIR": str(tmp)})
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "out" / "encoder.mlpackage").is_dir()
    assert list(tmp.iterdir()) == []


def test_a_failed_export_names_the_disk_and_leaves_no_folder(tmp_path, monkeypatch):
    """A full disk during the ONNX export was blamed on torch.onnx.export and left an empty output
    folder behind."""
    import errno

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch.onnx, "export", full)
    with pytest.raises(OutputError, match=r"cannot write .*encoder\.onnx: No space left on device"):
        export_onnx(seeded_state_dict(0), tmp_path / "new" / "deeper" / "encoder.onnx")
    assert list(tmp_path.iterdir()) == []
