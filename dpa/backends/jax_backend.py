"""JAX: jit-compiled energy, forces and virials (float64 enabled); GPU when present."""

from __future__ import annotations

from functools import partial

import jax
import numpy as np

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402

from ..dpmodel.descriptor.common import Edges  # noqa: E402
from ..dpmodel.model import atomic_energy, edge_vectors, forces_and_virials  # noqa: E402
from ..tree import merge_variables, split_variables  # noqa: E402
from .base import Backend  # noqa: E402


def scatter_add(values: jax.Array, index: jax.Array, size: int) -> jax.Array:
    """Sum rows of `values` (1, m, ...) into `size` slots of axis 1 by `index` (m,)."""
    return jnp.zeros((1, size, *values.shape[2:]), dtype=values.dtype).at[:, index].add(values)


def _evaluate(skeleton, atype_host, atomic, leaves, coord, box, nlist, shift, atype, fp, ap):
    """Energy, atom energy, force, virial (and atom virial) of one batch; traced by jit."""
    model = merge_variables(skeleton, leaves)
    rij = edge_vectors(coord, box, nlist, shift)

    def total(r):
        e_atom = atomic_energy(model, Edges(r, nlist, atype, atype_host), fp, ap)
        return jnp.sum(e_atom), e_atom

    (_, e_atom), grad = jax.value_and_grad(total, has_aux=True)(rij)
    out = forces_and_virials(grad, rij, nlist, scatter_add, atomic)
    out["energy"] = jnp.sum(e_atom, axis=1)
    out["atom_energy"] = e_atom
    return out


class _Prepared:
    """Device arrays of a model plus the static skeleton and a cache of compiled functions."""

    def __init__(self, tree: dict) -> None:
        self.skeleton, leaves = split_variables(tree)
        self.leaves = [jnp.asarray(np.asarray(a)) for a in leaves]
        self.compiled: dict = {}

    def function(self, atype: np.ndarray, atomic: bool, periodic: bool):
        key = (atype.tobytes(), atype.shape, atomic, periodic)
        if key not in self.compiled:
            fn = partial(_evaluate, self.skeleton, atype.copy(), atomic)
            self.compiled[key] = jax.jit(fn)
        return self.compiled[key]


class JaxBackend(Backend):
    """The reference model on jax.numpy, one compiled function per (types, shapes)."""

    name = "jax"
    can_compute_forces = True

    @property
    def device(self) -> str:
        return str(jax.devices()[0])

    def prepare(self, tree: dict) -> _Prepared:
        return _Prepared(tree)

    def evaluate(self, prepared, coord, box, nlist, shift, atype, fparam, aparam, atomic):
        atype = np.asarray(atype)
        fn = prepared.function(atype, atomic, box is not None)

        def arr(a, dtype=None):
            return None if a is None else jnp.asarray(np.asarray(a), dtype=dtype)

        out = fn(
            prepared.leaves,
            arr(coord, jnp.float64),
            arr(box, jnp.float64),
            arr(nlist, jnp.int64),
            arr(shift, jnp.int64),
            arr(atype, jnp.int64),
            arr(fparam, jnp.float64),
            arr(aparam, jnp.float64),
        )
        return {k: np.asarray(v) for k, v in out.items()}


def make_backend() -> JaxBackend:
    return JaxBackend()
