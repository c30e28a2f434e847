"""Reading systems from files: the format of a path (given or guessed), the native deepmd/npy
readers or dpdata for the rest, and folders expanded into the systems they hold."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from dpa.data.dpdata_io import read_all_with_dpdata
from dpa.data.mixed import has_real_atom_types, read_deepmd_npy_mixed
from dpa.data.npy import read_deepmd_npy
from dpa.data.system import FOLDER_FORMATS, MIXED_FORMAT, NATIVE_FORMATS, System
from dpa.errors import DataError

__all__ = ["find_systems", "load_path", "load_system", "load_systems"]


def load_system(path: str | os.PathLike, fmt: str | None = None) -> System:
    """Read one system: deepmd/npy natively, any other dpdata format through dpdata."""
    systems = load_path(path, fmt)
    if len(systems) > 1:
        names = ", ".join(s.path for s in systems[:3]) + (", ..." if len(systems) > 3 else "")
        raise DataError(
            f"{os.fspath(path)}: holds {len(systems)} systems of different compositions "
            f"({names}); read it with load_systems"
        )
    return systems[0]


def load_path(path: str | os.PathLike, fmt: str | None = None) -> list[System]:
    """Every system one path holds: one for deepmd/npy, one per composition for deepmd/npy/mixed
    folders and multi-composition files (extxyz), as many as the format gives."""
    path_s = os.fspath(path)
    p = Path(path_s)
    if not p.exists():
        raise DataError(f"{path_s}: no such file or folder")
    fmt = _guess_format(p, fmt)
    if fmt in (*NATIVE_FORMATS, MIXED_FORMAT):
        if fmt == MIXED_FORMAT or has_real_atom_types(p):  # as DeePMD-kit: the files decide
            return read_deepmd_npy_mixed(path_s)
        return [read_deepmd_npy(path_s)]
    return read_all_with_dpdata(path_s, fmt)


def _guess_format(p: Path, fmt: str | None) -> str:
    """The format to read `p` with: `fmt` as given, else deepmd/npy (or its mixed-type variant)
    for folders, else a guess from the file name."""
    if fmt:
        return fmt.lower()
    if p.is_dir():
        return MIXED_FORMAT if has_real_atom_types(p) else "deepmd/npy"
    name = p.name.lower()
    if "outcar" in name:
        return "vasp/outcar"
    if name.endswith((".xyz", ".extxyz")):
        return "extxyz"
    raise DataError(
        f"{p}: cannot tell the format of this file; pass it with --fmt "
        "(a dpdata format such as vasp/outcar, extxyz, qe/pw/scf, abacus/scf)"
    )


def find_systems(root: str | os.PathLike) -> list[str]:
    """All deepmd/npy system folders (folders holding type.raw) at or under `root`, sorted."""
    root_s = os.fspath(root)
    if os.path.isfile(os.path.join(root_s, "type.raw")):
        return [root_s]
    found = []
    for dirpath, dirnames, filenames in os.walk(root_s):
        dirnames.sort()
        if "type.raw" in filenames:
            found.append(dirpath)
            dirnames[:] = []  # a system's set.* folders hold no further systems
    return sorted(found)


def load_systems(
    paths: str | os.PathLike | Iterable[str | os.PathLike], fmt: str | None = None
) -> list[System]:
    """Read several systems; a folder holding several deepmd systems (type.raw) is expanded, and
    a mixed-type folder or multi-composition file gives one System per composition."""
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    systems: list[System] = []
    for path in paths:
        p = Path(path)
        expandable = fmt is None or fmt.lower() in (*FOLDER_FORMATS, "deepmd/raw", "deepmd")
        if expandable and p.is_dir() and not (p / "type.raw").is_file():
            subs = find_systems(p)
            if not subs:
                raise DataError(
                    f"{os.fspath(path)}: not a deepmd/npy system (missing type.raw) and no "
                    "sub-folder holds one; point to a system folder or pass --fmt"
                )
            for sub in subs:
                systems.extend(load_path(sub, fmt))
        else:
            systems.extend(load_path(path, fmt))
    if not systems:
        raise DataError("no system given")
    return systems
