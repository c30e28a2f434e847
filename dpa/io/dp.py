"""`.dp`: HDF5 with the model tree as JSON in attrs["json"] and each variable as a dataset.

The layout of DeePMD-kit v3 (`dp convert-backend`), so files move both ways: variables appear in
the JSON as the name of their dataset ("/variable_0000", ...), in traversal order.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from ..tree import map_variables


def _jsonable(value: Any) -> Any:
    """Plain Python numbers for NumPy scalars in the non-array part of the tree."""
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def write(path: Path, data: dict) -> None:
    """Write `data` (a model tree with NumPy variables) to `path`."""
    with h5py.File(path, "w") as f:
        counter = iter(range(1 << 30))

        def store(array: Any) -> str:
            return f.create_dataset(f"variable_{next(counter):04d}", data=np.asarray(array)).name

        tree = map_variables(data, store)
        f.attrs["json"] = json.dumps(_jsonable(tree), separators=(",", ":"))


def read(path: Path) -> dict:
    """Read a `.dp` file into a tree with NumPy variables."""
    with h5py.File(path, "r") as f:
        if "json" not in f.attrs:
            raise ValueError("HDF5 file has no 'json' attribute (not a .dp model)")
        tree = json.loads(f.attrs["json"])

        def fetch(name: Any) -> np.ndarray:
            if not isinstance(name, str) or name not in f:
                raise ValueError(f"variable {name!r} is missing from the file")
            return np.asarray(f[name][()])

        return map_variables(tree, fetch)
