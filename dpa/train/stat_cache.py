"""A cache of the descriptor statistics per data system (`training.stat_file`), so a second
run on the same data (a new pre-training, a fine-tune that adds types, a restarted job that
lost its output) does not recompute them.

What is cached is each system's sums of the environment matrix per center type (count, sum,
sum of squares; `stat._block_moments`), which add over systems: any run reuses the systems it
shares with an earlier one, whatever the other systems are. An entry's key is a hash of the
frames' coordinates, cell and types and of everything the sums depend on (the block's cutoffs
and neighbor counts, the type map, the excluded pairs), so changed data or a changed model
never reads a stale entry. The file is HDF5; dpa's entries live in their own group, so a
DeePMD-kit stat file given as `stat_file` keeps its own content.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from ..atomic import atomic_path
from ..data.system import System
from ..dpmodel.descriptor.protocol import EnvBlock
from ..errors import ConfigError, DataError

GROUP = "dpa_env_moments_v1"


def entry_key(block: EnvBlock, system: System, type_map: list[str], pairs: list[list[int]]) -> str:
    """The hash naming one system's sums for one block (data content and block parameters)."""
    h = hashlib.sha256()
    params = {
        "rcut": float(block.rcut),
        "rcut_smth": float(block.rcut_smth),
        "sel": [int(s) for s in block.sel],
        "mixed": bool(block.mixed_types),
        "protection": float(block.protection),
        "type_map": list(type_map),
        "pairs": [list(map(int, p)) for p in pairs],
    }
    h.update(json.dumps(params, sort_keys=True).encode())
    atype = np.ascontiguousarray(system.remap_types(type_map), dtype=np.int64)
    h.update(atype.tobytes())
    h.update(np.ascontiguousarray(system.coord, dtype=np.float64).tobytes())
    if system.box is not None:
        h.update(b"box")
        h.update(np.ascontiguousarray(system.box, dtype=np.float64).tobytes())
    return h.hexdigest()


class StatCache:
    """Env-matrix sums per (system, block), read from and written to one HDF5 file.

    mode "update": missing entries are computed and added (the file is rewritten atomically
    at `save`); "read": every entry must be there (an error names the file otherwise)."""

    def __init__(self, path: str | os.PathLike, mode: str = "update") -> None:
        self.path = Path(path)
        self.mode = mode
        self.entries: dict[str, np.ndarray] = {}
        self.added = 0  # entries not yet written
        self.hits = 0
        self.computed = 0
        if self.path.is_file():
            try:
                with h5py.File(self.path, "r") as f:
                    group = f.get(GROUP)
                    if group is not None:
                        self.entries = {k: np.asarray(v[()]) for k, v in group.items()}
            except OSError as err:
                raise DataError(
                    f"{self.path}: training.stat_file is not a readable HDF5 file ({err}); "
                    "remove it or point stat_file elsewhere"
                ) from None
        elif mode == "read":
            raise ConfigError(
                f"training.stat_file = {os.fspath(path)!r} does not exist, and stat_file_mode "
                "'read' needs it; run once with stat_file_mode 'update' to write it"
            )

    def moments(self, key: str, compute: Any) -> np.ndarray:
        """The cached sums under `key`, else `compute()` (stored in "update" mode)."""
        if key in self.entries:
            self.hits += 1
            return self.entries[key]
        if self.mode == "read":
            raise DataError(
                f"{self.path}: no statistics for a system of this run (stat_file_mode 'read'); "
                "set stat_file_mode to 'update' to compute and add them"
            )
        value = np.asarray(compute())
        self.entries[key] = value
        self.added += 1
        self.computed += 1
        return value

    def save(self) -> None:
        """Write the entries added since loading (nothing when none were)."""
        if not self.added:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(self.path) as tmp:
            if self.path.is_file():
                shutil.copyfile(self.path, tmp)
            with h5py.File(tmp, "a") as f:
                group = f.require_group(GROUP)
                for key, value in self.entries.items():
                    if key not in group:
                        group.create_dataset(key, data=value)
        self.added = 0
