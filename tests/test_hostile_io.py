"""Hostile files and signals against the output/reader layer (issue: no crash, hang, blow-up or
clobbered file): CLI cases in a subprocess, a hypothesis fuzz of metadata.json / .onnx.json /
.npy headers (only library errors may come out), and SIGTERM cleanup."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
import types
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from synctalk_audio import _io
from synctalk_audio import dataset as ds
from synctalk_audio.errors import SyncTalkAudioError

ROOT = Path(__file__).resolve().parents[1]
WEIGHTS = {"state_dict_sha256": None, "untrained_seeded": None, "note": "synthetic"}
FUZZ = settings(max_examples=80, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


def _result(n: int = 3) -> types.SimpleNamespace:
    rng = np.random.default_rng(0)
    features = rng.uniform(0, 50, (n, 512)).astype(np.float32)
    return types.SimpleNamespace(
        mel=rng.uniform(-4, 4, (80, 16 + 3 * n)), windows=rng.uniform(-4, 4, (n, 80, 16)).astype(np.float32),
        features=features, padded=np.concatenate([features[:1], features, features[-1:]]),
        mode="ave", fps=25, context="zeros", metadata={})


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ref") / "reference"
    ds.write_reference(_result(), out, weights=WEIGHTS)
    return out


def cli(*args: str, cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "synctalk_audio", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout)


def assert_one_line_error(proc: subprocess.CompletedProcess, match: str) -> None:
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "error:" in lines[0] and match in lines[0], proc.stderr
    assert "internal error" not in proc.stderr and "Traceback" not in proc.stderr


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith((".tmp", ".old")))


# --------------------------------------------------------------------------- CLI, in a subprocess


def test_cli_validate_fifo_candidate_does_not_hang(reference, tmp_path):
    cand = tmp_path / "cand"
    shutil.copytree(reference, cand)
    (cand / "frames" / "frame_00001_window.npy").unlink()
    os.mkfifo(cand / "frames" / "frame_00001_window.npy")
    proc = cli("validate", str(reference), str(cand), cwd=tmp_path, timeout=60)
    assert proc.returncode == 1, proc.stderr
    assert "ERROR" in proc.stdout and "not a regular file" in proc.stdout


def test_cli_validate_shows_nan(reference, tmp_path):
    cand = tmp_path / "cand"
    cand.mkdir()
    raw = np.load(reference / "audio_features_raw.npy")
    raw[0, 0] = np.nan
    np.save(cand / "audio_features_raw.npy", raw)
    proc = cli("validate", str(reference), str(cand), cwd=tmp_path)
    assert proc.returncode == 1, proc.stderr
    row = next(line for line in proc.stdout.splitlines() if line.startswith("audio_features_raw"))
    assert "nan" in row and "FAIL" in row


@pytest.mark.parametrize("content, match", [
    ("[1, 2]", "JSON object"), ('"text"', "JSON object"), ('{"n_frames": 1e400}', "not valid JSON"),
    ("[" * 100_000 + "]" * 100_000, "nested"),
])
def test_cli_validate_hostile_metadata_is_one_line(reference, tmp_path, content, match):
    ref = tmp_path / "ref"
    shutil.copytree(reference, ref)
    (ref / "metadata.json").write_text(content)
    assert_one_line_error(cli("validate", str(ref), str(reference), cwd=tmp_path), match)
    shutil.copy(reference / "metadata.json", ref / "metadata.json")
    (ref / "VALIDATION_INSTRUCTIONS.json").write_text(content)
    proc = cli("validate", str(ref), str(reference), cwd=tmp_path)
    assert_one_line_error(proc, "VALIDATION_INSTRUCTIONS.json")


def test_cli_validate_forged_npy_is_not_a_memory_error(reference, tmp_path):
    cand = tmp_path / "cand"
    cand.mkdir()
    header = repr({"descr": "<f4", "fortran_order": False, "shape": (100_000, 100_000, 16)}).encode()
    header += b" " * (-(10 + len(header) + 1) % 64) + b"\n"
    (cand / "audio_features_padded.npy").write_bytes(b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little")
                                                     + header + bytes(64))
    proc = cli("validate", str(reference), str(cand), cwd=tmp_path)
    assert proc.returncode == 1 and "truncated" in proc.stdout, proc.stderr


def test_cli_frames_never_replaces_special_or_existing_files(tmp_path):
    feats = tmp_path / "feats.npy"
    np.save(feats, np.zeros((6, 512), np.float32))
    os.mkfifo(tmp_path / "fifo.npy")
    (tmp_path / "null").symlink_to("/dev/null")
    for name, match in (("fifo.npy", "FIFO"), ("null", "character device")):
        assert_one_line_error(cli("frames", str(feats), "--mode", "ave", "-o", name, cwd=tmp_path), match)
    assert (tmp_path / "null").is_symlink() and not (tmp_path / "fifo.npy").is_file()
    np.save(tmp_path / "old.npy", np.ones(3))
    assert_one_line_error(cli("frames", str(feats), "--mode", "ave", "-o", "old.npy", cwd=tmp_path), "--force")
    np.testing.assert_array_equal(np.load(tmp_path / "old.npy"), np.ones(3))
    assert _leftovers(tmp_path) == []


def test_cli_features_directory_with_a_file_suffix(tmp_path):
    proc = cli("features", str(ROOT / "synctalk_audio" / "data" / "demo_speech.wav"), "-c", "seeded",
               "-o", "out/x.npy", cwd=tmp_path)
    assert_one_line_error(proc, "file suffix")
    assert not (tmp_path / "out").exists()


DEMO = ROOT / "synctalk_audio" / "data" / "demo_speech.wav"


def _special(tmp_path: Path, special: str, name: str) -> str:
    """A FIFO (nobody ever writes to it: opening it for reading would block) or a link to /dev/zero."""
    path = tmp_path / name
    if special == "fifo":
        os.mkfifo(path)
    else:
        path.symlink_to("/dev/zero")
    return name


@pytest.mark.parametrize("special,kind", [("fifo", "a FIFO"), ("zero", "a character device")])
@pytest.mark.parametrize("role", ["audio", "checkpoint", "onnx"])
def test_cli_special_input_files_are_refused_unopened(tmp_path, special, kind, role):
    audio, ckpt = str(DEMO), "seeded"
    if role == "audio":
        audio = _special(tmp_path, special, "in.wav")
    else:
        ckpt = _special(tmp_path, special, "ck.onnx" if role == "onnx" else "ck.pth")
    proc = cli("features", audio, "-c", ckpt, "-o", "out", "--device", "cpu", cwd=tmp_path, timeout=60)
    assert_one_line_error(proc, f"is not a regular file ({kind})")
    assert "empty" not in proc.stderr and not (tmp_path / "out").exists()


def test_library_refuses_dev_zero_as_audio_or_checkpoint():
    from synctalk_audio import AudioError, CheckpointError, load_audio
    from synctalk_audio.runtime import load_onnx_encoder

    with pytest.raises(AudioError, match=r"audio file path is not a regular file \(a character device\): /dev/zero"):
        load_audio("/dev/zero")
    pytest.importorskip("torch")
    from synctalk_audio.encoder import load_encoder

    with pytest.raises(CheckpointError, match=r"checkpoint path is not a regular file \(a character device\)"):
        load_encoder("/dev/zero")
    pytest.importorskip("onnxruntime")
    with pytest.raises(CheckpointError, match=r"ONNX encoder path is not a regular file \(a character device\)"):
        load_onnx_encoder("/dev/zero")


@pytest.mark.parametrize("args,match", [
    (("features", "", "-c", "seeded", "-o", "out"), "audio file path is empty"),
    (("features", str(DEMO), "-c", "", "-o", "out"), "checkpoint path is empty"),
])
def test_cli_empty_paths_are_not_the_current_directory(tmp_path, args, match):
    proc = cli(*args, cwd=tmp_path)
    assert_one_line_error(proc, match)
    assert "directory" not in proc.stderr and not (tmp_path / "out").exists()


def test_library_empty_paths():
    from synctalk_audio import AudioError, CheckpointError, load_audio, load_channel
    from synctalk_audio.runtime import load_onnx_encoder

    for fn in (load_audio, load_channel):
        with pytest.raises(AudioError, match="^audio file path is empty$"):
            fn("")
    pytest.importorskip("onnxruntime")
    with pytest.raises(CheckpointError, match="^ONNX encoder path is empty$"):
        load_onnx_encoder("")
    pytest.importorskip("torch")
    from synctalk_audio.encoder import load_encoder

    with pytest.raises(CheckpointError, match="^checkpoint path is empty$"):
        load_encoder("")


# --------------------------------------------------------------------------- SIGTERM


_WRITER = textwrap.dedent("""
    import sys, types
    import numpy as np
    from synctalk_audio import dataset as ds, _io

    target, how = sys.argv[1], sys.argv[2]
    if how == "dataset":
        n = 20_000
        feats = np.zeros((n, 512), np.float32)
        res = types.SimpleNamespace(mel=np.zeros((80, 16 + 3 * n)), windows=np.zeros((n, 80, 16), np.float32),
                                    features=feats, padded=np.zeros((n + 2, 512), np.float32), mode="ave",
                                    fps=25, context="zeros", metadata={})
        ds.write_reference(res, target, weights={"state_dict_sha256": None, "untrained_seeded": None,
                                                 "note": "x"}, overwrite=True)
    else:
        with _io.atomic_file(target, overwrite=True) as fh:
            while True:
                fh.write(bytes(1 << 20))
""")


@pytest.mark.parametrize("how", ["dataset", "file"])
def test_sigterm_leaves_no_temp_sibling(tmp_path, how):
    script = tmp_path / "writer.py"
    script.write_text(_WRITER)
    work = tmp_path / "work"
    work.mkdir()
    target = work / ("out" if how == "dataset" else "out.bin")
    proc = subprocess.Popen([sys.executable, str(script), str(target), how], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    pattern = "frames" if how == "dataset" else ""
    while time.monotonic() < deadline and proc.poll() is None:
        tmps = [p for p in work.iterdir() if p.name.endswith(".tmp")]
        if tmps and (not pattern or (tmps[0] / pattern).is_dir()):
            break
        time.sleep(0.05)
    assert proc.poll() is None, proc.communicate()
    time.sleep(0.3)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err.decode()
    assert list(work.iterdir()) == []  # no target, no .tmp, no .old


# --------------------------------------------------------------------------- fuzz

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4),
    max_leaves=20,
)
KEYS = ["n_frames", "sha256", "weights", "shapes", "library", "output_kind", "dataset", "n_windows"]


def _library_error_or_ok(fn, *args, **kwargs):
    try:
        return fn(*args, **kwargs)
    except SyncTalkAudioError as exc:
        assert str(exc) and "\n" not in str(exc)
        return None


@FUZZ
@given(st.one_of(json_values.map(lambda v: json.dumps(v).encode()),
                 st.dictionaries(st.sampled_from(KEYS), json_values).map(lambda d: json.dumps(d).encode()),
                 st.binary(max_size=200)))
@example(b"[" * 100_000 + b"]" * 100_000)
@example(b'{"n_frames": 1e400}')
@example(b'{"sha256": {"/etc/passwd": "' + b"0" * 64 + b'"}}')
@example(b'{"sha256": {"../x.npy": 5}}')
def test_fuzz_metadata_json(reference, tmp_path_factory, data):
    ref = tmp_path_factory.mktemp("fuzz") / "ref"
    shutil.copytree(reference, ref)
    (ref / "metadata.json").write_bytes(data)
    _library_error_or_ok(ds.read_reference, ref, verify=True)
    _library_error_or_ok(ds.validate, ref, reference)
    _library_error_or_ok(_io.check_dir_target, ref, overwrite=True, kind="reference")


@FUZZ
@given(st.one_of(json_values.map(lambda v: json.dumps(v).encode()), st.binary(max_size=200)))
@example(b"[" * 100_000)
@example(b'{"library": "synctalk-audio", "file": "encoder.onnx", "sha256": 1e999}')
def test_fuzz_onnx_sidecar(tmp_path_factory, data):
    """What runtime's sidecar reader and the export's ownership check read: ``_io.read_json``."""
    folder = tmp_path_factory.mktemp("sidecar")
    (folder / "encoder.onnx").write_bytes(b"model")
    (folder / "encoder.onnx.json").write_bytes(data)
    meta = _library_error_or_ok(_io.read_json, folder / "encoder.onnx.json", max_bytes=1 << 20)
    if meta is not None:
        json.dumps(meta, allow_nan=False)  # finite, plain JSON
    _library_error_or_ok(_io.save_npy, folder / "encoder.onnx", np.zeros(1))


def test_onnx_sidecar_reader_survives_deep_nesting(tmp_path):
    from synctalk_audio import runtime

    (tmp_path / "encoder.onnx.json").write_text("[" * 100_000 + "]" * 100_000)
    assert dict(runtime._provenance(tmp_path / "encoder.onnx", "0" * 64)) == {}


_DESCRS = st.sampled_from(["<f4", "<f8", ">f4", "|u1", "<i8", "|b1", "|O", "<U3", "<c8", "[('a', '<f4')]", "V8"])


@FUZZ
@given(descr=_DESCRS, shape=st.lists(st.integers(-3, 10**12), max_size=4).map(tuple), fortran=st.booleans(),
       data_len=st.integers(0, 300), version=st.sampled_from([b"\x01\x00", b"\x02\x00", b"\x03\x00", b"\x09\x00"]),
       mmap=st.booleans(), garble=st.binary(max_size=8))
def test_fuzz_npy_headers(tmp_path_factory, descr, shape, fortran, data_len, version, mmap, garble):
    header = (repr({"descr": descr, "fortran_order": fortran, "shape": shape}).encode() + garble)
    width = 2 if version == b"\x01\x00" else 4
    body = b"\x93NUMPY" + version + len(header + b"\n").to_bytes(width, "little") + header + b"\n"
    path = tmp_path_factory.mktemp("npy") / "x.npy"
    path.write_bytes(body + bytes(data_len))
    arr = _library_error_or_ok(_io.load_npy, path, mmap=mmap)
    if arr is not None:
        assert arr.nbytes <= data_len
