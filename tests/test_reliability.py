"""Issue 7: every bad input gets one clear line (CLI: stderr, exit 2, no traceback) and leaves
nothing behind; code-running pickles are refused; interrupted runs leave no partial output;
same input → byte-identical outputs.
"""

from __future__ import annotations

import errno
import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

import synctalk_audio as sa
from synctalk_audio import cli, dataset

from .conftest import ROOT, golden_input

CLIP = str(golden_input("speech_16k_mono"))
SHORT = str(golden_input("short_0p3s_16k"))


class _Evil:
    def __reduce__(self):
        return (os.system, ("touch PWNED",))


def _audio(kind: str, d: Path) -> str:
    p = d / "in.wav"
    if kind == "missing":
        return str(d / "nope.wav")
    if kind == "empty":
        p.write_bytes(b"")
    elif kind == "text":
        p.write_text("definitely not a wave file\n" * 10)
    elif kind == "random":
        p.write_bytes(np.random.default_rng(7).bytes(5000))
    elif kind == "header_only":
        sf.write(p, np.zeros(0, np.float32), 16000)
    elif kind in ("nan", "inf"):
        x = np.zeros(8000, np.float32)
        x[100] = np.nan if kind == "nan" else np.inf
        sf.write(p, x, 16000, subtype="FLOAT")
    elif kind == "too_short":
        sf.write(p, np.zeros(2000, np.float32), 16000)
    elif kind == "directory":
        p.mkdir()
    return str(p)


def _checkpoint(kind: str, d: Path) -> str:
    p = d / "ckpt.pth"
    sd = sa.seeded_state_dict()
    if kind == "missing":
        return str(d / "nope.pth")
    if kind == "random":
        p.write_bytes(np.random.default_rng(3).bytes(4096))
        return str(p)
    if kind == "pickle":
        p.write_bytes(pickle.dumps({"0.conv_block.0.weight": _Evil()}))
        return str(p)
    if kind == "wrong_keys":
        sd = {k.replace("conv_block", "block"): v for k, v in sd.items()}
    elif kind == "wrong_shapes":
        sd["0.conv_block.0.weight"] = torch.zeros(32, 1, 5, 5)
    elif kind == "empty":
        sd = {}
    elif kind == "nonfinite":
        sd["12.conv_block.0.weight"][0, 0, 0, 0] = float("inf")
    torch.save(sd, p)
    return str(p)


CASES = [
    # (id, audio kind, checkpoint kind, extra args, expected words in the error line)
    ("missing audio", "missing", "seeded", (), "not found"),
    ("empty file", "empty", "seeded", (), "empty"),
    ("text as .wav", "text", "seeded", (), "cannot decode"),
    ("random bytes as .wav", "random", "seeded", (), "cannot decode"),
    ("header, no samples", "header_only", "seeded", (), "no samples"),
    ("NaN samples", "nan", "seeded", (), "non-finite"),
    ("Inf samples", "inf", "seeded", (), "non-finite"),
    ("shorter than a window", "too_short", "seeded", (), "too short"),
    ("directory as audio", "directory", "seeded", (), "directory"),
    ("missing checkpoint", "ok", "missing", (), "not found"),
    ("random bytes checkpoint", "ok", "random", (), "cannot load checkpoint"),
    ("wrong keys", "ok", "wrong_keys", (), "missing keys"),
    ("wrong shapes", "ok", "wrong_shapes", (), "expected (32, 1, 3, 3)"),
    ("empty state dict", "ok", "empty", (), "empty state dict"),
    ("non-finite weights", "ok", "nonfinite", (), "NaN or Inf"),
    ("code-running pickle", "ok", "pickle", (), "run code"),
    ("unknown mode", "ok", "seeded", ("--mode", "avx"), "avx"),
    ("fps 0", "ok", "seeded", ("--fps", "0"), "fps"),
    ("fps negative", "ok", "seeded", ("--fps", "-25"), "fps"),
]


@pytest.mark.slow
@pytest.mark.parametrize("name,audio,ckpt,extra,words", CASES, ids=[c[0] for c in CASES])
def test_cli_bad_input(tmp_path, name, audio, ckpt, extra, words):
    audio_path = SHORT if audio == "ok" else _audio(audio, tmp_path)
    ckpt_arg = "seeded" if ckpt == "seeded" else _checkpoint(ckpt, tmp_path)
    before = sorted(p.name for p in tmp_path.iterdir())
    proc = subprocess.run(
        [sys.executable, "-m", "synctalk_audio", "reference", audio_path, "--checkpoint", ckpt_arg,
         "-o", str(tmp_path / "OUT"), "--device", "cpu", *extra],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("synctalk-audio") and " error: " in lines[0], proc.stderr
    assert words in lines[0], lines[0]
    assert "Traceback" not in proc.stderr
    # nothing left behind: no OUT, no temp siblings, no pickle side effect
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    assert not (tmp_path / "PWNED").exists()


@pytest.mark.parametrize("where", ["file", "under_file"])
def test_output_path_problems(tmp_path, capsys, where):
    blocker = tmp_path / "blocker"
    blocker.write_text("precious")
    out = blocker if where == "file" else blocker / "sub" / "OUT"
    assert cli.main(["reference", SHORT, "-c", "seeded", "-o", str(out), "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("synctalk-audio: error:") and "blocker" in err
    assert blocker.read_text() == "precious"
    assert [p.name for p in tmp_path.iterdir()] == ["blocker"]


@pytest.mark.parametrize("exc", [OSError(errno.ENOSPC, "No space left on device"),
                                 PermissionError(errno.EACCES, "Permission denied")])
@pytest.mark.parametrize("command", ["reference", "features"])
def test_disk_full_and_permission_errors(tmp_path, capsys, monkeypatch, exc, command):
    real_save = np.save
    calls = {"n": 0}

    def failing_save(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise exc
        return real_save(*args, **kwargs)

    monkeypatch.setattr(np, "save", failing_save)
    code = cli.main([command, SHORT, "-c", "seeded", "-o", str(tmp_path / "OUT"), "--device", "cpu"])
    assert code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("synctalk-audio: error:"), err
    assert exc.strerror in err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_interrupted_run_leaves_no_partial_directory(tmp_path):
    audio = ROOT / "benchmarks" / "data" / "speech_45s.flac"
    proc = subprocess.Popen(
        [sys.executable, "-m", "synctalk_audio", "reference", str(audio), "-c", "seeded", "-o", "OUT",
         "--device", "cpu", "--quiet"],
        cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    deadline = time.time() + 240
    try:
        while time.time() < deadline:  # wait until frames are being written into the temp sibling
            temps = [p for p in tmp_path.iterdir() if p.name.startswith(".OUT.")]
            if temps and (temps[0] / "frames").is_dir() and any((temps[0] / "frames").iterdir()):
                break
            assert proc.poll() is None, "the run finished before it could be interrupted"
            time.sleep(0.05)
        else:
            pytest.fail("no temp directory appeared")
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert not (tmp_path / "OUT").exists()


def test_same_input_gives_byte_identical_files(tmp_path):
    outs = []
    for name in ("a", "b"):
        assert cli.main(["reference", SHORT, "-c", "seeded", "-o", str(tmp_path / name), "--device", "cpu",
                         "--quiet"]) == 0
        outs.append(tmp_path / name)
    files_a = sorted(p.relative_to(outs[0]) for p in outs[0].rglob("*.npy"))
    files_b = sorted(p.relative_to(outs[1]) for p in outs[1].rglob("*.npy"))
    assert files_a == files_b and len(files_a) > 6
    for rel in files_a:
        assert (outs[0] / rel).read_bytes() == (outs[1] / rel).read_bytes(), rel


def test_library_errors_leave_nothing(tmp_path):
    facade = sa.AudioPipeline(sa.seeded_state_dict(), device="cpu")
    with pytest.raises(sa.AudioError):
        facade.process_and_save_all_frames(tmp_path / "missing.wav", tmp_path / "OUT")
    assert list(tmp_path.iterdir()) == []
    assert dataset is not None
