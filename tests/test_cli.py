"""The synctalk-audio command line, end to end in subprocesses (plus cheap in-process checks)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from synctalk_audio import cli

from .conftest import golden_input

CLIP = str(golden_input("speech_16k_mono"))
SHORT = str(golden_input("short_0p3s_16k"))
PNG = b"\x89PNG\r\n\x1a\n"


def run(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "synctalk_audio", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=300)


def assert_one_line_error(proc: subprocess.CompletedProcess, match: str) -> None:
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("synctalk-audio") and "error:" in lines[0] and match in lines[0], lines[0]
    assert "Traceback" not in proc.stderr


@pytest.fixture(scope="module")
def reference_dir(tmp_path_factory) -> Path:
    cwd = tmp_path_factory.mktemp("cli")
    proc = run("reference", CLIP, "--checkpoint", "seeded", "-o", "ref", "--device", "cpu", cwd=cwd)
    assert proc.returncode == 0, proc.stderr
    assert "UNTRAINED" in proc.stdout and "frames/frame_XXXXX_window.npy" in proc.stdout
    return cwd / "ref"


@pytest.mark.slow
def test_reference_command(reference_dir):
    meta = json.loads((reference_dir / "metadata.json").read_text())
    n = meta["n_frames"]
    assert meta["weights"]["untrained_seeded"] is True
    assert len(list((reference_dir / "frames").glob("frame_*_reshaped.npy"))) == n
    assert (reference_dir / "VALIDATION_INSTRUCTIONS.json").is_file()


@pytest.mark.slow
def test_features_command_and_validate(reference_dir, tmp_path):
    proc = run("features", CLIP, "-c", "seeded", "-o", "feat", "--json", "--device", "cpu", "--frames",
               cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["kind"] == "features" and summary["weights"]["untrained_seeded"] is True
    assert "UNTRAINED" in proc.stderr  # the warning also reaches a --json user
    feat = tmp_path / "feat"
    frames = np.load(feat / "audio_frames.npy")
    assert frames.shape == (summary["n_frames"], 32, 16, 16)
    # the features output validates against the reference dataset, and vice versa
    ok = run("validate", str(reference_dir), str(feat), cwd=tmp_path)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "PASS" in ok.stdout and "frames_reshaped" in ok.stdout
    # existing output: refused without --force, replaced with it
    again = run("features", CLIP, "-c", "seeded", "-o", "feat", cwd=tmp_path)
    assert_one_line_error(again, "not empty")



def test_features_many_inputs_one_process(tmp_path):
    """Several inputs: OUT/<stem>/ each, byte-equal to one run per file; JSON is a list."""
    inputs = [CLIP, SHORT, str(golden_input("speech_22k_mono"))]
    proc = run("features", *inputs, "-c", "seeded", "-o", "many", "--device", "cpu", "--json", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    summaries = json.loads(proc.stdout)
    names = [Path(a).stem for a in inputs]
    assert [Path(s["output"]).name for s in summaries] == names
    assert sorted(p.name for p in (tmp_path / "many").iterdir()) == sorted(names)
    assert proc.stderr.count("UNTRAINED") == 1
    single = run("features", SHORT, "-c", "seeded", "-o", "one", "--device", "cpu", "-q", cwd=tmp_path)
    assert single.returncode == 0, single.stderr
    for f in ("mel_spectrogram.npy", "audio_features_raw.npy", "audio_features_padded.npy"):
        assert (tmp_path / "many" / names[1] / f).read_bytes() == (tmp_path / "one" / f).read_bytes()


def test_features_many_inputs_errors(tmp_path, capsys):
    out = str(tmp_path / "many")
    dup = tmp_path / "sub"
    dup.mkdir()
    shutil.copy(CLIP, dup / Path(CLIP).name)
    # the same stem twice: refused before any work, nothing created
    assert cli.main(["features", CLIP, str(dup / Path(CLIP).name), "-c", "seeded", "-o", out, "-q"]) == 2
    assert "would both write" in capsys.readouterr().err and not Path(out).exists()
    # -o is a file
    (tmp_path / "file").write_text("x")
    assert cli.main(["features", CLIP, SHORT, "-c", "seeded", "-o", str(tmp_path / "file"), "-q"]) == 2
    assert "is a file" in capsys.readouterr().err
    # a bad file in the middle: stops with one line naming it; the earlier output is complete
    too_short = str(golden_input("too_short_0p15s_16k"))
    assert cli.main(["features", CLIP, too_short, SHORT, "-c", "seeded", "-o", out, "-q", "--device", "cpu"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and too_short in err[0] and "audio too short" in err[0] and "1 of 3 inputs" in err[0]
    assert sorted(p.name for p in Path(out).iterdir()) == [Path(CLIP).stem]  # no temp siblings, no partial dir
    assert (Path(out) / Path(CLIP).stem / "metadata.json").is_file()
    # existing outputs: refused up front without --force, replaced with it
    assert cli.main(["features", CLIP, SHORT, "-c", "seeded", "-o", out, "-q", "--device", "cpu"]) == 2
    assert "not empty" in capsys.readouterr().err
    assert cli.main(["features", CLIP, SHORT, "-c", "seeded", "-o", out, "-q", "--device", "cpu", "--force"]) == 0
    assert sorted(p.name for p in Path(out).iterdir()) == sorted([Path(CLIP).stem, Path(SHORT).stem])


def test_force_replaces_in_process(tmp_path, capsys):
    out = str(tmp_path / "feat")
    assert cli.main(["features", SHORT, "-c", "seeded", "-o", out, "-q", "--device", "cpu"]) == 0
    assert cli.main(["features", SHORT, "-c", "seeded", "-o", out, "-q", "--device", "cpu"]) == 2
    assert cli.main(["features", SHORT, "-c", "seeded", "-o", out, "-q", "--force", "--device", "cpu"]) == 0
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.count("\n") == 1 and "not empty" in captured.err
    assert [p.name for p in tmp_path.iterdir()] == ["feat"]


def test_validate_failure_exit_code_and_json(reference_dir, tmp_path):
    cand = tmp_path / "cand"
    shutil.copytree(reference_dir, cand)
    arr = np.load(cand / "audio_features_padded.npy")
    arr[5, 100] += 0.5
    np.save(cand / "audio_features_padded.npy", arr)
    proc = run("validate", str(reference_dir), str(cand), cwd=tmp_path)
    assert proc.returncode == 1
    assert "FAIL" in proc.stdout and "audio_features_padded" in proc.stdout
    proc = run("validate", str(reference_dir), str(cand), "--json", cwd=tmp_path)
    assert proc.returncode == 1
    report = json.loads(proc.stdout)
    assert report["ok"] is False
    assert {r["name"]: r["status"] for r in report["rows"]}["audio_features_padded"] == "fail"
    # a loose enough tolerance passes it; --require fails on what is missing
    assert run("validate", str(reference_dir), str(cand), "--atol", "1", "-q", cwd=tmp_path).returncode == 0
    only_mel = tmp_path / "only_mel"
    only_mel.mkdir()
    shutil.copy(reference_dir / "mel_spectrogram.npy", only_mel)
    assert run("validate", str(reference_dir), str(only_mel), "-q", cwd=tmp_path).returncode == 0
    assert run("validate", str(reference_dir), str(only_mel), "--require", "all", "-q", cwd=tmp_path).returncode == 1


@pytest.mark.slow
def test_plot_command(tmp_path):
    proc = run("plot", SHORT, "-o", "fig.png", "--checkpoint", "seeded", "--dpi", "40", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "fig.png").read_bytes()[:8] == PNG
    assert [p.name for p in tmp_path.iterdir()] == ["fig.png"]


def test_plot_without_checkpoint_in_process(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    assert cli.main(["plot", SHORT, "-o", str(tmp_path / "mel_only.png"), "--dpi", "30"]) == 0
    assert "no feature panel" in capsys.readouterr().err
    assert (tmp_path / "mel_only.png").read_bytes()[:8] == PNG
    assert cli.main(["plot", SHORT, "-o", str(tmp_path / "fig.xyz")]) == 2
    assert "fig.xyz" in capsys.readouterr().err
    assert [p.name for p in tmp_path.iterdir()] == ["mel_only.png"]


@pytest.mark.slow
def test_demo_command(tmp_path):
    proc = run("demo", "-o", "demo_output", "--device", "cpu", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "UNTRAINED" in proc.stdout.splitlines()[0]
    out = tmp_path / "demo_output"
    assert (out / "demo_features.png").read_bytes()[:8] == PNG
    assert "UNTRAINED" in (out / "README.txt").read_text()
    meta = json.loads((out / "metadata.json").read_text())
    assert meta["weights"]["untrained_seeded"] is True and "UNTRAINED" in meta["demo"]
    assert meta["n_frames"] == 96 and meta["source"].endswith("demo_speech.wav")
    # a second run is refused without --force, and replaces only the previous demo output with it
    # (make demo passes --force) — never a file the user put in it; in-process for speed
    (out / "stale.npy").write_bytes(b"")
    assert cli.main(["demo", "-o", str(out), "-q", "--device", "cpu"]) == 2
    assert (out / "stale.npy").exists()
    assert cli.main(["demo", "-o", str(out), "-q", "--device", "cpu", "--force"]) == 2
    assert (out / "stale.npy").exists()
    (out / "stale.npy").unlink()
    assert cli.main(["demo", "-o", str(out), "-q", "--device", "cpu", "--force"]) == 0
    assert (out / "demo_features.png").is_file()
    assert [p.name for p in tmp_path.iterdir()] == ["demo_output"]


def test_bad_input_is_one_line_exit_2(tmp_path):
    proc = run("features", "missing.wav", "-c", "seeded", "-o", "out", cwd=tmp_path)
    assert_one_line_error(proc, "not found")
    assert list(tmp_path.iterdir()) == []  # nothing written


@pytest.mark.parametrize(
    "args, match",
    [
        (("features", "missing.wav", "-c", "seeded", "-o", "out"), "not found"),
        (("features", CLIP, "-c", "missing.pth", "-o", "out"), "missing.pth"),
        (("features", CLIP, "-c", "seeded", "-o", "out", "--fps", "0"), "fps"),
        (("features", CLIP, "-c", "seeded", "-o", "out", "--mode", "hubert"), "hubert"),
        (("reference", str(golden_input("too_short_0p15s_16k")), "-c", "seeded", "-o", "out"), "too short"),
        (("features", CLIP, "-c", "seeded", "-o", "out", "--device", "nonsense"), "nonsense"),
        (("validate", "nope", "."), "not found"),
    ],
)
def test_bad_input_in_process(args, match, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert cli.main(list(args)) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("synctalk-audio: error:") and match in err, err
    assert list(tmp_path.iterdir()) == []


def test_output_is_a_file(tmp_path):
    (tmp_path / "out").write_text("keep me")
    proc = run("reference", SHORT, "-c", "seeded", "-o", "out", cwd=tmp_path)
    assert_one_line_error(proc, "is a file")
    assert (tmp_path / "out").read_text() == "keep me"
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


# --------------------------------------------------------------------------- in-process


def test_bad_checkpoint_in_process(tmp_path, capsys):
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a checkpoint")
    assert cli.main(["features", SHORT, "-c", str(bad), "-o", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "synctalk-audio: error:" in err and "bad.pth" in err
    assert not (tmp_path / "out").exists()


def test_debug_shows_traceback(tmp_path, capsys):
    assert cli.main(["validate", str(tmp_path / "nope"), str(tmp_path), "--debug"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" in err and err.rstrip().splitlines()[-1].startswith("synctalk-audio: error:")


def test_usage_error_is_one_line(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["features", CLIP])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--checkpoint" in err


def test_help_has_an_example_per_subcommand(capsys):
    parser = cli.build_parser()
    text = parser.format_help()
    for cmd in cli.COMMANDS:
        assert cmd.example in text
        with pytest.raises(SystemExit):
            cli.main([cmd.name, "--help"])
        sub = capsys.readouterr().out
        assert "example:" in sub and cmd.example in sub
        if cmd.pipeline_options:
            for opt in ("--mode", "--fps", "--device", "--precision", "--context"):
                assert opt in sub
        for opt in ("--json", "--quiet", "--debug"):
            assert opt in sub


def test_command_table_is_extensible(capsys):
    seen = {}

    def add(p):
        p.add_argument("thing")

    def go(args):
        seen["thing"] = args.thing
        return 0

    extra = cli.Command("extra", "extra test", "synctalk-audio extra x", add, go, pipeline_options=True)
    parser = cli.build_parser((*cli.COMMANDS, extra))
    args = parser.parse_args(["extra", "x", "--fps", "20"])
    assert args._run(args) == 0 and seen == {"thing": "x"} and args.fps == 20


def test_lazy_imports():
    code = ("import sys; from synctalk_audio import cli; cli.build_parser(); "
            "heavy = [m for m in ('torch', 'matplotlib', 'tqdm') if m in sys.modules]; "
            "assert not heavy, heavy")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr


def test_validate_does_not_import_torch(reference_dir):
    code = ("import sys; from synctalk_audio import cli; "
            f"rc = cli.main(['validate', {str(reference_dir)!r}, {str(reference_dir)!r}, '-q']); "
            "assert rc == 0, rc; assert 'torch' not in sys.modules")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr


def test_console_script_installed():
    script = Path(sys.executable).parent / "synctalk-audio"
    if not script.exists():
        pytest.skip("console script not installed in this environment")
    proc = subprocess.run([str(script), "--version"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and proc.stdout.startswith("synctalk-audio ")


def test_frames_command_matches_golden_hubert_and_wenet(tmp_path, capsys):
    for mode, aud, ref in (("hubert", "aud_hu.npy", "frames_hubert.npy"), ("wenet", "aud_wenet.npy", "frames_wenet.npy")):
        src = golden_input("short_0p3s_16k").parents[1] / "out" / "short_0p3s_16k"
        out = tmp_path / f"{mode}.npy"
        assert cli.main(["frames", str(src / aud), "--mode", mode, "-o", str(out), "--quiet"]) == 0
        assert np.array_equal(np.load(out), np.load(src / ref))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hubert.npy", "wenet.npy"]


@pytest.mark.parametrize("maker,args,match", [
    (lambda d: None, ("--mode", "hubert"), "not found"),
    (lambda d: (d / "f.npy").write_text("hello"), ("--mode", "hubert"), "not a .npy file"),
    (lambda d: np.save(d / "f.npy", np.zeros((5, 2, 1024), np.float32)), ("--mode", "wenet"), "8192 values per row"),
    # rows of another width that fit the other radius' window once passed, with that radius' shape
    (lambda d: np.save(d / "f.npy", np.zeros((40, 1024), np.float32)), ("--mode", "hubert"), "(T, 2, 1024) HuBERT pairs"),
    (lambda d: np.save(d / "f.npy", np.zeros((30, 4096), np.float32)), ("--mode", "wenet"), "got shape (30, 4096)"),
    (lambda d: np.save(d / "f.npy", np.zeros((30, 16384), np.float32)), ("--mode", "wenet", "--radius", "4"),
     "8192 values per row"),
    (lambda d: np.save(d / "f.npy", np.full((5, 2, 1024), 1e300)), ("--mode", "hubert"), "beyond float32's range"),
    (lambda d: np.save(d / "f.npy", np.full((5, 512), np.nan, np.float32)), ("--mode", "ave"), "NaN"),
])
def test_frames_command_errors(tmp_path, capsys, maker, args, match):
    maker(tmp_path)
    before = sorted(p.name for p in tmp_path.iterdir())
    assert cli.main(["frames", str(tmp_path / "f.npy"), *args, "-o", str(tmp_path / "out.npy")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("synctalk-audio: error:") and match in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == before


@pytest.mark.parametrize("value", ["\x1e", "a\nb", "\u2028", "\x00x"])
def test_control_characters_in_options_stay_one_line(value, capsys):
    """Whatever an option holds, the error is one printable line (found by the CLI fuzz)."""
    with pytest.raises(SystemExit) as stop:  # a usage error: argparse exits with 2
        cli.main(["features", "x.wav", "-c", "seeded", f"--dpi={value}", "-o", "o"])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert err.endswith("\n") and err.startswith("synctalk-audio: error:")
    assert len(err.splitlines()) == 1 and err.rstrip("\n").isprintable()


@pytest.mark.parametrize("command", ["frames", "stream"])
def test_file_output_named_like_a_directory_is_refused(tmp_path, capsys, command):
    """`-o outdir/` where a .npy file is written: one error line, nothing written (both commands
    once wrote a file called `outdir`)."""
    src = golden_input("short_0p3s_16k").parents[1] / "out" / "short_0p3s_16k" / "aud_hu.npy"
    args = (["frames", str(src), "--mode", "hubert"] if command == "frames"
            else ["stream", CLIP, "--checkpoint", "seeded", "--device", "cpu"])
    assert cli.main([*args, "-o", str(tmp_path / "outdir") + "/", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "names a directory" in err, err
    assert list(tmp_path.iterdir()) == []


def test_force_never_writes_over_the_input(tmp_path, capsys):
    """`frames X.npy -o X.npy --force` (or a symlink to it), `stream A -o A --force`, `plot A -o A
    --force`: one error line; the input is unchanged."""
    src = golden_input("short_0p3s_16k").parents[1] / "out" / "short_0p3s_16k" / "aud_hu.npy"
    feats = tmp_path / "aud_hu.npy"
    shutil.copy(src, feats)
    (tmp_path / "link.npy").symlink_to(feats)
    audio = tmp_path / "talk.npy"
    shutil.copy(SHORT, audio)  # a wav under a .npy name: the output check comes first
    image = tmp_path / "talk.png"
    shutil.copy(SHORT, image)  # and under an image name
    before = {p.name: p.read_bytes() for p in (feats, audio, image)}
    for args in (["frames", str(feats), "--mode", "hubert", "-o", str(feats)],
                 ["frames", str(feats), "--mode", "hubert", "-o", str(tmp_path / "link.npy")],
                 ["stream", str(audio), "-c", "seeded", "--device", "cpu", "-o", str(audio)],
                 ["plot", str(image), "-o", str(image)]):
        assert cli.main([*args, "--force", "--quiet"]) == 2, args
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "is the input" in err, err
    assert {p.name: p.read_bytes() for p in (feats, audio, image)} == before


def test_validate_apply_to_loosens_the_encoder_only(reference_dir, tmp_path, capsys):
    """`--rtol 5e-3` loosens every stage: a mel off by 0.01 then passes; with `--apply-to encoder`
    the float16-rounded encoder outputs pass and the mel stays strict."""
    cand = tmp_path / "cand"
    shutil.copytree(reference_dir, cand)
    for f in [cand / "audio_features_raw.npy", cand / "audio_features_padded.npy", *(cand / "frames").glob("*.npy")]:
        np.save(f, np.load(f).astype(np.float16).astype(np.float32))
    mel = np.load(cand / "mel_spectrogram.npy")
    mel[3, 10] += 0.01
    np.save(cand / "mel_spectrogram.npy", mel)
    args = ["validate", str(reference_dir), str(cand), "--quiet"]
    assert cli.main([*args, "--rtol", "5e-3"]) == 0                          # the hazard the option answers
    assert cli.main([*args, "--rtol", "5e-3", "--apply-to", "encoder"]) == 1  # the mel bug is caught
    np.save(cand / "mel_spectrogram.npy", np.load(reference_dir / "mel_spectrogram.npy"))
    assert cli.main([*args, "--rtol", "5e-3", "--apply-to", "encoder"]) == 0
    assert cli.main([*args, "--rtol", "5e-3", "--apply-to", "audio_features_raw"]) == 1  # the frames stay strict
    for bad, match in ((["--apply-to", "encoder"], "needs --atol or --rtol"),
                       (["--rtol", "1e-3", "--apply-to", "mel"], "--apply-to takes")):
        capsys.readouterr()
        assert cli.main([*args, *bad]) == 2 and match in capsys.readouterr().err


@pytest.mark.parametrize("command", [["frames", "{npy}", "--mode", "ave"], ["stream", "{wav}", "--checkpoint", "seeded"],
                                     ["features", "{wav}", "{wav}", "--checkpoint", "seeded"]])
def test_an_output_under_a_file_is_named_as_such(tmp_path, capsys, command):
    """`frames -o afile/x.npy` said "output folder afile does not exist"; plot/export said "lies under"."""
    from .conftest import golden_input

    npy = tmp_path / "f.npy"
    np.save(npy, np.zeros((5, 512), np.float32))
    (tmp_path / "afile").write_text("mine")
    args = [a.format(npy=npy, wav=golden_input("speech_16k_mono")) for a in command]
    assert cli.main([*args, "-o", str(tmp_path / "afile" / "x.npy"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "lies under the file" in err, err
    assert (tmp_path / "afile").read_text() == "mine"
