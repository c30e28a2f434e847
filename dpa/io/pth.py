"""`.pth`: `torch.save` of the model tree with tensors as variables; read with weights_only=True,
so opening a file never runs code from it."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import BackendError
from ..tree import map_variables

FORMAT = "dpa.pth"


def _torch():
    try:
        import torch
    except ImportError as err:
        raise BackendError(
            ".pth files need PyTorch: pip install 'dpa[torch]' (or use .dp)"
        ) from err
    return torch


def write(path: Path, data: dict) -> None:
    """Save the tree with each NumPy variable as a CPU tensor (dtype kept)."""
    torch = _torch()
    tree = map_variables(data, lambda a: torch.from_numpy(np.array(a, copy=True)))
    torch.save({"format": FORMAT, "version": 1, "data": tree}, path)


def read(path: Path) -> dict:
    """Load with weights_only=True and turn tensors back into NumPy arrays."""
    torch = _torch()
    payload = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ValueError(
            "not a dpa .pth model (DeePMD-kit .pth files are TorchScript: convert them with "
            "`dp convert-backend model.pth model.dp` first)"
        )
    return map_variables(payload["data"], lambda t: t.detach().cpu().numpy())
