"""The energy model as pure JAX functions of traced inputs, for export (jax2tf / jax.export).

The jax backend compiles one function per system with the atom types as host constants
(`Edges.atype_host`) and the neighbor list from NumPy. An exported graph serves every system:
the types are traced inputs, the shapes are symbolic in frames and atoms, and the neighbor list
may be built inside the graph. Three places need the types as host values, and here is how each
gets a traced equivalent without touching `dpa.dpmodel`:

* per-center-type networks (se_e2_a descriptor and per-type fitting): every atom is evaluated
  once per type t as a one-atom system whose host type *is* t (`jax.vmap` over atoms), and the
  result of the atom's own type is selected; costs ntypes x the work of one evaluation;
* the type empty slots take (that of atom 0, spec §5.2): one `lax.switch` branch per type of
  atom 0, each with that type as host constant; only the taken branch runs. Descriptors whose
  graph does not depend on it (DPA-3; found at export by tracing, `_empty_type_matters`) get
  one branch;
* atom exclusion masks (`atom_exclude_types`, fitting `exclude_types`): with mixed types they
  are applied here as traced masks on a copy of the tree without them, with the arithmetic of
  `dpa.dpmodel.model.atomic_energy` (same values bit for bit).

Frames are processed one at a time (`lax.map`): each frame has its own types, its own periodic
image range and static per-frame shapes inside (nf = 1), so the code of `dpa.dpmodel` runs on
it unchanged. Energies, forces and virials come from one backward pass as in the jax backend.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from dpa.backends.jax.core import EDGE_AUTODIFF
from dpa.dpmodel.derivatives import model_outputs
from dpa.dpmodel.descriptor.common import Edges
from dpa.dpmodel.model import (
    ModelSettings,
    atomic_energy,
    edge_vectors,
    is_mixed_types,
    neighbor_spec,
    parse_model,
)
from dpa.errors import ConfigError, ModelFileError
from dpa.neighbor import build_neighbor_list_xp, fold_pair_exclusion
from dpa.tree import merge_variables, split_variables

# Periodic images searched in-graph: a cube of +-IMAGE_RANGE cell vectors around the cell, so a
# box is accepted when every face distance is at least rcut / IMAGE_RANGE. The graph holds one
# branch per range 1..IMAGE_RANGE and runs the smallest one that covers the frame's box.
IMAGE_RANGE = 2
# Relative margin on rcut when choosing the image range (as `dpa.neighbor` screens candidates).
SCREEN_REL = 1e-9
# Atoms closer than this (Å, images included) are duplicates: the graph refuses such input.
OVERLAP_DISTANCE = 1e-6


@dataclass(frozen=True)
class GraphSpec:
    """Everything static about one exported model: its settings, the tree without its arrays
    (`skeleton`, variables replaced by their index), the neighbor-list layout and the
    type-dependent masks."""

    settings: ModelSettings = field(repr=False)
    skeleton: Any = field(repr=False)
    type_map: tuple[str, ...]
    rcut: float
    sel: tuple[int, ...]
    mixed_types: bool
    compact: bool
    pair_exclude: tuple[tuple[int, int], ...]
    atom_exclude: tuple[int, ...]
    fitting_exclude: tuple[int, ...]
    empty_type_switch: bool
    image_range: int = IMAGE_RANGE

    @property
    def ntypes(self) -> int:
        return len(self.type_map)

    @property
    def nsel(self) -> int:
        return sum(self.sel)


def graph_spec(tree: dict, image_range: int = IMAGE_RANGE) -> tuple[GraphSpec, list[np.ndarray]]:
    """(spec, variables) of a model tree; ModelFileError when the model cannot be exported."""
    settings = parse_model(tree)
    fit = settings.fitting
    if fit.numb_aparam > 0:
        raise ModelFileError(
            "this model takes aparam (per-atom parameters); the SavedModel export has no aparam "
            "input yet, so it cannot be exported"
        )
    if fit.numb_fparam > 0 and fit.default_fparam is None:
        raise ModelFileError(
            "this model takes fparam and has no default_fparam; the SavedModel export has no "
            "fparam input yet, so it cannot be exported"
        )
    if int(image_range) < 1:
        raise ConfigError(f"image_range must be at least 1, got {image_range}")
    spec = neighbor_spec(tree["descriptor"])
    mixed = is_mixed_types(tree["descriptor"])
    if mixed and not fit.mixed_types:
        raise ModelFileError(
            "a per-type fitting net on a mixed-type descriptor cannot be exported yet"
        )
    skeleton, leaves = split_variables(tree)
    gspec = GraphSpec(
        settings=settings,
        skeleton=skeleton,
        type_map=tuple(tree["type_map"]),
        rcut=float(spec.rcut),
        sel=tuple(int(s) for s in spec.sel),
        mixed_types=bool(spec.mixed_types),
        compact=bool(spec.compact),
        pair_exclude=tuple(tuple(int(t) for t in p) for p in tree.get("pair_exclude_types") or []),
        atom_exclude=settings.atom_exclude_types,
        fitting_exclude=fit.exclude_types,
        empty_type_switch=mixed
        and len(tree["type_map"]) > 1
        and _empty_type_matters(settings, tree, spec),
        image_range=int(image_range),
    )
    return gspec, [np.asarray(a) for a in leaves]


def _empty_type_matters(settings: ModelSettings, tree: dict, spec: Any) -> bool:
    """Whether the host type of atom 0 (the type of empty slots) enters the model's graph: the
    jaxprs (and constants) traced with host types 0 and 1 on a small two-atom system differ."""
    nsel = sum(spec.sel)
    nlist = np.full((1, 2, nsel), -1)
    nlist[0, 0, 0], nlist[0, 1, 0] = 1, 0
    nlist, atype = jnp.asarray(nlist), jnp.zeros(2, dtype=jnp.int64)
    rij = jnp.ones((1, 2, nsel, 3), dtype=jnp.float64)

    def energy(host: np.ndarray, r: jax.Array) -> jax.Array:
        return atomic_energy(settings, tree, Edges(r, nlist, atype, host))

    a, b = (jax.make_jaxpr(partial(energy, np.array([t])))(rij) for t in (0, 1))
    if str(a.jaxpr) != str(b.jaxpr) or len(a.consts) != len(b.consts):
        return True
    pairs = zip(a.consts, b.consts, strict=True)
    return any(not np.array_equal(np.asarray(x), np.asarray(y)) for x, y in pairs)


# ---------------------------------------------------------------------------------------------
# neighbor list inside the graph
# ---------------------------------------------------------------------------------------------


def face_distances(box: jax.Array) -> jax.Array:
    """Distances between opposite faces of cells (..., 3, 3) (rows = cell vectors): V / |h_l x h_m|."""
    h0, h1, h2 = box[..., 0, :], box[..., 1, :], box[..., 2, :]
    c = jnp.stack([jnp.cross(h1, h2), jnp.cross(h2, h0), jnp.cross(h0, h1)], axis=-2)
    vol = jnp.abs(jnp.sum(h0 * c[..., 0, :], axis=-1))
    return vol[..., None] / jnp.linalg.norm(c, axis=-1)


def images_needed(box: jax.Array, rcut: float) -> jax.Array:
    """Image range per frame (int): 0 for an all-zero (non-periodic) box, else
    max_k ceil(rcut / d_k), the cube of shifts `dpa.neighbor.image_shifts` would search."""
    periodic = jnp.any(box != 0.0, axis=(-2, -1))
    d = face_distances(jnp.where(periodic[..., None, None], box, jnp.eye(3, dtype=box.dtype)))
    need = jnp.max(jnp.ceil(rcut * (1.0 + SCREEN_REL) / d), axis=-1)
    need = jnp.where(jnp.isfinite(need), jnp.minimum(need, 1e6), 1e6)  # singular box: "huge"
    return jnp.where(periodic, jnp.maximum(need, 1.0), 0.0).astype(jnp.int64)


def _cube(n: int) -> np.ndarray:
    """Integer shifts [-n, n]^3 in lexicographic order (the order `image_shifts` uses)."""
    axis = np.arange(-n, n + 1, dtype=np.int64)
    return np.stack(np.meshgrid(axis, axis, axis, indexing="ij"), axis=-1).reshape(-1, 3)


def _build_frame(
    spec: GraphSpec, coord: jax.Array, atype: jax.Array, box: jax.Array, n: int
) -> tuple[jax.Array, jax.Array]:
    """(nlist (1, nat, nsel), shift (1, nat, nsel, 3)) of one frame, searching images [-n, n]^3.

    The brute-force builder needs at least nsel candidates per atom, which a symbolic atom count
    cannot promise; virtual atoms (type -1, never anybody's neighbor) pad the candidates."""
    images = _cube(n)
    pad = -(-spec.nsel // images.shape[0])
    nat = coord.shape[0]
    x = jnp.concatenate([coord, jnp.zeros((pad, 3), coord.dtype)], axis=0)
    t = jnp.concatenate([atype, jnp.full((pad,), -1, atype.dtype)], axis=0)
    nlist, shift = build_neighbor_list_xp(
        x[None], t[None], box[None] if n else None, spec.rcut, spec.sel, spec.mixed_types, images
    )
    return nlist[:, :nat].astype(jnp.int64), shift[:, :nat].astype(jnp.int64)


def build_nlist_frame(
    spec: GraphSpec, coord: jax.Array, atype: jax.Array, box: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """The neighbor list of one frame, with the smallest image range that covers its box.

    Boxes needing more than `spec.image_range` are clamped here; the caller refuses them."""
    branch = jnp.clip(images_needed(box, spec.rcut), 0, spec.image_range)
    branches = [partial(_build_frame, spec, n=n) for n in range(spec.image_range + 1)]
    return jax.lax.switch(branch, branches, coord, atype, box)


# ---------------------------------------------------------------------------------------------
# atomic energies with traced types
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _BlockEdges(Edges):
    """A one-atom graph of a per-type-split list (se_e2_a): slot k of block tau holds a type-tau
    neighbor, so neighbor types are known without the other atoms' types."""

    block_types: Any = None

    def neighbor_types(self, empty_type: int | None = None) -> jax.Array:
        fill = int(self.atype_host[0] if empty_type is None else empty_type)
        return jnp.where(self.mask, jnp.asarray(self.block_types), fill)


def _per_type_energies(
    spec: GraphSpec, model: dict, rij: jax.Array, nlist: jax.Array, atype: jax.Array
) -> jax.Array:
    """E_i (1, nat) of a per-type model: each atom evaluated alone as each type, own type kept."""
    block = np.repeat(np.arange(len(spec.sel)), spec.sel)
    rows, real = rij[0], nlist[0] >= 0

    def one(t: int, r: jax.Array, m: jax.Array) -> jax.Array:
        edges = _BlockEdges(
            r[None, None],
            jnp.where(m, 0, -1)[None, None],
            jnp.full((1,), t, dtype=atype.dtype),
            np.array([t]),
            block_types=block[None, None, :],
        )
        return atomic_energy(spec.settings, model, edges)[0, 0]

    energy = None
    for t in range(spec.ntypes):
        e_t = jax.vmap(partial(one, t))(rows, real)
        energy = e_t if energy is None else jnp.where(atype == t, e_t, energy)
    return energy[None]


def _excluded(types: tuple[int, ...], atype: jax.Array) -> jax.Array:
    """(nat,) bool: atom's type is in `types`."""
    hit = jnp.zeros(atype.shape, dtype=bool)
    for t in types:
        hit = hit | (atype == t)
    return hit


def _mixed_energies(
    spec: GraphSpec, model: dict, rij: jax.Array, nlist: jax.Array, atype: jax.Array
) -> jax.Array:
    """E_i (1, nat) of a mixed-type model; empty slots take the type of atom 0 (a switch)."""
    settings = spec.settings
    masks = bool(spec.atom_exclude or spec.fitting_exclude)
    if masks:  # atomic_energy without exclusions and out_bias, masks applied here
        out_bias = model["@variables"]["out_bias"]
        variables = {**model["@variables"], "out_bias": jnp.zeros_like(out_bias)}
        model = {**model, "@variables": variables}
        fit = replace(settings.fitting, exclude_types=())
        settings = replace(settings, atom_exclude_types=(), fitting=fit)

    def branch(t: int, r: jax.Array) -> jax.Array:
        energy = atomic_energy(settings, model, Edges(r, nlist, atype, np.array([t])))
        if masks:
            energy = jnp.where(_excluded(spec.fitting_exclude, atype)[None], 0.0, energy)
            energy = energy + jnp.take(out_bias[0, :, 0].astype(jnp.float64), atype)[None]
            energy = jnp.where(_excluded(spec.atom_exclude, atype)[None], 0.0, energy)
        return energy

    if not spec.empty_type_switch:
        return branch(0, rij)
    first = jnp.clip(atype[0], 0, spec.ntypes - 1)
    return jax.lax.switch(first, [partial(branch, t) for t in range(spec.ntypes)], rij)


def frame_outputs(
    spec: GraphSpec,
    leaves: list,
    coord: jax.Array,
    atype: jax.Array,
    box: jax.Array,
    nlist: jax.Array,
    shift: jax.Array,
) -> dict[str, jax.Array]:
    """energy (), force (nat, 3), virial (3, 3), atom_energy (nat,), min_distance () of one
    frame: coord (nat, 3), atype (nat,), box (3, 3) (zeros: no periodicity), nlist (nat, nsel),
    shift (nat, nsel, 3) as `dpa.neighbor.build_neighbor_list` lays them out."""
    model = merge_variables(spec.skeleton, leaves)
    nlist, shift = fold_pair_exclusion(
        nlist[None], shift[None], atype, spec.pair_exclude, spec.ntypes, spec.compact
    )
    rij = edge_vectors(coord[None], box[None], nlist, shift)
    energies = _mixed_energies if spec.mixed_types else _per_type_energies
    out = model_outputs(EDGE_AUTODIFF, lambda r: energies(spec, model, r, nlist, atype), rij, nlist)
    dist = jnp.where(nlist >= 0, jnp.sqrt(jnp.sum(rij * rij, axis=-1)), jnp.inf)
    return {
        "energy": out["energy"][0],
        "force": out["force"][0],
        "virial": out["virial"][0],
        "atom_energy": out["atom_energy"][0],
        "min_distance": jnp.min(dist, initial=jnp.inf),
    }


def evaluate_nlist(
    spec: GraphSpec,
    leaves: list,
    coord: jax.Array,
    atype: jax.Array,
    box: jax.Array,
    nlist: jax.Array,
    shift: jax.Array,
) -> dict[str, jax.Array]:
    """Batched `frame_outputs` (frames one after another): coord (nf, nat, 3) f64, atype
    (nf, nat) int, box (nf, 3, 3), nlist (nf, nat, nsel), shift (nf, nat, nsel, 3)."""

    def one(args):
        return frame_outputs(spec, leaves, *args)

    args = (
        coord.astype(jnp.float64),
        atype.astype(jnp.int64),
        box.astype(jnp.float64),
        nlist.astype(jnp.int64),
        shift.astype(jnp.int64),
    )
    return jax.lax.map(one, args)


def build_nlist(
    spec: GraphSpec, coord: jax.Array, atype: jax.Array, box: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """Neighbor lists (nf, nat, nsel) and shifts (nf, nat, nsel, 3) built frame by frame, each
    with the image range its box needs (see `build_nlist_frame`); int64."""

    def one(args):
        nlist, shift = build_nlist_frame(spec, *args)
        return nlist[0], shift[0]

    return jax.lax.map(
        one, (coord.astype(jnp.float64), atype.astype(jnp.int64), box.astype(jnp.float64))
    )


__all__ = [
    "IMAGE_RANGE",
    "GraphSpec",
    "build_nlist",
    "build_nlist_frame",
    "evaluate_nlist",
    "graph_spec",
    "images_needed",
]
