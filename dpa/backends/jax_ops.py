"""JAX versions of the DPA-3 activations (silu, silut) registered with dpmodel: XLA's logistic
kernel instead of the generic tanh form; XLA fuses the rest."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from ..dpmodel.network import register_fused_activation, silut_constants

NAMESPACE = "jax.numpy"


def _silut(threshold: float | None):
    slope, offset = silut_constants(threshold)

    def fn(x: jax.Array) -> jax.Array:
        return jnp.where(x < threshold, jax.nn.silu(x), jnp.tanh(slope * (x - threshold)) + offset)

    return fn


def register() -> None:
    """Make dpmodel's silu and silut use these on jax arrays."""
    register_fused_activation(NAMESPACE, "silu", lambda _: jax.nn.silu)
    register_fused_activation(NAMESPACE, "silut", _silut)
