"""Checkpoints: model files that also carry the training state (step, optimizer moments, sampler
states), written atomically, the newest `keep` kept, and a `checkpoint` file naming the latest."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import numpy as np

from .. import io
from ..atomic import atomic_write_text
from ..errors import DPAError
from ..model import Model

POINTER = "checkpoint"


def checkpoint_model(model: Model, tree: dict, training: dict[str, Any]) -> Model:
    """`model` with the trained `tree` and a "training" entry; any dpa model reader opens it."""
    return Model({**model.data, "model": tree, "training": training})


def training_state(
    step: int, optimizer: dict, samplers: dict[str, str], backend: str
) -> dict[str, Any]:
    """The training entry: arrays under "@variables" (so every format stores them exactly)."""
    return {
        "step": int(step),
        "backend": backend,
        "samplers": dict(samplers),
        "@variables": {
            "count": np.asarray(optimizer["count"]),
            "mu": list(optimizer["mu"]),
            "nu": list(optimizer["nu"]),
        },
    }


def write_checkpoint(outdir: Path, prefix: str, step: int, suffix: str, model: Model, keep: int):
    """Save `model` as PREFIX-STEP.SUFFIX, point `checkpoint` at it, drop all but the newest
    `keep`; each file is complete or absent at any moment (a kill never leaves half a file)."""
    path = outdir / f"{prefix}-{step}{suffix}"
    path.parent.mkdir(parents=True, exist_ok=True)
    io.save(model, path)
    atomic_write_text(outdir / POINTER, os.path.relpath(path, outdir) + "\n")
    pattern = re.compile(re.escape(Path(prefix).name) + r"-(\d+)" + re.escape(suffix) + "$")
    found = sorted(
        (int(m.group(1)), p)
        for p in path.parent.iterdir()
        if (m := pattern.match(p.name)) is not None
    )
    for _, old in found[:-keep]:
        if old != path:
            old.unlink(missing_ok=True)
    return path


def resolve_checkpoint(path: str | os.PathLike) -> Path:
    """A checkpoint file from a file, a `checkpoint` pointer file, or a folder holding one."""
    p = Path(path)
    pointer = p / POINTER if p.is_dir() else p if p.name == POINTER else None
    if pointer is not None:
        if not pointer.is_file():
            raise DPAError(f"{pointer}: no checkpoint pointer; pass a model.ckpt-STEP file")
        target = pointer.parent / pointer.read_text().strip()
        if not target.is_file():
            raise DPAError(f"{pointer} names {target}, which does not exist")
        return target
    if not p.is_file():
        raise DPAError(f"{p}: no such checkpoint")
    return p


def read_training_state(model: Model, path: Path) -> dict[str, Any]:
    """The training entry of a checkpoint, or a clear error for a plain model file."""
    state = model.data.get("training")
    if not isinstance(state, dict) or "step" not in state:
        raise DPAError(f"{path}: a model without training state; use --init-model to start from it")
    return state
