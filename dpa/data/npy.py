"""Native reader of the deepmd/npy layout (type.raw, type_map.raw, set.*/ *.npy), no dpdata needed."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dpa.data.system import System
from dpa.errors import DataError

__all__ = ["NpyFolder", "read_deepmd_npy", "read_npy_folder"]

#: Per-frame arrays of a set folder: file stem -> values per frame (None: 3 per atom).
_PER_FRAME = {"coord": None, "box": 9, "energy": 1, "force": None, "virial": 9, "atom_ener": 0}
_LABELS = ("energy", "force", "virial", "atom_ener")
#: Model inputs some data carry: per frame (fparam.npy) and per atom (aparam.npy), any width.
_PARAMETERS = ("fparam", "aparam")


@dataclass
class NpyFolder:
    """The checked contents of a deepmd/npy folder, before they become one or more Systems."""

    path: str
    atype: np.ndarray
    type_map: list[str]
    has_type_map: bool
    nopbc: bool
    sets: list[Path]
    set_frames: list[int]
    arrays: dict[str, np.ndarray | None]


def read_deepmd_npy(path: str) -> System:
    """Read one deepmd/npy system folder into a System, checking every file against type.raw."""
    folder = read_npy_folder(path)
    return System(
        path=path,
        type_map=folder.type_map,
        atype=folder.atype,
        coord=folder.arrays["coord"],
        box=folder.arrays["box"],
        energy=folder.arrays["energy"],
        force=folder.arrays["force"],
        virial=folder.arrays["virial"],
        atom_ener=folder.arrays["atom_ener"],
        fparam=folder.arrays["fparam"],
        aparam=folder.arrays["aparam"],
        has_type_map=folder.has_type_map,
    )


def read_npy_folder(path: str) -> NpyFolder:
    """Read type.raw, type_map.raw, nopbc and every set.*/*.npy of a folder (shared by the
    deepmd/npy and deepmd/npy/mixed readers), checking shapes and values file by file."""
    root = Path(path)
    if not root.is_dir():
        raise DataError(f"{path}: not a folder; a deepmd/npy system is a folder with type.raw")
    atype = _read_type_raw(root / "type.raw")
    nat = atype.size
    type_map, has_type_map = _read_type_map(root, int(atype.max()) + 1)
    nopbc = (root / "nopbc").is_file()
    sets = sorted(d for d in root.glob("set.*") if d.is_dir())
    if not sets:
        raise DataError(f"{path}: no set.* folder; frames go in set.000/coord.npy etc.")

    chunks: dict[str, list[np.ndarray]] = {k: [] for k in (*_PER_FRAME, *_PARAMETERS)}
    set_frames = []
    for set_dir in sets:
        coord = _load_rows(set_dir, "coord", nat * 3, nat, must=True)
        nf = coord.shape[0]
        set_frames.append(nf)
        chunks["coord"].append(coord)
        if not nopbc:
            box = _load_rows(set_dir, "box", 9, nat, must=True, nf=nf)
            chunks["box"].append(box)
        for key in _LABELS:
            width = {None: 3 * nat, 0: nat}.get(_PER_FRAME[key], _PER_FRAME[key])
            arr = _load_rows(set_dir, key, width, nat, must=False, nf=nf)
            if arr is not None:
                chunks[key].append(arr)
        for key in _PARAMETERS:
            arr = _load_parameters(set_dir, key, nat, nf, chunks[key])
            if arr is not None:
                chunks[key].append(arr)
    for key in (*_LABELS, *_PARAMETERS):
        have = len(chunks[key])
        if 0 < have < len(sets):
            missing = [
                s.name for s in sets if not (s / f"{key}.npy").is_file()
            ]  # labels must cover every frame, or they would be misaligned
            raise DataError(
                f"{path}: {key}.npy is in some set folders but missing from {', '.join(missing)}; "
                f"add it there or remove {key}.npy everywhere"
            )
    arrays = {k: np.concatenate(v, axis=0) if v else None for k, v in chunks.items()}
    return NpyFolder(path, atype, type_map, has_type_map, nopbc, sets, set_frames, arrays)


def _load_parameters(
    set_dir: Path, key: str, nat: int, nf: int, earlier: list[np.ndarray]
) -> np.ndarray | None:
    """set_dir/fparam.npy as (nf, k) or aparam.npy as (nf, nat * k), k as in earlier sets."""
    file = set_dir / f"{key}.npy"
    if not file.is_file():
        return None
    try:
        width = np.load(file, allow_pickle=False, mmap_mode="r").size // max(nf, 1)
    except (OSError, ValueError) as err:
        raise DataError(f"{file}: cannot read it as a .npy array ({err})") from None
    if earlier:
        width = earlier[0].shape[1]
    if key == "aparam" and (width == 0 or width % nat):
        raise DataError(
            f"{file}: holds {width} values per frame, expected numb_aparam values for each of "
            f"the {nat} atoms of type.raw"
        )
    return _load_rows(set_dir, key, max(width, 1), nat, must=True, nf=nf)


def _read_type_map(root: Path, ntypes: int) -> tuple[list[str], bool]:
    """The element names of type_map.raw (and True), or placeholders (and False) without one."""
    type_map_file = root / "type_map.raw"
    if not type_map_file.is_file():
        return [f"type_{i}" for i in range(ntypes)], False
    type_map = type_map_file.read_text().split()
    for i, name in enumerate(type_map):
        if name in type_map[:i]:
            raise DataError(
                f"{type_map_file}: lists {name!r} twice (types {type_map.index(name)} and {i}); "
                "name each element once and renumber type.raw to match"
            )
    if ntypes > len(type_map):
        raise DataError(
            f"{type_map_file}: lists {len(type_map)} elements but type.raw uses type "
            f"{ntypes - 1}; add the missing element names"
        )
    return type_map, True


def _read_type_raw(file: Path) -> np.ndarray:
    """The atom types of type.raw, checked to be non-negative integers."""
    if not file.is_file():
        raise DataError(
            f"{file.parent}: missing type.raw; a deepmd/npy system needs type.raw "
            "(one type index per atom)"
        )
    words = file.read_text().split()
    if not words:
        raise DataError(f"{file}: empty; it must list one type index per atom")
    try:
        atype = np.array([int(w) for w in words], dtype=np.int64)
    except ValueError as err:
        raise DataError(f"{file}: not a list of integer type indices ({err})") from None
    if atype.min() < 0:
        raise DataError(f"{file}: negative type index {int(atype.min())}")
    return atype


def _load_rows(
    set_dir: Path, key: str, width: int, nat: int, *, must: bool, nf: int | None = None
) -> np.ndarray | None:
    """Load set_dir/key.npy as (nframes, width) float64, naming the file in every error."""
    file = set_dir / f"{key}.npy"
    if not file.is_file():
        if must:
            hint = " (or add a file named nopbc to the system folder)" if key == "box" else ""
            raise DataError(f"{set_dir}: missing {key}.npy{hint}")
        return None
    try:
        arr = np.load(file, allow_pickle=False)
    except (OSError, ValueError) as err:
        raise DataError(f"{file}: cannot read it as a .npy array ({err})") from None
    if arr.dtype.kind not in "fiu":
        raise DataError(f"{file}: holds {arr.dtype} values, expected floating point numbers")
    if arr.size == 0:
        raise DataError(
            f"{file}: holds no frames (shape {arr.shape}); add frames or remove {set_dir.name}"
        )
    arr = arr.astype(np.float64, copy=False)
    if arr.ndim == 1 and width != 1 and arr.size == width:
        arr = arr.reshape(1, width)  # a single frame stored flat
    arr = arr.reshape(arr.shape[0], -1) if arr.ndim > 0 else arr.reshape(1, 1)
    if arr.shape[1] != width:
        per_atom = f" (3 per atom × {nat} atoms in type.raw)" if key in ("coord", "force") else ""
        raise DataError(
            f"{file}: rows have {arr.shape[1]} values but {width} are expected{per_atom}"
        )
    if nf is not None and arr.shape[0] != nf:
        raise DataError(f"{file}: has {arr.shape[0]} frames but {set_dir.name}/coord.npy has {nf}")
    if not np.all(np.isfinite(arr)):
        row, col = (int(i) for i in np.argwhere(~np.isfinite(arr))[0])
        where = f"frame {row}" + (f", atom {col // 3}" if width == 3 * nat else "")
        raise DataError(f"{file}: non-finite value (NaN or inf) at {where}")
    return arr.reshape(-1) if width == 1 else arr
