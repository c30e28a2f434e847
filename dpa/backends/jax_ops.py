"""JAX versions of the DPA-3 activations (silu, silut) registered with dpmodel.

Autodiff of x·sigmoid(x) and of silut's tanh tail keeps several (atoms x angle pairs x channels)
intermediates for the backward pass; these custom VJPs keep only the input x and recompute the
derivative from it.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from ..dpmodel.array_api import register_stop_gradient
from ..dpmodel.network import register_fused_activation, silut_constants

NAMESPACE = "jax.numpy"


def _silu_slope(x: jax.Array) -> jax.Array:
    """d/dx x·sigmoid(x) = s (1 + x (1 - s))."""
    s = jax.nn.sigmoid(x)
    return s * (1.0 + x * (1.0 - s))


@jax.custom_vjp
def _silu(x: jax.Array) -> jax.Array:
    return jax.nn.silu(x)


def _tied(x: jax.Array, grad: jax.Array) -> jax.Array:
    """x, made to depend on the cotangent: XLA cannot hoist the derivative work into the
    forward pass (where its full-size temporaries would live until the backward pass)."""
    x, _ = jax.lax.optimization_barrier((x, grad))
    return x


_silu.defvjp(lambda x: (jax.nn.silu(x), x), lambda x, g: (g * _silu_slope(_tied(x, g)),))


def _silut(threshold: float | None):
    slope, offset = silut_constants(threshold)

    def value(x: jax.Array) -> jax.Array:
        tail = jnp.tanh(slope * (x - threshold)) + offset
        return jnp.where(x < threshold, jax.nn.silu(x), tail)

    def slope_of(x: jax.Array) -> jax.Array:
        t = jnp.tanh(slope * (x - threshold))
        return jnp.where(x < threshold, _silu_slope(x), slope * (1.0 - t * t))

    @jax.custom_vjp
    def fn(x: jax.Array) -> jax.Array:
        return value(x)

    fn.defvjp(lambda x: (value(x), x), lambda x, g: (g * slope_of(_tied(x, g)),))
    return fn


def register() -> None:
    """Make dpmodel's silu and silut use these on jax arrays; lax.stop_gradient for stop_gradient."""
    register_fused_activation(NAMESPACE, "silu", lambda _: _silu)
    register_fused_activation(NAMESPACE, "silut", _silut)
    register_stop_gradient(NAMESPACE, jax.lax.stop_gradient)
