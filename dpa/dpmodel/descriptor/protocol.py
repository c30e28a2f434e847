"""What a descriptor declares to the rest of dpa: one `DescriptorKind` per descriptor module,
found by `type` name in `registry`. The model, the neighbor lists and the trainers ask the kind,
never the module's name, so a new descriptor plugs in without edits elsewhere."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from pydantic import BaseModel

from ..array_api import Array
from .common import Edges, empty_slots_alike


@dataclass(frozen=True)
class NeighborSpec:
    """What the model-level neighbor list of a descriptor must look like (spec §2.3, §10).

    rcut, sel: the list's cutoff and width (the widest block's, for descriptors of several);
    mixed_types: one distance-sorted list (True) or per-type blocks of widths sel (se_e2_a);
    compact: re-sort after model-level pair exclusion so holes go last (DPA-2/3);
    trimmable: slots empty in every row may be cut off (normalizers do not use the width); with
      per-type blocks each block is cut on its own;
    keep_empty_slot: when trimming, keep one slot past the widest row (of each block): the
      descriptor reads the (row-independent) contribution of the cut empty slots off it;
    count_radii: radii r for which the descriptor wants the host-side hint "most slots within r";
    message_passing: E_i depends on other atoms' edges (general atom-virial form, spec §9).
    """

    rcut: float
    rcut_smth: float
    sel: list[int]
    mixed_types: bool
    compact: bool = False
    trimmable: bool = False
    keep_empty_slot: bool = False
    count_radii: tuple[float, ...] = ()
    message_passing: bool = False


@dataclass(frozen=True)
class EnvBlock:
    """One env-mat block of a descriptor: where its davg/dstd live and how its list is built.

    ``path``: keys leading from the descriptor dict to the dict holding ``davg``/``dstd``;
    ``fixed_std``: DPA-3 ``fix_stat_std`` (non-zero: no statistics, dstd is this constant).
    """

    path: tuple[str, ...]
    rcut: float
    rcut_smth: float
    sel: tuple[int, ...]
    mixed_types: bool
    set_davg_zero: bool
    protection: float
    fixed_std: float = 0.0

    @property
    def nsel(self) -> int:
        """Number of slots (the second axis of davg/dstd)."""
        return sum(self.sel)


@dataclass(frozen=True)
class SelKey:
    """A neighbor count of an input section that may be "auto" (resolved from the data): the
    keys leading to the dict that holds it, its name, the radius to count within, and whether
    it counts per neighbor type (a list) or all types together (one number)."""

    path: tuple[str, ...]
    key: str
    rcut: float
    per_type: bool = False


@dataclass(frozen=True)
class PhaseSplit:
    """An optional cut of the forward pass for checkpointed training: the layer index to cut
    at (None: no cut for these settings), the state at the cut, and the rest from that state;
    each takes the settings and (head, tail) the tree as `forward` does."""

    layer: Callable[[Any], int | None]
    head: Callable[[Any, dict, Edges, int], tuple[Array, ...]]
    tail: Callable[[Any, dict, Edges, tuple[Array, ...], int], Array]


@dataclass(frozen=True)
class DescriptorKind:
    """One descriptor type: its names and the functions of its serialized tree `desc`.

    name, aliases: the serialized `type` and the other names inputs may use for it;
    config: the pydantic class of its input section (`model.descriptor`);
    finish(section, ntypes): fills the defaults that depend on other keys and checks the keys
      against each other (ConfigError naming them), on the validated section as a dict;
    build(config, type_map, rng): a serialized descriptor tree from a finished section;
    settings(desc): the stored tree's hyperparameters parsed once into a frozen, typed object
      (every default of a stored key applied here and nowhere else); the arrays stay in `desc`;
    forward(settings, desc, edges): the descriptor (nf, nat, dim_out(desc)) in its precision,
      reading hyperparameters from `settings` and only arrays from `desc`;
    neighbor_spec(desc): the neighbor list it consumes;
    stat_blocks(desc): its env-mat blocks, whose davg/dstd the statistics set (spec §2.6);
    sel_keys(section): the neighbor counts of an input section that may be "auto";
    check_tree(node, ntypes): the load-time check of a stored tree (`dpa.dpmodel.check.Node`):
      shapes, dtypes and bounds, a ModelFileError naming the JSON path;
    draw_like_deepmd(desc, seed): redraws a fresh tree's weights as DeePMD-kit's PyTorch
      backend would for that seed (None: dpa's own draws are kept);
    flags: its stored keys that must hold true or false (checked on load);
    phases: the optional cut for checkpointed training.
    """

    name: str
    aliases: tuple[str, ...]
    config: type[BaseModel]
    finish: Callable[[dict, int], None]
    build: Callable[[dict, list[str], np.random.Generator], dict]
    settings: Callable[[dict], Any]
    forward: Callable[[Any, dict, Edges], Array]
    dim_out: Callable[[dict], int]
    neighbor_spec: Callable[[dict], NeighborSpec]
    stat_blocks: Callable[[dict], list[EnvBlock]]
    sel_keys: Callable[[dict], list[SelKey]]
    check_tree: Callable[[Any, int], None]
    draw_like_deepmd: Callable[[dict, int], None] | None = None
    flags: frozenset[str] = frozenset()
    phases: PhaseSplit | None = None

    @property
    def names(self) -> tuple[str, ...]:
        return (self.name, *self.aliases)


def sel_list(sel: Any) -> list[int]:
    """`sel` as a list of ints (an input may give one number)."""
    return [int(sel)] if isinstance(sel, int | float) else [int(s) for s in sel]


def protection(desc: dict) -> float:
    """The env-mat protection of a serialized descriptor (input key or stored env_mat)."""
    return float(desc.get("env_protection", desc.get("env_mat", {}).get("protection", 0.0)))


def trimmable_list_spec(desc: dict, mixed_types: bool) -> NeighborSpec:
    """The neighbor list of a one-block descriptor (se_e2_a, DPA-1): width sel, one list or
    per-type blocks; trailing empty slots cut where they all look alike (`empty_slots_alike`)."""
    trim = empty_slots_alike(desc)
    return NeighborSpec(
        float(desc["rcut"]),
        float(desc["rcut_smth"]),
        sel_list(desc["sel"]),
        mixed_types,
        trimmable=trim,
        keep_empty_slot=trim,
    )


def single_block(desc: dict, mixed_types: bool, davg_zero_default: bool) -> list[EnvBlock]:
    """The statistics block of a one-block descriptor (se_e2_a, DPA-1): its davg/dstd at the
    top level, over sel slots (one list: their sum)."""
    sel = sel_list(desc["sel"])
    return [
        EnvBlock(
            ("@variables",),
            float(desc["rcut"]),
            float(desc["rcut_smth"]),
            (sum(sel),) if mixed_types else tuple(sel),
            mixed_types,
            bool(desc.get("set_davg_zero", davg_zero_default)),
            protection(desc),
        )
    ]
