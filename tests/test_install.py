"""What an install promises: the core needs no torch, and a missing extra is one clear line.

Each case runs in a fresh interpreter (subprocess) in which a module is made unimportable the
way an absent distribution is: every meta-path finder is wrapped so that ``find_spec`` returns
None for it, hence ``import torch`` raises ``ModuleNotFoundError: No module named 'torch'`` and
``importlib.util.find_spec("torch")`` is None — exactly as in an install without the extra.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

try:  # Python 3.11+
    import tomllib
except ModuleNotFoundError:  # pragma: no cover - Python 3.10
    tomllib = pytest.importorskip("tomli")

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = ROOT / "pyproject.toml"

# Prelude run first in each child: hide the named top-level modules from every finder.
_HIDE = textwrap.dedent("""\
    import sys
    _HIDDEN = set({hidden!r})

    class _Hide:
        def __init__(self, inner):
            self._inner = inner

        def find_spec(self, name, path=None, target=None):
            if name.partition(".")[0] in _HIDDEN:
                return None
            find = getattr(self._inner, "find_spec", None)
            return None if find is None else find(name, path, target)

        def __getattr__(self, attr):
            return getattr(self._inner, attr)

    for _m in list(sys.modules):
        if _m.partition(".")[0] in _HIDDEN:
            del sys.modules[_m]
    sys.meta_path[:] = [_Hide(f) for f in sys.meta_path]
""")


# The child prints one JSON line per case: the exception type, its message, and whether torch /
# onnxruntime got imported anyway.
_CATCH = """
import json, numpy as np
import synctalk_audio as sa

def attempt(label, fn):
    try:
        fn()
        rec = {"label": label, "raised": None, "message": ""}
    except Exception as exc:
        rec = {"label": label, "raised": type(exc).__name__, "message": str(exc),
               "family": isinstance(exc, sa.SyncTalkAudioError)}
    rec["torch_loaded"] = "torch" in sys.modules
    rec["onnxruntime_loaded"] = "onnxruntime" in sys.modules
    print(json.dumps(rec))
"""


def run_without(hidden: list[str], body: str, *, cwd: Path, catch: bool = False,
                timeout: float = 180) -> subprocess.CompletedProcess:
    code = _HIDE.format(hidden=sorted(hidden)) + (_CATCH if catch else "") + textwrap.dedent(body)
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, timeout=timeout)


def _report(proc: subprocess.CompletedProcess) -> str:
    return f"exit {proc.returncode}\n--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}"


def _records(proc: subprocess.CompletedProcess) -> dict[str, dict]:
    assert proc.returncode == 0, _report(proc)
    recs = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    return {r["label"]: r for r in recs}


def _one_line(message: str) -> str:
    assert message, "no message"
    assert "\n" not in message.strip(), f"not one line: {message!r}"
    return message


# --------------------------------------------------------------------------- (a) without torch


def test_import_without_torch_keeps_the_mel_front_end(tmp_path):
    proc = run_without(["torch"], """
        import numpy as np
        import synctalk_audio as sa
        assert "torch" not in sys.modules
        wav = (np.random.default_rng(0).standard_normal(16000) * 0.1).astype(np.float32)
        mel = sa.melspectrogram(wav, sa.SYNCTALK_2D)
        windows = np.asarray(sa.window(mel, fps=25))
        feats = np.zeros((windows.shape[0], 512), np.float32)
        frames = sa.reshape_for_mode(sa.context_windows(sa.pad_context(feats)), "ave")
        hubert = sa.frames_for_mode(np.zeros((5, 2, 1024), np.float32), "hubert")
        print("OK", mel.shape, windows.shape, frames.shape, hubert.shape, "torch" in sys.modules)
    """, cwd=tmp_path)
    assert proc.returncode == 0, _report(proc)
    assert proc.stdout.strip().endswith("False"), _report(proc)   # torch never imported
    assert "(80, 81)" in proc.stdout and "(22, 80, 16)" in proc.stdout and "(24, 32, 16, 16)" in proc.stdout and "(5, 32, 32, 32)" in proc.stdout


def test_pth_checkpoint_without_torch_names_the_extra_and_onnx(tmp_path):
    (tmp_path / "x.pth").write_bytes(b"PK\x03\x04 not really a checkpoint")
    proc = run_without(["torch"], catch=True, body="""
        wav = (np.random.default_rng(0).standard_normal(16000) * 0.1).astype(np.float32)
        attempt("pth", lambda: sa.pipeline(wav, checkpoint="x.pth"))
        attempt("seeded", lambda: sa.pipeline(wav, checkpoint="seeded"))
        import soundfile as sf
        sf.write("clip.wav", wav, 16000)
        attempt("seed_api", lambda: sa.AudioPipeline("x.pth", mode="ave").process_audio_file("clip.wav"))
    """, cwd=tmp_path)
    recs = _records(proc)
    for label in ("pth", "seeded", "seed_api"):
        rec = recs[label]
        assert rec["raised"] in ("ConfigError", "CheckpointError"), rec
        assert rec["family"], rec
        msg = _one_line(rec["message"])
        assert "[torch]" in msg, msg            # the extra to install
        assert ".onnx" in msg, msg              # and the torch-free alternative
        assert "Traceback" not in msg
        assert not rec["torch_loaded"], rec


def test_cli_with_pth_without_torch_is_one_stderr_line(tmp_path):
    (tmp_path / "x.pth").write_bytes(b"PK\x03\x04 not really a checkpoint")
    import soundfile as sf

    sf.write(tmp_path / "clip.wav", (np.random.default_rng(1).standard_normal(16000) * 0.1).astype(np.float32), 16000)
    proc = run_without(["torch"], """
        import runpy
        sys.argv = ["synctalk-audio", "features", "clip.wav", "--checkpoint", "x.pth", "-o", "out"]
        runpy.run_module("synctalk_audio", run_name="__main__", alter_sys=True)
    """, cwd=tmp_path)
    assert proc.returncode == 2, _report(proc)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, _report(proc)
    assert lines[0].startswith("synctalk-audio: error:"), _report(proc)
    assert "[torch]" in lines[0] and ".onnx" in lines[0], _report(proc)
    assert not (tmp_path / "out").exists()      # nothing written


# --------------------------------------------------------------------------- (b) without onnxruntime


def _onnx_file(path: Path) -> Path:
    """A small valid ONNX graph with the ave encoder's interface (the content does not matter)."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("mel_input", TensorProto.FLOAT, ["batch", 1, 80, 16])
    y = helper.make_tensor_value_info("features", TensorProto.FLOAT, ["batch", 1280])
    shape = helper.make_tensor("shape", TensorProto.INT64, [2], [-1, 1280])
    graph = helper.make_graph([helper.make_node("Reshape", ["mel_input", "shape"], ["features"])],
                              "stand_in", [x], [y], [shape])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def test_onnx_checkpoint_without_onnxruntime_names_the_extra(tmp_path):
    _onnx_file(tmp_path / "encoder.onnx")
    proc = run_without(["onnxruntime"], catch=True, body="""
        wav = (np.random.default_rng(0).standard_normal(16000) * 0.1).astype(np.float32)
        attempt("onnx", lambda: sa.pipeline(wav, checkpoint="encoder.onnx"))
    """, cwd=tmp_path)
    rec = _records(proc)["onnx"]
    assert rec["raised"] in ("ConfigError", "CheckpointError"), rec
    assert rec["family"], rec
    msg = _one_line(rec["message"])
    assert "[onnx]" in msg, msg
    assert not rec["torch_loaded"], rec        # the ONNX path never imports torch


def test_wenet_without_onnxruntime_names_an_extra(tmp_path):
    _onnx_file(tmp_path / "encoder.onnx")
    proc = run_without(["onnxruntime"], catch=True, body="""
        wav = (np.random.default_rng(0).standard_normal(32000) * 0.1).astype(np.float32)
        attempt("wenet", lambda: sa.pipeline(wav, mode="wenet", checkpoint="encoder.onnx"))
    """, cwd=tmp_path)
    rec = _records(proc)["wenet"]
    assert rec["raised"] in ("ConfigError", "CheckpointError"), rec
    msg = _one_line(rec["message"])
    assert "[wenet]" in msg or "[onnx]" in msg, msg
    assert not rec["torch_loaded"], rec        # wenet needs no torch


def test_onnx_path_runs_without_torch(tmp_path):
    """With onnxruntime present and torch absent, an .onnx ave encoder gets as far as the graph."""
    pytest.importorskip("onnxruntime")
    _onnx_file(tmp_path / "encoder.onnx")
    proc = run_without(["torch"], catch=True, body="""
        wav = (np.random.default_rng(0).standard_normal(16000) * 0.1).astype(np.float32)
        attempt("onnx", lambda: sa.pipeline(wav, checkpoint="encoder.onnx"))
    """, cwd=tmp_path)
    rec = _records(proc)["onnx"]
    # The stand-in graph has the wrong output width: a clear ShapeError/CheckpointError is fine,
    # a missing-torch error is not.
    assert "[torch]" not in rec["message"], rec
    assert not rec["torch_loaded"], rec


# --------------------------------------------------------------------------- (d) packaging metadata


def _project() -> dict:
    return tomllib.loads(PYPROJECT.read_text())["project"]


def _names(reqs: list[str]) -> set[str]:
    import re

    return {re.split(r"[\s<>=!~;\[@]", r.strip(), maxsplit=1)[0].lower().replace("_", "-") for r in reqs}


def test_core_dependencies_have_no_torch():
    core = _names(_project()["dependencies"])
    assert core == {"numpy", "soundfile", "soxr", "tqdm", "einops"}, core
    assert not core & {"torch", "onnxruntime", "transformers", "scipy", "librosa", "ray", "matplotlib"}


def test_license_is_an_spdx_expression():
    project = _project()
    assert project["license"] == "MIT"
    assert not any("License ::" in c for c in project.get("classifiers", []))   # PEP 639: no both


def test_extras_cover_every_runtime():
    extras = {k: _names(v) for k, v in _project()["optional-dependencies"].items()}
    assert "torch" in extras["torch"]
    assert extras["onnx"] == {"onnxruntime"}
    assert {"torch", "transformers"} <= extras["hubert"]
    assert "torch" not in extras["wenet"] and "onnxruntime" in extras["wenet"]
    assert "matplotlib" in extras["plot"]
    assert {"torch", "onnx", "onnxruntime", "coremltools"} <= extras["export"]
    assert "ray" in extras["ray"]
    # dev = everything the test suite imports
    assert {"pytest", "hypothesis", "scipy", "matplotlib", "nbformat", "nbclient", "ipykernel", "psutil",
            "torch", "onnx", "onnxruntime", "transformers", "ray"} <= extras["dev"], extras["dev"]


def test_make_test_installs_what_the_suite_needs():
    makefile = (ROOT / "Makefile").read_text()
    line = next(x for x in makefile.splitlines() if x.startswith("EXTRAS"))
    extras = set(line.split("=", 1)[1].strip().split(","))
    assert {"dev", "plot", "export", "onnx", "hubert", "wenet", "ray"} <= extras, extras
    assert "TORCH_INDEX" in makefile


def test_console_script_and_package_data():
    project = tomllib.loads(PYPROJECT.read_text())
    assert project["project"]["scripts"]["synctalk-audio"] == "synctalk_audio.cli:entry"
    assert "data/*.wav" in project["tool"]["setuptools"]["package-data"]["synctalk_audio"]
    assert list((ROOT / "synctalk_audio" / "data").glob("*.wav"))


def test_every_module_imports_first_in_a_fresh_process():
    """``import synctalk_audio.pool`` (or any module) as a process's first import: no circular
    import between the modules (pool ↔ stream broke this once)."""
    names = sorted(p.stem for p in (ROOT / "synctalk_audio").glob("*.py") if p.stem != "__main__")
    code = ("import importlib, sys\nbad = []\nfor name in sys.argv[1:]:\n"
            "    for m in [k for k in sys.modules if k.startswith('synctalk_audio')]:\n        del sys.modules[m]\n"
            "    try:\n        importlib.import_module('synctalk_audio.' + name)\n"
            "    except Exception as exc:\n        bad.append(f'{name}: {exc!r}')\nprint('\\n'.join(bad))\n")
    proc = subprocess.run([sys.executable, "-c", code, *names], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "", proc.stdout
    from synctalk_audio.stream import PoolError, StreamPool  # the re-export still works

    assert StreamPool.__module__ == "synctalk_audio.pool" and issubclass(PoolError, Exception)
