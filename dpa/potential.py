"""`Potential`: a loaded model on one backend; validates input, builds the neighbor list, evaluates."""

from __future__ import annotations

from typing import Any

import numpy as np

from .backends.base import Backend
from .dpmodel.batch import Batch
from .dpmodel.descriptor.common import TYPE_BLOCKS
from .dpmodel.descriptor.protocol import NeighborSpec
from .errors import BackendError, DataError, EvaluationError
from .model import Model
from .neighbor import VerletPairs, build_neighbor_list, fold_pair_exclusion

# neighbor slots per backend call: bounds memory (~1 GB for DPA-1 water) and keeps the working
# set cache-friendly (two 192-atom water frames per call run 2x slower per frame than one on CPU)
EDGE_BUDGET = 1 << 15
OVERLAP_DISTANCE = 1e-6  # Å: closer atoms are duplicates, not chemistry


def _round_up(n: int, limit: int, step: int) -> int:
    """n rounded up to a multiple of `step`, at least 1 and at most `limit`."""
    return max(1, min(limit, -(-n // step) * step))


def slot_plan(
    spec: NeighborSpec,
    coord: np.ndarray,
    box: np.ndarray | None,
    nlist: np.ndarray,
    shift: np.ndarray,
    rounding: int = 1,
    floor: dict | None = None,
) -> tuple[np.ndarray, np.ndarray, tuple[tuple[Any, Any], ...]]:
    """The neighbor list as the backend gets it: trailing all-empty slots cut off where the
    descriptor allows it (per type block for se_e2_a), plus host-side "slots within r" hints
    (see NeighborSpec and `Edges.slot_counts`). Widths and hints are rounded up to multiples of
    `rounding` (`Backend.slot_rounding`); with a `floor` dict they also never shrink below what
    earlier calls with the same dict got, so a compiling backend sees few shapes (MD)."""

    def widen(key: Any, n: int, limit: int) -> int:
        n = _round_up(n, limit, rounding)
        if floor is not None:
            n = floor[key] = max(n, floor.get(key, 0))
        return n

    hints: list[tuple[Any, Any]] = []
    if spec.trimmable:
        # past the last real slot of every row (holes of model-level pair exclusion stay put)
        blocks = [(0, nlist.shape[-1])] if spec.mixed_types else _type_blocks(spec.sel)
        widths = [
            widen(
                ("width", t),
                _last_real_slot(nlist[..., lo:hi]) + int(spec.keep_empty_slot),
                hi - lo,
            )
            for t, (lo, hi) in enumerate(blocks)
        ]
        cols = np.concatenate(
            [np.arange(lo, lo + w) for (lo, _), w in zip(blocks, widths, strict=True)]
        )
        nlist, shift = nlist[..., cols], shift[..., cols, :]
        if not spec.mixed_types:
            hints.append((TYPE_BLOCKS, tuple(widths)))
    if spec.count_radii:
        real = nlist >= 0
        frames = np.arange(coord.shape[0])[:, None, None]
        rij = coord[frames, np.where(real, nlist, 0)] - coord[:, :, None, :]
        if box is not None:
            rij = rij + np.einsum("fasd,fdk->fask", shift.astype(float), box)
        dist = np.where(real, np.linalg.norm(rij, axis=-1), np.inf)
        for r in spec.count_radii:
            n = int((dist <= r).sum(axis=-1).max(initial=0))
            hints.append((r, widen(("radius", r), n, nlist.shape[-1])))
    return nlist, shift, tuple(hints)


def _type_blocks(sel: list[int]) -> list[tuple[int, int]]:
    """(start, end) columns of the per-type blocks of a list split by type."""
    ends = np.cumsum(sel)
    return [(int(e - n), int(e)) for e, n in zip(ends, sel, strict=True)]


def _last_real_slot(nlist: np.ndarray) -> int:
    """One past the last real (>= 0) slot over all rows; 0 when every slot is empty."""
    real = np.any(nlist >= 0, axis=tuple(range(nlist.ndim - 1)))
    return int(real.size - np.argmax(real[::-1])) if real.any() else 0


def _as_coord(coord: Any) -> np.ndarray:
    """(nf, nat, 3) float64 from (nf, nat, 3) or (nat, 3)."""
    try:
        x = np.asarray(coord, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise DataError(f"coord must be an array of real numbers ({err})") from None
    if x.ndim == 2 and x.shape[1] == 3:
        x = x[None]
    if x.ndim != 3 or x.shape[2] != 3:
        raise DataError(f"coord must have shape (nframes, natoms, 3) or (natoms, 3); got {x.shape}")
    if x.shape[0] == 0 or x.shape[1] == 0:
        raise DataError(f"coord holds no frames or no atoms (shape {x.shape})")
    bad = np.argwhere(~np.isfinite(x))
    if bad.size:
        f, i, _ = bad[0]
        raise DataError(
            f"coord of atom {i} in frame {f} is not finite ({x[f, i].tolist()}); "
            "check the input structure"
        )
    return x


def _as_atype(atype: Any, nat: int, type_map: list[str]) -> np.ndarray:
    """(nat,) int64 types, each inside the model's type_map."""
    t = np.asarray(atype)
    if t.ndim == 2 and t.shape[0] >= 1 and np.all(t == t[:1]):
        t = t[0]
    if t.ndim != 1 or t.shape[0] != nat:
        raise DataError(
            f"atype must have shape ({nat},) to match coord's {nat} atoms; got {t.shape}"
        )
    if not np.issubdtype(t.dtype, np.integer):
        raise DataError(f"atype must hold integer type indices into {type_map}; got {t.dtype}")
    bad = np.nonzero((t < 0) | (t >= len(type_map)))[0]
    if bad.size:
        i = int(bad[0])
        raise DataError(
            f"atom {i} has type {int(t[i])}, outside the model's type_map {type_map} "
            f"(valid: 0..{len(type_map) - 1}); remap your types to this model's type_map"
        )
    return t.astype(np.int64)


def _as_box(box: Any, nf: int) -> np.ndarray | None:
    """(nf, 3, 3) float64 cell vectors as rows, or None for a non-periodic system."""
    if box is None:
        return None
    b = np.asarray(box, dtype=np.float64)
    if b.shape in ((3, 3), (9,)):
        b = np.broadcast_to(b.reshape(3, 3), (nf, 3, 3))
    elif b.shape == (nf, 9):
        b = b.reshape(nf, 3, 3)
    if b.shape != (nf, 3, 3):
        raise DataError(f"box must have shape ({nf}, 3, 3), (3, 3) or None; got {b.shape}")
    if not np.all(np.isfinite(b)):
        raise DataError("box holds NaN or inf values")
    return np.ascontiguousarray(b)


def _as_param(value: Any, shape: tuple[int, ...], name: str) -> np.ndarray | None:
    """fparam (nf, n) or aparam (nf, nat, n) as float64, broadcasting a single frame's values."""
    if value is None:
        return None
    a = np.asarray(value, dtype=np.float64)
    try:
        a = np.broadcast_to(a.reshape(shape[1:]) if a.size == np.prod(shape[1:]) else a, shape)
    except ValueError:
        raise DataError(f"{name} must have shape {shape}; got {a.shape}") from None
    if not np.all(np.isfinite(a)):
        raise DataError(f"{name} holds NaN or inf values")
    return np.ascontiguousarray(a)


# outputs checked for finiteness, per-atom ones first: they name the atom
CHECKED_OUTPUTS = ("atom_energy", "energy", "force", "atom_virial", "virial")
PER_ATOM_OUTPUTS = ("atom_energy", "force", "atom_virial")


def check_outputs(results: dict[str, np.ndarray], model: Model) -> None:
    """EvaluationError naming the key, frame and atom of the first non-finite output (the
    inputs were checked finite, so the model is to blame)."""
    for key in CHECKED_OUTPUTS:
        values = results.get(key)
        if values is None:
            continue
        bad = ~np.isfinite(values)
        if not bad.any():
            continue
        index = np.argwhere(bad)[0]
        frame, atom = int(index[0]), int(index[1]) if key in PER_ATOM_OUTPUTS else None
        name = f"the {model.descriptor_type} model ({model.num_params:,} parameters)"
        raise EvaluationError.non_finite(key, frame, atom, name)


class Results(dict):
    """Evaluation outputs; asking a backend without autograd for derivatives is a clear error."""

    backend: str = ""

    def __missing__(self, key: str) -> np.ndarray:
        if key in ("force", "virial", "atom_virial") and self.backend == "numpy":
            raise BackendError(
                f"the numpy backend computes energies only, no {key}; load the model with "
                "backend='torch' or backend='jax' (CLI: --backend torch|jax) for forces and virials"
            )
        raise KeyError(key)


def model_neighbor_list(
    model: Model,
    coord: np.ndarray,
    atype: np.ndarray,
    box: np.ndarray | None,
    pair_cache: VerletPairs | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(nlist, shift) the model consumes, with model-level pair exclusions folded in (and, for
    DPA-2/DPA-3, compacted so the list stays distance-sorted, spec §2.3-6). A `pair_cache`
    speeds up single frames along a trajectory (`dpa.neighbor.VerletPairs`)."""
    spec = model.neighbor_spec
    nl = build_neighbor_list(
        coord, atype, box, spec.rcut, spec.sel, spec.mixed_types, pair_cache=pair_cache
    )
    _check_no_overlap(coord, box, nl.nlist, nl.shift, spec.sel, spec.mixed_types)
    pairs = model.tree.get("pair_exclude_types") or []
    return fold_pair_exclusion(nl.nlist, nl.shift, atype, pairs, len(model.type_map), spec.compact)


class Potential:
    """A model ready to evaluate on one backend (numpy, torch or jax)."""

    def __init__(self, model: Model, backend: Backend) -> None:
        self.model = model
        self._backend = backend
        self._prepared = backend.prepare(model.tree)
        self._slot_floor: dict = {}  # list widths only grow: few compiled shapes (slot_plan)
        self._pairs = VerletPairs()  # MD: one frame after another, pair search reused

    @property
    def type_map(self) -> list[str]:
        return self.model.type_map

    @property
    def rcut(self) -> float:
        return self.model.rcut

    @property
    def backend(self) -> str:
        return self._backend.name

    @property
    def device(self) -> str:
        return self._backend.device

    @property
    def precision(self) -> str:
        """The precision the model's descriptor computes in ("float64" or "float32")."""
        name = self.model.precision
        return {"default": "float64", "double": "float64", "single": "float32"}.get(name, name)

    def with_precision(self, precision: str | None) -> Potential:
        """This potential on the same backend, computing in `precision` ("float64" or
        "float32", see `Model.with_precision`); itself when `precision` is None."""
        if precision is None:
            return self
        return Potential(self.model.with_precision(precision), self._backend)

    @property
    def can_compute_forces(self) -> bool:
        return self._backend.can_compute_forces

    @property
    def dim_fparam(self) -> int:
        """Frame parameters the model takes per frame (its fitting's numb_fparam)."""
        return int(self.model.tree["fitting"].get("numb_fparam", 0))

    @property
    def dim_aparam(self) -> int:
        """Atomic parameters the model takes per atom (its fitting's numb_aparam)."""
        return int(self.model.tree["fitting"].get("numb_aparam", 0))

    @property
    def has_default_fparam(self) -> bool:
        """Whether the model falls back to a default_fparam when none is given."""
        return self.model.tree["fitting"].get("default_fparam") is not None

    def neighbor_list(
        self, coord: np.ndarray, atype: np.ndarray, box: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray]:
        """(nlist, shift) for validated input (see `model_neighbor_list`)."""
        return model_neighbor_list(self.model, coord, atype, box, self._pairs)

    def evaluate(
        self,
        coord: Any,
        atype: Any,
        box: Any = None,
        atomic: bool = False,
        fparam: Any = None,
        aparam: Any = None,
    ) -> Results:
        """Energy (nf,), force (nf, nat, 3), virial (nf, 3, 3), atom_energy (nf, nat), and
        atom_virial (nf, nat, 3, 3) when `atomic`; float64 NumPy. The numpy backend gives
        energy and atom_energy only (reading its "force" raises BackendError).

        Frames are evaluated in chunks of about EDGE_BUDGET neighbor slots to bound memory."""
        x = _as_coord(coord)
        nf, nat = x.shape[:2]
        types = _as_atype(atype, nat, self.type_map)
        cell = _as_box(box, nf)
        fp, ap = self._frame_params(fparam, aparam, nf, nat)
        nlist, shift = self.neighbor_list(x, types, cell)
        step = max(1, EDGE_BUDGET // max(1, nat * nlist.shape[2]))
        chunks = []
        for lo in range(0, nf, step):
            part = slice(lo, min(nf, lo + step))
            x_part, box_part = x[part], None if cell is None else cell[part]
            nl_part, shift_part = nlist[part], shift[part]
            counts: tuple[tuple[Any, Any], ...] = ()  # no hints for a full-width list
            if self._backend.takes_trimmed_lists:
                nl_part, shift_part, counts = slot_plan(
                    self.model.neighbor_spec,
                    x_part,
                    box_part,
                    nl_part,
                    shift_part,
                    self._backend.slot_rounding,
                    self._slot_floor,
                )
            batch = Batch(
                coord=x_part,
                atype=types,
                nlist=nl_part,
                shift=shift_part,
                box=box_part,
                fparam=None if fp is None else fp[part],
                aparam=None if ap is None else ap[part],
                slot_counts=counts,
            )
            chunks.append(self._backend.evaluate(self._prepared, batch, atomic))
        keys = ["energy", "force", "virial", "atom_energy"] + (["atom_virial"] if atomic else [])
        results = Results(
            {
                k: np.concatenate([np.asarray(c[k], dtype=np.float64) for c in chunks])
                for k in keys
                if k in chunks[0]
            }
        )
        results.backend = self.backend
        check_outputs(results, self.model)
        return results

    def _frame_params(
        self, fparam: Any, aparam: Any, nf: int, nat: int
    ) -> tuple[np.ndarray | None, np.ndarray | None]:
        """Validated fparam (nf, n) and aparam (nf, nat, n), or None where the model takes none."""
        fit = self.model.tree["fitting"]
        nfp, nap = fit.get("numb_fparam", 0), fit.get("numb_aparam", 0)
        for name, value, n in (("fparam", fparam, nfp), ("aparam", aparam, nap)):
            if value is not None and not n:
                raise DataError(f"{name} was given but this model takes none (numb_{name} = 0)")
        fp = _as_param(fparam, (nf, nfp), "fparam") if nfp else None
        ap = _as_param(aparam, (nf, nat, nap), "aparam") if nap else None
        if nfp and fp is None and fit.get("default_fparam") is None:
            raise DataError(
                f"this model needs fparam ({nfp} values per frame) and has no default_fparam; "
                "pass fparam="
            )
        if nap and ap is None:
            raise DataError(f"this model needs aparam ({nap} values per atom); pass aparam=")
        return fp, ap


def _check_no_overlap(
    coord: np.ndarray,
    box: np.ndarray | None,
    nlist: np.ndarray,
    shift: np.ndarray,
    sel: list[int],
    mixed_types: bool,
) -> None:
    """DataError when two atoms (or an atom and an image) sit on top of each other.

    The nearest neighbor is the first slot of each list (of each type block for se_e2_a)."""
    firsts = [0] if mixed_types else list(np.cumsum([0, *sel[:-1]]))
    j = nlist[:, :, firsts]
    real = j >= 0
    if not real.any():
        return
    frames = np.arange(coord.shape[0])[:, None, None]
    rij = coord[frames, np.where(real, j, 0)] - coord[:, :, None, :]
    if box is not None:
        rij = rij + np.einsum("fasd,fdk->fask", shift[:, :, firsts].astype(float), box)
    d = np.where(real, np.linalg.norm(rij, axis=-1), np.inf)
    if d.min() < OVERLAP_DISTANCE:
        f, i, k = np.unravel_index(np.argmin(d), d.shape)
        raise DataError(
            f"atoms {i} and {j[f, i, k]} of frame {f} overlap (distance {d[f, i, k]:.2e} Å, "
            "counting periodic images); remove duplicate atoms or check the box"
        )
