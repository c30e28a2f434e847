"""Torch kernels for dpmodel (`native_kernels`): fused silu/silut, detach, neighbor groups.

Eager torch runs every elementwise operation as its own pass over memory and autograd keeps
several intermediates; on the (atoms x angle pairs x channels) tensors of DPA-3 that dominated
time and memory. silu and silut use torch's fused SiLU kernels, keep only the input for the
backward pass, and evaluate the tanh tail of silut only where x >= threshold.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache
from typing import Any

import torch
import torch.nn.functional as F

# eager torch reads neighbor counts on the host: rows cut into up to this many groups
MAX_NEIGHBOR_GROUPS = 6


def stop_gradient(x: torch.Tensor) -> torch.Tensor:
    """x detached from autograd."""
    return x.detach()


def row_block_bytes() -> int | None:
    """None: torch computes all rows in one block."""
    return None


def neighbor_group_limit() -> int:
    """MAX_NEIGHBOR_GROUPS while eager; 1 while torch.compile traces (no host reads there)."""
    return 1 if torch.compiler.is_compiling() else MAX_NEIGHBOR_GROUPS


def silu(x: torch.Tensor) -> torch.Tensor:
    """torch's fused SiLU."""
    return F.silu(x)


@cache
def silut(threshold: float, slope: float, offset: float) -> Callable[[torch.Tensor], torch.Tensor]:
    """silut:threshold as one autograd Function (slope, offset: dpmodel's `silut_constants`)."""

    def fn(x: torch.Tensor) -> torch.Tensor:
        return _SiLUT.apply(x, threshold, slope, offset)

    return fn


class _SiLUT(torch.autograd.Function):
    """silut: SiLU below the threshold, tanh(slope (x - T)) + offset above it."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, threshold: float, slope: float, offset: float) -> Any:
        ctx.save_for_backward(x)
        # one reduction decides whether any element reaches the tail (rare: T is 3 to 10)
        ctx.constants = (threshold, slope, x.numel() > 0 and bool(torch.amax(x) >= threshold))
        y = F.silu(x)
        if ctx.constants[2]:
            tail = torch.tanh(slope * (x - threshold)) + offset
            y = torch.where(x >= threshold, tail, y)
        return y

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> Any:
        (x,) = ctx.saved_tensors
        if torch.is_grad_enabled():  # create_graph (training): a backward that has a backward
            return _SiLUTGrad.apply(grad, x, ctx.constants), None, None, None
        return _first_derivative_times(grad, x, ctx.constants), None, None, None


def _first_derivative_times(grad: torch.Tensor, x: torch.Tensor, constants: tuple) -> torch.Tensor:
    """grad · silut'(x) with torch's fused SiLU backward kernel."""
    threshold, slope, has_tail = constants
    dx = torch.ops.aten.silu_backward(grad, x)
    if has_tail:
        t = torch.tanh(slope * (x - threshold))
        dx = torch.where(x >= threshold, grad * slope * (1.0 - t * t), dx)
    return dx


def _derivatives(x: torch.Tensor, constants: tuple) -> tuple[torch.Tensor, torch.Tensor]:
    """silut'(x) and silut''(x) (SiLU: s(1 + x(1-s)) and s(1-s)(2 + x(1-2s)), s = sigmoid)."""
    threshold, slope, has_tail = constants
    s = torch.sigmoid(x)
    d1 = s * (1.0 + x * (1.0 - s))
    d2 = s * (1.0 - s) * (2.0 + x * (1.0 - 2.0 * s))
    if has_tail:
        t = torch.tanh(slope * (x - threshold))
        sech2 = 1.0 - t * t
        tail = x >= threshold
        d1 = torch.where(tail, slope * sech2, d1)
        d2 = torch.where(tail, -2.0 * slope * slope * t * sech2, d2)
    return d1, d2


class _SiLUTGrad(torch.autograd.Function):
    """(grad, x) -> grad · silut'(x), differentiable once more (forces inside a training loss)."""

    @staticmethod
    def forward(ctx: Any, grad: torch.Tensor, x: torch.Tensor, constants: tuple) -> Any:
        ctx.save_for_backward(grad, x)
        ctx.constants = constants
        return _first_derivative_times(grad, x, constants)

    @staticmethod
    def backward(ctx: Any, out_grad: torch.Tensor) -> Any:
        grad, x = ctx.saved_tensors
        d1, d2 = _derivatives(x, ctx.constants)
        return out_grad * d1, out_grad * grad * d2, None
