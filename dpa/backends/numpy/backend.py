"""NumPy: the reference backend; energies and atom energies only (no autograd)."""

from __future__ import annotations

import numpy as np

from dpa.backends.base import Backend
from dpa.dpmodel.batch import Batch
from dpa.dpmodel.model import ModelSettings, atomic_energy, edge_vectors, parse_model


class NumpyBackend(Backend):
    """Energy and atom energy from the reference model; forces need torch or jax."""

    name = "numpy"
    can_compute_forces = False

    def prepare(self, tree: dict) -> tuple[ModelSettings, dict]:
        return parse_model(tree), tree

    def evaluate(self, prepared, batch: Batch, atomic: bool):
        settings, tree = prepared
        rij = edge_vectors(batch.coord, batch.box, batch.nlist, batch.shift)
        e_atom = atomic_energy(settings, tree, batch.edges(rij), batch.fparam, batch.aparam)
        return {"energy": np.sum(e_atom, axis=1), "atom_energy": np.asarray(e_atom)}


def make_backend() -> NumpyBackend:
    return NumpyBackend()
