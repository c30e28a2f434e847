"""Forces and virials from atomic energies (spec §9), written once for every caller.

A backend supplies its autodiff as an `EdgeAutodiff` (E_i and dE/dr_ij in one backward pass,
with or without a kept graph; the weighted passes of the atom virial; a rows-into-atoms sum);
`model_outputs` turns a function r_ij -> E_i into energy, force, virial (and atom virial).
Evaluation, both trainers and the SavedModel graph call it; JAX-MD differentiates the energy
itself.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from array_api_compat import device

from .array_api import Array, xp_of

EnergyFn = Callable[[Array], Array]  # r_ij (nf, nat, nnei, 3) -> E_i (nf, nat), float64
ScatterAdd = Callable[[Array, Array, int], Array]  # see EdgeAutodiff.scatter_add


class EdgeAutodiff(Protocol):
    """A framework's part of the chain; `dpa/backends/<name>/core.py` defines one."""

    def energy_and_edge_grad(
        self, atoms: EnergyFn, rij: Array, keep_graph: bool
    ) -> tuple[Array, Array]:
        """(E_i, dE/dr_ij) with E = Σ E_i; keep_graph: both stay differentiable in the model's
        variables (training's double backward), else they are constants."""
        ...

    def energy_and_weighted_edge_grads(
        self, atoms: EnergyFn, rij: Array, positions: Array
    ) -> tuple[Array, Array, Array]:
        """(E_i, dE/dr_ij, d(Σ_i E_i p_i)/dr_ij (..., 3, 3)) for the atom virial of
        message-passing models, `positions` p (nf, nat, 3) constants; all constants."""
        ...

    def scatter_add(self, values: Array, index: Array, size: int) -> Array:
        """Rows of `values` (1, m, ...) summed into `size` slots of axis 1 by `index` (m,)."""
        ...


def model_outputs(
    autodiff: EdgeAutodiff,
    atoms: EnergyFn,
    rij: Array,
    nlist: Array,
    *,
    atomic: bool = False,
    positions: Array | None = None,
    keep_graph: bool = False,
) -> dict[str, Array]:
    """energy (nf,), atom_energy, force, virial (and atom_virial when `atomic`) of edge vectors
    `rij` of neighbor list `nlist`. `positions` (the wrapped coordinates) are needed for the
    atom virial of message-passing descriptors only (`NeighborSpec.message_passing`)."""
    moment = None
    if positions is None:
        e_atom, grad = autodiff.energy_and_edge_grad(atoms, rij, keep_graph)
    else:
        e_atom, grad, weighted = autodiff.energy_and_weighted_edge_grads(atoms, rij, positions)
        moment = edge_moment(weighted, grad, positions)
    return edge_outputs(e_atom, grad, rij, nlist, autodiff.scatter_add, atomic, moment)


def edge_outputs(
    e_atom: Array,
    grad: Array,
    rij: Array,
    nlist: Array,
    scatter_add: ScatterAdd,
    atomic: bool = False,
    moment: Array | None = None,
) -> dict[str, Array]:
    """`model_outputs` from E_i and g = dE/dr_ij already computed (the checkpointed step)."""
    xp = xp_of(e_atom)
    out = forces_and_virials(grad, rij, nlist, scatter_add, atomic, moment)
    out["energy"] = xp.sum(e_atom, axis=1)
    out["atom_energy"] = e_atom
    return out


def forces_and_virials(
    grad: Array,
    rij: Array,
    nlist: Array,
    scatter_add: ScatterAdd,
    atomic: bool = False,
    moment: Array | None = None,
) -> dict[str, Array]:
    """Force, virial (and atom_virial) from g = dE/dr_ij of edge vectors r_ij = x_j - x_i + S H.

    F_i = Σ_j g_ij - Σ_{(c,j): j=i} g_cj;  W = -Σ g ⊗ r. Atom virial (spec §9, written per edge
    e = (c -> j)): j gets -g_e ⊗ r_e + Q_e and c gets -Q_e, where Q_e = Σ_i dE_i/dr_e ⊗ (p_i - p_c)
    with p the wrapped positions. Q = 0 when E_i depends only on i's own edges (se_e2_a, DPA-1);
    message-passing descriptors pass `moment` = Q (see `edge_moment`).
    `scatter_add(values (1, m, ...), index (m,), size)` sums rows into `size` slots; the array API
    has none, so each backend passes its framework's own.
    """
    xp = xp_of(grad)
    nf, nat, nnei, _ = grad.shape
    safe = xp.where(nlist >= 0, nlist, xp.zeros_like(nlist))
    frame_offset = xp.reshape(
        xp.arange(nf, dtype=safe.dtype, device=device(safe)) * nat, (nf, 1, 1)
    )
    index = xp.reshape(safe + frame_offset, (-1,))

    def fold(values: Array) -> Array:
        """Sum per-edge values onto the neighbor atom of each edge: (nf, nat, nnei, ...) -> (nf, nat, ...)."""
        tail = tuple(values.shape[3:])
        flat = xp.reshape(values, (1, nf * nat * nnei, *tail))
        return xp.reshape(scatter_add(flat, index, nf * nat), (nf, nat, *tail))

    out = {"force": xp.sum(grad, axis=2) - fold(grad)}
    outer = -(grad[..., :, None] * rij[..., None, :])  # (nf, nat, nnei, 3, 3)
    out["virial"] = xp.sum(outer, axis=(1, 2))
    if atomic:
        if moment is None:
            out["atom_virial"] = fold(outer)
        else:
            out["atom_virial"] = fold(outer + moment) - xp.sum(moment, axis=2)
    return out


def edge_moment(weighted: Array, grad: Array, positions: Array) -> Array:
    """Q_e = Σ_i dE_i/dr_e ⊗ (p_i - p_c) (nf, nat, nnei, 3, 3) for the atom virial.

    `weighted[..., l]` = d(Σ_i E_i p_{i,l})/dr_e (one extra backward pass per l), `grad` = dE/dr_e,
    `positions` (nf, nat, 3) the wrapped positions p (constants), c the center of each edge."""
    return weighted - grad[..., :, None] * positions[:, :, None, None, :]
