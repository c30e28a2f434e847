"""`.jax`: a zip (NumPy .npz) holding the tree as JSON plus one array per variable; no pickle."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..tree import split_variables
from .dp import _jsonable

FORMAT = "dpa.jax"


def write(path: Path, data: dict) -> None:
    """Store the skeleton (variables replaced by their index) and the arrays."""
    skeleton, leaves = split_variables(data)
    header = json.dumps({"format": FORMAT, "version": 1, "tree": _jsonable(skeleton)})
    arrays = {f"v{i:05d}": np.asarray(a) for i, a in enumerate(leaves)}
    with open(path, "wb") as f:
        np.savez(f, __header__=np.frombuffer(header.encode(), dtype=np.uint8), **arrays)


def read(path: Path) -> dict:
    """Load with allow_pickle=False."""
    import zipfile

    from ..tree import merge_variables

    if not zipfile.is_zipfile(path):
        raise ValueError("not a dpa .jax model (expected a zip archive)")
    with np.load(path, allow_pickle=False) as z:
        header = json.loads(bytes(z["__header__"]).decode())
        if header.get("format") != FORMAT:
            raise ValueError("not a dpa .jax model")
        skeleton = header["tree"]
        n = len([k for k in z.files if k.startswith("v")])
        leaves = [z[f"v{i:05d}"] for i in range(n)]
    return merge_variables(skeleton, leaves)
