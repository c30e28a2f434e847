"""`Potential`: a loaded model on one backend; validates input, builds the neighbor list, evaluates."""

from __future__ import annotations

from typing import Any

import numpy as np

from .backends.base import Backend
from .errors import BackendError, DataError
from .model import Model
from .neighbor import build_neighbor_list


def _as_coord(coord: Any) -> np.ndarray:
    """(nf, nat, 3) float64 from (nf, nat, 3), (nat, 3) or (nf, nat*3)."""
    x = np.asarray(coord, dtype=np.float64)
    if x.ndim == 2 and x.shape[1] == 3:
        x = x[None]
    if x.ndim != 3 or x.shape[2] != 3:
        raise DataError(f"coord must have shape (nframes, natoms, 3) or (natoms, 3); got {x.shape}")
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
    return np.ascontiguousarray(a)


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


class Potential:
    """A model ready to evaluate on one backend (numpy, torch or jax)."""

    def __init__(self, model: Model, backend: Backend) -> None:
        self.model = model
        self._backend = backend
        self._prepared = backend.prepare(model.tree)

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
    def can_compute_forces(self) -> bool:
        return self._backend.can_compute_forces

    def neighbor_list(self, coord: np.ndarray, atype: np.ndarray, box: np.ndarray | None):
        """(nlist, shift) for validated input, with model-level pair exclusions folded in."""
        nl = build_neighbor_list(
            coord, atype, box, self.rcut, self.model.sel, self.model.mixed_types
        )
        nlist = nl.nlist
        pairs = self.model.tree.get("pair_exclude_types") or []
        if pairs:
            ntypes = len(self.type_map)
            table = np.zeros((ntypes, ntypes), dtype=bool)
            for a, b in pairs:
                table[a, b] = table[b, a] = True
            nbr_type = atype[np.where(nlist >= 0, nlist, 0)]
            drop = (nlist >= 0) & table[atype[None, :, None], nbr_type]
            nlist = np.where(drop, -1, nlist)
        return nlist, nl.shift

    def evaluate(
        self,
        coord: Any,
        atype: Any,
        box: Any = None,
        atomic: bool = False,
        fparam: Any = None,
        aparam: Any = None,
    ) -> dict[str, np.ndarray]:
        """Energy (nf,), force (nf, nat, 3), virial (nf, 3, 3), atom_energy (nf, nat), and
        atom_virial (nf, nat, 3, 3) when `atomic`; float64 NumPy. The numpy backend gives
        energy and atom_energy only (reading its "force" raises BackendError)."""
        x = _as_coord(coord)
        nf, nat = x.shape[:2]
        types = _as_atype(atype, nat, self.type_map)
        cell = _as_box(box, nf)
        fit = self.model.tree["fitting"]
        nfp, nap = fit.get("numb_fparam", 0), fit.get("numb_aparam", 0)
        fp = _as_param(fparam, (nf, nfp), "fparam") if nfp else None
        ap = _as_param(aparam, (nf, nat, nap), "aparam") if nap else None
        if nfp and fp is None and fit.get("default_fparam") is None:
            raise DataError(
                f"this model needs fparam ({nfp} values per frame) and has no default_fparam; "
                "pass fparam="
            )
        if nap and ap is None:
            raise DataError(f"this model needs aparam ({nap} values per atom); pass aparam=")
        nlist, shift = self.neighbor_list(x, types, cell)
        out = self._backend.evaluate(self._prepared, x, cell, nlist, shift, types, fp, ap, atomic)
        keys = ["energy", "force", "virial", "atom_energy"] + (["atom_virial"] if atomic else [])
        results = Results({k: np.asarray(out[k], dtype=np.float64) for k in keys if k in out})
        results.backend = self.backend
        return results
