"""JAX-MD: a dpa model as an energy function for `jax_md.simulate` (jit-compiled, differentiable).

    import jax
    from jax_md import partition, simulate, space
    import dpa.jax_md as djm

    box = cell.T          # jax_md's box: cell vectors as columns (a scalar or (3,) sides also do)
    displacement, shift = space.periodic_general(box, fractional_coordinates=False)
    energy = djm.energy_fn("model.dp", atype, box)           # E(R, neighbor=..., box=...) in eV
    neighbor_fn = djm.neighbor_list(energy, displacement, box, skin=0.5)   # jax_md dense list
    nbrs = neighbor_fn.allocate(positions)
    init, apply = simulate.nve(energy, shift, dt=0.5 * djm.FS)
    state = init(jax.random.PRNGKey(0), positions, kT=300 * djm.KB,
                 mass=djm.atomic_masses(energy.type_map, atype), neighbor=nbrs)

    advance = jax.jit(lambda state, nbrs: djm.run_steps(apply, state, nbrs, 100))
    state, nbrs = advance(state, nbrs)   # 100 NVE steps, the neighbor list updated each step

Rebuild with `neighbor_fn.allocate` when `nbrs.did_buffer_overflow` (jax_md's usual loop).

Units are the model's: Å, eV, atomic mass units, so one time unit is Å·sqrt(amu/eV) ≈ 10.18 fs
(`FS` is one femtosecond in it) and temperatures enter as kT in eV (`KB`).

`energy_fn(model, atype, box)` returns an `EnergyFunction`, called as `energy(R, neighbor=None,
box=None, fparam=None, aparam=None)`:

* `R` (nat, 3): Cartesian positions, or fractional ones with `fractional_coordinates=True`
  (as in `space.periodic_general(box, fractional_coordinates=True)`); wrapped or not.
* `neighbor`: a jax_md `NeighborList` in `partition.Dense` format (or its `idx` array, (nat, K)
  candidate indices padded with nat) built with a cutoff of at least the model's `rcut`
  (`neighbor_list` does that). Candidates are taken at the minimum image, which is exact when
  every face distance of the cell is at least 2·rcut (checked; jax_md's lists make the same
  assumption). `neighbor=None` builds the list inside the graph from all atoms and every
  periodic image within rcut of the construction-time box: exact for any cell, small or
  skewed, but O(nat²): for a few hundred atoms, or without jax_md installed.
* `box`: overrides the construction-time box (NPT, `jax_md.quantity.stress`); same forms.

Inside, the candidates are reduced to the model's own neighbor list (within rcut, sorted by
distance, truncated to `sel`, split per type for se_e2_a, pair exclusions applied) so the
energy equals `dpa.load_model(model).evaluate(...)` to round-off; forces are `-jax.grad` of it,
as jax_md takes them. `atype` is fixed per function (the descriptor dispatches on it at trace
time). Importing `dpa` does not import this module, jax or jax_md; only `neighbor_list` needs
jax_md.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from typing import Any

import numpy as np

from ._version import pip_install
from .backends.jax import core as jax_core  # enables float64 and the fused kernels
from .dpmodel.descriptor.common import Edges
from .dpmodel.model import atomic_energy, edge_vectors, parse_model
from .errors import ConfigError, DataError
from .model import Model
from .neighbor import (
    _face_distances,
    _xp_split_types,
    build_neighbor_list_xp,
    fold_pair_exclusion,
    image_shifts,
)
from .potential import Potential
from .tree import merge_variables, split_variables

jax = jax_core.jax
jnp = jax_core.jnp

#: One femtosecond in the time unit of Å, eV and amu (Å·sqrt(amu/eV) = 10.1805 fs).
FS = 1e-15 / (1e-10 * math.sqrt(1.66053906660e-27 / 1.602176634e-19))
#: Boltzmann constant in eV/K (kT = KB * temperature).
KB = 8.617333262e-5


class EnergyFunction:
    """E(R, neighbor=None, box=None, fparam=None, aparam=None) -> energy (eV) of one system.

    Built by `energy_fn`; attributes `model`, `type_map`, `rcut`, `atype`. Differentiable in R
    and box, jit-compatible, one compilation per kind of call (with/without a neighbor list).
    """

    def __init__(
        self,
        model: Model,
        atype: np.ndarray,
        box: Any,
        fractional_coordinates: bool,
    ) -> None:
        self.model = model
        self.atype = atype
        self.fractional_coordinates = fractional_coordinates
        spec = model.neighbor_spec
        self.rcut = spec.rcut
        self._spec = spec
        self._settings = parse_model(model.tree)
        skeleton, leaves = split_variables(model.tree)
        self._skeleton = skeleton
        self._leaves = [jnp.asarray(np.asarray(a)) for a in leaves]
        cell = None if box is None else np.asarray(_cell_rows(np, box), dtype=np.float64)
        self._box = None if box is None else jnp.asarray(np.asarray(box, dtype=np.float64))
        self._images = None if cell is None else image_shifts(cell, spec.rcut)
        self._face = math.inf if cell is None else float(_face_distances(cell).min())
        self._pair_exclude = model.tree.get("pair_exclude_types") or []
        self._jitted = jax.jit(self._energy, static_argnames=("candidates",))

    @property
    def type_map(self) -> list[str]:
        return self.model.type_map

    def __call__(
        self,
        R: Any,
        neighbor: Any = None,
        box: Any = None,
        fparam: Any = None,
        aparam: Any = None,
        **unused: Any,
    ) -> Any:
        """The energy (a float64 scalar); `unused` keywords (jax_md passes some) are ignored."""
        box = self._box if box is None else box
        idx = None
        if neighbor is not None:
            idx = _candidate_indices(neighbor)
            if box is not None and self._face < 2.0 * self.rcut:
                raise ConfigError(
                    f"the cell's smallest face distance {self._face:.3f} Å is below 2·rcut = "
                    f"{2 * self.rcut:.3f} Å: a jax_md neighbor list (minimum image) misses "
                    "periodic images; call the energy without neighbor= (in-graph list with "
                    "every image) or use a larger cell"
                )
        return self._jitted(
            self._leaves, R, idx, box, fparam, aparam, candidates=neighbor is not None
        )

    def _energy(self, leaves, R, idx, box, fparam, aparam, candidates: bool):
        """Traced body: positions -> model neighbor list -> E (see the module docstring)."""
        cell = None if box is None else _cell_rows(jnp, jnp.asarray(box, jnp.float64))
        R = jnp.asarray(R, jnp.float64)
        coord = R @ cell if self.fractional_coordinates and cell is not None else R
        if candidates:
            nlist, shift = self._from_candidates(coord, cell, idx)
        else:
            nlist, shift = build_neighbor_list_xp(
                jax.lax.stop_gradient(coord[None]),
                self.atype,
                None if cell is None else jax.lax.stop_gradient(cell[None]),
                self.rcut,
                self._spec.sel,
                self._spec.mixed_types,
                self._images,
            )
        nlist, shift = self._exclude(nlist, shift)
        coord, cell = coord[None], None if cell is None else cell[None]
        rij = edge_vectors(coord, cell, nlist, shift)
        model = merge_variables(self._skeleton, leaves)
        atype = jnp.asarray(self.atype)
        edges = Edges(rij, nlist, atype, self.atype)
        fp = None if fparam is None else jnp.reshape(jnp.asarray(fparam, jnp.float64), (1, -1))
        ap = None if aparam is None else jnp.asarray(aparam, jnp.float64)[None]
        return jnp.sum(atomic_energy(self._settings, model, edges, fp, ap))

    def _from_candidates(self, coord, cell, idx):
        """Model list (1, nat, Nsel) and shifts from candidate indices at the minimum image."""
        coord = jax.lax.stop_gradient(coord)
        nat = coord.shape[0]
        idx = jnp.asarray(idx)
        real = (idx >= 0) & (idx < nat)
        j = jnp.where(real, idx, 0)
        d = coord[j] - coord[:, None, :]
        shift = jnp.zeros_like(d)
        if cell is not None:
            cell = jax.lax.stop_gradient(cell)
            shift = -jnp.round(d @ jnp.linalg.inv(cell))
            d = d + shift @ cell
        d2 = jnp.sum(d * d, axis=-1)
        self_pair = (j == jnp.arange(nat)[:, None]) & jnp.all(shift == 0, axis=-1)
        key = jnp.where(real & ~self_pair & (d2 <= self.rcut**2), d2, jnp.inf)
        nsel = sum(self._spec.sel)
        if key.shape[1] < nsel:  # fewer candidates than slots: pad with empty ones
            extra = nsel - key.shape[1]
            key = jnp.pad(key, ((0, 0), (0, extra)), constant_values=jnp.inf)
            j = jnp.pad(j, ((0, 0), (0, extra)))
            shift = jnp.pad(shift, ((0, 0), (0, extra), (0, 0)))
        order = jnp.argsort(key, axis=-1, stable=True)[:, :nsel]
        found = jnp.isfinite(jnp.take_along_axis(key, order, axis=-1))
        nlist = jnp.where(found, jnp.take_along_axis(j, order, axis=-1), -1)[None]
        shift = jnp.take_along_axis(shift, order[..., None], axis=-2).astype(jnp.int64)
        shift = jnp.where(found[..., None], shift, 0)[None]
        if not self._spec.mixed_types:
            types = jnp.asarray(self.atype)[None]
            nlist, shift = _xp_split_types(jnp, nlist, shift, types, tuple(self._spec.sel))
        return nlist, shift

    def _exclude(self, nlist, shift):
        """Model-level pair exclusion (and, for DPA-2/3, holes moved last), as `Potential`."""
        ntypes = len(self.model.type_map)
        pairs, compact = self._pair_exclude, self._spec.compact
        return fold_pair_exclusion(nlist, shift, jnp.asarray(self.atype), pairs, ntypes, compact)


def energy_fn(
    model: str | os.PathLike | Model | Potential,
    atype: Any,
    box: Any = None,
    *,
    fractional_coordinates: bool = False,
    precision: str | None = None,
) -> EnergyFunction:
    """The model as a jax_md energy function for atom types `atype` (nat,) (indices into the
    model's type_map) in `box` (jax_md's form: scalar side, (3,) sides, or (3, 3) with the cell
    vectors as columns; None for a cluster in free space). See the module docstring.

    precision: None (as trained), "float64" or "float32" (`dpa.Model.with_precision`).
    """
    if isinstance(model, Potential):
        model = model.model
    elif not isinstance(model, Model):
        from .io import load

        model = load(model)
    if precision is not None:
        model = model.with_precision(precision)
    types = np.asarray(atype)
    ntypes = len(model.type_map)
    if types.ndim != 1 or not np.issubdtype(types.dtype, np.integer):
        raise DataError(f"atype must be a (nat,) integer array; got {types.dtype} {types.shape}")
    if types.size and (types.min() < 0 or types.max() >= ntypes):
        raise DataError(
            f"atype holds types outside 0..{ntypes - 1} (the model's type_map {model.type_map})"
        )
    return EnergyFunction(model, types.astype(np.int64), box, fractional_coordinates)


def neighbor_list(
    energy: EnergyFunction,
    displacement_fn: Callable,
    box: Any,
    skin: float = 0.5,
    **kwargs: Any,
) -> Any:
    """jax_md's dense neighbor-list functions for `energy`: cutoff rcut, skin `skin` Å
    (rebuilt when an atom moved more than skin/2). `kwargs` go to `partition.neighbor_list`
    (capacity_multiplier, fractional_coordinates, disable_cell_list, ...)."""
    try:
        from jax_md import partition
    except ImportError as err:
        raise ConfigError(
            f"jax_md is not installed ({pip_install('md')}); without it call the energy "
            "function with neighbor=None"
        ) from err
    kwargs.setdefault("fractional_coordinates", energy.fractional_coordinates)
    return partition.neighbor_list(
        displacement_fn,
        box,
        energy.rcut,
        dr_threshold=skin,
        format=partition.Dense,
        **kwargs,
    )


def run_steps(apply_fn: Callable, state: Any, neighbor: Any, steps: int) -> tuple[Any, Any]:
    """`steps` steps of a jax_md integrator's `apply_fn`, the neighbor list updated after each,
    as one `lax.fori_loop`: (state, neighbor). Call it inside `jax.jit` with `steps` static,
    and check `neighbor.did_buffer_overflow` afterwards."""

    def body(_: int, carry: tuple[Any, Any]) -> tuple[Any, Any]:
        state, neighbor = carry
        state = apply_fn(state, neighbor=neighbor)
        return state, neighbor.update(state.position)

    return jax.lax.fori_loop(0, steps, body, (state, neighbor))


def atomic_masses(type_map: list[str], atype: Any) -> np.ndarray:
    """Standard atomic masses (amu) of atoms with types `atype` in `type_map` (from ASE)."""
    try:
        from ase.data import atomic_masses as masses
        from ase.data import atomic_numbers
    except ImportError as err:
        raise ConfigError(
            f"atomic_masses needs ASE ({pip_install('ase')}); pass masses yourself"
        ) from err
    unknown = sorted({name for name in type_map if name not in atomic_numbers})
    if unknown:
        raise DataError(
            f"type_map entries {unknown} are not chemical elements; pass masses yourself"
        )
    table = np.array([masses[atomic_numbers[name]] for name in type_map])
    return table[np.asarray(atype)]


def _candidate_indices(neighbor: Any) -> Any:
    """The (nat, K) index array of a dense jax_md NeighborList (or the array itself)."""
    fmt = getattr(neighbor, "format", None)
    if fmt is not None and getattr(fmt, "name", str(fmt)) != "Dense":
        raise ConfigError(
            f"the neighbor list has format {fmt}; build it with format=partition.Dense "
            "(dpa.jax_md.neighbor_list does)"
        )
    idx = getattr(neighbor, "idx", neighbor)
    if getattr(idx, "ndim", 2) != 2:
        raise ConfigError(f"neighbor indices must be (nat, K); got shape {idx.shape}")
    return idx


def _cell_rows(xp: Any, box: Any) -> Any:
    """Cell vectors as rows (3, 3) from jax_md's box: scalar, (3,) sides or (3, 3) columns."""
    b = xp.asarray(box)
    if b.ndim == 0:
        return b * xp.eye(3)
    if b.shape == (3,):
        return xp.diag(b)
    if b.shape == (3, 3):
        return b.T
    raise DataError(f"box must be a scalar, (3,) or (3, 3) (jax_md's forms); got {b.shape}")


__all__ = [
    "FS",
    "KB",
    "EnergyFunction",
    "atomic_masses",
    "energy_fn",
    "neighbor_list",
    "run_steps",
]
