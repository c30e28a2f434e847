"""Loading, saving and converting models; the formats themselves are in `dpa.modelfiles`."""

from __future__ import annotations

import os

from .errors import DPAError, ModelFileError, ModelWriteError
from .model import Model
from .modelfiles import read_data, write_data
from .multitask import MultiTaskModel, is_multitask, select_branch

__all__ = ["ModelWriteError", "convert", "load", "load_any", "save"]


def load_any(path: str | os.PathLike) -> Model | MultiTaskModel:
    """Read a model file, single- or multi-task (never runs code from it)."""
    if os.fspath(path).endswith(".pt"):  # a DeePMD-kit checkpoint: a model rebuilt from it
        from .deepmd_pt import read

        data = read_data(path, read)
    else:
        data = read_data(path)
    try:
        return MultiTaskModel(data) if is_multitask(data) else Model(data)
    except (DPAError, KeyError, TypeError, AttributeError) as err:
        raise ModelFileError(f"{os.fspath(path)}: {err}") from None


def load(path: str | os.PathLike, head: str | None = None) -> Model:
    """Read a single-task model, or branch `head` (name or alias) of a multi-task one."""
    model = load_any(path)
    if isinstance(model, MultiTaskModel):
        try:
            return model.branch(head)
        except DPAError as err:
            raise type(err)(f"{os.fspath(path)}: {err}") from None
    return select_branch(model, head)


def save(model: Model | MultiTaskModel, path: str | os.PathLike) -> None:
    """Write `model` atomically (built in memory, temporary file, fsync, rename)."""
    write_data(path, model.data)


def convert(
    source: str | os.PathLike, target: str | os.PathLike, head: str | None = None
) -> Model | MultiTaskModel:
    """Convert a model file to another format, the arrays copied exactly; `head` extracts one
    branch of a multi-task model as a single-task model (DeePMD-kit's `freeze --head`)."""
    model = load_any(source)
    if isinstance(model, MultiTaskModel):
        if head is not None or _single_task_only(target):
            try:
                model = model.branch(head, "head" if head is not None else "--head")
            except DPAError as err:
                raise type(err)(f"{os.fspath(source)}: {err}") from None
    elif head is not None:
        model = select_branch(model, head)
    save(model, target)
    return model


def _single_task_only(target: str | os.PathLike) -> bool:
    """Formats that hold one branch only (a SavedModel is one deployable model)."""
    return os.fspath(target).rstrip("/").endswith(".savedmodel")
