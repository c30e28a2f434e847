"""The energy model (spec §8.3-8.4, §9): descriptor -> fitting -> atomic energies, and the
conversion of edge-vector gradients into forces and virials."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from array_api_compat import device

from ..errors import ConfigError
from .array_api import Array, gather_neighbors, like, to_dtype, xp_of
from .descriptor.common import Edges
from .descriptor.protocol import DescriptorKind, NeighborSpec, PhaseSplit
from .descriptor.registry import kind_of
from .fitting import FittingSettings
from .fitting import forward as fitting_forward


def is_mixed_types(desc: dict) -> bool:
    """True when the neighbor list is one distance-sorted list (all but se_e2_a)."""
    return neighbor_spec(desc).mixed_types


def neighbor_spec(desc: dict) -> NeighborSpec:
    """The model-level neighbor list a serialized descriptor consumes."""
    return kind_of(desc).neighbor_spec(desc)


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


@dataclass(frozen=True)
class ModelSettings:
    """A stored energy model's hyperparameters, parsed once (`parse_model`) by whoever prepares
    the model to run: the descriptor's kind and settings, the fitting's, the excluded atom types.
    The arrays stay in the tree; the forward functions below take both."""

    kind: DescriptorKind
    descriptor: Any  # the kind's own settings object
    fitting: FittingSettings
    atom_exclude_types: tuple[int, ...]


def parse_model(model: dict) -> ModelSettings:
    """The settings of the serialized energy model `model` (its `descriptor`, `fitting`, ...)."""
    desc = model["descriptor"]
    kind = kind_of(desc)
    return ModelSettings(
        kind=kind,
        descriptor=kind.settings(desc),
        fitting=FittingSettings.from_tree(model["fitting"]),
        atom_exclude_types=tuple(int(t) for t in model.get("atom_exclude_types") or ()),
    )


def atomic_energy(
    settings: ModelSettings,
    model: dict,
    edges: Edges,
    fparam: Array | None = None,
    aparam: Array | None = None,
) -> Array:
    """Per-atom energies E_i (nf, nat) in float64, including out_bias and exclusions."""
    descriptor = settings.kind.forward(settings.descriptor, model["descriptor"], edges)
    return _energy_of_descriptor(settings, model, edges, descriptor, fparam, aparam)


def energy_split(settings: ModelSettings) -> int | None:
    """The cut of a checkpointed training step (`atomic_energy_head`/`_tail`); None when the
    descriptor has none (all but DPA-3)."""
    phases = settings.kind.phases
    return None if phases is None else phases.layer(settings.descriptor)


def atomic_energy_head(
    settings: ModelSettings, model: dict, edges: Edges, split: int
) -> tuple[Array, ...]:
    """The descriptor's inner state at the cut `split` (see `energy_split`)."""
    return _phases(settings).head(settings.descriptor, model["descriptor"], edges, split)


def atomic_energy_tail(
    settings: ModelSettings,
    model: dict,
    edges: Edges,
    state: tuple[Array, ...],
    split: int,
    fparam: Array | None = None,
    aparam: Array | None = None,
) -> Array:
    """`atomic_energy` from an `atomic_energy_head` state: the rest of the descriptor and the
    fitting."""
    tail = _phases(settings).tail
    descriptor = tail(settings.descriptor, model["descriptor"], edges, state, split)
    return _energy_of_descriptor(settings, model, edges, descriptor, fparam, aparam)


def _phases(settings: ModelSettings) -> PhaseSplit:
    phases = settings.kind.phases
    if phases is None:
        raise ConfigError(f"descriptor {settings.kind.name!r} has no checkpointing phases")
    return phases


def _energy_of_descriptor(
    settings: ModelSettings,
    model: dict,
    edges: Edges,
    descriptor: Array,
    fparam: Array | None,
    aparam: Array | None,
) -> Array:
    """Fitting, out_bias and atom exclusion on top of the descriptor."""
    xp = xp_of(edges.rij)
    fit = settings.fitting
    if fit.numb_fparam > 0 and fparam is None:
        if fit.default_fparam is None:
            raise ConfigError(
                f"this model needs fparam ({fit.numb_fparam} values per frame) and has no "
                "default_fparam; pass fparam="
            )
        nf = edges.rij.shape[0]
        values = like(edges.rij, np.asarray(fit.default_fparam, dtype=np.float64))
        fparam = xp.broadcast_to(values[None, :], (nf, values.shape[0]))
    eps = fitting_forward(
        fit, model["fitting"], descriptor, edges.atype, edges.atype_host, fparam, aparam
    )
    out_bias = to_dtype(model["@variables"]["out_bias"], xp.float64)
    energy = eps + xp.take(out_bias[0, :, 0], edges.atype, axis=0)[None, :]
    if settings.atom_exclude_types:
        keep = like(edges.atype, ~np.isin(edges.atype_host, settings.atom_exclude_types))
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


def descriptor_forward(desc: dict, edges: Edges) -> Array:
    """The descriptor of a serialized descriptor tree, its settings parsed on the call (for
    one-off evaluations and tests; runs keep a `parse_model` result)."""
    kind = kind_of(desc)
    return kind.forward(kind.settings(desc), desc, edges)
