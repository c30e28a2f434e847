"""JAX kernels for dpmodel (`native_kernels`): silu/silut with lean custom VJPs,
lax.stop_gradient, and cache-sized row blocks for XLA on CPU.

Autodiff of x·sigmoid(x) and of silut's tanh tail keeps several (atoms x angle pairs x channels)
intermediates, and a training step differentiates twice (forces inside the loss). Here the value,
its slope and its curvature are custom VJPs at every level, so the first backward keeps only x
and the second only (x, cotangent); the derivatives are recomputed from them.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache
from typing import Any

import jax
import jax.numpy as jnp

# working set per block of rows: DPA-1's attention over 192 water atoms in ~6 MiB blocks takes
# ~0.85x the training step on 2 CPU cores
ROW_BLOCK_BYTES = 6 << 20

Derivatives = Callable[[jax.Array], tuple[jax.Array, jax.Array]]


def stop_gradient(x: jax.Array) -> jax.Array:
    """lax.stop_gradient."""
    return jax.lax.stop_gradient(x)


def row_block_bytes() -> int | None:
    """ROW_BLOCK_BYTES: XLA on CPU runs each elementwise pass over a whole array."""
    return ROW_BLOCK_BYTES


def neighbor_group_limit() -> int:
    """1: JAX code runs under jit, where neighbor counts cannot be read on the host."""
    return 1


def _silu_slopes(x: jax.Array, s: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(f', f'') of f = x·sigmoid(x) given s = sigmoid(x): s (1 + x (1 - s)) and
    s (1 - s) (2 + x (1 - 2 s))."""
    one_minus = 1.0 - s
    return s * (1.0 + x * one_minus), s * one_minus * (2.0 + x * (1.0 - 2.0 * s))


def _silu_derivatives(x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(f', f'') of f = x·sigmoid(x)."""
    return _silu_slopes(x, jax.nn.sigmoid(x))


def _tied(x: jax.Array, grad: jax.Array) -> jax.Array:
    """x, made to depend on the cotangent (x + 0·grad[0]): XLA cannot hoist the derivative work
    into the forward pass, where its full-size temporaries would live until the backward pass.
    (XLA's CPU pipeline drops lax.optimization_barrier before scheduling, so a real data
    dependence is used; floating-point x·0 is not folded away, as it must keep NaN.)"""
    return x + jnp.reshape(grad, (-1,))[0] * 0.0


def _activation(
    value: Callable[[jax.Array], jax.Array], derivatives: Derivatives
) -> Callable[[jax.Array], jax.Array]:
    """f with custom VJPs: f's keeps x; that of (x, g) -> g·f'(x) keeps (x, g)."""

    @jax.custom_vjp
    def scaled_slope(x: jax.Array, g: jax.Array) -> jax.Array:
        return g * derivatives(x)[0]

    def scaled_slope_bwd(res: Any, h: jax.Array) -> tuple[jax.Array, jax.Array]:
        x, g = res
        slope, curvature = derivatives(_tied(x, h))
        return h * g * curvature, h * slope

    scaled_slope.defvjp(lambda x, g: (scaled_slope(x, g), (x, g)), scaled_slope_bwd)

    @jax.custom_vjp
    def fn(x: jax.Array) -> jax.Array:
        return value(x)

    # fwd calls fn again, so an outer differentiation (of the force term) uses this rule too
    fn.defvjp(lambda x: (fn(x), x), lambda x, g: (scaled_slope(_tied(x, g), g),))
    return fn


silu = _activation(jax.nn.silu, _silu_derivatives)


@cache
def silut(threshold: float, slope: float, offset: float) -> Callable[[jax.Array], jax.Array]:
    """silut:threshold with custom VJPs (slope, offset: dpmodel's `silut_constants`)."""

    def exp_terms(x: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
        """(below, e, r): one exponential serves both pieces, e = exp(-x) below the threshold
        (sigmoid(x) = r = 1/(1 + e)) and e = exp(-2y), y = slope (x - T), above it
        (tanh(y) = (1 - e) r); XLA evaluates both branches of a select, so this halves the
        transcendentals on the angle-sized tensors."""
        below = x < threshold
        e = jnp.exp(jnp.where(below, -x, (-2.0 * slope) * (x - threshold)))
        return below, e, 1.0 / (1.0 + e)

    def value(x: jax.Array) -> jax.Array:
        below, e, r = exp_terms(x)
        return jnp.where(below, x * r, (1.0 - e) * r + offset)

    def derivatives(x: jax.Array) -> tuple[jax.Array, jax.Array]:
        below, e, r = exp_terms(x)
        d1, d2 = _silu_slopes(x, r)
        t = (1.0 - e) * r
        sech2 = 1.0 - t * t
        return jnp.where(below, d1, slope * sech2), jnp.where(
            below, d2, -2.0 * slope**2 * t * sech2
        )

    return _activation(value, derivatives)
