"""Loading, saving and converting `Model`s; the formats themselves are in `dpa.modelfiles`."""

from __future__ import annotations

import os

from .errors import DPAError, ModelFileError, ModelWriteError
from .model import Model
from .modelfiles import read_data, write_data

__all__ = ["ModelWriteError", "convert", "load", "save"]


def load(path: str | os.PathLike) -> Model:
    """Read a model file (never runs code from it)."""
    data = read_data(path)
    try:
        return Model(data)
    except (DPAError, KeyError, TypeError, AttributeError) as err:
        raise ModelFileError(f"{os.fspath(path)}: {err}") from None


def save(model: Model, path: str | os.PathLike) -> None:
    """Write `model` atomically (built in memory, temporary file, fsync, rename)."""
    write_data(path, model.data)


def convert(source: str | os.PathLike, target: str | os.PathLike) -> Model:
    """Convert a model file to another format; the arrays are copied exactly."""
    model = load(source)
    save(model, target)
    return model
