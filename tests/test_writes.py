"""Writing files: every failed write is an OutputError naming the path, the cause and the fix (a
full disk included, which must not crash the process); existing targets keep their permissions and
symlinks; temporary files of killed writes are cleaned; a damaged model file is refused on read."""

from __future__ import annotations

import errno
import importlib.util
import json
import os
import pathlib
import signal
import subprocess
import sys
import textwrap
import zipfile
from collections.abc import Iterator
from pathlib import Path

import h5py
import numpy as np
import pytest
from builders import DEEPMD_FIXTURES, LAM_FIXTURES, ROOT
from click.testing import CliRunner

import dpa
import dpa.io
from dpa.atomic import atomic_path, atomic_write_text, remove_stale_temporaries
from dpa.errors import ModelFileError, OutputError
from dpa.formats import checksum
from dpa_cli.main import cli

DEEPMD_FILE = DEEPMD_FIXTURES / "dpa1_concat_f64.dp"
# 140 kB as .dp: written straight to a 64 kB tmpfs, HDF5 ran out of space midway and crashed
BIG_FILE = LAM_FIXTURES / "dpa2_medium_f64.dp"
HAS_TORCH = importlib.util.find_spec("torch") is not None
SUFFIXES = [".dp", ".jax"] + ([".pth"] if HAS_TORCH else [])


@pytest.fixture(scope="module")
def model() -> dpa.Model:
    """A DeePMD-kit model (66 kB as .dp: more than a small tmpfs holds)."""
    return dpa.io.load(DEEPMD_FILE)


@pytest.fixture
def umask_022() -> Iterator[None]:
    """Run with umask 022, so a new file is 0644 and a kept mode is told apart from the default."""
    old = os.umask(0o022)
    yield
    os.umask(old)


def temporaries(folder: Path) -> list[str]:
    """Names of files in `folder` that look like temporaries (dot-names ending in .tmp)."""
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(".") and ".tmp" in p.name)


def fail_with(code: int):
    """A replacement for Path.write_bytes that writes half the data, then fails with `code`."""
    original = pathlib.Path.write_bytes

    def write_bytes(self: Path, data: bytes) -> int:
        original(self, bytes(data)[: len(data) // 2])
        raise OSError(code, os.strerror(code), str(self))

    return write_bytes


def one_line(message: str) -> bool:
    return "\n" not in str(message).strip()


# ---------------------------------------------------------------------------------------------
# Write errors: one clear line, no traceback, nothing half written


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_permission_denied(suffix, model, tmp_path, monkeypatch):
    """Refused file creation (monkeypatched: root is never refused on an ordinary folder)."""
    target = tmp_path / f"m{suffix}"
    real_open = os.open

    def refusing_open(path, flags, *args, **kwargs):
        if Path(path).parent == tmp_path and flags & os.O_CREAT:
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", refusing_open)
    with pytest.raises(OutputError, match="permission denied") as info:
        model.save(target)
    assert str(target) in str(info.value) and one_line(info.value)
    assert isinstance(info.value, ModelFileError)  # save raised ModelFileError before: still is
    monkeypatch.undo()
    assert list(tmp_path.iterdir()) == []


def test_permission_denied_for_real(model):
    """A folder that refuses even root: /sys (skipped where it does not)."""
    target = Path("/sys/dpa-write-test.dp")
    try:
        os.close(os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except OSError as err:
        if err.errno not in (errno.EACCES, errno.EPERM, errno.EROFS):
            pytest.skip(f"/sys refuses with {err.strerror}, not a permission error")
    else:
        target.unlink()
        pytest.skip("/sys accepts new files here")
    with pytest.raises(
        OutputError, match=r"/sys/dpa-write-test\.dp: (permission denied|.*read-only)"
    ):
        model.save(target)


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_target_is_a_directory(suffix, model, tmp_path):
    target = tmp_path / f"m{suffix}"
    target.mkdir()
    (target / "keep").write_text("inside")
    with pytest.raises(
        OutputError, match="is a directory: remove it or choose a file name"
    ) as info:
        model.save(target)
    assert str(target) in str(info.value) and one_line(info.value)
    assert (target / "keep").read_text() == "inside"
    assert temporaries(tmp_path) == []


@pytest.mark.parametrize(
    "code, words", [(errno.ENOSPC, "no space left"), (errno.EROFS, "read-only")]
)
@pytest.mark.parametrize("suffix", SUFFIXES)
def test_failed_write_is_one_line_and_leaves_nothing(
    suffix, code, words, model, tmp_path, monkeypatch
):
    """Disk full or read-only midway (simulated): the old file stays, no temporary is left."""
    target = tmp_path / f"m{suffix}"
    target.write_bytes(b"old model")
    monkeypatch.setattr(pathlib.Path, "write_bytes", fail_with(code))
    with pytest.raises(OutputError, match=words) as info:
        model.save(target)
    monkeypatch.undo()
    assert str(target) in str(info.value) and one_line(info.value)
    assert target.read_bytes() == b"old model"
    assert sorted(p.name for p in tmp_path.iterdir()) == [target.name]


@pytest.fixture
def small_tmpfs(tmp_path) -> Iterator[Path]:
    """A 64 kB tmpfs mounted in tmp_path (skipped where mounting is not allowed)."""
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    try:
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mnt)],
            capture_output=True,
            timeout=30,
        )
    except (OSError, subprocess.TimeoutExpired):
        pytest.skip("cannot run mount")
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs: {done.stderr.decode().strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], timeout=30, check=True)


_FULL_DISK_SCRIPT = textwrap.dedent(
    """
    import json, sys
    from pathlib import Path
    import dpa, dpa.io

    model, mnt = dpa.io.load(sys.argv[1]), Path(sys.argv[2])
    errors = {}
    for suffix in sys.argv[3].split(","):
        try:
            model.save(mnt / f"m{suffix}")
        except Exception as err:
            errors[suffix] = [type(err).__name__, str(err)]
    try:
        from dpa.atomic import atomic_write_text

        atomic_write_text(mnt / "notes.txt", "x" * 100000)
    except Exception as err:
        errors[".txt"] = [type(err).__name__, str(err)]
    print(json.dumps(errors))
    """
)


def test_full_disk_for_real(small_tmpfs):
    """Saving a model larger than a tmpfs (the .dp case crashed HDF5 with a segfault when the
    device filled up midway): a clear error for every format, in a subprocess so a crash cannot
    take the test run down."""
    if not BIG_FILE.is_file():
        pytest.fail(f"fixture {BIG_FILE} is missing")
    done = subprocess.run(
        [sys.executable, "-c", _FULL_DISK_SCRIPT, str(BIG_FILE), str(small_tmpfs)]
        + [",".join(SUFFIXES)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )
    assert done.returncode == 0, f"exit {done.returncode}: {done.stderr[-2000:]}"
    errors = json.loads(done.stdout.strip().splitlines()[-1])
    assert sorted(errors) == sorted([*SUFFIXES, ".txt"])
    for suffix, (kind, message) in errors.items():
        assert kind in ("OutputError", "ModelWriteError"), (suffix, kind, message)
        assert "no space left on the device holding" in message and "write elsewhere" in message
        assert str(small_tmpfs) in message and one_line(message)
    assert list(small_tmpfs.iterdir()) == []


def test_cli_write_errors_are_one_line(model, tmp_path, monkeypatch):
    """`dpa convert` to a directory or onto a full disk: exit 1, one line naming the target."""
    src = tmp_path / "m.dp"
    model.save(src)
    runner = CliRunner()
    (tmp_path / "dir.jax").mkdir()
    result = runner.invoke(cli, ["convert", str(src), str(tmp_path / "dir.jax")])
    assert result.exit_code == 1
    assert result.stderr.splitlines() == [
        f"dpa: error: {tmp_path / 'dir.jax'} is a directory: remove it or choose a file name"
    ]
    monkeypatch.setattr(pathlib.Path, "write_bytes", fail_with(errno.ENOSPC))
    result = runner.invoke(cli, ["convert", str(src), str(tmp_path / "out.jax")])
    assert result.exit_code == 1
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"dpa: error: {tmp_path / 'out.jax'}: ")
    assert "no space left on the device holding" in lines[0]
    assert temporaries(tmp_path) == []


def test_detail_files_and_checkpoint_pointer_use_the_same_writer(model, tmp_path):
    """dp test files and the checkpoint pointer fail as OutputError too (here: a directory)."""
    from dpa.data.detail import write_details
    from dpa.data.evaluation import SystemResult
    from dpa.data.system import System
    from dpa.train.checkpoint import write_checkpoint

    system = System("sys", ["O"], [0], np.zeros((1, 1, 3)), energy=np.array([1.0]))
    (tmp_path / "d.e.out").mkdir()
    with pytest.raises(OutputError, match=r"d\.e\.out is a directory"):
        write_details(tmp_path / "d", [SystemResult(system, {"energy": np.array([2.0])})])
    (tmp_path / "ckpt" / "checkpoint").mkdir(parents=True)
    with pytest.raises(OutputError, match=r"checkpoint is a directory"):
        write_checkpoint(tmp_path / "ckpt", "model.ckpt", 1, ".dp", model, keep=2)
    assert temporaries(tmp_path) == temporaries(tmp_path / "ckpt") == []


# ---------------------------------------------------------------------------------------------
# What an overwrite keeps


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_overwrite_keeps_the_permissions(suffix, model, tmp_path, umask_022):
    target = tmp_path / f"m{suffix}"
    model.save(target)
    assert target.stat().st_mode & 0o7777 == 0o644  # new file: the umask's default
    target.chmod(0o600)
    model.save(target)
    assert target.stat().st_mode & 0o7777 == 0o600
    atomic_write_text(tmp_path / "notes", "x")
    (tmp_path / "notes").chmod(0o640)
    atomic_write_text(tmp_path / "notes", "y")
    assert (tmp_path / "notes").stat().st_mode & 0o7777 == 0o640


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0, reason="needs root")
def test_overwrite_by_root_keeps_the_owner(model, tmp_path):
    target = tmp_path / "m.dp"
    model.save(target)
    os.chown(target, 1234, 5678)
    model.save(target)
    assert (target.stat().st_uid, target.stat().st_gid) == (1234, 5678)


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_overwrite_through_a_symlink_keeps_the_link(suffix, model, tmp_path, umask_022):
    store = tmp_path / "store"
    store.mkdir()
    real = store / f"real{suffix}"
    real.write_bytes(b"old")
    real.chmod(0o600)
    link = tmp_path / f"link{suffix}"
    link.symlink_to(Path("store") / real.name)
    model.save(link)
    assert link.is_symlink() and os.readlink(link) == str(Path("store") / real.name)
    assert real.stat().st_mode & 0o7777 == 0o600
    assert checksum.digest(dpa.io.load(real).data) == checksum.digest(model.data)
    assert temporaries(tmp_path) == temporaries(store) == []


# ---------------------------------------------------------------------------------------------
# Temporary files of killed writes


def dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    done = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    return int(done.stdout)


def test_stale_temporaries_are_removed_live_ones_kept(model, tmp_path):
    target = tmp_path / "m.dp"
    dead = tmp_path / f".m.dp.{dead_pid()}.0123456789ab.tmp"
    live = tmp_path / f".m.dp.{os.getppid()}.0123456789ab.tmp"
    other = tmp_path / f".other.dp.{dead_pid()}.0123456789ab.tmp"  # another target's
    for path in (dead, live, other):
        path.write_bytes(b"half")
    model.save(target)
    assert not dead.exists()
    assert live.exists() and other.exists()
    assert remove_stale_temporaries(tmp_path / "other.dp") == [other]


def test_a_killed_write_is_cleaned_by_the_next(model, tmp_path):
    """A writer killed (SIGKILL) midway leaves its temporary; the next write to the target
    removes it."""
    script = textwrap.dedent(
        """
        import os, signal, sys
        from dpa.atomic import atomic_path
        with atomic_path(sys.argv[1]) as tmp:
            tmp.write_bytes(b"half a model")
            os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    target = tmp_path / "m.dp"
    done = subprocess.run([sys.executable, "-c", script, str(target)], cwd=ROOT, timeout=120)
    assert done.returncode == -signal.SIGKILL
    assert len(temporaries(tmp_path)) == 1 and not target.exists()
    model.save(target)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.dp"]


def test_temporary_is_fsynced_before_the_rename(tmp_path, monkeypatch):
    """The data reaches the device before the rename makes it the target (then the folder)."""
    calls = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(os, "fsync", lambda fd: calls.append("fsync") or real_fsync(fd))
    monkeypatch.setattr(os, "replace", lambda a, b: calls.append("replace") or real_replace(a, b))
    with atomic_path(tmp_path / "f") as tmp:
        tmp.write_text("data")
    assert calls == ["fsync", "replace", "fsync"]


# ---------------------------------------------------------------------------------------------
# Checksums: a damaged model file is refused


def _data_offset(path: Path, name: str) -> tuple[int, int]:
    """(offset, size) of the data of the stored zip entry whose name ends with `name`."""
    raw = path.read_bytes()
    with zipfile.ZipFile(path) as z:
        (info,) = [i for i in z.infolist() if i.filename.endswith(name)]
    assert info.compress_type == zipfile.ZIP_STORED
    head = info.header_offset
    name_len = int.from_bytes(raw[head + 26 : head + 28], "little")
    extra_len = int.from_bytes(raw[head + 28 : head + 30], "little")
    return head + 30 + name_len + extra_len, info.file_size


def variable_bytes(path: Path, suffix: str) -> tuple[int, int]:
    """(offset, size) in the file of the raw bytes of the fourth variable."""
    if suffix == ".dp":
        with h5py.File(path, "r") as f:
            data = f["variable_0003"]
            return data.id.get_offset(), data.id.get_storage_size()
    return _data_offset(path, "v00003.npy" if suffix == ".jax" else "/data/3")


def flip_bit(path: Path, offset: int) -> None:
    raw = bytearray(path.read_bytes())
    raw[offset] ^= 0x04
    path.write_bytes(bytes(raw))


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_flipped_bit_in_a_weight_is_refused(suffix, model, tmp_path):
    path = tmp_path / f"m{suffix}"
    model.save(path)
    offset, size = variable_bytes(path, suffix)
    assert size >= 8
    flip_bit(path, offset + size - 2)  # a high bit of the last number (the .npy header before)
    with pytest.raises(ModelFileError, match="corrupt model file") as info:
        dpa.io.load(path)
    assert str(path) in str(info.value) and "re-copy it" in str(info.value)
    with pytest.raises(ModelFileError, match="corrupt"):
        dpa.load_model(path)


def test_changed_weight_in_a_valid_jax_archive_is_refused(model, tmp_path):
    """A .jax repacked with one number changed (every zip CRC valid): the checksum catches it."""
    path = tmp_path / "m.jax"
    model.save(path)
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    arrays["v00003"] = arrays["v00003"].copy()
    arrays["v00003"].reshape(-1)[0] += 1e-12
    with open(path, "wb") as f:
        np.savez(f, **arrays)
    with pytest.raises(ModelFileError, match=r"m\.jax: corrupt model file .*sha256"):
        dpa.io.load(path)


def test_checksum_is_the_same_in_every_format(model, tmp_path):
    """One checksum of the arrays, whatever the format; reading gives back the same arrays."""
    stored = {}
    for suffix in SUFFIXES:
        path = tmp_path / f"m{suffix}"
        model.save(path)
        if suffix == ".dp":
            stored[suffix] = path.read_bytes()[:512].split(b"\n")[0].decode()
        elif suffix == ".jax":
            with np.load(path) as z:
                header = json.loads(bytes(z["__header__"]).decode())
            stored[suffix] = "dpa-sha256:" + header["sha256"]
        else:
            import torch

            payload = torch.load(path, weights_only=True)
            stored[suffix] = "dpa-sha256:" + payload["sha256"]
        assert checksum.digest(dpa.io.load(path).data) == checksum.digest(model.data)
    assert set(stored.values()) == {"dpa-sha256:" + checksum.digest(model.data)}


def test_deepmd_file_without_checksum_loads_and_resaves_identically(tmp_path):
    """DeePMD-kit's .dp has no checksum and loads; dpa's resave adds one in the HDF5 user block
    (which HDF5 readers skip), with the same attributes and datasets as the original."""
    assert not DEEPMD_FILE.read_bytes().startswith(b"dpa-")
    model = dpa.io.load(DEEPMD_FILE)
    resaved = tmp_path / "resaved.dp"
    model.save(resaved)
    assert resaved.read_bytes().startswith(b"dpa-sha256:" + checksum.digest(model.data).encode())
    with h5py.File(DEEPMD_FILE, "r") as a, h5py.File(resaved, "r") as b:
        assert dict(a.attrs) == dict(b.attrs)
        assert sorted(a) == sorted(b)
        for name in a:
            assert a[name].dtype == b[name].dtype
            assert a[name][()].tobytes() == b[name][()].tobytes()


def test_savedmodel_write_errors_are_output_errors(model, tmp_path, monkeypatch):
    """A SavedModel directory that cannot be created (here: a full disk) is one OutputError."""
    import tempfile

    def no_space(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(tempfile, "mkdtemp", no_space)
    target = tmp_path / "m.savedmodel"
    with pytest.raises(OutputError, match=r"m.savedmodel: no space left on the device holding"):
        dpa.io.save(model, target)
    assert not target.exists()
