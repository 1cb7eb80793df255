"""synctalk_audio._io: the one atomic-output helper and the hostile-input readers."""

from __future__ import annotations

import json
import os
import signal
import stat
from pathlib import Path

import numpy as np
import pytest

from synctalk_audio import _io
from synctalk_audio.errors import OutputError, ShapeError, SyncTalkAudioError


def _names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def _ours(folder: Path, kind: str) -> Path:
    folder.mkdir()
    (folder / "metadata.json").write_text(json.dumps({"library": "synctalk-audio", "output_kind": kind,
                                                      "sha256": {"data.npy": "0" * 64}}))
    (folder / "data.npy").write_bytes(b"old")
    return folder


def _fill(tmp: Path, kind: str, text: str = "new") -> None:
    (tmp / "metadata.json").write_text(json.dumps({"library": "synctalk-audio", "output_kind": kind,
                                                   "sha256": {"data.txt": "0" * 64}}))
    (tmp / "data.txt").write_text(text)


# --------------------------------------------------------------------------- files


def test_save_npy_writes_exactly_the_path_with_umask_permissions(tmp_path):
    out = _io.save_npy(tmp_path / "frames.bin", np.arange(6, dtype=np.float32).reshape(2, 3))
    assert out == tmp_path / "frames.bin" and _names(tmp_path) == ["frames.bin"]
    np.testing.assert_array_equal(np.load(out), np.arange(6, dtype=np.float32).reshape(2, 3))
    plain = tmp_path / "plain"
    plain.write_bytes(b"")  # what open() gives under the current umask
    assert stat.S_IMODE(os.stat(out).st_mode) == stat.S_IMODE(os.stat(plain).st_mode)


def test_existing_file_needs_overwrite_and_empty_one_is_filled(tmp_path):
    target = tmp_path / "x.npy"
    target.write_bytes(b"")
    _io.save_npy(target, np.zeros(2))                     # empty: filled
    with pytest.raises(OutputError, match=r"overwrite=True, CLI --force"):
        _io.save_npy(target, np.ones(2))
    np.testing.assert_array_equal(np.load(target), np.zeros(2))
    _io.save_npy(target, np.ones(2), overwrite=True)
    np.testing.assert_array_equal(np.load(target), np.ones(2))
    assert _names(tmp_path) == ["x.npy"]


def test_file_target_that_is_a_directory_or_under_a_file(tmp_path):
    with pytest.raises(OutputError, match="is a directory"):
        _io.save_npy(tmp_path, np.zeros(1), overwrite=True)
    with pytest.raises(OutputError, match="names a directory"):
        _io.save_npy(f"{tmp_path}/new/", np.zeros(1))
    (tmp_path / "f").write_text("x")
    with pytest.raises(OutputError, match="under the file"):
        _io.save_npy(tmp_path / "f" / "x.npy", np.zeros(1))
    with pytest.raises(OutputError, match="does not exist"):
        _io.save_npy(tmp_path / "missing" / "x.npy", np.zeros(1))


def test_special_files_are_never_replaced(tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    null = tmp_path / "null"
    null.symlink_to("/dev/null")
    dangling = tmp_path / "dangling"
    dangling.symlink_to(tmp_path / "nowhere")
    for path, what in ((fifo, "FIFO"), (null, "character device"), (dangling, "dangling")):
        with pytest.raises(OutputError, match=what):
            _io.save_npy(path, np.zeros(1), overwrite=True)
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode) and null.is_symlink() and dangling.is_symlink()
    assert _names(tmp_path) == ["dangling", "fifo", "null"]


def test_atomic_file_error_leaves_nothing(tmp_path):
    target = tmp_path / "out.json"
    target.write_text("{}")
    for exc in (OSError(28, "No space left on device"), KeyboardInterrupt(), ValueError("boom")):
        with pytest.raises((OutputError, KeyboardInterrupt, ValueError)):
            with _io.atomic_file(target, overwrite=True) as fh:
                fh.write(b"partial")
                raise exc
        assert target.read_text() == "{}" and _names(tmp_path) == ["out.json"]


def test_write_json_strict_and_jsonable(tmp_path):
    out = _io.write_json(tmp_path / "m.json", {"a": np.float32(1.5), "b": (1, 2), "c": float("nan"), "p": tmp_path})
    assert json.loads(out.read_text()) == {"a": 1.5, "b": [1, 2], "c": None, "p": str(tmp_path)}
    assert _io.file_sha256(out) == __import__("hashlib").sha256(out.read_bytes()).hexdigest()
    versions = _io.library_versions()
    assert versions["numpy"] == np.__version__ and versions["python"]


# --------------------------------------------------------------------------- directories


def test_directory_output_rule(tmp_path):
    with _io.atomic_dir(tmp_path / "new", kind="features") as tmp:
        _fill(tmp, "features")
    assert (tmp_path / "new" / "data.txt").read_text() == "new"
    empty = tmp_path / "empty"
    empty.mkdir()
    with _io.atomic_dir(empty, kind="features") as tmp:
        _fill(tmp, "features")
    with pytest.raises(OutputError, match=r"not empty.*overwrite=True, CLI --force"):
        with _io.atomic_dir(empty, kind="features") as tmp:
            pytest.fail("the block must not run")
    with _io.atomic_dir(empty, overwrite=True, kind="features") as tmp:
        _fill(tmp, "features", "newer")
    assert (empty / "data.txt").read_text() == "newer"
    assert _names(tmp_path) == ["empty", "new"]


def test_overwrite_replaces_only_our_output_of_the_same_kind(tmp_path):
    ref = _ours(tmp_path / "ref", "reference")
    with pytest.raises(OutputError, match="reference output, not a demo one"):
        with _io.atomic_dir(ref, overwrite=True, kind="demo"):
            pass
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "thesis.tex").write_text("precious")
    for marker in ("[1, 2]", '"a string"', '{"library": "someone-else"}', "[" * 100_000 + "]" * 100_000,
                   '{"n_frames": 1e400}'):
        (foreign / "metadata.json").write_text(marker)
        with pytest.raises(OutputError, match="not written by synctalk-audio"):
            with _io.atomic_dir(foreign, overwrite=True, kind="reference"):
                pass
    assert (foreign / "thesis.tex").read_text() == "precious"
    assert (ref / "data.npy").read_bytes() == b"old"


@pytest.mark.parametrize("added", ["notes.txt", "sub/", "frames/extra.npy", "frames/deeper/x.npy"])
def test_overwrite_refuses_a_directory_of_ours_holding_files_we_did_not_write(tmp_path, added):
    """--force replaces our output, never what a user put inside it (a user's notes were once
    deleted with it): only the files its marker's sha256 lists, the known unhashed ones and the
    folders of such files may be there."""
    out = tmp_path / "out"
    out.mkdir()
    (out / "frames").mkdir()
    (out / "frames" / "frame_00000_window.npy").write_bytes(b"old")
    (out / "summary.json").write_text("{}")
    (out / "metadata.json").write_text(json.dumps({"library": "synctalk-audio", "output_kind": "reference",
                                                   "sha256": {"frames/frame_00000_window.npy": "0" * 64}}))
    assert _io.check_dir_target(out, overwrite=True, kind="reference") is True  # ours alone: replaceable
    target = out / added.rstrip("/")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.mkdir() if added.endswith("/") else target.write_text("mine")
    shown = added if added.endswith("/") else added.split("/deeper")[0] + ("/deeper/" if "deeper" in added else "")
    with pytest.raises(OutputError, match="did not write") as exc:
        with _io.atomic_dir(out, overwrite=True, kind="reference") as tmp:
            _fill(tmp, "reference")
    assert shown in str(exc.value) and "\n" not in str(exc.value)
    assert target.exists() and (out / "frames" / "frame_00000_window.npy").read_bytes() == b"old"


def test_legacy_marker_kinds():
    assert _io.output_kind({"library": "synctalk-audio", "dataset": {"kind": "intermediates"}}) == "reference"
    assert _io.output_kind({"library": "synctalk-audio", "dataset": {"kind": "features"}}) == "features"
    assert _io.output_kind({"library": "synctalk-audio", "demo": "x", "dataset": {"kind": "reference"}}) == "demo"
    assert _io.output_kind({"library": "other", "output_kind": "features"}) is None
    assert _io.output_kind([1]) is None


def test_file_suffix_where_a_directory_is_expected(tmp_path):
    for name in ("x.npy", "x.json", "x.PNG", "enc.onnx"):
        with pytest.raises(OutputError, match="file suffix"):
            _io.check_dir_target(tmp_path / name)
    (tmp_path / "f").write_text("x")
    with pytest.raises(OutputError, match="is a file"):
        _io.check_dir_target(tmp_path / "f", overwrite=True)
    assert _names(tmp_path) == ["f"]


def test_force_from_inside_the_output_directory(tmp_path, monkeypatch):
    out = _ours(tmp_path / "out", "features")
    monkeypatch.chdir(out)
    with _io.atomic_dir(".", overwrite=True, kind="features") as tmp:
        assert tmp.parent == tmp_path
        _fill(tmp, "features")
    assert _names(tmp_path) == ["out"] and _names(tmp_path / "out") == ["data.txt", "metadata.json"]


def test_target_removed_between_check_and_rename(tmp_path):
    import shutil

    out = _ours(tmp_path / "out", "features")
    with _io.atomic_dir(out, overwrite=True, kind="features") as tmp:
        _fill(tmp, "features")
        shutil.rmtree(out)
    assert _names(tmp_path) == ["out"] and (out / "data.txt").read_text() == "new"


def test_symlink_to_an_empty_directory(tmp_path):
    real = tmp_path / "real"
    real.mkdir()
    link = tmp_path / "link"
    link.symlink_to(real)
    with _io.atomic_dir(link, kind="features") as tmp:
        _fill(tmp, "features")
    assert link.is_symlink() and (link / "data.txt").read_text() == "new"
    assert _names(tmp_path) == ["link", "real"]


@pytest.mark.parametrize("exc", [OSError(28, "No space left on device"), KeyboardInterrupt(), SystemExit(143)])
def test_atomic_dir_cleans_up_on_any_exception(tmp_path, exc):
    out = _ours(tmp_path / "out", "features")
    with pytest.raises((OutputError, KeyboardInterrupt, SystemExit)):
        with _io.atomic_dir(out, overwrite=True, kind="features") as tmp:
            _fill(tmp, "features")
            raise exc
    assert _names(tmp_path) == ["out"] and (out / "data.npy").read_bytes() == b"old"


def test_sigterm_handler_only_while_writing_and_only_over_the_default(tmp_path):
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL
    with _io.atomic_file(tmp_path / "a.bin") as fh:
        assert signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL
        fh.write(b"x")
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL

    def mine(signum, frame):  # an application's own handler is left alone
        pass

    previous = signal.signal(signal.SIGTERM, mine)
    try:
        with _io.atomic_file(tmp_path / "b.bin") as fh:
            assert signal.getsignal(signal.SIGTERM) is mine
            fh.write(b"x")
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_install_puts_the_old_directory_back_when_the_rename_fails(tmp_path, monkeypatch):
    out = _ours(tmp_path / "out", "features")
    tmp = tmp_path / ".new"
    tmp.mkdir()
    real_rename = os.rename

    def failing(src, dst):
        if Path(src) == tmp:
            raise OSError(13, "Permission denied")
        return real_rename(src, dst)

    monkeypatch.setattr(_io.os, "rename", failing)
    with pytest.raises(OSError):
        _io.install(tmp, out, replace=True)
    assert (out / "data.npy").read_bytes() == b"old"
    assert _names(tmp_path) == [".new", "out"]


# --------------------------------------------------------------------------- hostile readers


@pytest.mark.parametrize("text, match", [
    ("[" * 100_000 + "]" * 100_000, "nested"),
    ('{"n_frames": 1e400}', "not valid JSON"),
    ('{"x": NaN}', "not valid JSON"),
    ('{"x": -Infinity}', "not valid JSON"),
    ("{", "not valid JSON"),
])
def test_read_json_refuses_hostile_json(tmp_path, text, match):
    path = tmp_path / "m.json"
    path.write_text(text)
    with pytest.raises(OutputError, match=match):
        _io.read_json(path)


def test_read_json_bounds_and_types(tmp_path):
    path = tmp_path / "m.json"
    path.write_bytes(b"\xff\xfe")
    with pytest.raises(OutputError, match="not valid JSON"):
        _io.read_json(path)
    path.write_text(json.dumps({"s": "[[[[[[" * 100, "n": [1, 2.5]}))  # brackets inside strings do not count
    assert _io.read_json(path, max_depth=2)["n"] == [1, 2.5]
    with pytest.raises(OutputError, match="larger than 10 bytes"):
        _io.read_json(path, max_bytes=10)
    path.write_text('"a string"')
    assert _io.read_json(path) == "a string"  # the type is the caller's to check


def test_readers_never_open_a_fifo(tmp_path):
    fifo = tmp_path / "f.npy"
    os.mkfifo(fifo)
    with pytest.raises(OutputError, match="not a regular file"):
        _io.load_npy(fifo)
    with pytest.raises(OutputError, match="not a regular file"):
        _io.read_json(fifo)
    with pytest.raises(OutputError, match="a directory"):
        _io.load_npy(tmp_path)
    with pytest.raises(OutputError, match="not found"):
        _io.load_npy(tmp_path / "missing.npy")


def _forged_npy(shape: tuple[int, ...], data: bytes, descr: str = "<f4") -> bytes:
    header = repr({"descr": descr, "fortran_order": False, "shape": shape}).encode()
    header += b" " * (-(10 + len(header) + 1) % 64) + b"\n"
    return b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header + data


def test_npy_header_checked_against_the_file_length(tmp_path):
    path = tmp_path / "big.npy"
    path.write_bytes(_forged_npy((100_000, 100_000, 16), bytes(64)))
    for mmap in (False, True):
        with pytest.raises(ShapeError, match="truncated"):
            _io.load_npy(path, mmap=mmap)
    path.write_bytes(_forged_npy((2,), bytes(16), descr="|O"))
    with pytest.raises(ShapeError, match="plain numeric"):
        _io.load_npy(path)
    path.write_bytes(b"not an npy at all")
    with pytest.raises(ShapeError, match="not a readable .npy"):
        _io.load_npy(path)


def test_load_npy_round_trips(tmp_path):
    for arr in (np.arange(12.0).reshape(3, 4), np.asfortranarray(np.arange(6, dtype=np.float32).reshape(2, 3)),
                np.zeros((0, 512), np.float32), np.float64(3.5), np.arange(5, dtype=">i4")):
        np.save(tmp_path / "a.npy", arr)
        for mmap in (False, True):
            got = _io.load_npy(tmp_path / "a.npy", mmap=mmap)
            assert got.shape == np.shape(arr) and got.dtype == np.asarray(arr).dtype
            np.testing.assert_array_equal(got, arr)


def test_errors_are_library_errors():
    assert issubclass(OutputError, SyncTalkAudioError) and issubclass(ShapeError, SyncTalkAudioError)


@pytest.mark.parametrize("bad,match", [(None, "must be a str or os.PathLike, got NoneType"),
                                       (5, "got int 5"), (b"/tmp/x", "got bytes"),
                                       ("/tmp/a\x00b", "contains a NUL byte")])
def test_path_arguments_of_the_wrong_type_are_one_config_error(tmp_path, bad, match):
    """Every writer and reader of the API names a bad path argument in one ConfigError (they
    raised os/pathlib TypeErrors and ValueErrors from deep inside)."""
    import synctalk_audio as sa
    from synctalk_audio.errors import ConfigError

    out = sa.pipeline(np.sin(np.arange(16000) / 30).astype(np.float32), checkpoint="seeded", device="cpu")
    calls = [lambda: sa.write_features(out, bad), lambda: sa.write_reference(out, bad, frames=False),
             lambda: sa.read_reference(bad), lambda: sa.validate(bad, tmp_path), lambda: sa.export_onnx("seeded", bad),
             lambda: sa.extract_dataset(bad, tmp_path / "o", checkpoint="seeded"),
             lambda: _io.save_npy(bad, np.zeros(3))]
    if bad is not None:  # plot_features(path=None) means "do not save"
        calls.append(lambda: sa.plot_features(out, path=bad))
    for call in calls:
        with pytest.raises(ConfigError, match=match):
            call()
    assert list(tmp_path.iterdir()) == []


def _without_root_powers() -> "list[str]":
    """A command prefix that runs without root's permission bypass (root ignores read-only folders)."""
    import shutil

    if os.geteuid() != 0:
        return []
    if shutil.which("setpriv") is None:
        pytest.skip("as root, read-only folders need setpriv to be felt")
    return ["setpriv", "--inh-caps=-dac_override,-dac_read_search",
            "--bounding-set=-dac_override,-dac_read_search"]


def test_replacing_a_read_only_output_leaves_no_old_sibling(tmp_path):
    """--force over an output the user made read-only: its `.old` sibling was left behind (exit 0)."""
    import subprocess
    import sys

    code = ("import sys, os\nfrom pathlib import Path\nfrom synctalk_audio._io import atomic_dir\n"
            "def write(t):\n"
            "    with atomic_dir(t, overwrite=True, kind='features') as tmp:\n"
            "        (tmp / 'a.npy').write_bytes(b'x')\n"
            "        (tmp / 'metadata.json').write_text('{\"library\": \"synctalk-audio\", \"output_kind\": \"features\", "
            "\"sha256\": {\"a.npy\": \"-\"}}')\n"
            "t = Path(sys.argv[1]) / 'out'\nwrite(t)\nos.chmod(t, 0o555)\nwrite(t)\n"
            "print(sorted(os.listdir(t.parent)))\n")
    done = subprocess.run([*_without_root_powers(), sys.executable, "-W", "error", "-c", code, str(tmp_path)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "['out']"


@pytest.mark.parametrize("kind", ["dir", "file"])
def test_a_failed_write_removes_the_folders_it_created(tmp_path, kind):
    """`reference -o d/LONGNAME` (a name the file system refuses) left `d/` behind."""
    from synctalk_audio._io import atomic_dir, atomic_file

    target = tmp_path / "new" / "deeper" / ("x" * 300)
    with pytest.raises(OutputError):
        if kind == "dir":
            with atomic_dir(target) as tmp:
                (tmp / "a").write_text("a")
        else:
            with atomic_file(str(target) + ".npy") as fh:
                fh.write(b"a")
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "kept").mkdir()  # folders that existed before stay
    with pytest.raises(OutputError):
        with atomic_dir(tmp_path / "kept" / "new" / ("y" * 300)):
            pass
    assert [p.name for p in tmp_path.iterdir()] == ["kept"] and list((tmp_path / "kept").iterdir()) == []
