"""`dp test` detail files (PREFIX.e.out, .e_peratom.out, .f.out, .v.out, .v_peratom.out).

Layout of DeePMD-kit v3: each system's block starts with a `# <system>: <columns>` header, then
one row per frame (one per atom per frame for forces), numbers as numpy.savetxt writes them.
File names as `dp test -d PREFIX` gives them: PREFIX's own suffix, if any, is replaced
(`-d out/res` and `-d out/res.txt` both give out/res.e.out).
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from dpa.atomic import atomic_write_text
from dpa.data.evaluation import SystemResult
from dpa.errors import DPAError

__all__ = ["write_details", "detail_paths"]

_V_COLS = ("xx", "xy", "xz", "yx", "yy", "yz", "zx", "zy", "zz")
_VIRIAL_HEADER = " ".join([f"data_v{c}" for c in _V_COLS] + [f"pred_v{c}" for c in _V_COLS])
_FORCE_HEADER = "data_fx data_fy data_fz pred_fx pred_fy pred_fz"
_ENERGY_HEADER = "data_e pred_e"

#: suffix -> (columns header, rows of one system or None when the system lacks the data)
_Block = Callable[[SystemResult], "np.ndarray | None"]


def _energy(r: SystemResult) -> np.ndarray | None:
    """Rows (data_e, pred_e), one per frame."""
    if r.system.energy is None:
        return None
    return np.stack([r.system.energy, r.pred["energy"]], axis=1)


def _energy_per_atom(r: SystemResult) -> np.ndarray | None:
    """Rows (data_e, pred_e) divided by the number of atoms."""
    rows = _energy(r)
    return None if rows is None else rows / r.system.natoms


def _force(r: SystemResult) -> np.ndarray | None:
    """Rows (data_f xyz, pred_f xyz), one per atom per frame."""
    if r.system.force is None or "force" not in r.pred:
        return None
    return np.concatenate([r.system.force.reshape(-1, 3), r.pred["force"].reshape(-1, 3)], axis=1)


def _virial(r: SystemResult) -> np.ndarray | None:
    """Rows (9 data, 9 predicted virial components, row-major), one per frame."""
    if r.system.virial is None or "virial" not in r.pred or not r.system.periodic:
        return None
    nf = r.nframes
    return np.concatenate([r.system.virial.reshape(nf, 9), r.pred["virial"].reshape(nf, 9)], axis=1)


def _virial_per_atom(r: SystemResult) -> np.ndarray | None:
    """Virial rows divided by the number of atoms."""
    rows = _virial(r)
    return None if rows is None else rows / r.system.natoms


_FILES: dict[str, tuple[str, _Block]] = {
    ".e.out": (_ENERGY_HEADER, _energy),
    ".e_peratom.out": (_ENERGY_HEADER, _energy_per_atom),
    ".f.out": (_FORCE_HEADER, _force),
    ".v.out": (_VIRIAL_HEADER, _virial),
    ".v_peratom.out": (_VIRIAL_HEADER, _virial_per_atom),
}


def detail_paths(prefix: str | os.PathLike) -> dict[str, str]:
    """The detail file of each kind: the prefix's own suffix replaced, as `dp test` names them."""
    try:
        return {suffix: os.fspath(Path(prefix).with_suffix(suffix)) for suffix in _FILES}
    except ValueError:
        raise DPAError(f"{os.fspath(prefix)!r}: not usable as a detail-file prefix") from None


def write_details(prefix: str | os.PathLike, results: Sequence[SystemResult]) -> list[str]:
    """Write the detail files that have data, each atomically (temporary name, then rename)."""
    written = []
    for suffix, path in detail_paths(prefix).items():
        header, rows_of = _FILES[suffix]
        blocks = [(r.system.name, rows_of(r)) for r in results]
        blocks = [(name, rows) for name, rows in blocks if rows is not None]
        if blocks:
            _write_atomic(path, blocks, header)
            written.append(path)
    return written


def _write_atomic(path: str, blocks: list[tuple[str, np.ndarray]], header: str) -> None:
    """Render the header+rows blocks in memory, then write them atomically in one go; a failed
    write raises OutputError naming `path`, the cause and the fix."""
    buffer = io.StringIO()
    for name, rows in blocks:
        np.savetxt(buffer, rows, header=f"{name}: {header}")
    atomic_write_text(path, buffer.getvalue())
