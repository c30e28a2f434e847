"""`.pth`: `torch.save` of the model tree with tensors as variables; read with weights_only=True,
so opening a file never runs code from it. The payload carries the tree's checksum ("sha256",
see `checksum`), checked on read; the file is built in memory and written in one go."""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np

from dpa._version import pip_install
from dpa.errors import BackendError
from dpa.formats import checksum
from dpa.tree import map_variables

FORMAT = "dpa.pth"


def _torch():
    try:
        import torch
    except ImportError as err:
        raise BackendError(f".pth files need PyTorch: {pip_install('torch')} (or use .dp)") from err
    return torch


def encode(data: dict) -> bytes:
    """The complete `.pth` file: the tree with each NumPy variable as a CPU tensor (dtype kept)."""
    torch = _torch()
    tree = map_variables(data, lambda a: torch.from_numpy(np.array(a, copy=True)))
    payload = {"format": FORMAT, "version": 1, checksum.ALGORITHM: checksum.digest(data)}
    buffer = io.BytesIO()
    torch.save({**payload, "data": tree}, buffer)
    return buffer.getvalue()


def write(path: str | os.PathLike, data: dict) -> None:
    """Write `data` to `path` in one go (`dpa.io.save` makes it atomic)."""
    Path(path).write_bytes(encode(data))


def read(path: str | os.PathLike) -> dict:
    """Load with weights_only=True, turn tensors back into NumPy arrays, check the checksum."""
    torch = _torch()
    payload = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ValueError(
            "not a dpa .pth model (DeePMD-kit .pth files are TorchScript: convert them with "
            "`dp convert-backend model.pth model.dp` first)"
        )
    data = map_variables(payload["data"], lambda t: t.detach().cpu().numpy())
    checksum.verify(data, payload.get(checksum.ALGORITHM), path)
    return data
