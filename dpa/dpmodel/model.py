"""The energy model (spec §8.3-8.4, §9): descriptor -> fitting -> atomic energies, and the
conversion of edge-vector gradients into forces and virials."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType

import numpy as np
from array_api_compat import device

from ..errors import ConfigError
from .array_api import Array, gather_neighbors, like, to_dtype, xp_of
from .descriptor.common import Edges, empty_slots_alike
from .fitting import forward as fitting_forward

# serialized descriptor `type` -> module of dpa.dpmodel.descriptor (imported on first use)
DESCRIPTORS: dict[str, str] = {
    "se_e2_a": "se_e2_a",
    "se_a": "se_e2_a",
    "dpa1": "dpa1",
    "se_atten": "dpa1",
    "se_atten_v2": "dpa1",
    "dpa2": "dpa2",
    "dpa3": "dpa3",
}


def descriptor_module(desc: dict) -> ModuleType:
    """The module implementing a serialized descriptor's `type`."""
    kind = desc.get("type")
    if kind not in DESCRIPTORS:
        raise ConfigError(
            f"unknown descriptor type {kind!r}; supported: {', '.join(sorted(DESCRIPTORS))}"
        )
    return importlib.import_module(f"{__package__}.descriptor.{DESCRIPTORS[kind]}")


def is_mixed_types(desc: dict) -> bool:
    """True when the neighbor list is one distance-sorted list (all but se_e2_a)."""
    return DESCRIPTORS.get(desc.get("type"), "") != "se_e2_a"


@dataclass(frozen=True)
class NeighborSpec:
    """What the model-level neighbor list of a descriptor must look like (spec §2.3, §10).

    rcut, sel: the list's cutoff and width (DPA-2: repinit; DPA-3: edges);
    compact: re-sort after model-level pair exclusion so holes go last (DPA-2/3);
    trimmable: slots empty in every row may be cut off (normalizers do not use the width); with
      per-type blocks (not mixed_types, se_e2_a) each block is cut on its own;
    keep_empty_slot: when trimming, keep one slot past the widest row (of each block): the
      descriptor reads the (row-independent) contribution of the cut empty slots off it;
    count_radii: radii r for which the descriptor wants the host-side hint "most slots within r";
    message_passing: E_i depends on other atoms' edges (general atom-virial form, spec §9).
    """

    rcut: float
    rcut_smth: float
    sel: list[int]
    mixed_types: bool
    compact: bool = False
    trimmable: bool = False
    keep_empty_slot: bool = False
    count_radii: tuple[float, ...] = ()
    message_passing: bool = False


def neighbor_spec(desc: dict) -> NeighborSpec:
    """The model-level neighbor list a serialized descriptor consumes."""
    kind = DESCRIPTORS.get(desc.get("type"))
    if kind == "dpa2":
        rep = desc["repinit_args"]
        return NeighborSpec(
            float(rep["rcut"]),
            float(rep["rcut_smth"]),
            [int(rep["nsel"])],
            True,
            compact=True,
            count_radii=(float(desc["repformer_args"]["rcut"]),),
            message_passing=True,
        )
    if kind == "dpa3":
        flow = desc["repflow_args"]
        return NeighborSpec(
            float(flow["e_rcut"]),
            float(flow["e_rcut_smth"]),
            [int(flow["e_sel"])],
            True,
            compact=True,
            trimmable=True,
            count_radii=(float(flow["a_rcut"]),),
            message_passing=True,
        )
    descriptor_module(desc)  # unknown types fail here
    sel = desc["sel"]
    sel = [int(sel)] if isinstance(sel, int | float) else [int(s) for s in sel]
    trim = kind in ("dpa1", "se_e2_a") and empty_slots_alike(desc)
    return NeighborSpec(
        float(desc["rcut"]),
        float(desc["rcut_smth"]),
        sel,
        is_mixed_types(desc),
        trimmable=trim,
        keep_empty_slot=trim,
    )


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
    desc = model["descriptor"]
    descriptor = descriptor_module(desc).forward(desc, edges)
    return _energy_of_descriptor(model, edges, descriptor, fparam, aparam)


def energy_split(model: dict) -> int | None:
    """The cut of a checkpointed training step (`atomic_energy_head`/`_tail`); None when the
    descriptor has none (all but DPA-3)."""
    module = descriptor_module(model["descriptor"])
    return module.split_layer(model["descriptor"]) if hasattr(module, "split_layer") else None


def atomic_energy_head(model: dict, edges: Edges, split: int) -> tuple[Array, ...]:
    """The descriptor's inner state at the cut `split` (see `energy_split`)."""
    return descriptor_module(model["descriptor"]).forward_head(model["descriptor"], edges, split)


def atomic_energy_tail(model: dict, edges: Edges, state: tuple[Array, ...], split: int) -> Array:
    """`atomic_energy` from an `atomic_energy_head` state: the rest of the descriptor and the
    fitting (no fparam/aparam, which training does not feed)."""
    desc = model["descriptor"]
    descriptor = descriptor_module(desc).forward_tail(desc, edges, state, split)
    return _energy_of_descriptor(model, edges, descriptor, None, None)


def _energy_of_descriptor(
    model: dict, edges: Edges, descriptor: Array, fparam: Array | None, aparam: Array | None
) -> Array:
    """Fitting, out_bias and atom exclusion on top of the descriptor."""
    xp = xp_of(edges.rij)
    fit = model["fitting"]
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
