"""What every JAX module of dpa shares: importing this sets JAX's process-wide state once
(wide vectors on AVX-512 CPUs, float64 arrays), and JAX's side of the force chain
(`EDGE_AUTODIFF`, see `dpa.dpmodel.derivatives`)."""

from __future__ import annotations

from dpa.backends.jax.xla_cpu import prefer_wide_vectors

prefer_wide_vectors()  # before JAX's CPU backend starts (its first computation)

import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402

# neighbor-list widths are rounded to multiples of this: every new shape is a new compilation
SLOT_ROUNDING = 8


def scatter_add(values: jax.Array, index: jax.Array, size: int) -> jax.Array:
    """Sum rows of `values` (1, m, ...) into `size` slots of axis 1 by `index` (m,)."""
    return jnp.zeros((1, size, *values.shape[2:]), dtype=values.dtype).at[:, index].add(values)


class JaxEdgeAutodiff:
    """`dpa.dpmodel.derivatives.EdgeAutodiff` on jax: traced functions stay differentiable in
    whatever the caller differentiates, so `keep_graph` changes nothing."""

    @staticmethod
    def energy_and_edge_grad(atoms, rij, keep_graph: bool = False):
        """(E_i, dE/dr) from one backward pass."""

        def total(r):
            e_atom = atoms(r)
            return jnp.sum(e_atom), e_atom

        (_, e_atom), grad = jax.value_and_grad(total, has_aux=True)(rij)
        return e_atom, grad

    @staticmethod
    def energy_and_weighted_edge_grads(atoms, rij, positions):
        """Four backward passes over one forward; `jax.vmap(vjp)` would batch them, but jitted
        it returns wrong cotangents for float32 models (jax/jaxlib 0.10.2 on CPU)."""
        e_atom, vjp = jax.vjp(atoms, rij)
        (grad,) = vjp(jnp.ones_like(e_atom))
        weighted = jnp.stack([vjp(positions[..., k])[0] for k in range(3)], axis=-1)
        return e_atom, grad, weighted

    scatter_add = staticmethod(scatter_add)


EDGE_AUTODIFF = JaxEdgeAutodiff()
