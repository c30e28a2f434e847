"""Model checksums: sha256 over a canonical serialization of the model tree, the same for every
format, so a changed byte in a stored weight is caught on read instead of loading silently.

The serialization: the tree skeleton (variables replaced by their index) as canonical JSON, then
each variable in traversal order as its little-endian dtype, its shape and its bytes. Files
without a checksum (DeePMD-kit's, older dpa ones) are not checked.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from typing import Any

import numpy as np

from dpa.errors import ModelFileError
from dpa.tree import split_variables

ALGORITHM = "sha256"
_VERSION = b"dpa-model-checksum-1\n"
_HEX = re.compile(r"[0-9a-f]{64}")


def _key(key: Any) -> str:
    """A dict key as JSON would write it (so int keys of a .pth tree match a .dp tree's)."""
    return key if isinstance(key, str) else json.dumps(key)


def _plain(value: Any) -> Any:
    """The skeleton as plain JSON values: str keys, lists for tuples, Python numbers."""
    if isinstance(value, dict):
        return {_key(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def canonical_json(skeleton: Any) -> bytes:
    """The skeleton as canonical JSON (sorted keys, no spaces, ASCII)."""
    text = json.dumps(_plain(skeleton), sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return text.encode("ascii")


def _little_endian(value: Any) -> np.ndarray:
    """The variable as a C-contiguous little-endian array (one byte layout for every format)."""
    array = np.asarray(value)
    return np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<"))


def digest(tree: Any) -> str:
    """The hex sha256 of the tree's canonical serialization."""
    skeleton, leaves = split_variables(tree)
    text = canonical_json(skeleton)
    h = hashlib.sha256(_VERSION)
    h.update(b"%d\n" % len(text))
    h.update(text)
    for leaf in leaves:
        array = _little_endian(leaf)
        h.update(f"{array.dtype.str} {list(array.shape)}\n".encode("ascii"))
        h.update(array.reshape(-1).view(np.uint8))
    return h.hexdigest()


def corrupt(path: str | os.PathLike, reason: str) -> ModelFileError:
    """The error for a damaged model file: which file, why, and how to get a good copy."""
    return ModelFileError(
        f"{os.fspath(path)}: corrupt model file ({reason}): re-copy it, or convert it again "
        "from its source"
    )


def verify(tree: Any, stored: Any, path: str | os.PathLike) -> None:
    """Check the tree read from `path` against its stored checksum (None: nothing to check)."""
    if stored is None:
        return
    if not isinstance(stored, str) or _HEX.fullmatch(stored) is None or digest(tree) != stored:
        raise corrupt(path, f"its arrays do not match the {ALGORITHM} checksum written with them")
