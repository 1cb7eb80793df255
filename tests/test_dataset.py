"""Reference dataset writer/reader (atomic), and the port validator."""

from __future__ import annotations

import dataclasses
import errno
import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

import synctalk_audio as sa
from synctalk_audio import dataset as ds
from synctalk_audio.errors import ConfigError, OutputError

from .conftest import golden_array, golden_input

CLIP = "speech_16k_mono"


@pytest.fixture(scope="module")
def result(seeded_encoder):
    return sa.pipeline(golden_input(CLIP), checkpoint=seeded_encoder, device="cpu")


@pytest.fixture(scope="module")
def reference(result, seeded_encoder, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ref") / "reference"
    ds.write_reference(result, out, checkpoint=seeded_encoder)
    return out


@pytest.fixture(scope="module")
def features_dir(result, seeded_encoder, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("feat") / "features"
    ds.write_features(result, out, checkpoint=seeded_encoder, frames=True)
    return out


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --------------------------------------------------------------------------- writer


def test_reference_layout_shapes_and_dtypes(reference, result):
    n = result.padded.shape[0]
    assert n == result.features.shape[0] + 2
    expect = {
        "mel_spectrogram.npy": (np.float64, result.mel.shape),
        "mel_windows.npy": (np.float32, (n - 2, 80, 16)),
        "audio_features_raw.npy": (np.float32, (n - 2, 512)),
        "audio_features_padded.npy": (np.float32, (n, 512)),
    }
    for name, (dtype, shape) in expect.items():
        arr = np.load(reference / name)
        assert arr.dtype == dtype and arr.shape == shape, name
    frames = sorted(p.name for p in (reference / "frames").iterdir())
    assert len(frames) == 2 * n
    assert frames[0] == "frame_00000_reshaped.npy" and frames[-1] == f"frame_{n - 1:05d}_window.npy"
    assert np.load(reference / "frames" / "frame_00000_window.npy").shape == (16, 512)
    assert np.load(reference / "frames" / f"frame_{n - 1:05d}_reshaped.npy").shape == (32, 16, 16)
    for name in ("metadata.json", "summary.json", "VALIDATION_INSTRUCTIONS.json"):
        json.loads((reference / name).read_text())
    # nothing else: no temp dirs, no stray files
    assert sorted(p.name for p in reference.iterdir()) == sorted(
        [*expect, "frames", "metadata.json", "summary.json", "VALIDATION_INSTRUCTIONS.json"])
    assert [p.name for p in reference.parent.iterdir()] == ["reference"]


def test_reference_matches_golden_oracle(reference):
    """Every frame written equals the independent oracle's (bit for bit on this machine)."""
    got = ds.read_reference(reference)
    np.testing.assert_array_equal(got["mel_spectrogram"], golden_array(CLIP, "mel.npy"))
    np.testing.assert_array_equal(got["mel_windows"], golden_array(CLIP, "windows_fps25.npy"))
    np.testing.assert_allclose(got["audio_features_raw"], golden_array(CLIP, "features.npy"), rtol=0, atol=1e-5)
    np.testing.assert_allclose(got["frames_reshaped"], golden_array(CLIP, "frames_ave.npy"), rtol=0, atol=1e-5)


def test_read_reference_round_trip(reference, result):
    got = ds.read_reference(reference, verify=True)
    np.testing.assert_array_equal(got["mel_spectrogram"], result.mel)
    np.testing.assert_array_equal(got["mel_windows"], result.windows)
    np.testing.assert_array_equal(got["audio_features_raw"], result.features)
    np.testing.assert_array_equal(got["audio_features_padded"], result.padded)
    np.testing.assert_array_equal(got["frames_reshaped"], result.frames)
    np.testing.assert_array_equal(got["frames_window"], result.frames.reshape(result.n_frames, 16, 512))
    assert got["summary"]["n_frames"] == result.n_frames
    assert "frames_window" not in ds.read_reference(reference, frames=False)


def test_metadata_contents(reference, result):
    meta = json.loads((reference / "metadata.json").read_text())
    assert meta["library"] == "synctalk-audio" and meta["version"] == sa.__version__
    assert meta["mode"] == "ave" and meta["fps"] == 25 and meta["context"] == "zeros"
    assert meta["n_frames"] == result.n_frames and meta["n_windows"] == result.n_frames - 2
    assert meta["mel_config"]["n_fft"] == 800
    for dist in ("numpy", "torch", "python"):
        assert meta["versions"][dist]
    assert meta["shapes"]["audio_features_padded"] == [result.n_frames, 512]
    assert meta["value_ranges"]["mel_spectrogram.npy"]["max_abs"] <= 4.0
    # a checksum for every .npy written, and they are right
    npys = sorted(str(p.relative_to(reference)) for p in reference.rglob("*.npy"))
    assert sorted(meta["sha256"]) == npys
    for rel in npys[:3] + npys[-3:]:
        assert meta["sha256"][rel] == _sha(reference / rel)
    w = meta["weights"]
    assert w["state_dict_sha256"] == ds.SEEDED_STATE_DICT_SHA256
    assert w["untrained_seeded"] is True and "UNTRAINED" in w["note"]
    assert "UNTRAINED" in json.loads((reference / "summary.json").read_text())["weights"]


def test_seeded_hash_constant_matches_the_weights():
    from synctalk_audio.encoder import seeded_state_dict, state_dict_sha256

    assert state_dict_sha256(seeded_state_dict(0)) == ds.SEEDED_STATE_DICT_SHA256


def test_validation_instructions(reference, result):
    vi = json.loads((reference / "VALIDATION_INSTRUCTIONS.json").read_text())
    assert vi["n_frames"] == result.n_frames
    arts = vi["artifacts"]
    assert set(arts) == set(ds.artifact_files("ave")) | {"frames_window", "frames_reshaped"}
    assert arts["mel_spectrogram"]["atol"] == 1e-5 and arts["mel_windows"]["atol"] == 1e-5
    for name in ("audio_features_raw", "audio_features_padded", "frames_window", "frames_reshaped"):
        assert arts[name]["atol"] > 0 and arts[name]["rtol"] > 0
        assert arts[name]["max_abs_diff_allowed"] == pytest.approx(
            arts[name]["atol"] + arts[name]["rtol"] * arts[name]["max_abs_reference"])
    assert arts["frames_reshaped"]["count"] == result.n_frames
    assert arts["audio_features_padded"]["shape"] == [result.n_frames, 512]
    assert {"python", "swift", "go", "cpp"} <= set(vi["recipes"])


def test_checkpoint_file_is_hashed(result, tmp_path):
    import torch

    from synctalk_audio.encoder import seeded_state_dict

    ckpt = tmp_path / "audio_visual_encoder.pth"
    torch.save({f"audio_encoder.{k}": v for k, v in seeded_state_dict(0).items()}, ckpt)
    meta = ds.write_reference(result, tmp_path / "out", frames=False, checkpoint=ckpt)
    assert meta["weights"]["checkpoint_sha256"] == _sha(ckpt)
    assert meta["weights"]["state_dict_sha256"] == ds.SEEDED_STATE_DICT_SHA256
    other = {k: (v + 1 if v.is_floating_point() else v) for k, v in seeded_state_dict(0).items()}
    meta = ds.write_reference(result, tmp_path / "out2", frames=False, checkpoint=other)
    assert meta["weights"]["untrained_seeded"] is False and "UNTRAINED" not in meta["weights"]["note"]
    meta = ds.write_reference(result, tmp_path / "out3", frames=False)
    assert meta["weights"]["state_dict_sha256"] is None


def test_intermediates_only(result, tmp_path):
    meta = ds.write_reference(result, tmp_path / "inter", frames=False)
    assert sorted(p.name for p in (tmp_path / "inter").iterdir()) == [
        "audio_features_padded.npy", "audio_features_raw.npy", "mel_spectrogram.npy", "mel_windows.npy",
        "metadata.json"]
    assert meta["dataset"]["kind"] == "intermediates"


def test_write_features_layout(features_dir, result):
    assert sorted(p.name for p in features_dir.iterdir()) == [
        "audio_features_padded.npy", "audio_features_raw.npy", "audio_frames.npy", "mel_spectrogram.npy",
        "metadata.json"]
    frames = np.load(features_dir / "audio_frames.npy")
    assert frames.dtype == np.float32
    np.testing.assert_array_equal(frames, result.frames)
    meta = json.loads((features_dir / "metadata.json").read_text())
    assert meta["sha256"]["audio_frames.npy"] == _sha(features_dir / "audio_frames.npy")
    assert "mel_windows.npy" not in meta["value_ranges"]
    assert meta["shapes"]["mel_windows"] == [result.features.shape[0], 80, 16]


def test_write_features_without_frames(result, seeded_encoder, reference, tmp_path):
    """By default the features layout holds what upstream saves (padded features) plus the mel
    and raw features: no stacked frames, which would be 16x the padded features."""
    meta = ds.write_features(result, tmp_path / "feat", checkpoint=seeded_encoder)
    assert sorted(p.name for p in (tmp_path / "feat").iterdir()) == [
        "audio_features_padded.npy", "audio_features_raw.npy", "mel_spectrogram.npy", "metadata.json"]
    assert "not written" in meta["dataset"]["frames"]
    np.testing.assert_array_equal(np.load(tmp_path / "feat" / "audio_features_padded.npy"), result.padded)
    assert ds.validate(reference, tmp_path / "feat").ok


def test_facade_writes_the_same_bytes(result, reference, tmp_path):
    """AudioPipeline.process_and_save_all_frames == write_reference(pipeline()) bit for bit."""
    facade = sa.AudioPipeline(sa.seeded_state_dict(0), device="cpu", mode="ave", fps=25)
    meta = facade.process_and_save_all_frames(str(golden_input(CLIP)), tmp_path / "facade")
    ref_meta = json.loads((reference / "metadata.json").read_text())
    assert meta["sha256"] == ref_meta["sha256"]
    assert meta["weights"]["untrained_seeded"] is True
    padded, _ = facade.process_audio_file(str(golden_input(CLIP)), save_intermediates=True,
                                          output_dir=tmp_path / "inter")
    np.testing.assert_array_equal(padded, result.padded)
    assert np.array_equal(np.load(tmp_path / "inter" / "audio_features_raw.npy"), result.features)
    assert not (tmp_path / "inter" / "frames").exists()


# --------------------------------------------------------------------------- atomic output policy


def test_target_is_a_file(result, tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(OutputError, match="is a file"):
        ds.write_reference(result, f, frames=False)
    with pytest.raises(OutputError, match="under the file"):
        ds.write_reference(result, f / "sub", frames=False)
    assert f.read_text() == "x" and sorted(p.name for p in tmp_path.iterdir()) == ["file"]


def test_existing_directories(result, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    ds.write_reference(result, empty, frames=False)          # an empty dir is simply filled
    assert (empty / "metadata.json").is_file()
    (empty / "stale.txt").write_text("old")
    with pytest.raises(OutputError, match="not empty"):
        ds.write_reference(result, empty, frames=False)
    assert (empty / "stale.txt").is_file()                    # untouched
    with pytest.raises(OutputError, match=r"did not write \(stale.txt\)"):  # a user's file: never replaced
        ds.write_reference(result, empty, frames=False, overwrite=True)
    assert (empty / "stale.txt").read_text() == "old"
    (empty / "stale.txt").unlink()
    ds.write_reference(result, empty, frames=False, overwrite=True)  # our output alone: replaced
    assert (empty / "metadata.json").is_file()
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "thesis.tex").write_text("precious")
    with pytest.raises(OutputError, match="not written by synctalk-audio"):
        ds.write_reference(result, foreign, frames=False, overwrite=True)
    assert (foreign / "thesis.tex").read_text() == "precious"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty", "foreign"]


def test_parent_directories_are_created(result, tmp_path):
    ds.write_reference(result, tmp_path / "a" / "b" / "out", frames=False)
    assert (tmp_path / "a" / "b" / "out" / "metadata.json").is_file()


@pytest.mark.parametrize("fail_after", [0, 5])
def test_oserror_mid_write_leaves_nothing(result, tmp_path, monkeypatch, fail_after):
    real_save = np.save
    calls = {"n": 0}

    def flaky_save(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] > fail_after:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(*args, **kwargs)

    monkeypatch.setattr(ds.np, "save", flaky_save)
    target = tmp_path / "out"
    with pytest.raises(OutputError, match="No space left on device"):
        ds.write_reference(result, target)
    assert calls["n"] == fail_after + 1
    assert list(tmp_path.iterdir()) == []  # no target, no temp dir


def test_failed_overwrite_keeps_the_old_dataset(result, tmp_path, monkeypatch):
    target = tmp_path / "out"
    ds.write_reference(result, target, frames=False)
    before = _sha(target / "metadata.json")

    def broken(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(ds.np, "save", broken)
    with pytest.raises(OutputError, match="Permission denied"):
        ds.write_reference(result, target, frames=False, overwrite=True)
    assert _sha(target / "metadata.json") == before
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_non_oserror_also_cleans_up(result, tmp_path, monkeypatch):
    monkeypatch.setattr(ds, "library_versions", lambda: (_ for _ in ()).throw(KeyboardInterrupt()))
    with pytest.raises(KeyboardInterrupt):
        ds.write_reference(result, tmp_path / "out", frames=False)
    assert list(tmp_path.iterdir()) == []


def test_not_a_result(tmp_path):
    with pytest.raises(ConfigError, match="Features"):
        ds.write_reference(np.zeros(3), tmp_path / "out")
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------- validate


def test_identical_candidate_passes(reference):
    report = ds.validate(reference, reference)
    assert report.ok and report.compared == len(ds.artifact_files("ave")) + 2  # arrays + both frame kinds
    for row in report.rows:
        assert row.status == "pass" and row.max_abs_diff == 0.0 and row.mean_abs_diff == 0.0
        assert row.shape_ok is True
    assert report.row("frames_window").count_found == report.n_frames
    assert "PASS" in report.table() and "FAIL" not in report.table()
    assert json.loads(report.to_json())["ok"] is True


def test_report_is_frozen(reference):
    report = ds.validate(reference, reference)
    with pytest.raises(dataclasses.FrozenInstanceError):
        report.rows = ()  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        report.rows[0].status = "fail"  # type: ignore[misc]


def test_perturbed_features_fail(reference, tmp_path):
    cand = _copy(reference, tmp_path / "cand")
    feats = np.load(cand / "audio_features_raw.npy")
    feats[3, 7] += 0.05  # a recipe bug's size, far above float32 noise
    np.save(cand / "audio_features_raw.npy", feats)
    report = ds.validate(reference, cand)
    assert not report.ok
    row = report.row("audio_features_raw")
    assert row.status == "fail" and row.worst_at == (3, 7)
    assert row.max_abs_diff == pytest.approx(0.05, rel=1e-3)
    assert row.max_rel_diff == pytest.approx(row.max_abs_diff / row.ref_max_abs)
    assert report.row("audio_features_padded").status == "pass"
    text = report.table()
    assert "FAIL" in text and "index [3, 7]" in text
    data = json.loads(report.to_json())
    assert data["ok"] is False
    assert {r["name"]: r["status"] for r in data["rows"]}["audio_features_raw"] == "fail"


def test_float32_noise_within_tolerance_passes(reference, tmp_path):
    """Noise the size of runtime reordering (~1e-6 of max|x|) passes; a tiny mel error does not."""
    cand = _copy(reference, tmp_path / "cand")
    feats = np.load(cand / "audio_features_padded.npy")
    scale = float(np.abs(feats).max())
    rng = np.random.default_rng(0)
    noisy = feats + (rng.uniform(-1, 1, feats.shape) * 2e-6 * scale).astype(np.float32)
    np.save(cand / "audio_features_padded.npy", noisy)
    mel = np.load(cand / "mel_spectrogram.npy")
    mel[10, 20] += 2e-5
    np.save(cand / "mel_spectrogram.npy", mel)
    report = ds.validate(reference, cand)
    assert report.row("audio_features_padded").status == "pass"
    assert report.row("audio_features_padded").max_abs_diff > 1e-5
    assert report.row("mel_spectrogram").status == "fail"
    # and an explicit tolerance overrides
    report = ds.validate(reference, cand, tolerances={"mel_spectrogram": {"atol": 1e-4}})
    assert report.row("mel_spectrogram").status == "pass" and report.row("mel_spectrogram").rtol == 0.0


def test_missing_artifacts_policy(reference, tmp_path):
    cand = tmp_path / "cand"
    cand.mkdir()
    shutil.copy(reference / "mel_spectrogram.npy", cand)
    shutil.copy(reference / "audio_features_raw.npy", cand)
    report = ds.validate(reference, cand)
    assert report.ok and report.compared == 2
    assert report.row("mel_windows").status == "missing"
    assert report.row("frames_reshaped").status == "missing"
    assert "missing" in report.table()
    strict = ds.validate(reference, cand, required=["audio_features_padded"])
    assert not strict.ok and "MISSING (required)" in strict.table()
    assert not ds.validate(reference, cand, required="all").ok
    with pytest.raises(ConfigError, match="unknown artifact"):
        ds.validate(reference, cand, required=["features"])
    empty = tmp_path / "empty"
    empty.mkdir()
    report = ds.validate(reference, empty)
    assert not report.ok and report.compared == 0
    assert any("none of the reference" in n for n in report.notes)


def test_frame_count_errors(reference, tmp_path):
    cand = _copy(reference, tmp_path / "cand")
    n = json.loads((reference / "metadata.json").read_text())["n_frames"]
    (cand / "frames" / f"frame_{n - 1:05d}_reshaped.npy").unlink()          # N+1 frames
    np.save(cand / "frames" / f"frame_{n:05d}_window.npy", np.zeros((16, 512), np.float32))  # N+3
    report = ds.validate(reference, cand)
    assert not report.ok
    r = report.row("frames_reshaped")
    assert r.status == "fail" and r.missing == 1 and r.extra == 0 and r.count_found == n - 1
    w = report.row("frames_window")
    assert w.status == "fail" and w.extra == 1 and w.missing == 0
    assert f"N+2 = {n}" in report.table()


def test_shape_mismatch_and_nan(reference, tmp_path):
    cand = tmp_path / "cand"
    cand.mkdir()
    padded = np.load(reference / "audio_features_padded.npy")
    np.save(cand / "audio_features_padded.npy", padded[1:-1])   # N rows instead of N+2
    raw = np.load(reference / "audio_features_raw.npy").copy()
    raw[0, 0] = np.nan
    np.save(cand / "audio_features_raw.npy", raw)
    (cand / "mel_spectrogram.npy").write_bytes(b"not an npy file")
    (cand / "audio_frames.npy").write_bytes(b"\x93NUMPY broken")
    report = ds.validate(reference, cand)
    assert not report.ok
    p = report.row("audio_features_padded")
    assert p.status == "fail" and p.shape_ok is False and p.cand_shape == (padded.shape[0] - 2, 512)
    r = report.row("audio_features_raw")
    assert r.status == "fail" and "non-finite" in r.message
    assert report.row("mel_spectrogram").status == "error"
    assert report.row("frames_reshaped").status == "error" and "audio_frames.npy" in report.row("frames_reshaped").message
    json.loads(report.to_json())  # strict JSON even with NaN inside


def test_stacked_frames_either_side(reference, features_dir, tmp_path):
    assert ds.validate(reference, features_dir).ok
    assert ds.validate(features_dir, reference).ok
    cand = _copy(features_dir, tmp_path / "cand")
    frames = np.load(cand / "audio_frames.npy")
    frames[-1, 0, 0, 0] += 1.0
    np.save(cand / "audio_frames.npy", frames)
    row = ds.validate(reference, cand).row("frames_reshaped")
    assert row.status == "fail" and row.worst_at == (frames.shape[0] - 1,)


def test_candidate_dtype_is_free(reference, tmp_path):
    """A port may write float32 mel or float64 features: only values and shapes count."""
    cand = tmp_path / "cand"
    cand.mkdir()
    np.save(cand / "mel_spectrogram.npy", np.load(reference / "mel_spectrogram.npy").astype(np.float32))
    np.save(cand / "audio_features_raw.npy", np.load(reference / "audio_features_raw.npy").astype(np.float64))
    report = ds.validate(reference, cand)
    assert report.ok and report.row("mel_spectrogram").max_abs_diff < 1e-6


def test_validate_bad_directories(reference, tmp_path):
    with pytest.raises(OutputError, match="not found"):
        ds.validate(tmp_path / "nope", reference)
    with pytest.raises(OutputError, match="not found"):
        ds.validate(reference, tmp_path / "nope")
    (tmp_path / "f").write_text("x")
    with pytest.raises(OutputError, match="is a file"):
        ds.validate(reference, tmp_path / "f")
    (tmp_path / "emptyref").mkdir()
    with pytest.raises(OutputError, match="none of the dataset files"):
        ds.validate(tmp_path / "emptyref", reference)


def test_read_reference_detects_corruption(reference, tmp_path):
    copy = _copy(reference, tmp_path / "copy")
    arr = np.load(copy / "audio_features_raw.npy")
    arr[0, 0] += 1
    np.save(copy / "audio_features_raw.npy", arr)
    ds.read_reference(copy)  # fine without verify
    with pytest.raises(OutputError, match="sha256"):
        ds.read_reference(copy, verify=True)
    (copy / "frames" / "frame_00002_window.npy").unlink()
    with pytest.raises(OutputError, match="gaps"):
        ds.read_reference(copy)
    with pytest.raises(OutputError, match="metadata.json"):
        ds.read_reference(tmp_path)


def test_tolerance_rules():
    tol = ds.Tolerance(atol=1e-5, rtol=1e-5)
    assert tol.bound(100.0) == pytest.approx(1e-5 + 1e-3)
    with pytest.raises(ConfigError):
        ds.Tolerance(atol=-1.0)
    with pytest.raises(ConfigError):
        ds.Tolerance(atol=float("nan"))


def test_empty_output_path_and_non_bool_flags_are_refused(result, tmp_path, monkeypatch):
    """write_features(result, "") once replaced the current directory; overwrite="no" replaced an
    output (a truthy string)."""
    ds.write_features(result, tmp_path / "out")
    monkeypatch.chdir(tmp_path / "out")
    with pytest.raises(OutputError, match="path is empty"):
        ds.write_features(result, "", overwrite=True)
    with pytest.raises(ConfigError, match="overwrite must be True or False, got 'no'"):
        ds.write_features(result, tmp_path / "out", overwrite="no")
    with pytest.raises(ConfigError, match="frames must be True or False"):
        ds.write_features(result, tmp_path / "other", frames=1)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"] and (tmp_path / "out" / "metadata.json").is_file()


def test_writers_take_checkpoint_seeded_like_every_entry_point(result, tmp_path):
    meta = ds.write_features(result, tmp_path / "f", checkpoint="seeded")
    assert meta["weights"]["untrained_seeded"] is True and meta["weights"]["checkpoint"] == "seeded"
    assert ds.write_reference(result, tmp_path / "r", frames=False, checkpoint="seeded")["weights"]["untrained_seeded"]


@pytest.mark.parametrize("key,value", [("mode", "xx"), ("radius", 3), ("radius", True), ("context", "mirror")])
def test_read_reference_refuses_settings_no_writer_makes(result, tmp_path, key, value):
    ds.write_reference(result, tmp_path / "r", frames=False)
    meta_path = tmp_path / "r" / "metadata.json"
    meta = json.loads(meta_path.read_text())
    meta[key] = value
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(OutputError, match=f"{key} .* is not one of"):
        ds.read_reference(tmp_path / "r", verify=False)
