"""Fused torch kernels for the activations of DPA-3 (silu, silut), registered with dpmodel.

Eager torch runs every elementwise operation as its own pass over memory and autograd keeps
several intermediates; on the (atoms x angle pairs x channels) tensors of DPA-3 that dominated
time and memory. These functions use torch's fused SiLU kernels, keep only the input for the
backward pass, and evaluate the tanh tail of silut only where x >= threshold.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..dpmodel.array_api import register_stop_gradient
from ..dpmodel.network import register_fused_activation, silut_constants

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
        threshold, slope, has_tail = ctx.constants
        dx = torch.ops.aten.silu_backward(grad, x)
        if has_tail:
            t = torch.tanh(slope * (x - threshold))
            dx = torch.where(x >= threshold, grad * slope * (1.0 - t * t), dx)
        return dx, None, None, None


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
