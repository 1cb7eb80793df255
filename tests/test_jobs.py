"""Dataset-scale extraction (synctalk_audio.jobs, `synctalk-audio dataset`): inputs, resume,
failure isolation, SIGKILL, identical outputs serial / processes / Ray."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from synctalk_audio import jobs
from synctalk_audio.errors import ConfigError

from .conftest import ROOT, golden_input

DEMO = ROOT / "synctalk_audio" / "data" / "demo_speech.wav"
CLIPS = {name: golden_input(name) for name in ("speech_16k_mono", "speech_22k_mono", "speech_ogg", "speech_mp3",
                                               "speech_flac_32k", "short_0p3s_16k")}


def cli(*args: str, cwd: Path, timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "synctalk_audio", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout)


def tree(root: Path) -> dict[str, str]:
    """sha256 of every file of the per-input outputs (the run's own _summary/_failures/lock left out)."""
    out = {}
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root).as_posix()
        if p.is_file() and not rel.startswith("_") and not any(part.startswith(".") for part in rel.split("/")):
            out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def stamps(root: Path) -> dict[str, tuple[int, str]]:
    return {rel: ((root / rel).stat().st_mtime_ns, digest) for rel, digest in tree(root).items()}


def make_src(root: Path, files: dict[str, Path]) -> Path:
    for rel, source in files.items():
        dest = root / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, dest)
    return root


def run(src, out, **kw) -> jobs.Summary:
    kw.setdefault("checkpoint", "seeded")
    kw.setdefault("device", "cpu")
    return jobs.extract_dataset(src, out, progress=False, **kw)


# --------------------------------------------------------------------------- inputs (no audio decoded)


def test_directory_scan_is_recursive_sorted_case_insensitive(tmp_path):
    src = tmp_path / "src"
    for rel in ("b/z.WAV", "a/x.flac", "a/deeper/y.Mp3", "c.ogg", "notes.txt", ".hidden.wav", ".cache/k.wav"):
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        (src / rel).write_bytes(b"")
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "linked.wav").write_bytes(b"")
    (src / "link").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    root, files = jobs.find_inputs(src)
    assert root == src
    assert [f.relative_to(src).as_posix() for f in files] == ["a/deeper/y.Mp3", "a/x.flac", "b/z.WAV", "c.ogg"]
    items, failures = jobs.plan_items(root, files, tmp_path / "out")
    assert [i.rel for i in items] == ["a/deeper/y", "a/x", "b/z", "c"] and not failures
    assert items[0].output == str(tmp_path / "out" / "a" / "deeper" / "y")


def test_manifests_txt_csv_jsonl(tmp_path):
    data = tmp_path / "data"
    for rel in ("s1/a.wav", "s1/b.wav", "s2/sub/c.flac"):
        (data / rel).parent.mkdir(parents=True, exist_ok=True)
        (data / rel).write_bytes(b"")
    (tmp_path / "lists").mkdir()
    txt = tmp_path / "lists" / "m.txt"
    txt.write_text(f"# comment\n../data/s1/a.wav\n\n{data / 's2/sub/c.flac'}\n../data/s1/a.wav\n")
    csv = tmp_path / "lists" / "m.csv"
    csv.write_text("speaker,path\nx,../data/s1/b.wav\ny,../data/s2/sub/c.flac\n")
    jsonl = tmp_path / "lists" / "m.jsonl"
    jsonl.write_text('{"path": "../data/s1/a.wav", "text": "hi"}\n\n{"path": "../data/s1/b.wav"}\n')
    root, files = jobs.find_inputs(txt)
    assert root == data and files == [data / "s1/a.wav", data / "s2/sub/c.flac"]  # duplicates dropped
    assert [i.rel for i in jobs.plan_items(root, files, tmp_path / "o")[0]] == ["s1/a", "s2/sub/c"]
    root, files = jobs.find_inputs(csv)
    assert root == data and files == [data / "s1/b.wav", data / "s2/sub/c.flac"]
    root, files = jobs.find_inputs(jsonl)
    assert root == data / "s1" and [f.name for f in files] == ["a.wav", "b.wav"]


@pytest.mark.parametrize("name, text, match", [
    ("m.csv", "file\nx.wav\n", "no 'path' column"),
    ("m.jsonl", '{"path": "a.wav"}\n[1]\n', "line 2"),
    ("m.txt", "# only a comment\n", "lists no paths"),
    ("a.WAV", "", "is an audio file"),
])
def test_bad_src_is_a_config_error(tmp_path, name, text, match):
    (tmp_path / name).write_text(text)
    with pytest.raises(ConfigError, match=match):
        jobs.find_inputs(tmp_path / name)


def test_missing_or_empty_src(tmp_path):
    with pytest.raises(ConfigError, match="SRC not found"):
        jobs.find_inputs(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="no audio files"):
        jobs.find_inputs(tmp_path / "empty")


def test_colliding_outputs_are_failures_not_guesses(tmp_path):
    root = tmp_path
    files = [root / "a.wav", root / "a.flac", root / "b.wav", root / "b" / "c.wav", root / "d.wav"]
    items, failures = jobs.plan_items(root, files, tmp_path / "out")
    assert [i.rel for i in items] == ["d"]
    assert sorted(Path(f.path).name for f in failures) == ["a.flac", "a.wav", "b.wav", "c.wav"]
    assert all("rename" in f.error for f in failures)


# --------------------------------------------------------------------------- runs in this process


def test_directory_run_nested_then_resume_and_repair(tmp_path):
    inputs = {"s1/a.wav": CLIPS["speech_16k_mono"], "s2/deep/b.ogg": CLIPS["speech_ogg"], "c.mp3": CLIPS["speech_mp3"]}
    src = make_src(tmp_path / "src", inputs)
    out = tmp_path / "out"
    first = run(src, out)
    assert (first.done, first.skipped, first.failed) == (3, 0, ())
    for rel in inputs:
        meta = json.loads((out / rel.rsplit(".", 1)[0] / "metadata.json").read_text())
        assert meta["output_kind"] == "features" and meta["source"] == str(src / rel)
    summary = json.loads((out / jobs.SUMMARY).read_text())
    assert summary["done"] == 3 and summary["ok"] is True and summary["files_per_hour"] > 0
    assert not (out / jobs.FAILURES).exists()
    before = stamps(out)

    second = run(src, out)  # nothing to do: nothing rewritten
    assert (second.done, second.skipped) == (0, 3) and stamps(out) == before
    assert second.audio_s_skipped == pytest.approx(first.audio_s_done)

    # a corrupted file, a leftover temp sibling of a killed write, a stale settings output
    npy = out / "s1/a/audio_features_padded.npy"
    data = npy.read_bytes()
    npy.write_bytes(data[:-4] + bytes(b ^ 0xFF for b in data[-4:]))
    leftover = out / "s2/deep/.b.0123abcd.tmp"
    leftover.mkdir()
    (leftover / "mel_spectrogram.npy").write_bytes(b"partial")
    third = run(src, out)
    assert (third.done, third.skipped) == (1, 2) and not leftover.exists()
    after = stamps(out)
    assert after["s1/a/audio_features_padded.npy"][1] == before["s1/a/audio_features_padded.npy"][1]
    assert after["c/metadata.json"] == before["c/metadata.json"]

    fourth = run(src, out, radius=4)  # other settings: every output is redone
    assert (fourth.done, fourth.skipped) == (3, 0)
    assert json.loads((out / "c/metadata.json").read_text())["radius"] == 4


def test_manifest_run_and_foreign_directory_is_not_replaced(tmp_path):
    data = make_src(tmp_path / "data", {"x/one.wav": CLIPS["speech_16k_mono"], "y/two.flac": CLIPS["speech_flac_32k"]})
    manifest = tmp_path / "list.csv"
    manifest.write_text("path,speaker\ndata/x/one.wav,1\ndata/y/two.flac,2\n")
    out = tmp_path / "out"
    (out / "y" / "two").mkdir(parents=True)
    (out / "y" / "two" / "mine.txt").write_text("not ours")
    s = run(manifest, out)
    assert s.done == 1 and len(s.failed) == 1 and s.failed[0].path == str(data / "y/two.flac")
    assert "not written by synctalk-audio" in s.failed[0].error
    assert (out / "y/two/mine.txt").read_text() == "not ours" and (out / "x/one/metadata.json").is_file()
    lines = [json.loads(line) for line in (out / jobs.FAILURES).read_text().splitlines()]
    assert lines == [{"path": str(data / "y/two.flac"), "output": str(out / "y/two"), "error": s.failed[0].error}]
    assert data.exists() and not (data / "x" / "one").exists()


def test_dataset_output_is_what_features_writes(tmp_path):
    src = make_src(tmp_path / "src", {"talk.wav": CLIPS["speech_22k_mono"]})
    run(src, tmp_path / "out")
    proc = cli("features", str(src / "talk.wav"), "-c", "seeded", "--device", "cpu", "-o", "feat", "-q", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert tree(tmp_path / "out") == {f"talk/{k}": v for k, v in tree(tmp_path / "feat").items()}


def test_hubert_and_wenet_modes(tmp_path):
    pytest.importorskip("onnxruntime")
    from synctalk_audio.wenet import write_standin_wenet_onnx

    src = make_src(tmp_path / "src", {"a.wav": CLIPS["speech_16k_mono"]})
    onnx = write_standin_wenet_onnx(tmp_path / "encoder.onnx")
    s = run(src, tmp_path / "w", checkpoint=onnx, mode="wenet", radius=4)
    assert s.done == 1 and s.untrained, s.failed
    assert {p.name for p in (tmp_path / "w/a").iterdir()} >= {"aud_wenet.npy", "metadata.json"}
    assert run(src, tmp_path / "w", checkpoint=onnx, mode="wenet", radius=4).skipped == 1
    pytest.importorskip("transformers")
    from synctalk_audio.hubert import write_standin_hubert

    hub = write_standin_hubert(tmp_path / "hubert")
    s = run(src, tmp_path / "h", checkpoint=hub, mode="hubert")
    assert s.done == 1, s.failed
    assert (tmp_path / "h/a/aud_hu.npy").is_file()
    assert run(src, tmp_path / "h", checkpoint=hub, mode="hubert").skipped == 1


def test_settings_are_checked_before_any_work(tmp_path):
    src = make_src(tmp_path / "src", {"a.wav": CLIPS["short_0p3s_16k"]})
    with pytest.raises(ConfigError, match="radius"):
        run(src, tmp_path / "out", radius=5)
    with pytest.raises(ConfigError, match="gpus_per_worker needs ray"):
        run(src, tmp_path / "out", gpus_per_worker=1)
    with pytest.raises(ConfigError, match="workers"):
        run(src, tmp_path / "out", workers=0)
    assert not (tmp_path / "out").exists()


# --------------------------------------------------------------------------- the CLI in subprocesses


def test_cli_corrupt_file_among_good_ones_exit_1(tmp_path):
    src = make_src(tmp_path / "src", {"good1.wav": CLIPS["speech_16k_mono"], "sub/good2.ogg": CLIPS["speech_ogg"]})
    (src / "sub" / "broken.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk" + os.urandom(200))
    proc = cli("dataset", "src", "-o", "out", "-c", "seeded", "--device", "cpu", cwd=tmp_path)
    assert proc.returncode == 1, proc.stderr
    assert "2 done" in proc.stdout and "1 failed" in proc.stdout and "broken.wav" in proc.stdout
    lines = (tmp_path / "out" / jobs.FAILURES).read_text().splitlines()
    assert len(lines) == 1 and json.loads(lines[0])["path"].endswith("sub/broken.wav")
    assert "\n" not in json.loads(lines[0])["error"]
    assert (tmp_path / "out/good1/metadata.json").is_file() and (tmp_path / "out/sub/good2/metadata.json").is_file()
    summary = json.loads((tmp_path / "out" / jobs.SUMMARY).read_text())
    assert summary["n_failed"] == 1 and summary["done"] == 2

    again = cli("dataset", "src", "-o", "out", "-c", "seeded", "--device", "cpu", "--json", cwd=tmp_path)
    assert again.returncode == 1
    report = json.loads(again.stdout)
    assert report["skipped"] == 2 and report["done"] == 0 and report["failed"][0]["path"].endswith("broken.wav")


def test_cli_usage_error_is_one_line_exit_2(tmp_path):
    proc = cli("dataset", "missing_dir", "-o", "out", "-c", "seeded", cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "SRC not found" in proc.stderr


def listing(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*"))


def usage_error_setup(tmp_path: Path) -> None:
    import torch

    src = make_src(tmp_path / "src", {"a.wav": CLIPS["short_0p3s_16k"]})
    (src / "sub").mkdir()
    torch.save([1, 2, 3], tmp_path / "notsd.pth")
    (tmp_path / "rand.pth").write_bytes(bytes(range(256)) * 2)
    (tmp_path / "empty.pth").write_bytes(b"")


@pytest.mark.parametrize("args, out, match", [
    (["-c", "notsd.pth"], "out", "not a state dict"),
    (["-c", "rand.pth"], "out", "rand.pth"),
    (["-c", "/nonexistent.pth"], "out", "checkpoint not found"),
    (["-c", "empty.pth"], "nn/mm/ds", "empty"),
    (["--mode", "hubert", "-c", "seeded"], "out", "hubert needs its own model"),
    (["--precision", "onnx", "-c", "seeded"], "out", "precision 'onnx'"),
    (["-c", "seeded", "--device", "cuda:99"], "out", "'cuda:99'"),
    (["-c", "seeded", "--device", "cuda:99", "--workers", "2"], "out", "'cuda:99'"),
    (["-c", "seeded", "--device", "tpu"], "out", "'tpu'"),
    (["-c", "seeded", "--device", "tpu", "--workers", "2"], "out", "'tpu'"),
    (["-c", "seeded", "--device", "tpu", "--gpus-per-worker", "1", "--ray"], "out", "'tpu'"),
    (["-c", "seeded", "--ray=notanaddress"], "out", "Ray address 'notanaddress'"),
    (["-c", "seeded", "--ray=host:notaport"], "out", "Ray address 'host:notaport'"),
    (["-c", "seeded"], "", "OUT is empty"),
    (["-c", "seeded"], "src", "is SRC"),
    (["-c", "seeded"], "src/sub/out", "is inside SRC"),
    (["-c", "seeded"], "./src/../src/new", "is inside SRC"),
])
def test_cli_usage_errors_leave_nothing_behind(tmp_path, monkeypatch, capsys, args, out, match):
    from synctalk_audio.cli import main

    usage_error_setup(tmp_path)
    before = listing(tmp_path)
    monkeypatch.chdir(tmp_path)
    rc = main(["dataset", "src", "-o", out, *args])
    err = capsys.readouterr().err
    assert rc == 2, err
    assert err.count("\n") == 1 and err.startswith("synctalk-audio: error: ") and match in err, err
    assert listing(tmp_path) == before


def test_cli_bad_max_seconds_setting_is_exit_2_before_any_write(tmp_path, monkeypatch, capsys):
    from synctalk_audio.cli import main

    usage_error_setup(tmp_path)
    before = listing(tmp_path)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SYNCTALK_AUDIO_MAX_SECONDS", "abc")
    rc = main(["dataset", "src", "-o", "out", "-c", "seeded", "--device", "cpu"])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "SYNCTALK_AUDIO_MAX_SECONDS" in err and "'abc'" in err, err
    assert listing(tmp_path) == before


def test_worker_device_is_checked_in_the_parent():
    from synctalk_audio.jobs_workers import check_device

    seeded_encoder, _ = jobs.load_engine(jobs.Settings(checkpoint="seeded", device="cpu"))
    check_device("cpu", seeded_encoder)
    check_device("cuda", seeded_encoder, here=False)  # Ray GPU actors: the driver may have no GPU
    check_device("cuda:3", seeded_encoder, here=False)
    for bad in ("tpu", "cuda:x", "", "cuda:"):
        with pytest.raises(ConfigError, match="device"):
            check_device(bad, seeded_encoder, here=False)
        with pytest.raises(ConfigError, match="device"):
            check_device(bad, seeded_encoder)


def test_cli_unreachable_ray_address_is_one_quick_line(tmp_path):
    pytest.importorskip("ray")
    import socket

    usage_error_setup(tmp_path)
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    before = listing(tmp_path)
    start = time.monotonic()
    proc = cli("dataset", "src", "-o", "out", "-c", "seeded", f"--ray=127.0.0.1:{port}", cwd=tmp_path, timeout=120)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and f"127.0.0.1:{port}" in lines[0], proc.stderr
    assert time.monotonic() - start < 60
    assert listing(tmp_path) == before


def test_cli_ray_not_installed_is_one_clear_line(tmp_path):
    make_src(tmp_path / "src", {"a.wav": CLIPS["short_0p3s_16k"]})
    blocker = textwrap.dedent("""
        import sys
        class NoRay:
            def find_spec(self, name, path=None, target=None):
                if name == "ray" or name.startswith("ray."):
                    raise ImportError("No module named 'ray'")
        sys.meta_path.insert(0, NoRay())
        from synctalk_audio.cli import main
        sys.exit(main(sys.argv[1:]))
    """)
    proc = subprocess.run([sys.executable, "-c", blocker, "dataset", "src", "-o", "out", "-c", "seeded", "--ray"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "pip install -e '.[ray]'" in lines[0] and "Traceback" not in proc.stderr
    assert not (tmp_path / "out").exists()


def test_sigkill_mid_run_then_resume(tmp_path):
    names = ["speech_16k_mono", "speech_22k_mono", "speech_ogg", "speech_mp3", "speech_flac_32k"]
    files = {f"part{i}/{n}{CLIPS[n].suffix}": CLIPS[n] for i, n in enumerate(names)}
    files["part9/demo.wav"] = DEMO
    make_src(tmp_path / "src", files)
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", "synctalk_audio", "dataset", "src", "-o", "out", "-c", "seeded",
                             "--device", "cpu", "-q"], cwd=tmp_path, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)

    def complete() -> list[str]:  # pathlib's '*' also matches the hidden temp siblings: leave those out
        return sorted(p.parent.relative_to(out).as_posix() for p in out.glob("*/*/metadata.json")
                      if not p.parent.name.startswith("."))

    deadline = time.monotonic() + 120
    while not complete() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    completed = complete()
    assert 0 < len(completed) < 6, completed  # killed mid-run
    before = {k: v for k, v in stamps(out).items() if k.rsplit("/", 1)[0] in completed}

    again = cli("dataset", "src", "-o", "out", "-c", "seeded", "--device", "cpu", "--json", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    report = json.loads(again.stdout)
    assert (report["skipped"], report["done"]) == (len(completed), 6 - len(completed)), (completed, report)
    after = stamps(out)
    assert {k: after[k] for k in before} == before  # same mtime_ns and checksum: untouched
    assert len({k.rsplit("/", 1)[0] for k in after}) == 6
    assert not [p for p in out.rglob(".*") if p.name != jobs.LOCK]  # no temp siblings left


# --------------------------------------------------------------------------- identical outputs across backends


@pytest.fixture(scope="module")
def ray_local():
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.mark.slow
def test_serial_processes_and_ray_write_identical_bytes(tmp_path, ray_local):
    src = make_src(tmp_path / "src", {"a/one.wav": CLIPS["speech_16k_mono"], "b/two.mp3": CLIPS["speech_mp3"],
                                      "three.wav": DEMO, "bad.wav": CLIPS["short_0p3s_16k"]})
    (src / "bad.wav").write_bytes(b"not audio")
    serial = run(src, tmp_path / "serial")
    procs = run(src, tmp_path / "procs", workers=2)
    on_ray = run(src, tmp_path / "ray", ray=True)
    assert (serial.backend, procs.backend, on_ray.backend) == ("serial", "processes", "ray")
    assert procs.workers == 2 and on_ray.workers == 2
    for s in (serial, procs, on_ray):
        assert s.done == 3 and [Path(f.path).name for f in s.failed] == ["bad.wav"]
    reference = tree(tmp_path / "serial")
    assert len(reference) == 12
    assert tree(tmp_path / "procs") == reference
    assert tree(tmp_path / "ray") == reference


def test_unguarded_script_with_workers_says_what_to_do(tmp_path):
    """A script calling extract_dataset(workers=2) without the __main__ guard: its spawned workers
    re-import it; each stops with one ConfigError line naming the fix, not a lock error."""
    src = tmp_path / "clips"
    src.mkdir()
    shutil.copy(golden_input("speech_16k_mono"), src / "a.wav")
    script = tmp_path / "unguarded.py"
    script.write_text(textwrap.dedent(f"""
        from synctalk_audio import extract_dataset
        s = extract_dataset({str(src)!r}, {str(tmp_path / 'out')!r}, checkpoint="seeded", workers=2)
        print("done", s.done, "failed", len(s.failed))
    """))
    proc = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert "done 0 failed 1" in proc.stdout
    assert 'put the call under `if __name__ == "__main__":`' in proc.stderr
    assert "lock" not in proc.stderr


def test_books_that_cannot_be_written_do_not_stop_the_run(tmp_path, monkeypatch):
    """A full disk (simulated) while `_failures.jsonl` and `_summary.json` are written: a warning
    each, the run goes on and its summary lists the failure (it once ended with exit 2, 'usage
    error', after files were written)."""
    import errno

    src = make_src(tmp_path / "src", {"a.wav": golden_input("speech_16k_mono")})
    (src / "broken.wav").write_bytes(b"RIFF....not audio")

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(jobs, "_write_failures", full)
    (tmp_path / "out" / "_summary.json").mkdir(parents=True)  # and a summary that cannot be written
    with pytest.warns(UserWarning) as record:
        summary = run(src, tmp_path / "out", workers=1)
    messages = [str(w.message) for w in record]
    assert any("No space left on device" in m for m in messages), messages
    assert any("_summary.json" in m for m in messages), messages
    assert summary.done == 1 and [Path(f.path).name for f in summary.failed] == ["broken.wav"]


def test_a_worker_whose_parent_died_while_it_started_exits_at_once(tmp_path):
    """The parent-death signal is set in the worker's initializer; a parent killed before that left
    an orphan that went on writing files. The initializer now checks its parent first."""
    import subprocess
    import sys

    code = ("import os\nfrom synctalk_audio.jobs_workers import _init_process\n"
            "_init_process(None, (), os.getppid() + 1)\nprint('worker started')\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and "worker started" not in done.stdout, done.stderr


def test_an_out_that_cannot_be_made_leaves_no_parent_folder(tmp_path, capsys):
    """`dataset -o d2/LONGNAME` left `d2/` behind (and named the path twice in its error)."""
    from synctalk_audio import cli

    src = make_src(tmp_path / "src", {"a.wav": golden_input("speech_16k_mono")})
    out = tmp_path / "d2" / ("x" * 300)
    assert cli.main(["dataset", str(src), "-o", str(out), "--checkpoint", "seeded", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count(str(out)) == 1 and "File name too long" in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src"]
