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
    kind = desc.get("type")
    ntypes = len(cfg["type_map"])

    def auto(section: dict, key: str, rcut: float, per_type: bool) -> None:
        ratio = _ratio(section.get(key))
        if ratio is None:
            return
        counts = max_neighbors(systems, atypes, rcut, ntypes if per_type else None)
        sel = [_wrap(c * ratio) for c in counts.tolist()]
        section[key] = sel if per_type else sel[0]

    if kind in ("se_e2_a", "se_a"):
        auto(desc, "sel", float(desc.get("rcut", 6.0)), per_type=True)
    elif kind in ("dpa1", "se_atten", "se_atten_v2"):
        auto(desc, "sel", float(desc.get("rcut", 6.0)), per_type=False)
    elif kind == "dpa2":
        rep, former = desc.setdefault("repinit", {}), desc.setdefault("repformer", {})
        auto(rep, "nsel", float(rep.get("rcut", 6.0)), per_type=False)
        auto(rep, "three_body_sel", float(rep.get("three_body_rcut", 4.0)), per_type=False)
        auto(former, "nsel", float(former.get("rcut", 4.0)), per_type=False)
    elif kind == "dpa3":
        flow = desc.setdefault("repflow", {})
        auto(flow, "e_sel", float(flow.get("e_rcut", 6.0)), per_type=False)
        auto(flow, "a_sel", float(flow.get("a_rcut", 4.0)), per_type=False)
    return cfg


def has_auto_sel(model_config: dict) -> bool:
    """True if any sel of the descriptor is "auto[:ratio]"."""
    desc = model_config.get("descriptor", {})
    blocks = [desc, desc.get("repinit", {}), desc.get("repformer", {}), desc.get("repflow", {})]
    keys = ("sel", "nsel", "three_body_sel", "e_sel", "a_sel")
    return any(isinstance(b.get(k), str) for b in blocks for k in keys)
