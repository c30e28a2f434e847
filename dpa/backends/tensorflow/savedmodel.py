"""`.savedmodel`: a TensorFlow SavedModel directory exported through jax2tf (`export`).

Layout (everything dpa needs is readable without TensorFlow):

    m.savedmodel/
      saved_model.pb, variables/       the TF graph: signatures `serving_default`,
                                       `evaluate_nlist`, `get_metadata` (see `export`)
      assets/dpa_metadata.json         format, format_version, type_map, rcut, sel, versions, ...
      assets/dpa_model.dp              the full model (`.dp`), so the file converts back exactly

Reading returns the embedded model (no TensorFlow needed); writing needs jax and TensorFlow and
is atomic: the SavedModel is built in a temporary directory next to the target and renamed onto
it, so an interrupted export never leaves a half-written directory behind.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from dpa._version import __version__, pip_install
from dpa.backends.tensorflow.layout import FORMAT, FORMAT_VERSION, METADATA_ASSET, MODEL_ASSET
from dpa.errors import BackendError, ModelFileError
from dpa.formats import dp


def read_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """The dpa metadata of a SavedModel directory; ModelFileError if it is not a dpa SavedModel
    of a format version this dpa reads."""
    path = Path(path)
    if not (path / "saved_model.pb").is_file():
        raise ModelFileError(f"{path}: not a TensorFlow SavedModel directory (no saved_model.pb)")
    meta_file = path / "assets" / METADATA_ASSET
    if not meta_file.is_file():
        raise ModelFileError(
            f"{path}: a TensorFlow SavedModel, but not one exported by dpa (no assets/"
            f"{METADATA_ASSET}); export models with `dpa convert model.dp model.savedmodel`"
        )
    try:
        meta = json.loads(meta_file.read_text())
    except (OSError, ValueError) as err:
        raise ModelFileError(f"{path}: unreadable assets/{METADATA_ASSET} ({err})") from None
    check_metadata(meta, str(path))
    return meta


def check_metadata(meta: Any, where: str) -> None:
    """ModelFileError unless `meta` is dpa SavedModel metadata of FORMAT_VERSION."""
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ModelFileError(f"{where}: the SavedModel's metadata is not dpa's ({FORMAT!r})")
    version = meta.get("format_version")
    if version != FORMAT_VERSION:
        versions = meta.get("versions")
        writer = versions.get("dpa") if isinstance(versions, dict) else None
        newer = isinstance(version, int) and version > FORMAT_VERSION
        hint = "upgrade dpa" if newer else "export the source model again with this dpa"
        raise ModelFileError(
            f"{where}: SavedModel format version {version!r} (written by dpa {writer or '?'}), "
            f"but dpa {__version__} reads format version {FORMAT_VERSION}; {hint}"
        )


def read(path: Path) -> dict:
    """The model embedded in a dpa SavedModel (after checking its format version)."""
    read_metadata(path)
    model_file = Path(path) / "assets" / MODEL_ASSET
    if not model_file.is_file():
        raise ModelFileError(f"{path}: the SavedModel lacks assets/{MODEL_ASSET}; it is incomplete")
    return dp.read(model_file)


def write(path: Path, data: dict) -> None:
    """Export `data` (a model) as a SavedModel at `path`, atomically (see the module docstring)."""
    try:
        from dpa.backends.tensorflow.export import export
    except ImportError as err:
        raise BackendError(
            f"writing {path.name} needs jax and tensorflow ({err}); {pip_install('jax,tf')}"
        ) from err
    with atomic_directory(path) as tmp:
        export(data, tmp)


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextmanager
def atomic_directory(path: str | os.PathLike) -> Iterator[Path]:
    """Yield an empty temporary directory next to `path`; on success it becomes `path`.

    An existing SavedModel at `path` is replaced (moved aside, the new one renamed in, the old
    one deleted); anything else at `path` is refused rather than deleted. On error the
    temporary directory is removed and `path` is untouched."""
    target = Path(path)
    folder = target.parent
    if not folder.is_dir():
        raise ModelFileError(f"{target}: folder {folder} does not exist")
    if target.is_symlink() or (target.exists() and not (target / "saved_model.pb").is_file()):
        raise ModelFileError(
            f"{target} exists and is not a SavedModel directory; remove it or choose another name"
        )
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=folder))
    old = None
    try:
        yield tmp
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes an owner-only directory
        if target.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".old", dir=folder))
            os.rename(target, old / "model")
        os.rename(tmp, target)
    except BaseException:
        if old is not None and not target.exists():  # put the previous model back
            os.rename(old / "model", target)
        raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
