"""A labelled atomic system: frames of one composition, with its checks (`dpa.data.load` reads
them from files)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from dpa.errors import DataError

__all__ = ["System", "formula", "system_units", "MIXED_FORMAT", "NATIVE_FORMATS", "FOLDER_FORMATS"]

#: Format names read by the native deepmd/npy reader (dpdata's "deepmd" means deepmd/raw).
#: A folder whose sets hold real_atom_types.npy is read as deepmd/npy/mixed whatever the name.
NATIVE_FORMATS = ("deepmd/npy", "npy")
#: DeePMD-kit's mixed-type layout, also read natively (one System per composition).
MIXED_FORMAT = "deepmd/npy/mixed"
#: Formats whose systems are folders holding type.raw (a parent folder is searched for them).
FOLDER_FORMATS = (*NATIVE_FORMATS, MIXED_FORMAT)


@dataclass(eq=False)
class System:
    """Frames of one atomic composition, with optional energy/force/virial labels; all float64."""

    path: str
    type_map: list[str]
    atype: np.ndarray
    coord: np.ndarray
    box: np.ndarray | None = None
    energy: np.ndarray | None = None
    force: np.ndarray | None = None
    virial: np.ndarray | None = None
    #: Per-atom energy labels (nframes, natoms), atom_ener.npy (the loss's atomic-energy term).
    atom_ener: np.ndarray | None = None
    #: Frame parameters (nframes, numb_fparam) and atomic parameters (nframes, natoms, numb_aparam)
    #: that models with `numb_fparam`/`numb_aparam` take as input (fparam.npy, aparam.npy).
    fparam: np.ndarray | None = None
    aparam: np.ndarray | None = None
    #: False when the source gave type indices only (no type_map.raw): indices then are used as is.
    has_type_map: bool = field(default=True)
    #: (path, k) when one path gave several Systems (deepmd/npy/mixed groups, the compositions of
    #: an extxyz file) and this is the k-th; None when the path gave this System alone. DeePMD-kit
    #: counts such a path as one system, so list-valued batch_size/sys_probs name the path.
    origin: tuple[str, int] | None = field(default=None)

    def __post_init__(self) -> None:
        """Cast to the canonical dtypes and check every shape, so later code can trust them."""
        self.type_map = [str(t) for t in self.type_map]
        self.atype = np.asarray(self.atype, dtype=np.int64).reshape(-1)
        nat = self.atype.shape[0]
        if nat == 0:
            raise DataError(f"{self.path}: the system has no atoms")
        twice = sorted({t for i, t in enumerate(self.type_map) if t in self.type_map[:i]})
        if twice and self.has_type_map:
            raise DataError(
                f"{self.path}: its type map {self.type_map} lists {', '.join(twice)} more than "
                "once; name each element once (atoms of one element would be split over types)"
            )
        if self.atype.min() < 0 or self.atype.max() >= len(self.type_map):
            bad = int(self.atype[(self.atype < 0) | (self.atype >= len(self.type_map))][0])
            raise DataError(
                f"{self.path}: atom type {bad} is outside the type map {self.type_map} "
                f"(valid indices 0..{len(self.type_map) - 1})"
            )
        self.coord = self._frames("coord", self.coord, (nat, 3))
        nf = self.coord.shape[0]
        if nf == 0:
            raise DataError(f"{self.path}: the system has no frames")
        if self.box is not None:
            self.box = self._frames("box", self.box, (3, 3), nf)
            vol = np.linalg.det(self.box)
            bad = np.flatnonzero(np.abs(vol) < 1e-8)
            if bad.size:
                raise DataError(
                    f"{self.path}: the box of frame {int(bad[0])} is degenerate (volume "
                    f"{vol[bad[0]]:.3g}); give cell vectors as rows, or mark the system "
                    "non-periodic (a file named nopbc)"
                )
        if self.energy is not None:
            self.energy = self._frames("energy", self.energy, (), nf)
        if self.force is not None:
            self.force = self._frames("force", self.force, (nat, 3), nf)
        if self.virial is not None:
            self.virial = self._frames("virial", self.virial, (3, 3), nf)
        if self.atom_ener is not None:
            self.atom_ener = self._frames("atom_ener", self.atom_ener, (nat,), nf)
        if self.fparam is not None:
            self.fparam = self._parameters("fparam", self.fparam, (), nf)
        if self.aparam is not None:
            self.aparam = self._parameters("aparam", self.aparam, (nat,), nf)

    def _parameters(self, key: str, value: np.ndarray, per: tuple[int, ...], nf: int) -> np.ndarray:
        """fparam as (nf, k) or aparam as (nf, nat, k), float64, from any layout that has nf
        rows; k is what the rows hold (per atom for aparam)."""
        arr = np.asarray(value, dtype=np.float64)
        arr = arr.reshape(arr.shape[0], -1) if arr.ndim else arr.reshape(1, 1)
        per_row = int(np.prod(per, dtype=np.int64))
        if arr.shape[0] != nf or arr.shape[1] % per_row or arr.shape[1] == 0:
            atoms = f" (natoms × numb_aparam values, {per_row} atoms)" if per else ""
            raise DataError(
                f"{self.path}: {key} has shape {np.shape(value)}, expected {nf} rows (one per "
                f"frame) of the same width{atoms}"
            )
        arr = arr.reshape(nf, *per, arr.shape[1] // per_row)
        _check_finite(arr, key, self.path)
        return arr

    def _frames(
        self, key: str, value: np.ndarray, tail: tuple[int, ...], nf: int | None = None
    ) -> np.ndarray:
        """Reshape one per-frame array to (nf, *tail) as float64 and check it is finite."""
        arr = np.asarray(value, dtype=np.float64)
        size = int(np.prod(tail, dtype=np.int64))
        if arr.ndim == len(tail) + 1 and arr.shape[1:] == tail:
            pass
        elif arr.ndim == 2 and arr.shape[1] == size:
            arr = arr.reshape((arr.shape[0], *tail))
        elif arr.ndim == 1 and tail and arr.size == size:
            arr = arr.reshape((1, *tail))
        else:
            raise DataError(
                f"{self.path}: {key} has shape {arr.shape}, expected (nframes, {size})"
                + (f" for {self.natoms} atoms" if key in ("coord", "force") else "")
            )
        if nf is not None and arr.shape[0] != nf:
            raise DataError(f"{self.path}: {key} has {arr.shape[0]} frames but coord has {nf}")
        _check_finite(arr, key, self.path)
        return arr

    @property
    def name(self) -> str:
        """The system's name in reports and detail files: the path it was loaded from."""
        return self.path

    @property
    def nframes(self) -> int:
        """Number of frames."""
        return int(self.coord.shape[0])

    @property
    def natoms(self) -> int:
        """Number of atoms per frame."""
        return int(self.atype.shape[0])

    @property
    def periodic(self) -> bool:
        """Whether the system has a box (periodic boundary conditions)."""
        return self.box is not None

    @property
    def formula(self) -> str:
        """Element counts in type_map order (C1H4O2), as dpdata names compositions."""
        return formula(self.atype, self.type_map)

    @property
    def elements(self) -> list[str]:
        """The element (type name) of each atom."""
        return [self.type_map[t] for t in self.atype]

    def frames(self, index: slice | Sequence[int] | np.ndarray) -> System:
        """A new System holding only the selected frames (a view where numpy allows it)."""

        def pick(a: np.ndarray | None) -> np.ndarray | None:
            return None if a is None else a[index]

        sub = replace(
            self,
            coord=pick(self.coord),
            box=pick(self.box),
            energy=pick(self.energy),
            force=pick(self.force),
            virial=pick(self.virial),
            atom_ener=pick(self.atom_ener),
            fparam=pick(self.fparam),
            aparam=pick(self.aparam),
        )
        return sub

    def remap_types(self, model_type_map: Sequence[str]) -> np.ndarray:
        """Atom types as indices into `model_type_map`, so the model sees its own type order."""
        model_type_map = list(model_type_map)
        if not self.has_type_map:
            if self.atype.max() >= len(model_type_map):
                raise DataError(
                    f"{self.path}: atom type {int(self.atype.max())} has no element (no "
                    f"type_map.raw) and is outside the model's type_map {model_type_map}; "
                    "add a type_map.raw naming the element of each type"
                )
            return self.atype.copy()
        index = {name: i for i, name in enumerate(model_type_map)}
        lookup = np.empty(len(self.type_map), dtype=np.int64)
        for t, name in enumerate(self.type_map):
            if name in index:
                lookup[t] = index[name]
            elif np.any(self.atype == t):
                raise DataError(
                    f"{self.path}: element {name!r} is not in the model's type_map "
                    f"{model_type_map}; use a model trained with {name!r} or drop those atoms"
                )
            else:
                lookup[t] = -1  # listed in type_map.raw but absent from this system: harmless
        return lookup[self.atype]

    def __repr__(self) -> str:
        """A short summary instead of dumping arrays."""
        labels = [k for k in ("energy", "force", "virial") if getattr(self, k) is not None]
        return (
            f"System({self.path!r}, nframes={self.nframes}, natoms={self.natoms}, "
            f"type_map={self.type_map}, periodic={self.periodic}, labels={labels})"
        )


def formula(atype: Sequence[int] | np.ndarray, type_map: Sequence[str]) -> str:
    """Element counts of `atype` in type_map order, absent elements left out (C1H4O2)."""
    counts = np.bincount(np.asarray(atype, dtype=np.int64).reshape(-1), minlength=len(type_map))
    return "".join(f"{name}{int(n)}" for name, n in zip(type_map, counts, strict=False) if n)


def _check_finite(arr: np.ndarray, key: str, where: str) -> None:
    """Raise a DataError naming the frame (and atom) of the first NaN/inf value in `arr`."""
    if np.all(np.isfinite(arr)):
        return
    bad = np.argwhere(~np.isfinite(arr))[0]
    loc = f"frame {int(bad[0])}"
    if arr.ndim == 3 and arr.shape[2] == 3 and key in ("coord", "force"):
        loc += f", atom {int(bad[1])}"
    raise DataError(f"{where}: {key} has a non-finite value (NaN or inf) at {loc}")


def system_units(systems: Sequence[System]) -> list[list[int]]:
    """Indices of `systems` grouped by the input path they came from (DeePMD-kit's systems)."""
    units: list[list[int]] = []
    for i, system in enumerate(systems):
        if system.origin is None or system.origin[1] == 0 or not units:
            units.append([i])
        else:
            units[-1].append(i)
    return units
