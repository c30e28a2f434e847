"""`.jax`: a zip (NumPy .npz) holding the tree as JSON plus one array per variable; no pickle.

The JSON header carries the tree's checksum ("sha256", see `checksum`), checked on read; the file
is built in memory and written in one go.
"""

from __future__ import annotations

import io
import json
import os
import zipfile
from pathlib import Path

import numpy as np

from dpa.formats import checksum
from dpa.tree import jsonable, merge_variables, split_variables

FORMAT = "dpa.jax"


def encode(data: dict) -> bytes:
    """The complete `.jax` file: the skeleton (variables replaced by their index) and the arrays."""
    skeleton, leaves = split_variables(data)
    header = json.dumps(
        {
            "format": FORMAT,
            "version": 1,
            checksum.ALGORITHM: checksum.digest(data),
            "tree": jsonable(skeleton),
        }
    )
    arrays = {f"v{i:05d}": np.asarray(a) for i, a in enumerate(leaves)}
    buffer = io.BytesIO()
    np.savez(buffer, __header__=np.frombuffer(header.encode(), dtype=np.uint8), **arrays)
    return buffer.getvalue()


def write(path: str | os.PathLike, data: dict) -> None:
    """Write `data` to `path` in one go (`dpa.io.save` makes it atomic)."""
    Path(path).write_bytes(encode(data))


def read(path: str | os.PathLike) -> dict:
    """Load with allow_pickle=False and check the checksum."""
    if not zipfile.is_zipfile(path):
        raise ValueError("not a dpa .jax model (expected a zip archive)")
    with np.load(path, allow_pickle=False) as z:
        header = json.loads(bytes(z["__header__"]).decode())
        if header.get("format") != FORMAT:
            raise ValueError("not a dpa .jax model")
        n = len([k for k in z.files if k.startswith("v")])
        try:
            leaves = [z[f"v{i:05d}"] for i in range(n)]
        except zipfile.BadZipFile as err:  # a zip entry failing its CRC-32: a damaged byte
            raise checksum.corrupt(path, str(err)) from err
    data = merge_variables(header["tree"], leaves)
    checksum.verify(data, header.get(checksum.ALGORITHM), path)
    return data
