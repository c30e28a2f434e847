"""JAX: jit-compiled energy, forces and virials; GPU when present (JAX's settings: `core`)."""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from dpa.backends.base import Backend
from dpa.backends.jax.core import EDGE_AUTODIFF, SLOT_ROUNDING
from dpa.dpmodel.batch import Batch
from dpa.dpmodel.derivatives import model_outputs
from dpa.dpmodel.descriptor.common import Edges
from dpa.dpmodel.model import atomic_energy, edge_vectors, neighbor_spec, parse_model
from dpa.neighbor import wrapped_positions
from dpa.tree import merge_variables, split_variables


def _evaluate(static, leaves, coord, box, nlist, shift, atype, fp, ap, positions):
    """Energy, atom energy, force, virial (and atom virial) of one batch; traced by jit.

    `positions` (wrapped, constants) is given only when the atom virial needs the
    message-passing moment of spec §9, d(Σ_i E_i p_i)/dr."""
    settings, skeleton, atype_host, atomic, slot_counts = static
    model = merge_variables(skeleton, leaves)
    rij = edge_vectors(coord, box, nlist, shift)

    def atoms(r):
        edges = Edges(r, nlist, atype, atype_host, slot_counts)
        return atomic_energy(settings, model, edges, fp, ap)

    return model_outputs(EDGE_AUTODIFF, atoms, rij, nlist, atomic=atomic, positions=positions)


class _Prepared:
    """Device arrays of a model plus the static skeleton and a cache of compiled functions."""

    def __init__(self, tree: dict) -> None:
        self.settings = parse_model(tree)
        self.skeleton, leaves = split_variables(tree)
        self.leaves = [jnp.asarray(np.asarray(a)) for a in leaves]
        self.compiled: dict = {}
        self.message_passing = neighbor_spec(tree["descriptor"]).message_passing

    def function(self, atype: np.ndarray, atomic: bool, periodic: bool, slot_counts: tuple):
        key = (atype.tobytes(), atype.shape, atomic, periodic, slot_counts)
        if key not in self.compiled:
            static = (self.settings, self.skeleton, atype.copy(), atomic, slot_counts)
            self.compiled[key] = jax.jit(partial(_evaluate, static))
        return self.compiled[key]


class JaxBackend(Backend):
    """The reference model on jax.numpy, one compiled function per (types, shapes)."""

    name = "jax"
    can_compute_forces = True
    slot_rounding = SLOT_ROUNDING

    @property
    def device(self) -> str:
        return str(jax.devices()[0])

    def trainer(self, tree: dict, *, checkpointing: bool = False, **options):
        """A `JaxTrainer` (one compiled step per batch shape)."""
        from dpa.backends.jax.train import JaxTrainer  # imports this module

        return JaxTrainer(tree, checkpointing=checkpointing, **options)

    def prepare(self, tree: dict) -> _Prepared:
        return _Prepared(tree)

    def evaluate(self, prepared, batch: Batch, atomic: bool):
        coord, box, nlist, shift = batch.coord, batch.box, batch.nlist, batch.shift
        fparam, aparam, slot_counts = batch.fparam, batch.aparam, batch.slot_counts
        atype = np.asarray(batch.atype)
        fn = prepared.function(atype, atomic, box is not None, tuple(slot_counts))

        def arr(a, dtype=None):
            return None if a is None else jnp.asarray(np.asarray(a), dtype=dtype)

        with_moment = atomic and prepared.message_passing
        positions = wrapped_positions(coord, box) if with_moment else None
        out = fn(
            prepared.leaves,
            arr(coord, jnp.float64),
            arr(box, jnp.float64),
            arr(nlist, jnp.int64),
            arr(shift, jnp.int64),
            arr(atype, jnp.int64),
            arr(fparam, jnp.float64),
            arr(aparam, jnp.float64),
            arr(positions, jnp.float64),
        )
        return {k: np.asarray(v) for k, v in out.items()}


def make_backend() -> JaxBackend:
    return JaxBackend()
