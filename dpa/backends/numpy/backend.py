"""NumPy: the reference backend; energies and atom energies only (no autograd)."""

from __future__ import annotations

import numpy as np

from dpa.backends.base import Backend
from dpa.dpmodel.descriptor.common import Edges
from dpa.dpmodel.model import atomic_energy, edge_vectors


class NumpyBackend(Backend):
    """Energy and atom energy from the reference model; forces need torch or jax."""

    name = "numpy"
    can_compute_forces = False

    def prepare(self, tree: dict) -> dict:
        return tree

    def evaluate(
        self, prepared, coord, box, nlist, shift, atype, fparam, aparam, atomic, slot_counts=()
    ):
        rij = edge_vectors(coord, box, nlist, shift)
        edges = Edges(rij, nlist, atype, atype, slot_counts)
        e_atom = atomic_energy(prepared, edges, fparam, aparam)
        return {"energy": np.sum(e_atom, axis=1), "atom_energy": np.asarray(e_atom)}


def make_backend() -> NumpyBackend:
    return NumpyBackend()
