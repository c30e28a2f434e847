"""Fused torch kernels for the activations of DPA-3 (silu, silut), registered with dpmodel.

Eager torch runs every elementwise operation as its own pass over memory and autograd keeps
several intermediates; on the (atoms x angle pairs x channels) tensors of DPA-3 that dominated
time and memory. These functions use torch's fused SiLU kernels, keep only the input for the
backward pass, and evaluate the tanh tail of silut only where x >= threshold.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from dpa.dpmodel.array_api import register_neighbor_groups, register_stop_gradient
from dpa.dpmodel.network import register_fused_activation, silut_constants

NAMESPACE = "array_api_compat.torch"


class _SiLUT(torch.autograd.Function):
    """silut: SiLU below the threshold, tanh(slope (x - T)) + offset above it."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, threshold: float, slope: float, offset: float):
        ctx.save_for_backward(x)
        # one reduction decides whether any element reaches the tail (rare: T is 3 to 10)
        ctx.constants = (threshold, slope, x.numel() > 0 and bool(torch.amax(x) >= threshold))
        y = F.silu(x)
        if ctx.constants[2]:
            tail = torch.tanh(slope * (x - threshold)) + offset
            y = torch.where(x >= threshold, tail, y)
        return y

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
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
    def forward(ctx, grad: torch.Tensor, x: torch.Tensor, constants: tuple):
        ctx.save_for_backward(grad, x)
        ctx.constants = constants
        return _first_derivative_times(grad, x, constants)

    @staticmethod
    def backward(ctx, out_grad: torch.Tensor):
        grad, x = ctx.saved_tensors
        d1, d2 = _derivatives(x, ctx.constants)
        return out_grad * d1, out_grad * grad * d2, None


def _silut(threshold: float | None):
    slope, offset = silut_constants(threshold)

    def fn(x: torch.Tensor) -> torch.Tensor:
        return _SiLUT.apply(x, threshold, slope, offset)

    return fn


def register() -> None:
    """Make dpmodel's silu and silut use these kernels on torch tensors; detach = stop_gradient."""
    register_fused_activation(NAMESPACE, "silu", lambda _: F.silu)
    register_fused_activation(NAMESPACE, "silut", _silut)
    register_stop_gradient(NAMESPACE, torch.Tensor.detach)
    register_neighbor_groups(NAMESPACE, 6, lambda: not torch.compiler.is_compiling())
