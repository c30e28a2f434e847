"""Reading any dpdata format (vasp/outcar, extxyz, deepmd/raw, ...) into a System."""

from __future__ import annotations

from typing import Any

import numpy as np

from dpa.data.system import System, formula
from dpa.errors import DataError

__all__ = ["MULTI_SYSTEM_FORMATS", "read_with_dpdata", "read_all_with_dpdata", "from_dpdata"]

#: dpdata formats whose one file can hold several compositions: read whole, as a MultiSystems
#: (dpdata's single-system reader of these returns the first frame only).
MULTI_SYSTEM_FORMATS = (
    "extxyz",
    "quip/gap/xyz",
    "quip/gap/xyz_file",
    "mace/xyz",
    "nequip/xyz",
    "gpumd/xyz",
    "ase/structure",
)


def _dpdata(path: str, fmt: str) -> Any:
    """The dpdata module, or a DataError saying that reading `fmt` needs it."""
    try:
        import dpdata
    except ImportError:  # pragma: no cover - dpdata is a dependency
        raise DataError(
            f"{path}: reading format {fmt!r} needs dpdata (pip install dpdata)"
        ) from None
    return dpdata


def read_all_with_dpdata(path: str, fmt: str) -> list[System]:
    """Every system `path` holds as dpdata format `fmt`: one per composition of the file."""
    if fmt.lower() not in MULTI_SYSTEM_FORMATS:
        return [read_with_dpdata(path, fmt)]
    dpdata = _dpdata(path, fmt)
    try:
        multi = dpdata.MultiSystems().load_systems_from_file(path, fmt=fmt, labeled=True)
    except Exception as labelled_err:  # dpdata raises anything; fall back to an unlabelled read
        try:
            multi = dpdata.MultiSystems().load_systems_from_file(path, fmt=fmt, labeled=False)
        except Exception as err:
            raise DataError(
                f"{path}: cannot read it as {fmt}: {_reason(labelled_err, err)}"
            ) from None
    parts = [s for s in multi.systems.values() if s.get_nframes() > 0]
    if not parts:
        raise DataError(f"{path}: dpdata found no frames in it")
    if len(parts) == 1:
        return [from_dpdata(parts[0], path)]
    systems = []
    for k, part in enumerate(parts):  # each named, so messages and dp test blocks tell them apart
        name = f"{path}[{formula(part.data['atom_types'], part.data['atom_names'])}]"
        systems.append(from_dpdata(part, name, origin=(path, k)))
    return systems


def read_with_dpdata(path: str, fmt: str) -> System:
    """Read `path` as dpdata format `fmt`, labelled when it can be, else unlabelled."""
    dpdata = _dpdata(path, fmt)
    try:
        data = dpdata.LabeledSystem(path, fmt=fmt)
    except Exception as labelled_err:  # dpdata raises anything; fall back to an unlabelled read
        try:
            data = dpdata.System(path, fmt=fmt)
        except Exception as err:
            raise DataError(
                f"{path}: cannot read it as {fmt}: {_reason(labelled_err, err)}"
            ) from None
    return from_dpdata(data, path)


def _reason(labelled_err: Exception, err: Exception) -> str:
    """The more telling of dpdata's two errors (as labelled data, as unlabelled data), on one line."""

    def text(e: Exception) -> str:
        return " ".join(str(e).split()) or type(e).__name__

    def unsupported(e: Exception) -> bool:
        return isinstance(e, NotImplementedError) and "support" in str(e)

    if "Unsupported data format" in str(err):
        return f"dpdata knows no format {text(err).split()[3].rstrip('.')!r}"
    if unsupported(err) or not unsupported(labelled_err):
        return f"dpdata says: {text(labelled_err)}"
    return f"dpdata says: {text(err)}"


def from_dpdata(data: Any, path: str, origin: tuple[str, int] | None = None) -> System:
    """Convert a dpdata System or LabeledSystem into a System named `path`."""
    d = data.data
    if len(d.get("coords", ())) == 0:
        raise DataError(f"{path}: dpdata found no frames in it")
    nopbc = bool(getattr(data, "nopbc", False) or d.get("nopbc", False))

    def get(key: str) -> np.ndarray | None:
        value = d.get(key)
        return None if value is None else np.asarray(value, dtype=np.float64)

    return System(
        path=path,
        type_map=list(d["atom_names"]),
        atype=np.asarray(d["atom_types"], dtype=np.int64),
        coord=get("coords"),
        box=None if nopbc else get("cells"),
        energy=get("energies"),
        force=get("forces"),
        virial=get("virials"),
        origin=origin,
    )
