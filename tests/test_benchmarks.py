"""The benchmark scripts keep working: every one answers --help, refuses bad options with one
argparse line (exit 2, no traceback), and bench_stream runs end to end on a short clip."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from .conftest import ROOT

BENCH = ROOT / "benchmarks"
SCRIPTS = ["bench.py", "bench_stream.py", "bench_serving.py", "bench_jobs.py", "bench_versions.py", "bench_gpu.py",
           "int8_study.py"]


def _run(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=timeout, cwd=ROOT)


@pytest.mark.parametrize("script", SCRIPTS)
def test_every_benchmark_answers_help(script):
    """int8_study.py once ignored --help and ran its whole minute-long study."""
    done = _run(str(BENCH / script), "--help", timeout=60)
    assert done.returncode == 0 and done.stdout.startswith("usage:"), done.stderr[-500:]


@pytest.mark.parametrize("script,args,match", [
    ("bench.py", ["--repeats", "0"], "--repeats: expected a positive integer"),
    ("bench.py", ["--ghz", "-2"], "--ghz: expected a positive finite number"),
    ("bench_stream.py", ["--seconds", "nan"], "--seconds: expected a positive finite number"),
    ("bench_stream.py", ["--audio", "/nonexistent.wav"], "--audio: no such file"),
    ("bench_stream.py", ["--threads", "-1"], "--threads: expected a positive integer"),
    ("bench_serving.py", ["--seconds", "0"], "--seconds: expected a positive finite number"),
    ("bench_jobs.py", ["--checkpoint", "/nope.pth"], "--checkpoint: no such file"),
    ("bench_versions.py", ["/tmp"], "holds no synctalk_audio/__init__.py"),
    ("bench_gpu.py", ["--repeats", "0"], "--repeats: expected a positive integer"),
])
def test_bad_options_are_one_line(script, args, match):
    done = _run(str(BENCH / script), *args, timeout=60)
    assert done.returncode == 2 and match in done.stderr and "Traceback" not in done.stderr, done.stderr[-800:]


def test_library_errors_are_one_line(tmp_path):
    """A checkpoint the library cannot read: its own error line, exit 2."""
    bad = tmp_path / "bad.pth"
    bad.write_text("not a checkpoint")
    done = _run(str(BENCH / "bench_stream.py"), "--checkpoint", str(bad), timeout=60)
    assert done.returncode == 2 and done.stderr.startswith("bench_stream: error: cannot load checkpoint")
    assert "Traceback" not in done.stderr


def test_bench_stream_runs_on_a_short_clip():
    """A 1.5 s clip (the floor once asked for 64 windows and raised ShapeError below ~1.6 s): the
    streamed frames equal offline, the floor and upstream's line are reported."""
    done = _run(str(BENCH / "bench_stream.py"), "--seconds", "1.5", "--repeat", "1", "--layers", "--json", timeout=300)
    assert done.returncode == 0, done.stderr[-800:]
    report = json.loads(done.stdout)
    assert report["max_abs_diff_vs_offline"] == 0.0 and report["frames_shape_matches_offline"]
    layers = report["layers"]  # the exact engine's 13 blocks, timed at one window and in a batch
    assert [row["block"] for row in layers] == list(range(13)) and layers[11]["out_shape"] == [512, 1, 1]
    assert all(row["one_window_ms"] > 0 and row["batched_ms_per_window"] > 0 for row in layers)
    assert layers[11]["weights_mb"] == pytest.approx(256 * 512 * 9 * 4 / 1e6)
    assert report["floor_ms_per_window"] > 0 and report["machine"]["cpu_model"]
    upstream = report["upstream_offline_cpu_ms_per_frame"]  # None without `make bench`'s librosa 0.10.1
    assert upstream is None or upstream > 0
