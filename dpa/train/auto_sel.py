"""`sel: "auto"` / `"auto:RATIO"` resolved from the training data's neighbor counts, as DeePMD-kit:
the largest count within rcut times RATIO (default 1.1), rounded up to a multiple of 4."""

from __future__ import annotations

import copy
import math
import re
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..data.system import System
from ..dpmodel.descriptor.registry import kind_of
from ..errors import ConfigError
from ..neighbor import neighbor_stat

_AUTO = re.compile(r"^auto(?::([0-9.eE+-]+))?$")
FRAMES_PER_CALL = 64


def _ratio(value: Any) -> float | None:
    """The ratio of an "auto[:ratio]" value, None for a number or list."""
    if not isinstance(value, str):
        return None
    m = _AUTO.match(value.strip())
    if m is None:
        raise ConfigError(f"sel {value!r}: use numbers, 'auto' or 'auto:RATIO' (e.g. 'auto:1.1')")
    return float(m.group(1)) if m.group(1) else 1.1


def max_neighbors(
    systems: Sequence[System], atypes: Sequence[np.ndarray], rcut: float, ntypes: int | None
) -> np.ndarray:
    """Largest number of neighbors within rcut over atoms and frames: per neighbor type, or in
    total when `ntypes` is None (mixed-type descriptors)."""
    width = 1 if ntypes is None else ntypes
    best = np.zeros(width, dtype=np.int64)
    for system, atype in zip(systems, atypes, strict=True):
        types = np.zeros_like(atype) if ntypes is None else atype
        for lo in range(0, system.nframes, FRAMES_PER_CALL):
            hi = min(lo + FRAMES_PER_CALL, system.nframes)
            box = None if system.box is None else system.box[lo:hi]
            _, counts = neighbor_stat(system.coord[lo:hi], types, box, rcut, width)
            best = np.maximum(best, counts)
    return best


def _wrap(count: float) -> int:
    return max(4, int(math.ceil(count / 4.0)) * 4)


def resolve_auto_sel(
    model_config: dict, systems: Sequence[System], atypes: Sequence[np.ndarray]
) -> dict:
    """A copy of the `model` section with every "auto" sel replaced by numbers from the data."""
    cfg = copy.deepcopy(model_config)
    desc = cfg.get("descriptor", {})
    ntypes = len(cfg["type_map"])
    for sel in kind_of(desc).sel_keys(desc):
        section = desc
        for key in sel.path:
            section = section.setdefault(key, {})
        ratio = _ratio(section.get(sel.key))
        if ratio is None:
            continue
        counts = max_neighbors(systems, atypes, sel.rcut, ntypes if sel.per_type else None)
        values = [_wrap(c * ratio) for c in counts.tolist()]
        section[sel.key] = values if sel.per_type else values[0]
    return cfg


def has_auto_sel(model_config: dict) -> bool:
    """True if any sel of the descriptor is "auto[:ratio]" (False for an unknown descriptor
    type, which the model's validation reports)."""
    desc = model_config.get("descriptor", {})
    try:
        keys = kind_of(desc).sel_keys(desc)
    except ConfigError:
        return False
    for sel in keys:
        section = desc
        for key in sel.path:
            section = section.get(key, {}) if isinstance(section, dict) else {}
        if isinstance(section, dict) and isinstance(section.get(sel.key), str):
            return True
    return False
