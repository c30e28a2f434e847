"""Model files as data dicts (what `Model` wraps): the suffix picks the format (.dp neutral HDF5, .pth torch, .jax npz-zip,
.savedmodel TensorFlow SavedModel directory, written through jax2tf; .pt DeePMD-kit PyTorch
training checkpoints are read by `dpa.deepmd_pt` through `dpa.io`, never written).

A file is built in memory, written in one go to a temporary name in the target folder, flushed
to disk and renamed onto the target (`dpa.atomic`); a failed write raises `ModelWriteError` (an
`OutputError`) naming the path, the cause and the fix. `.dp`, `.pth` and `.jax` files carry a
checksum of their arrays (`checksum`), checked on read.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from .atomic import atomic_path, output_error
from .errors import DPAError, ModelFileError, ModelWriteError, OutputError

__all__ = ["read_data", "write_data"]


def _formats() -> dict[str, tuple[Callable, Callable | None]]:
    """suffix -> (read(path) -> data dict, write(path, data)); None: dpa reads it only."""
    from .backends.jax import modelfile as jaxfile
    from .backends.tensorflow import savedmodel
    from .backends.torch import modelfile as pth
    from .formats import dp

    return {
        ".dp": (dp.read, dp.write),
        ".pth": (pth.read, pth.write),
        ".jax": (jaxfile.read, jaxfile.write),
        ".savedmodel": (savedmodel.read, savedmodel.write),
        ".pt": (_read_through_io, None),  # DeePMD-kit training checkpoints: `dpa.deepmd_pt`
    }


def _read_through_io(path: Path) -> dict:
    """A `.pt` is rebuilt into a model (`dpa.deepmd_pt`, above this module): `dpa.io` reads it."""
    raise ModelFileError(f"{path}: read DeePMD-kit .pt checkpoints with dpa.io.load / load_any")


# formats stored as a directory, whose writer is atomic by itself (temporary directory, rename)
_DIRECTORY_FORMATS = (".savedmodel",)


def _format_of(path: Path) -> tuple[Callable, Callable | None]:
    formats = _formats()
    if path.suffix not in formats:
        raise ModelFileError(
            f"{path}: unknown model format {path.suffix!r}; use one of {', '.join(formats)}"
        )
    return formats[path.suffix]


def read_data(path: str | os.PathLike, reader: Callable | None = None) -> dict:
    """The data dict of a model file (never runs code from it); `reader` replaces the
    suffix's own (the `.pt` reader, which lives above this module)."""
    path = Path(path)
    if reader is None:
        reader, _ = _format_of(path)
    if not path.exists():
        raise ModelFileError(f"{path}: no such model file")
    try:
        return reader(path)
    except DPAError:
        raise
    except Exception as err:  # corrupt or foreign file: say which and why
        raise ModelFileError(
            f"{path}: cannot read as a {path.suffix} model ({type(err).__name__}: {err})"
        ) from err


def write_data(path: str | os.PathLike, data: dict) -> None:
    """Write a model's data dict atomically (built in memory, temporary file, fsync, rename)."""
    path = Path(path)
    _, writer = _format_of(path)
    if writer is None:
        raise ModelWriteError(
            f"{path}: dpa reads {path.suffix} files (DeePMD-kit training checkpoints) but does "
            "not write them; save as .dp (DeePMD-kit's own format), .pth or .jax instead"
        )
    if path.suffix in _DIRECTORY_FORMATS:
        try:
            writer(path, data)
        except DPAError:
            raise
        except OSError as err:  # the directory's own atomic write (temporary folder, rename)
            raise ModelWriteError(str(output_error(path, err))) from err
        return
    try:
        with atomic_path(path) as tmp:
            writer(tmp, data)
    except OutputError as err:
        raise ModelWriteError(str(err)) from err
