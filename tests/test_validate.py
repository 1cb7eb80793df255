"""synctalk_audio.validation and the hostile side of read_reference, on small synthetic datasets."""

from __future__ import annotations

import json
import os
import shutil
import types
from pathlib import Path

import numpy as np
import pytest

from synctalk_audio import dataset as ds
from synctalk_audio import validation
from synctalk_audio.errors import OutputError, ShapeError

WEIGHTS = {"state_dict_sha256": None, "untrained_seeded": None, "note": "synthetic"}


def _result(n: int = 4, seed: int = 0) -> types.SimpleNamespace:
    rng = np.random.default_rng(seed)
    features = rng.uniform(0, 50, (n, 512)).astype(np.float32)
    return types.SimpleNamespace(
        mel=rng.uniform(-4, 4, (80, 16 + 3 * n)), windows=rng.uniform(-4, 4, (n, 80, 16)).astype(np.float32),
        features=features, padded=np.concatenate([features[:1], features, features[-1:]]),
        mode="ave", fps=25, context="zeros", metadata={"source": "synthetic"})


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ref") / "reference"
    ds.write_reference(_result(), out, weights=WEIGHTS)
    return out


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def test_split_keeps_the_public_names():
    assert ds.validate is validation.validate and ds.ValidationReport is validation.ValidationReport
    from synctalk_audio.dataset import ArtifactResult, validate  # noqa: F401
    import synctalk_audio as sa

    assert sa.validate is validation.validate


def test_default_tolerances_are_read_only():
    with pytest.raises(TypeError):
        ds.DEFAULT_TOLERANCES["mel_spectrogram"] = ds.Tolerance(1.0)  # type: ignore[index]
    with pytest.raises(TypeError):
        ds.ARRAY_FILES["x"] = "y"  # type: ignore[index]


def test_synthetic_reference_validates_against_itself(reference):
    report = ds.validate(reference, reference)
    assert report.ok and report.compared == len(ds.artifact_files("ave")) + 2  # arrays + both frame kinds
    meta = ds.read_reference(reference, verify=True)["metadata"]
    assert meta["output_kind"] == "reference" and meta["library"] == "synctalk-audio"


def test_nan_candidate_shows_nan_not_zero(reference, tmp_path):
    cand = _copy(reference, tmp_path / "cand")
    raw = np.load(cand / "audio_features_raw.npy")
    raw[1, 2] = np.nan
    np.save(cand / "audio_features_raw.npy", raw)
    frame = np.load(cand / "frames" / "frame_00003_window.npy")
    frame[0, 0] = np.inf
    np.save(cand / "frames" / "frame_00003_window.npy", frame)
    report = ds.validate(reference, cand)
    row = report.row("audio_features_raw")
    assert row.status == "fail" and np.isnan(row.max_abs_diff) and row.worst_at == (1, 2)
    assert "1 non-finite values" in row.message
    frames = report.row("frames_window")
    assert frames.status == "fail" and np.isnan(frames.max_abs_diff) and frames.worst_at == (3,)
    line = next(x for x in report.table().splitlines() if x.startswith("audio_features_raw"))
    assert "nan" in line and " 0 " not in line and "FAIL" in line
    table = report.table()  # where, not only how many (a porter once had to search the frames)
    assert "audio_features_raw: 1 non-finite values; first non-finite value at index [1, 2]" in table
    assert "frames_window: 1 non-finite values" in table and "first non-finite value at frame 3" in table
    data = json.loads(report.to_json())
    assert {r["name"]: r["max_abs_diff"] for r in data["rows"]}["audio_features_raw"] is None


def test_nan_in_the_reference_is_the_references_problem(reference, tmp_path):
    ref = _copy(reference, tmp_path / "ref")
    padded = np.load(ref / "audio_features_padded.npy")
    padded[0, 0] = np.nan
    np.save(ref / "audio_features_padded.npy", padded)
    report = ds.validate(ref, reference)
    row = report.row("audio_features_padded")
    assert row.status == "error" and "the reference is broken, not the candidate" in row.message
    assert "non-finite values: the reference" in row.message and not report.ok
    assert any("regenerate" in n for n in report.notes)
    assert report.row("audio_features_raw").status == "pass"


def test_fifo_candidate_frame_does_not_hang(reference, tmp_path):
    cand = _copy(reference, tmp_path / "cand")
    fifo = cand / "frames" / "frame_00000_window.npy"
    fifo.unlink()
    os.mkfifo(fifo)
    report = ds.validate(reference, cand)
    row = report.row("frames_window")
    assert row.status == "error" and "not a regular file" in row.message
    assert report.row("frames_reshaped").status == "pass"


def test_forged_candidate_header_is_an_error_row(reference, tmp_path):
    cand = tmp_path / "cand"
    cand.mkdir()
    header = repr({"descr": "<f4", "fortran_order": False, "shape": (100_000, 100_000, 16)}).encode()
    header += b" " * (-(10 + len(header) + 1) % 64) + b"\n"
    forged = b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header + bytes(64)
    (cand / "audio_features_raw.npy").write_bytes(forged)
    (cand / "frames").mkdir()
    (cand / "frames" / "frame_00000_window.npy").write_bytes(forged)
    report = ds.validate(reference, cand)
    for name in ("audio_features_raw", "frames_window"):
        row = report.row(name)
        assert row.status == "error" and "truncated" in row.message, row


@pytest.mark.parametrize("content, match", [
    ("[1, 2, 3]", "JSON object"),
    ('"a string"', "JSON object"),
    ('{"n_frames": 1e400}', "not valid JSON"),
    ('{"n_frames": "six"}', "n_frames must be an integer"),
    ('{"n_frames": true}', "n_frames must be an integer"),
    ('{"sha256": []}', "sha256 must be a JSON object"),
    ("[" * 100_000 + "]" * 100_000, "nested"),
])
def test_hostile_reference_metadata(reference, tmp_path, content, match):
    ref = _copy(reference, tmp_path / "ref")
    (ref / "metadata.json").write_text(content)
    with pytest.raises(OutputError, match=match):
        ds.validate(ref, reference)
    with pytest.raises(OutputError, match=match):
        ds.read_reference(ref)


@pytest.mark.parametrize("content", ["[1]", '{"artifacts": "x"}', '{"artifacts": {"mel_spectrogram": {"atol": -1}}}',
                                     '{"artifacts": {"mel_spectrogram": {"atol": "1"}}}', "[" * 100_000])
def test_hostile_validation_instructions(reference, tmp_path, content):
    ref = _copy(reference, tmp_path / "ref")
    (ref / "VALIDATION_INSTRUCTIONS.json").write_text(content)
    with pytest.raises(OutputError):
        ds.validate(ref, reference)
    if not content.startswith("{"):  # read_reference returns the object as it is, but only an object
        with pytest.raises(OutputError):
            ds.read_reference(ref)


@pytest.mark.parametrize("rel", ["/etc/passwd", "../outside.npy", "frames/../../x.npy", "frames/evil.npy",
                                 "sub\\x.npy", "notes.txt"])
def test_read_reference_never_follows_paths_in_metadata(reference, tmp_path, rel):
    ref = _copy(reference, tmp_path / "ref")
    meta = json.loads((ref / "metadata.json").read_text())
    meta["sha256"][rel] = "0" * 64
    (ref / "metadata.json").write_text(json.dumps(meta))
    with pytest.raises(OutputError, match="never followed|not a file of a dataset"):
        ds.read_reference(ref, verify=True)


def test_extra_unlisted_frame(reference, tmp_path):
    ref = _copy(reference, tmp_path / "ref")
    n = json.loads((ref / "metadata.json").read_text())["n_frames"]
    shutil.copy(ref / "frames" / "frame_00000_window.npy", ref / "frames" / f"frame_{n:05d}_window.npy")
    with pytest.raises(OutputError, match="not listed in metadata.json"):
        ds.read_reference(ref, verify=True)
    with pytest.raises(OutputError, match="n_frames"):
        ds.read_reference(ref)
    with pytest.raises(OutputError, match="extra or missing frame files in the reference"):
        ds.validate(ref, reference)
    # the same extra frame on the candidate side is reported, not fatal
    report = ds.validate(reference, ref)
    assert report.row("frames_window").extra == 1 and not report.ok


def test_reference_npy_that_is_truncated_or_special(reference, tmp_path):
    ref = _copy(reference, tmp_path / "ref")
    data = (ref / "mel_spectrogram.npy").read_bytes()
    (ref / "mel_spectrogram.npy").write_bytes(data[:200])
    with pytest.raises(ShapeError, match="truncated"):
        ds.validate(ref, reference)
    with pytest.raises(ShapeError, match="truncated"):
        ds.read_reference(ref)
    (ref / "mel_spectrogram.npy").unlink()
    os.mkfifo(ref / "mel_spectrogram.npy")
    with pytest.raises(OutputError, match="not a regular file"):
        ds.validate(ref, reference)


def test_frame_names_with_absurd_indices_are_ignored(reference, tmp_path):
    cand = _copy(reference, tmp_path / "cand")
    (cand / "frames" / ("frame_" + "9" * 200 + "_window.npy")).write_bytes(b"x")
    assert ds.validate(reference, cand).ok


def test_rewriting_needs_the_same_kind(reference, tmp_path):
    feat = tmp_path / "feat"
    ds.write_features(_result(), feat, weights=WEIGHTS)
    with pytest.raises(OutputError, match="features output, not a reference one"):
        ds.write_reference(_result(), feat, weights=WEIGHTS, overwrite=True)
    ds.write_features(_result(seed=1), feat, weights=WEIGHTS, overwrite=True)
    demo = tmp_path / "demo"
    ds.write_reference(_result(), demo, weights=WEIGHTS, output_kind="demo", extra_meta={"demo": "x"},
                       extra_files=lambda tmp: (tmp / "README.txt").write_text("hi"))
    assert (demo / "README.txt").read_text() == "hi"
    with pytest.raises(OutputError, match="not a demo one"):
        ds.write_reference(_result(), tmp_path / "feat", weights=WEIGHTS, output_kind="demo", overwrite=True)
    with pytest.raises(OutputError, match="file suffix"):
        ds.write_features(_result(), tmp_path / "x.npy", weights=WEIGHTS)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["demo", "feat"]
