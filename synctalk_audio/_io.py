"""Atomic outputs and hostile-input readers: the one place the library touches files.

Writing (the *output rule*, the same for every command and API that writes):

* a missing target, an empty directory or an empty regular file is filled;
* anything else is refused with one :class:`OutputError` line naming ``overwrite=True`` /
  ``--force``; with it, only a regular file, or a directory of the same kind written by this
  library (its ``metadata.json`` says ``"library": "synctalk-audio"`` and the kind), is
  replaced. A character device, FIFO, socket or a symlink to one is never replaced;
* a directory where a file is expected, or a path with a file suffix (``.npy``, ``.json``,
  ``.png``…) where a directory is expected, is an error.

Everything is built in a hidden temp sibling (``.NAME.XXXXXXXX.tmp``) and renamed into place,
so an exception, Ctrl-C or SIGTERM leaves the target as it was and no temp sibling behind.
Files are created with ``os.open(…, 0o666)`` / ``os.mkdir(…, 0o777)``, so the process umask
applies without ever being read or changed (the umask is process-wide: toggling it is not
thread-safe).

SIGTERM: while a write is in progress in the main thread, and only if SIGTERM has its default
action (which would kill the process without running ``finally``), a handler is installed that
raises :class:`SystemExit` (exit status 143 = 128 + SIGTERM) so the cleanup runs; the previous
handler is restored when the write ends. A handler the application installed itself (or
SIG_IGN) is left alone, and nothing is installed from other threads.

Reading: :func:`open_regular`, :func:`read_json` and :func:`load_npy` treat every file as
hostile: only regular files are opened (a FIFO never blocks), JSON is bounded in size, depth and
numbers, and ``.npy`` headers are checked against the file length before anything is allocated.
"""

from __future__ import annotations

import errno
import hashlib
import json
import math
import os
import platform
import re
import secrets
import shutil
import signal
import stat
import threading
import warnings
from contextlib import contextmanager
from importlib import metadata as _importlib_metadata
from pathlib import Path
from typing import Any, BinaryIO, Callable, Iterator, Mapping

import numpy as np

from .errors import ConfigError, OutputError, ShapeError, SyncTalkAudioError

__all__ = [
    "LIBRARY",
    "MARKER",
    "FILE_SUFFIXES",
    "jsonable",
    "library_versions",
    "file_sha256",
    "output_kind",
    "check_file_target",
    "check_dir_target",
    "atomic_file",
    "save_npy",
    "write_json",
    "atomic_dir",
    "install",
    "scratch_dir",
    "open_regular",
    "read_json",
    "npy_header",
    "load_npy",
]

LIBRARY = "synctalk-audio"
#: The file whose ``library`` and kind identify a directory this library wrote.
MARKER = "metadata.json"
#: Files an output directory of ours holds besides those its marker's ``sha256`` lists (the
#: reference summary and instructions, the demo's README and figure).
UNHASHED_OUTPUTS = frozenset({MARKER, "summary.json", "VALIDATION_INSTRUCTIONS.json", "README.txt",
                              "demo_features.png"})
#: Suffixes that name a file: such a path is refused where a directory is expected.
FILE_SUFFIXES = frozenset({".npy", ".npz", ".json", ".png", ".svg", ".pdf", ".jpg", ".jpeg", ".onnx", ".pt",
                           ".pth", ".txt", ".csv", ".wav", ".flac", ".mp3", ".ogg"})
_SIGTERM_EXIT = 128 + signal.SIGTERM
#: Largest metadata.json read back (a 1-hour reference lists ~180,000 checksums: ~20 MB).
DEFAULT_MAX_JSON_BYTES = 64 << 20
DEFAULT_MAX_JSON_DEPTH = 32


def _one_line(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return " ".join(str(exc).split())[:160] or type(exc).__name__


# --------------------------------------------------------------------------- small helpers


def jsonable(obj: Any) -> Any:
    """``obj`` with numpy scalars, tuples and paths made plain JSON; non-finite floats → None."""
    if isinstance(obj, Mapping):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    return obj


def _version(dist: str) -> str | None:
    try:
        return _importlib_metadata.version(dist)
    except _importlib_metadata.PackageNotFoundError:
        return None


def library_versions(*dists: str) -> dict[str, Any]:
    """Versions for metadata: synctalk_audio, python, numpy, torch, soundfile, soxr and ``dists``."""
    from . import __version__

    out: dict[str, Any] = {"synctalk_audio": __version__, "python": platform.python_version()}
    for dist in ("numpy", "torch", "soundfile", "soxr", *dists):
        out[dist] = _version(dist)
    return out


def file_sha256(path: "str | os.PathLike") -> str:
    """sha256 hex digest of a regular file, read in 1 MiB blocks."""
    with open_regular(path) as fh:
        h = hashlib.sha256()
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def output_kind(meta: Any) -> str | None:
    """The kind of output a ``metadata.json`` describes, None when it is not ours.

    ``meta["output_kind"]`` when present; for datasets written before that field: ``"demo"``,
    ``"reference"`` (reference and intermediates datasets) or ``"features"``.
    """
    if not isinstance(meta, dict) or meta.get("library") != LIBRARY:
        return None
    kind = meta.get("output_kind")
    if isinstance(kind, str):
        return kind
    if "demo" in meta:
        return "demo"
    dataset = meta.get("dataset")
    legacy = dataset.get("kind") if isinstance(dataset, dict) else None
    return {"reference": "reference", "intermediates": "reference", "features": "features"}.get(legacy)


def check_path_type(path: Any, what: str = "output path") -> str:
    """``os.fspath(path)`` if ``path`` is a str or os.PathLike naming a text path without NUL
    bytes; else one ConfigError line (not the TypeError/ValueError deep inside os or pathlib)."""
    if not isinstance(path, (str, os.PathLike)):
        raise ConfigError(f"{what} must be a str or os.PathLike, got {type(path).__name__} {path!r:.60}")
    text = os.fspath(path)
    if not isinstance(text, str):
        raise ConfigError(f"{what} must be text, got {type(text).__name__} {text!r:.60} (decode it first)")
    if "\x00" in text:
        raise ConfigError(f"{what} {text!r:.80} contains a NUL byte")
    return text


def _absolute(path: "str | os.PathLike") -> Path:
    # abspath also normalises "." and "x/..": the temp sibling of "-o ." must not land inside it
    return Path(os.path.abspath(Path(check_path_type(path)).expanduser()))


def _absolute_dir(path: "str | os.PathLike") -> Path:
    """Absolute path of a directory target; a symlink to a directory is resolved (the rename
    then replaces the directory it points to, not the link)."""
    target = _absolute(path)
    try:
        if target.is_symlink() and target.is_dir():
            return Path(os.path.realpath(target))
    except OSError as exc:  # e.g. a name longer than the file system allows
        raise OutputError(f"cannot use output path {target}: {_one_line(exc)}") from None
    return target


def _check_parents(target: Path) -> None:
    for parent in target.parents:
        if os.path.lexists(parent) and not parent.is_dir():
            raise OutputError(f"output path {target} lies under the file {parent}")


def check_parent_folder(path: "str | os.PathLike") -> None:
    """OutputError unless the folder ``path`` goes into exists (a file in the way is named as such)."""
    p = Path(path)
    if not p.parent.is_dir():
        _check_parents(p)
        raise OutputError(f"output folder {p.parent} does not exist (for {p})")


def _stat(path: Path) -> os.stat_result | None:
    """``os.stat`` (following links); None when nothing is there; a dangling link is an error."""
    try:
        return os.stat(path)
    except FileNotFoundError:
        if os.path.lexists(path):
            raise OutputError(f"output path {path} is a dangling symbolic link; refusing to replace it") from None
        return None
    except OSError as exc:
        raise OutputError(f"cannot inspect output path {path}: {_one_line(exc)}") from None


def special_kind(mode: int) -> str:
    """What a non-regular, non-directory ``st_mode`` is, in words ("a FIFO", "a character device"…)."""
    return ("a character device" if stat.S_ISCHR(mode) else "a block device" if stat.S_ISBLK(mode)
            else "a FIFO" if stat.S_ISFIFO(mode) else "a socket" if stat.S_ISSOCK(mode) else "a special file")


def _not_regular(path: Path, mode: int) -> OutputError:
    return OutputError(f"output path {path} is {special_kind(mode)}; synctalk-audio only replaces regular files "
                       "it can own")


# --------------------------------------------------------------------------- checks


def check_names_a_file(path: "str | os.PathLike") -> None:
    """Raise OutputError if ``path`` ends with a separator (``out/``: a directory, whatever exists
    there), before ``Path`` drops that separator."""
    if check_path_type(path).endswith(("/", os.sep)):
        raise OutputError(f"output path {os.fspath(path)} names a directory; expected a file name")


def check_names_a_dir(path: "str | os.PathLike") -> None:
    """Raise OutputError if ``path`` cannot name an output directory: empty (it would be the
    current directory), or ending in a file suffix (``out.npy``, ``x.onnx``…)."""
    if not check_path_type(path):
        raise OutputError("output directory path is empty; give a folder name")
    suffix = Path(path).suffix
    if suffix.lower() in FILE_SUFFIXES:
        raise OutputError(f"output path {_absolute(path)} ends in {suffix!r}, a file suffix; expected a directory name")


def check_not_an_input(path: "str | os.PathLike", *inputs: Any) -> None:
    """Raise OutputError if the output ``path`` is one of the ``inputs`` (the same file, by any
    name): even ``--force`` never writes over what a command reads."""
    for item in inputs:
        if not isinstance(item, (str, os.PathLike)) or not os.fspath(item):
            continue
        try:
            same = os.path.samefile(path, item)
        except OSError:  # either does not exist (yet)
            same = False
        if same:
            raise OutputError(f"output path {os.fspath(path)} is the input {os.fspath(item)}; choose another path")


def check_file_target(
    path: "str | os.PathLike",
    *,
    overwrite: bool = False,
    is_ours: Callable[[Path], bool] | None = None,
) -> bool:
    """Check that :func:`atomic_file` may write ``path``; True if it would replace a file.

    ``is_ours(path)``, when given, must also be True for an existing file to be replaced (e.g.
    an export whose ``.json`` sidecar says synctalk-audio wrote it).

    Raises
    ------
    OutputError
        ``path`` is (or links to) a directory or a non-regular file, lies under a file, or is a
        non-empty file and ``overwrite`` is False (or it is not ours).
    """
    target = _absolute(path)
    check_names_a_file(path)
    _check_parents(target)
    st = _stat(target)
    if st is None:
        return False
    if stat.S_ISDIR(st.st_mode):
        raise OutputError(f"output path {target} is a directory; expected a file path")
    if not stat.S_ISREG(st.st_mode):
        raise _not_regular(target, st.st_mode)
    if st.st_size == 0:
        return True
    if not overwrite:
        raise OutputError(f"output file {target} exists; choose a new path or replace it (overwrite=True, CLI --force)")
    if is_ours is not None and not is_ours(target):
        raise OutputError(f"output file {target} was not written by synctalk-audio; refusing to replace it")
    return True


def _marker(target: Path) -> "dict | None":
    try:
        meta = read_json(target / MARKER, max_bytes=DEFAULT_MAX_JSON_BYTES)
    except OutputError:
        return None
    return meta if isinstance(meta, dict) else None


def _foreign_entries(target: Path, meta: dict) -> list[str]:
    """Paths under ``target`` (relative, sorted) that an output of ours would not hold: not in
    its marker's ``sha256``, not one of :data:`UNHASHED_OUTPUTS`, not a folder of such files."""
    hashed = meta.get("sha256")
    ours = (set(hashed) if isinstance(hashed, dict) else set()) | UNHASHED_OUTPUTS
    folders = {p.rsplit("/", 1)[0] for p in ours if "/" in p}
    foreign = []
    for dirpath, dirnames, filenames in os.walk(target):
        rel = Path(dirpath).relative_to(target).as_posix()
        prefix = "" if rel == "." else rel + "/"
        foreign += [prefix + d + "/" for d in dirnames if prefix + d not in folders]
        dirnames[:] = [d for d in dirnames if prefix + d in folders]
        foreign += [prefix + f for f in filenames if prefix + f not in ours]
    return sorted(foreign)


def check_dir_target(path: "str | os.PathLike", *, overwrite: bool = False, kind: str | None = None) -> bool:
    """Check that :func:`atomic_dir` may write ``path``; True if it would replace a directory.

    ``kind`` (``"reference"``, ``"features"``, ``"demo"``…) must match the existing directory's
    :func:`output_kind`; None accepts any output of this library.

    Raises
    ------
    OutputError
        A file suffix, a file (or non-directory) in the way, a path under a file, a non-empty
        directory without ``overwrite``, or one that is not a ``kind`` output of ours.
    """
    check_names_a_dir(path)
    target = _absolute_dir(path)
    _check_parents(target)
    st = _stat(target)
    if st is None:
        return False
    if not stat.S_ISDIR(st.st_mode):
        if stat.S_ISREG(st.st_mode):
            raise OutputError(f"output path {target} is a file; expected a directory")
        raise _not_regular(target, st.st_mode)
    try:
        empty = not any(os.scandir(target))
    except OSError as exc:
        raise OutputError(f"cannot list output directory {target}: {_one_line(exc)}") from None
    if empty:
        return False
    if not overwrite:
        raise OutputError(f"output directory {target} exists and is not empty; choose a new path or replace it "
                          "(overwrite=True, CLI --force)")
    meta = _marker(target)
    found = output_kind(meta) if meta is not None else None
    if found is None:
        raise OutputError(f"output directory {target} is not empty and was not written by synctalk-audio "
                          f"(no {MARKER} of ours); refusing to replace it")
    if kind is not None and found != kind:
        raise OutputError(f"output directory {target} holds a synctalk-audio {found} output, not a {kind} one; "
                          "refusing to replace it (choose another path)")
    foreign = _foreign_entries(target, meta)
    if foreign:
        shown = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
        raise OutputError(f"output directory {target} also holds files synctalk-audio did not write ({shown}); "
                          "refusing to replace it (move them, or choose another path)")
    return True


# --------------------------------------------------------------------------- SIGTERM


def _raise_on_sigterm(signum: int, frame: Any) -> None:
    raise SystemExit(_SIGTERM_EXIT)


@contextmanager
def _sigterm_cleanup() -> Iterator[None]:
    """While the block runs, SIGTERM raises SystemExit(143) (see the module docstring)."""
    install = threading.current_thread() is threading.main_thread()
    previous = signal.getsignal(signal.SIGTERM) if install else None
    install = install and previous == signal.SIG_DFL
    if install:
        signal.signal(signal.SIGTERM, _raise_on_sigterm)
    try:
        yield
    finally:
        if install:
            signal.signal(signal.SIGTERM, previous)


def _sibling(target: Path, suffix: str) -> Path:
    return target.parent / f".{target.name}.{secrets.token_hex(4)}{suffix}"


def _remove(path: Path | None, *, loud: bool = False) -> None:
    """Delete ``path`` (a file or a tree). A tree with read-only folders (an old output the user
    made read-only) is made writable for its owner and deleted again; ``loud``: warn, naming it,
    if it still stays (a replaced output's ``.old`` sibling must not outlive the call unseen)."""
    if path is None:
        return
    try:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
            if os.path.lexists(path):
                _unlock_tree(path)
                shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
    except OSError:
        pass
    if loud and os.path.lexists(path):
        warnings.warn(f"could not delete the replaced output, kept aside at {path}: delete it by hand", stacklevel=3)


def _unlock_tree(path: Path) -> None:
    """Give the owner rwx on every folder of ``path`` (what deleting its entries needs)."""
    def unlock(folder: str) -> None:
        try:
            os.chmod(folder, stat.S_IMODE(os.lstat(folder).st_mode) | stat.S_IRWXU)
        except OSError:
            pass

    unlock(str(path))
    for root, dirs, _ in os.walk(path):
        for name in dirs:
            if not os.path.islink(os.path.join(root, name)):
                unlock(os.path.join(root, name))


def make_folders(folder: Path) -> list[Path]:
    """Create ``folder`` and its missing parents; return those it created, outermost first (a
    writer that fails removes them again with :func:`_remove_created`). On an OSError the ones
    already made are removed before it propagates."""
    created = [p for p in (folder, *folder.parents) if not os.path.lexists(p)][::-1]
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:
        _remove_created(created)
        raise
    return created


@contextmanager
def _parent_folder(target: Path, *, make: bool = True) -> Iterator[None]:
    """The folder ``target`` goes into: created with its missing parents (``make``), which are
    removed again if the block fails; without ``make`` it must exist."""
    if not make:
        check_parent_folder(target)
        yield
        return
    try:
        created = make_folders(target.parent)
    except OSError as exc:
        raise OutputError(f"cannot create the folder of {target}: {_one_line(exc)}") from None
    try:
        yield
    except BaseException:
        _remove_created(created)
        raise


def _remove_created(folders: "list[Path]") -> None:
    """Remove the folders a failed writer created, innermost first, while they are empty."""
    for folder in reversed(folders):
        if not os.path.lexists(folder):  # never made (its creation is what failed)
            continue
        try:
            folder.rmdir()
        except OSError:  # not empty: something else is in it now
            return


# --------------------------------------------------------------------------- files


@contextmanager
def atomic_file(
    path: "str | os.PathLike",
    *,
    overwrite: bool = False,
    is_ours: Callable[[Path], bool] | None = None,
    make_parents: bool = True,
) -> Iterator[BinaryIO]:
    """Yield a binary file handle whose content becomes ``path`` when the block succeeds.

    The handle writes a temp sibling created with ``O_CREAT | O_EXCL`` and mode 0o666 (the
    umask applies); at the end it is fsync'ed and ``os.replace``'d onto ``path``. On any
    exception (SIGTERM included) the temp file is removed and ``path`` is untouched; an
    ``OSError`` becomes one :class:`OutputError` line. ``path`` is checked as by
    :func:`check_file_target`, before and again just before the rename.
    """
    target = _absolute(path)
    check_file_target(path, overwrite=overwrite, is_ours=is_ours)
    tmp: Path | None = None
    with _parent_folder(target, make=make_parents), _sigterm_cleanup():
        try:
            tmp = _sibling(target, ".tmp")
            fd = os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY | getattr(os, "O_CLOEXEC", 0), 0o666)
            with os.fdopen(fd, "wb") as fh:
                yield fh  # type: ignore[misc]
                fh.flush()
                os.fsync(fh.fileno())
            check_file_target(target, overwrite=overwrite, is_ours=is_ours)
            os.replace(tmp, target)
            tmp = None
        except OSError as exc:
            raise OutputError(f"cannot write {target}: {_one_line(exc)}") from None
        finally:
            _remove(tmp)


def save_npy(path: "str | os.PathLike", array: Any, *, overwrite: bool = False, make_parents: bool = False) -> Path:
    """Write ``array`` as ``.npy`` at exactly ``path`` (nothing appended), atomically.

    The folder must exist unless ``make_parents``. Output rule of :func:`check_file_target`.

    Returns
    -------
    Path written (absolute)
    """
    with atomic_file(path, overwrite=overwrite, make_parents=make_parents) as fh:
        np.save(fh, np.asarray(array), allow_pickle=False)
    return _absolute(path)


def _dump_json(fh: Any, obj: Any) -> None:
    fh.write((json.dumps(jsonable(obj), indent=2, allow_nan=False) + "\n").encode("utf-8"))


def write_json(path: "str | os.PathLike", obj: Any, *, overwrite: bool = False, atomic: bool = True) -> Path:
    """Write ``jsonable(obj)`` as indented strict JSON (UTF-8, trailing newline).

    ``atomic=False`` writes in place: for files inside a directory :func:`atomic_dir` is
    building, which is atomic as a whole.
    """
    if not atomic:
        with open(path, "wb") as fh:
            _dump_json(fh, obj)
        return Path(path)
    with atomic_file(path, overwrite=overwrite) as fh:
        _dump_json(fh, obj)
    return _absolute(path)


# --------------------------------------------------------------------------- directories


def install(tmp: Path, target: Path, *, replace: bool) -> None:
    """Rename ``tmp`` (a file or directory) onto ``target``.

    A directory to ``replace`` is first renamed aside into a hidden ``.old`` sibling, then
    deleted once the new one is in place (put back if that rename fails). If it vanished in the
    meantime the new one simply takes its place; the ``.old`` sibling never outlives the call.
    Raises OSError.
    """
    if not (replace and tmp.is_dir() and os.path.lexists(target)):
        os.replace(tmp, target)
        return
    old: Path | None = _sibling(target, ".old")
    try:
        try:
            os.rename(target, old)
        except FileNotFoundError:
            old = None
        try:
            os.rename(tmp, target)
        except BaseException:
            if old is not None and not os.path.lexists(target):
                os.rename(old, target)
                old = None
            raise
    finally:
        _remove(old, loud=True)


def _make_temp_dir(target: Path) -> Path:
    for _ in range(100):
        tmp = _sibling(target, ".tmp")
        try:
            os.mkdir(tmp, 0o777)  # the umask applies
            return tmp
        except FileExistsError:
            continue
    raise OutputError(f"cannot create a temp directory next to {target}")


@contextmanager
def atomic_dir(target: "str | os.PathLike", *, overwrite: bool = False, kind: str | None = None) -> Iterator[Path]:
    """Build a directory in a hidden temp sibling; rename it to ``target`` when the block succeeds.

    Output rule of :func:`check_dir_target` (checked before and again just before the rename;
    ``kind`` must match an existing directory's). On any exception (SIGTERM included) the temp
    directory is removed and ``target`` is left as it was; ``OSError`` (disk full, permission
    denied…) becomes one :class:`OutputError` line. The writer must put a ``metadata.json`` with
    ``"library": "synctalk-audio"`` and ``"output_kind": kind`` in it for a later ``overwrite``
    to recognise it.

    Yields
    ------
    Path of the temp directory to fill.
    """
    check_dir_target(target, overwrite=overwrite, kind=kind)  # first: "" is refused, never made "."
    path = _absolute_dir(target)
    tmp: Path | None = None
    with _parent_folder(path), _sigterm_cleanup():
        try:
            tmp = _make_temp_dir(path)
            yield tmp
            replace = check_dir_target(path, overwrite=overwrite, kind=kind)
            install(tmp, path, replace=replace)
            tmp = None
        except OSError as exc:
            raise OutputError(f"cannot write {path}: {_one_line(exc)}") from None
        finally:
            _remove(tmp)


@contextmanager
def scratch_dir(target: "str | os.PathLike") -> Iterator[Path]:
    """A fresh hidden temp directory next to ``target``, removed when the block ends, whatever
    happens (SIGTERM included): for writers that :func:`install` several things from it."""
    path = _absolute(target)
    tmp: Path | None = None
    with _parent_folder(path), _sigterm_cleanup():
        try:
            tmp = _make_temp_dir(path)
            yield tmp
        finally:
            _remove(tmp)


# --------------------------------------------------------------------------- hostile readers


def check_input_file(path: "str | os.PathLike", *, what: str, error: "type[SyncTalkAudioError]",
                     expected: str = "a file") -> tuple[Path, int]:
    """Check that ``path`` names a non-empty regular file, from its ``stat`` only: (path, size).

    The one check of every input file (audio, ``.pth`` checkpoints, ``.onnx`` models). Nothing is
    opened, so a FIFO never blocks and ``/dev/zero`` is never read; an empty string is refused
    rather than taken as the current directory.

    Raises
    ------
    error : "{what} path is empty", "{what} not found", "{what} path is a directory, not
        {expected}", "{what} path is not a regular file (a FIFO)", "{what} is empty (0 bytes)"
    """
    if not os.fspath(path):
        raise error(f"{what} path is empty")
    p = Path(path)
    try:
        st = p.stat()
    except FileNotFoundError:
        raise error(f"{what} not found: {p}") from None
    except (OSError, ValueError) as exc:  # ValueError: an embedded NUL byte
        raise error(f"cannot read {what} {p}: {getattr(exc, 'strerror', None) or exc}") from None
    if stat.S_ISDIR(st.st_mode):
        raise error(f"{what} path is a directory, not {expected}: {p}")
    if not stat.S_ISREG(st.st_mode):
        raise error(f"{what} path is not a regular file ({special_kind(st.st_mode)}): {p}")
    if st.st_size == 0:
        raise error(f"{what} is empty (0 bytes): {p}")
    return p, st.st_size


def open_regular(path: "str | os.PathLike", *, what: str = "") -> BinaryIO:
    """Open a regular file for binary reading; anything else is one :class:`OutputError`.

    ``os.stat`` is checked before opening (a FIFO or device is never opened), the open is
    non-blocking and the opened descriptor is checked again.
    """
    p = Path(path)
    label = f"{what} {p}".strip()
    try:
        st = os.stat(p)
    except FileNotFoundError:
        raise OutputError(f"{label} not found") from None
    except OSError as exc:
        raise OutputError(f"cannot read {label}: {_one_line(exc)}") from None
    if not stat.S_ISREG(st.st_mode):
        kind = "a directory" if stat.S_ISDIR(st.st_mode) else "not a regular file"
        raise OutputError(f"cannot read {label}: it is {kind}")
    try:
        fd = os.open(p, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise OutputError(f"cannot read {label}: {_one_line(exc)}") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise OutputError(f"cannot read {label}: it is not a regular file")
    return os.fdopen(fd, "rb")


_JSON_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)


def _json_depth(data: bytes) -> int:
    """Largest bracket nesting of JSON text, strings ignored (no recursion, O(n))."""
    bare = np.frombuffer(_JSON_STRING.sub(b'""', data), dtype=np.uint8)
    step = (np.isin(bare, (ord("["), ord("{"))).astype(np.int64) - np.isin(bare, (ord("]"), ord("}"))))
    return int(np.cumsum(step).max(initial=0))


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number {text} is out of range")
    return value


def _no_constant(text: str) -> Any:
    raise ValueError(f"{text} is not valid JSON")


def read_json(
    path: "str | os.PathLike",
    *,
    max_bytes: int = DEFAULT_MAX_JSON_BYTES,
    max_depth: int = DEFAULT_MAX_JSON_DEPTH,
    what: str = "",
) -> Any:
    """Parse a JSON file nobody here wrote: a regular file of at most ``max_bytes`` bytes, UTF-8,
    nested at most ``max_depth`` deep, finite numbers only (no NaN, Infinity or 1e400).

    The *type* of the result is the caller's to check (a list where an object is expected…).

    Raises
    ------
    OutputError
        One line naming the file and what is wrong with it.
    """
    p = Path(path)
    label = f"{what} {p}".strip()
    with open_regular(p, what=what) as fh:
        data = fh.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise OutputError(f"cannot read {label}: larger than {max_bytes} bytes")
    depth = _json_depth(data)
    if depth > max_depth:
        raise OutputError(f"cannot read {label}: JSON nested {depth} deep, at most {max_depth} expected")
    try:
        return json.loads(data.decode("utf-8"), parse_float=_finite_float, parse_constant=_no_constant)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise OutputError(f"cannot read {label}: not valid JSON ({_one_line(exc)[:100]})") from None


def npy_header(fh: BinaryIO, *, label: str = "") -> tuple[tuple[int, ...], np.dtype, bool, int]:
    """Read and check a ``.npy`` header from the start of ``fh`` (a regular file).

    Returns
    -------
    (shape, dtype, fortran_order, data_offset); the file holds at least the declared data.

    Raises
    ------
    ShapeError
        Not a .npy file, an object/structured dtype, or fewer data bytes than the header
        declares (a truncated or forged file): checked before anything is allocated.
    """
    fmt = np.lib.format
    try:
        fh.seek(0)
        version = fmt.read_magic(fh)
        if version == (1, 0):
            shape, fortran, dtype = fmt.read_array_header_1_0(fh)
        elif version in ((2, 0), (3, 0)):
            shape, fortran, dtype = fmt.read_array_header_2_0(fh)
        else:
            raise ValueError(f"unsupported .npy version {version}")
    except Exception as exc:  # numpy parses the header with tokenize + literal_eval: anything can come out
        raise ShapeError(f"{label} is not a readable .npy file: {_one_line(exc)[:100]}") from None
    if dtype.hasobject or dtype.fields is not None or dtype.itemsize == 0:
        raise ShapeError(f"{label} holds dtype {dtype}; expected a plain numeric array")
    if not all(isinstance(n, int) and n >= 0 for n in shape):
        raise ShapeError(f"{label} declares an invalid shape {shape}")
    offset = fh.tell()
    need = math.prod(shape) * dtype.itemsize
    have = os.fstat(fh.fileno()).st_size - offset
    if need > have:
        raise ShapeError(f"{label} is truncated: its header declares shape {tuple(shape)} {dtype} "
                         f"({need} bytes) but the file holds {max(have, 0)} bytes of data")
    return tuple(shape), dtype, bool(fortran), offset


def load_npy(path: "str | os.PathLike", *, mmap: bool = False, what: str = "") -> np.ndarray:
    """Load a ``.npy`` file nobody here wrote: a regular file whose header is checked first.

    ``mmap=True`` maps it read-only (nothing read until used). Never unpickles.

    Raises
    ------
    OutputError
        Missing, not a regular file, unreadable.
    ShapeError
        Not a .npy, object dtype, truncated (see :func:`npy_header`).
    """
    p = Path(path)
    label = f"{what} {p}".strip()
    with open_regular(p, what=what) as fh:
        shape, dtype, fortran, offset = npy_header(fh, label=label)
        order = "F" if fortran else "C"
        try:
            if math.prod(shape) == 0:
                return np.empty(shape, dtype=dtype, order=order)
            if mmap:
                return np.memmap(fh, dtype=dtype, mode="r", offset=offset, shape=shape, order=order)
            fh.seek(offset)
            flat = np.fromfile(fh, dtype=dtype, count=math.prod(shape))
        except MemoryError:
            raise ShapeError(f"{label} is too large to load: {tuple(shape)} {dtype}") from None
        except (OSError, ValueError) as exc:
            if isinstance(exc, OSError) and exc.errno == errno.ENOMEM:
                raise ShapeError(f"{label} is too large to load: {tuple(shape)} {dtype}") from None
            raise ShapeError(f"cannot read {label}: {_one_line(exc)[:100]}") from None
    return flat.reshape(shape, order=order)
