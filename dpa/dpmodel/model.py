"""The energy model (spec §8.3-8.4, §9): descriptor -> fitting -> atomic energies, and the
conversion of edge-vector gradients into forces and virials."""

from __future__ import annotations

from collections.abc import Callable
from types import ModuleType

import numpy as np
from array_api_compat import device

from ..errors import ConfigError
from .array_api import Array, gather_neighbors, like, to_dtype, xp_of
from .descriptor import dpa1, se_e2_a
from .descriptor.common import Edges
from .fitting import forward as fitting_forward

DESCRIPTORS: dict[str, ModuleType] = {
    "se_e2_a": se_e2_a,
    "se_a": se_e2_a,
    "dpa1": dpa1,
    "se_atten": dpa1,
    "se_atten_v2": dpa1,
}


def descriptor_module(desc: dict) -> ModuleType:
    """The module implementing a serialized descriptor's `type`."""
    kind = desc.get("type")
    if kind not in DESCRIPTORS:
        raise ConfigError(
            f"unknown descriptor type {kind!r}; supported: {', '.join(sorted(DESCRIPTORS))}"
        )
    return DESCRIPTORS[kind]


def is_mixed_types(desc: dict) -> bool:
    """True when the neighbor list is one distance-sorted list (all but se_e2_a)."""
    return descriptor_module(desc) is not se_e2_a


def edge_vectors(coord: Array, box: Array | None, nlist: Array, shift: Array) -> Array:
    """r_ij = x[j] - x[i] + S_ij @ box for every slot (empty slots give x[0] - x[i])."""
    xp = xp_of(coord)
    safe = xp.where(nlist >= 0, nlist, xp.zeros_like(nlist))
    rij = gather_neighbors(coord, safe) - coord[:, :, None, :]
    if box is not None:
        nf, nat, nnei = nlist.shape
        image = xp.reshape(to_dtype(shift, coord.dtype), (nf, nat * nnei, 3)) @ box
        rij = rij + xp.reshape(image, (nf, nat, nnei, 3))
    return rij


def atomic_energy(
    model: dict,
    edges: Edges,
    fparam: Array | None = None,
    aparam: Array | None = None,
) -> Array:
    """Per-atom energies E_i (nf, nat) in float64, including out_bias and exclusions."""
    xp = xp_of(edges.rij)
    desc = model["descriptor"]
    fit = model["fitting"]
    descriptor = descriptor_module(desc).forward(desc, edges)
    if fit.get("numb_fparam", 0) > 0 and fparam is None:
        default = fit.get("default_fparam")
        if default is None:
            raise ConfigError(
                f"this model needs fparam ({fit['numb_fparam']} values per frame) and has no "
                "default_fparam; pass fparam="
            )
        nf = edges.rij.shape[0]
        values = like(edges.rij, np.asarray(default, dtype=np.float64))
        fparam = xp.broadcast_to(values[None, :], (nf, values.shape[0]))
    eps = fitting_forward(fit, descriptor, edges.atype, edges.atype_host, fparam, aparam)
    out_bias = to_dtype(model["@variables"]["out_bias"], xp.float64)
    energy = eps + xp.take(out_bias[0, :, 0], edges.atype, axis=0)[None, :]
    excluded = model.get("atom_exclude_types") or []
    if excluded:
        keep = like(edges.atype, ~np.isin(edges.atype_host, excluded))
        energy = xp.where(keep[None, :], energy, xp.zeros_like(energy))
    return energy


ScatterAdd = Callable[[Array, Array, int], Array]


def forces_and_virials(
    grad: Array, rij: Array, nlist: Array, scatter_add: ScatterAdd, atomic: bool = False
) -> dict[str, Array]:
    """Force, virial (and atom_virial) from g = dE/dr_ij of edge vectors r_ij = x_j - x_i + S H.

    F_i = Σ_j g_ij - Σ_{(c,j): j=i} g_cj;  W = -Σ g ⊗ r;  atom virial of j: -Σ_{edges into j} g ⊗ r.
    `scatter_add(values (1, m, ...), index (m,), size)` sums rows into `size` slots; the array API
    has none, so each backend passes its framework's own. The atom-virial split is exact for descriptors whose E_i depends only on i's own edges
    (se_e2_a, DPA-1); message-passing descriptors need the general form of spec §9.
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
        out["atom_virial"] = fold(outer)
    return out
