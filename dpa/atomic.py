"""Atomic file writes: the content goes to a temporary file next to the target, is flushed to disk
(fsync), then renamed onto the target, so a crash or an error never leaves a half-written file.

One writer serves every output of dpa (model files, checkpoint pointers, `dp test` files):

* an existing target keeps its permission bits (and owner, where allowed); a symlink stays a
  link and its resolved target is replaced;
* temporary files are named `.NAME.PID.RANDOM.tmp`, and each write removes those of the same
  target whose writer process is gone (left behind by a killed run);
* every OSError of a write becomes an `OutputError` whose one-line message names the path, the
  cause and the fix.
"""

from __future__ import annotations

import errno
import os
import re
import secrets
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .errors import DPAError, OutputError

__all__ = [
    "atomic_path",
    "atomic_write_bytes",
    "atomic_write_text",
    "output_error",
    "remove_stale_temporaries",
]

_NAME_LIMIT = 200  # the part of the target's name in a temporary name (file names stop at 255)
_TOKEN_BYTES = 6  # 12 hex digits of randomness per temporary name


def _cause_and_fix(err: OSError, folder: Path) -> str:
    """The cause of a failed write and how to fix it, by errno (one clause, no path)."""
    code = err.errno
    if code in (errno.ENOSPC, errno.EDQUOT):
        kind = "no space left" if code == errno.ENOSPC else "disk quota exceeded"
        return f"{kind} on the device holding {folder}: free space or write elsewhere"
    if code in (errno.EACCES, errno.EPERM):
        return f"permission denied in {folder}: fix its permissions or write elsewhere"
    if code == errno.EROFS:
        return f"{folder} is on a read-only file system: write elsewhere"
    if code == errno.ENOENT:
        return f"folder {folder} does not exist: create it or write elsewhere"
    if code == errno.ENOTDIR:
        return f"part of folder {folder} is not a folder: fix the path"
    if code == errno.ENAMETOOLONG:
        return "the file name is too long: choose a shorter one"
    reason = err.strerror or str(err) or type(err).__name__
    return f"cannot write ({reason}): check {folder} and its device, or write elsewhere"


def output_error(path: str | os.PathLike, err: OSError) -> OutputError:
    """An OutputError for `err` raised while writing `path`: path, cause and fix on one line."""
    target = Path(path)
    if err.errno == errno.EISDIR:
        return OutputError(f"{target} is a directory: remove it or choose a file name")
    return OutputError(f"{target}: {_cause_and_fix(err, _real_folder(target))}")


def _real_folder(target: Path) -> Path:
    """The folder the file behind `target` (a symlink followed) lives in."""
    return Path(os.path.realpath(target)).parent


def _resolve(path: str | os.PathLike) -> Path:
    """The file to replace: `path` itself, or the resolved target of a symlink; refuses what no
    file write can replace (a directory, a device) and a missing folder."""
    target = Path(os.path.realpath(path)) if os.path.islink(path) else Path(path)
    if target.is_dir():
        raise OutputError(f"{path} is a directory: remove it or choose a file name")
    if target.exists() and not target.is_file():
        raise OutputError(f"{path} exists and is not a regular file: remove it or choose another")
    if not target.parent.is_dir():
        raise OutputError(
            f"{path}: folder {target.parent} does not exist: create it or write elsewhere"
        )
    return target


def _temporary_pattern(target: Path) -> re.Pattern[str]:
    """The names of temporary files of writes to `target`; group 1 is the writer's pid."""
    name = re.escape(target.name[:_NAME_LIMIT])
    return re.compile(rf"\.{name}\.(\d+)\.[0-9a-f]{{{2 * _TOKEN_BYTES}}}\.tmp")


def _temporary_name(target: Path) -> str:
    """A fresh temporary name for a write to `target` by this process."""
    token = secrets.token_hex(_TOKEN_BYTES)
    return f".{target.name[:_NAME_LIMIT]}.{os.getpid()}.{token}.tmp"


def _process_exists(pid: int) -> bool:
    """Whether process `pid` exists (signal 0 checks without sending anything)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    except (OverflowError, OSError):
        return False
    return True


def remove_stale_temporaries(path: str | os.PathLike) -> list[Path]:
    """Remove the temporary files of earlier writes to `path` whose writer process is gone
    (a killed write leaves its temporary behind); best effort, returns what was removed."""
    target = Path(path)
    pattern = _temporary_pattern(target)
    removed = []
    try:
        entries = list(os.scandir(target.parent))
    except OSError:
        return removed
    for entry in entries:
        match = pattern.fullmatch(entry.name)
        if match is None or not entry.is_file(follow_symlinks=False):
            continue
        pid = int(match.group(1))
        if pid == os.getpid() or _process_exists(pid):
            continue
        try:
            os.unlink(entry.path)
        except OSError:
            continue
        removed.append(Path(entry.path))
    return removed


def _create_temporary(target: Path) -> Path:
    """Create an empty temporary file next to `target` with the mode (and owner) the target has,
    or the umask's default for a new file."""
    try:
        existing = os.stat(target)
    except FileNotFoundError:
        existing = None
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
    while True:
        tmp = target.parent / _temporary_name(target)
        try:
            fd = os.open(tmp, flags, 0o600 if existing else 0o666)
            break
        except FileExistsError:
            continue
    try:
        if existing is not None:
            _copy_owner_and_mode(fd, existing)
    except BaseException:
        os.close(fd)
        tmp.unlink(missing_ok=True)
        raise
    os.close(fd)
    return tmp


def _copy_owner_and_mode(fd: int, existing: os.stat_result) -> None:
    """Give the open file the owner (best effort) and permission bits of `existing`."""
    if not hasattr(os, "fchown"):  # no POSIX owners or modes (Windows)
        return
    if (existing.st_uid, existing.st_gid) != (os.getuid(), os.getgid()):
        try:
            os.fchown(fd, existing.st_uid, existing.st_gid)
        except OSError:  # not allowed to give files away: keep ours
            pass
    os.fchmod(fd, stat.S_IMODE(existing.st_mode))


def _fsync_file(path: Path) -> None:
    """Flush the file's data to its device (so a crash after the rename cannot leave it empty)."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_folder(folder: Path) -> None:
    """Flush the folder's entries (the rename) to its device; skipped where unsupported."""
    try:
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # some file systems refuse fsync on a folder
        pass
    finally:
        os.close(fd)


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to `path` to write; on success it is fsynced and replaces
    `path`, on error it vanishes and `path` is untouched.

    Raises OutputError (path, cause, fix) for any OSError of the write, the body's included;
    other exceptions of the body pass through unchanged.
    """
    try:
        target = _resolve(path)
        remove_stale_temporaries(target)
        tmp = _create_temporary(target)
    except OutputError:
        raise
    except OSError as err:
        raise output_error(path, err) from err
    try:
        yield tmp
        _fsync_file(tmp)
        os.replace(tmp, target)
        _fsync_folder(target.parent)
    except DPAError:
        raise
    except OSError as err:
        raise output_error(path, err) from err
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write `data` to `path` atomically, in one go (see `atomic_path`)."""
    with atomic_path(path) as tmp, open(tmp, "wb") as fp:
        fp.write(data)


def atomic_write_text(path: str | os.PathLike, text: str, encoding: str = "utf-8") -> None:
    """Write `text` to `path` atomically, in one go (see `atomic_path`)."""
    atomic_write_bytes(path, text.encode(encoding))
