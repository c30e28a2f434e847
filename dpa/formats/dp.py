"""`.dp`: HDF5 with the model tree as JSON in attrs["json"] and each variable as a dataset.

The layout of DeePMD-kit v3 (`dp convert-backend`), so files move both ways: variables appear in
the JSON as the name of their dataset ("/variable_0000", ...), in traversal order.

dpa adds a checksum (see `checksum`) in the HDF5 user block, the 512 bytes before the HDF5 data
that HDF5 reserves for applications and every HDF5 reader (DeePMD-kit's included) skips, so the
groups, datasets and attributes stay exactly DeePMD-kit's. The file is built in memory and
written in one go: the HDF5 library never writes to disk (a full disk cannot crash it).
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from dpa.formats import checksum
from dpa.tree import jsonable, map_variables

USERBLOCK_SIZE = 512
_STAMP = b"dpa-" + checksum.ALGORITHM.encode() + b":"  # then 64 hex digits and "\n"


def _store(f: h5py.File, data: dict) -> None:
    """Write the variables as datasets and the tree (their names in place) as attrs["json"];
    an array shared by several places is one dataset named at each."""
    counter = iter(range(1 << 30))

    def store(array: Any) -> str:
        return f.create_dataset(f"variable_{next(counter):04d}", data=np.asarray(array)).name

    tree = map_variables(data, store)
    f.attrs["json"] = json.dumps(jsonable(tree), separators=(",", ":"))


def encode(data: dict) -> bytes:
    """The complete `.dp` file of `data` (a model tree with NumPy variables), built in memory."""
    buffer = io.BytesIO()
    with h5py.File(buffer, "w", userblock_size=USERBLOCK_SIZE) as f:
        _store(f, data)
    buffer.seek(0)
    buffer.write(_STAMP + checksum.digest(data).encode("ascii") + b"\n")
    return buffer.getvalue()


def write(path: str | os.PathLike, data: dict) -> None:
    """Write `data` to `path` in one go (`dpa.io.save` makes it atomic)."""
    Path(path).write_bytes(encode(data))


def _stored_checksum(path: str | os.PathLike) -> str | None:
    """The checksum in the file's user block, or None (a file from DeePMD-kit has none)."""
    with open(path, "rb") as fp:
        head = fp.read(USERBLOCK_SIZE)
    if not head.startswith(_STAMP):
        return None
    return head[len(_STAMP) :].split(b"\n", 1)[0].decode("ascii", errors="replace")


def read(path: str | os.PathLike) -> dict:
    """Read a `.dp` file into a tree with NumPy variables, checked against its checksum."""
    with h5py.File(path, "r") as f:
        if "json" not in f.attrs:
            raise ValueError("HDF5 file has no 'json' attribute (not a .dp model)")
        tree = json.loads(f.attrs["json"])

        fetched: dict[str, np.ndarray] = {}

        def fetch(name: Any) -> np.ndarray:
            if not isinstance(name, str) or name not in f:
                raise ValueError(f"variable {name!r} is missing from the file")
            if name not in fetched:  # a dataset named twice is one shared array
                fetched[name] = np.asarray(f[name][()])
            return fetched[name]

        data = map_variables(tree, fetch)
    checksum.verify(data, _stored_checksum(path), path)
    return data
