"""The energy model (spec §8.3-8.4): descriptor -> fitting -> atomic energies, from settings
parsed once (`parse_model`) and the tree's arrays. Forces and virials: `derivatives`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

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


def descriptor_forward(desc: dict, edges: Edges) -> Array:
    """The descriptor of a serialized descriptor tree, its settings parsed on the call (for
    one-off evaluations and tests; runs keep a `parse_model` result)."""
    kind = kind_of(desc)
    return kind.forward(kind.settings(desc), desc, edges)
