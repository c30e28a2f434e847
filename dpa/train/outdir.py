"""The output folder of a training run: one run at a time (an exclusive lock held for the run),
and every file the input names (`disp_file`, `save_ckpt`) kept inside it."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ..errors import ConfigError, OutputError

LOCK_NAME = ".dpa-train.lock"


@contextmanager
def locked_output_folder(outdir: str | os.PathLike) -> Iterator[Path]:
    """Create `outdir` and hold an exclusive lock on it while the block runs.

    The lock is an advisory `flock` on LOCK_NAME inside the folder: the kernel releases it when
    the process ends, however it ends, so a killed run never leaves the folder locked. A second
    run on the same folder fails at once with OutputError naming the holder's process id. A
    folder this call created is removed again when the run fails before writing into it."""
    out = Path(outdir)
    created = not out.exists()
    try:
        out.mkdir(parents=True, exist_ok=True)
        fd = os.open(out / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as err:
        raise OutputError(
            f"{out}: cannot use as the output folder ({err.strerror or err}); choose another -o"
        ) from None
    try:
        _lock_or_fail(fd, out)
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        yield out
    except BaseException:
        if created:  # a run refused before it wrote anything leaves no folder behind
            _remove_if_only_lock(out)
        raise
    finally:
        os.close(fd)  # releases the lock


def _remove_if_only_lock(out: Path) -> None:
    """Remove `out` when it holds nothing but the lock file."""
    try:
        if [p.name for p in out.iterdir()] == [LOCK_NAME]:
            (out / LOCK_NAME).unlink()
            out.rmdir()
    except OSError:
        pass


def _lock_or_fail(fd: int, out: Path) -> None:
    """Take the exclusive lock on `fd` without waiting; OutputError if another run holds it."""
    try:
        import fcntl
    except ImportError:  # not POSIX: no advisory locks, runs are not serialized
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
        raise OutputError(
            f"{out}: another `dpa train` run (process {holder}) is writing to this output "
            "folder; wait for it to finish or give this run another -o"
        ) from None


def inside_output(out: Path, name: str, key: str, reserved: dict[Path, str]) -> Path:
    """`out / name` for an input key naming an output file, refused (ConfigError) when it leaves
    the output folder or lands on a file the run must not overwrite (`reserved`: path -> what)."""
    if Path(name).is_absolute() or not name.strip():
        raise ConfigError(
            f"training.{key} = {name!r}: give a file name relative to the output folder {out}"
        )
    path = out / name
    root = out.resolve()
    resolved = path.resolve()
    if resolved != root and root not in resolved.parents:
        raise ConfigError(
            f"training.{key} = {name!r} points outside the output folder {out}; outputs stay "
            "inside it: give a relative name without '..'"
        )
    for other, what in reserved.items():
        if resolved == other.resolve():
            raise ConfigError(
                f"training.{key} = {name!r} would overwrite {what} ({other}); choose another name"
            )
    return path
