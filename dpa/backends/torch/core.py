"""What the torch modules of dpa share: rows of per-edge values summed into atoms (the force
chain of evaluation and training)."""

from __future__ import annotations

import torch


def scatter_add(values: torch.Tensor, index: torch.Tensor, size: int) -> torch.Tensor:
    """Sum rows of `values` (1, m, ...) into `size` slots of axis 1 by `index` (m,)."""
    out = torch.zeros((1, size, *values.shape[2:]), dtype=values.dtype, device=values.device)
    return out.index_add(1, index, values)
