"""The array frameworks' own kernels for what dpmodel can do better on them, chosen per call.

Explicit delegation (the array-api-extra pattern): where a framework has a faster or
autodiff-aware form, dpmodel asks `native_kernels(xp)` for the module of the array namespace
`xp` (imported on first use) and calls it, and runs its array-API fallback where that is None.
Nothing is registered and importing changes nothing. Only these modules name a framework.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from array_api_compat import is_jax_namespace, is_torch_namespace


class Kernels(Protocol):
    """What each framework's module here defines (`torch.py`, `jax.py`)."""

    def stop_gradient(self, x: Any) -> Any:
        """x as a constant for autodiff."""

    def silu(self, x: Any) -> Any:
        """x·sigmoid(x), the activation `silu` (spec §1.1)."""

    def silut(self, threshold: float, slope: float, offset: float) -> Callable[[Any], Any]:
        """The activation `silut:threshold`, given its tail's `silut_constants`."""

    def row_block_bytes(self) -> int | None:
        """The working set per block of rows for `array_api.row_blocks` (None: one block)."""

    def neighbor_group_limit(self) -> int:
        """The most groups `array_api.neighbor_groups` may cut rows into right now (1: none)."""


def native_kernels(xp: Any) -> Kernels | None:
    """The kernels of array namespace `xp`'s framework, or None where dpmodel's array-API code
    is all there is (NumPy, array-api-strict, ...)."""
    if is_torch_namespace(xp):
        from . import torch as torch_kernels

        return torch_kernels
    if is_jax_namespace(xp):
        from . import jax as jax_kernels

        return jax_kernels
    return None
