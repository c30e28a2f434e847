"""Native reader of DeePMD-kit's mixed-type layout (deepmd/npy/mixed), no dpdata needed.

The folder looks like a deepmd/npy system, but type.raw is a placeholder (one entry per atom
slot) and every set holds `real_atom_types.npy`, one row of type indices per frame, where -1
marks a virtual (padding) atom slot. Frames with the same row form one System; padding slots
are dropped, so every System holds real atoms only.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from dpa.data.npy import NpyFolder, read_npy_folder
from dpa.data.system import System, formula
from dpa.errors import DataError

__all__ = ["REAL_TYPES_FILE", "has_real_atom_types", "read_deepmd_npy_mixed"]

#: The per-set file that makes a deepmd/npy folder mixed-type.
REAL_TYPES_FILE = "real_atom_types.npy"


def has_real_atom_types(path: str | Path) -> bool:
    """Whether a set.* folder of `path` holds real_atom_types.npy (the mark of mixed-type data)."""
    root = Path(path)
    return root.is_dir() and any(
        (d / REAL_TYPES_FILE).is_file() for d in root.glob("set.*") if d.is_dir()
    )


def read_deepmd_npy_mixed(path: str) -> list[System]:
    """Read a mixed-type folder as one System per distinct real_atom_types row, padding dropped."""
    folder = read_npy_folder(path)  # its errors (no type.raw, no set.*) come first
    if not has_real_atom_types(path):
        raise DataError(
            f"{path}: no set.* folder holds {REAL_TYPES_FILE}, so this is not deepmd/npy/mixed "
            "data; read it as deepmd/npy (leave fmt out)"
        )
    ntypes = len(folder.type_map) if folder.has_type_map else None
    real = np.concatenate(
        [
            _read_real_types(s, folder.atype.size, nf, ntypes)
            for s, nf in zip(folder.sets, folder.set_frames, strict=True)
        ]
    )
    type_map = folder.type_map
    if not folder.has_type_map:
        type_map = [f"type_{i}" for i in range(int(real.max()) + 1)]
    _check_boxes(folder)
    groups = _group_frames(real)
    return [
        _group_system(folder, type_map, row, frames, None if len(groups) == 1 else k)
        for k, (row, frames) in enumerate(groups)
    ]


def _read_real_types(set_dir: Path, nat: int, nf: int, ntypes: int | None) -> np.ndarray:
    """real_atom_types.npy of one set as (nf, nat) int64, each value -1 or a valid type index."""
    file = set_dir / REAL_TYPES_FILE
    if not file.is_file():
        raise DataError(
            f"{set_dir}: missing {REAL_TYPES_FILE}; mixed-type data needs it in every set.* "
            "folder (other sets of this system have it)"
        )
    try:
        arr = np.load(file, allow_pickle=False)
    except (OSError, ValueError) as err:
        raise DataError(f"{file}: cannot read it as a .npy array ({err})") from None
    if arr.dtype.kind not in "iuf" or (arr.dtype.kind == "f" and not _integral(arr)):
        raise DataError(f"{file}: holds {arr.dtype} values, expected integer type indices")
    arr = arr.astype(np.int64).reshape(1, -1) if arr.ndim <= 1 else arr.astype(np.int64)
    arr = arr.reshape(arr.shape[0], -1)
    if arr.shape[1] != nat:
        raise DataError(
            f"{file}: rows have {arr.shape[1]} types but type.raw has {nat} atom slots; "
            "give one type per atom slot (-1 for padding)"
        )
    if arr.shape[0] != nf:
        raise DataError(f"{file}: has {arr.shape[0]} frames but {set_dir.name}/coord.npy has {nf}")
    upper = ntypes if ntypes is not None else np.iinfo(np.int64).max
    bad = np.argwhere((arr < -1) | (arr >= upper))
    if bad.size:
        frame, atom = (int(i) for i in bad[0])
        limit = f"0..{ntypes - 1} (type_map.raw)" if ntypes is not None else ">= 0"
        raise DataError(
            f"{file}: type {int(arr[frame, atom])} at frame {frame}, atom {atom}; expected "
            f"{limit}, or -1 for a padding slot"
        )
    empty = np.flatnonzero((arr < 0).all(axis=1))
    if empty.size:
        raise DataError(f"{file}: frame {int(empty[0])} has no real atom (every type is -1)")
    return arr


def _integral(arr: np.ndarray) -> bool:
    """Whether a float array holds whole numbers only (type indices saved as floats)."""
    return bool(np.all(np.isfinite(arr)) and np.all(arr == np.round(arr)))


def _check_boxes(folder: NpyFolder) -> None:
    """A degenerate box is reported with its set and frame (group-local indices would mislead)."""
    box = folder.arrays["box"]
    if box is None:
        return
    vol = np.linalg.det(box.reshape(-1, 3, 3))
    bad = np.flatnonzero(np.abs(vol) < 1e-8)
    if bad.size:
        set_dir, frame = _locate(folder, int(bad[0]))
        raise DataError(
            f"{set_dir / 'box.npy'}: the box of frame {frame} is degenerate (volume "
            f"{vol[bad[0]]:.3g}); give cell vectors as rows, or mark the system non-periodic "
            "(a file named nopbc)"
        )


def _locate(folder: NpyFolder, index: int) -> tuple[Path, int]:
    """The set folder and set-local frame of a frame index counted over all sets."""
    ends = np.cumsum(folder.set_frames)
    k = int(np.searchsorted(ends, index, side="right"))
    return folder.sets[k], index - (int(ends[k - 1]) if k else 0)


def _group_frames(real: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """(types row, frame indices) for each distinct row of `real`, in order of first appearance."""
    rows, first, inverse = np.unique(real, axis=0, return_index=True, return_inverse=True)
    by_row = np.argsort(inverse.reshape(-1), kind="stable")  # frames of row g, in file order
    members = np.split(by_row, np.cumsum(np.bincount(inverse.reshape(-1)))[:-1])
    return [(rows[g], members[g]) for g in np.argsort(first, kind="stable")]


def _group_system(
    folder: NpyFolder, type_map: list[str], row: np.ndarray, frames: np.ndarray, k: int | None
) -> System:
    """The System of one group of frames: their real atoms only, named after the group."""
    keep = row >= 0
    nat = folder.atype.size
    atype = row[keep]

    def per_frame(key: str) -> np.ndarray | None:
        value = folder.arrays[key]
        return None if value is None else value[frames]

    def per_atom(key: str) -> np.ndarray | None:
        value = folder.arrays[key]
        if value is None:
            return None
        return value[frames].reshape(len(frames), nat, -1)[:, keep]

    name = folder.path if k is None else f"{folder.path}[group {k}: {formula(atype, type_map)}]"
    return System(
        path=name,
        type_map=type_map,
        atype=atype,
        coord=per_atom("coord"),
        box=per_frame("box"),
        energy=per_frame("energy"),
        force=per_atom("force"),
        virial=per_frame("virial"),
        atom_ener=per_atom("atom_ener"),
        fparam=per_frame("fparam"),
        aparam=per_atom("aparam"),
        has_type_map=folder.has_type_map,
        origin=None if k is None else (folder.path, k),
    )
