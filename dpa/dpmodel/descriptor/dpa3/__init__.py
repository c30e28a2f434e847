"""DPA-3 (`dpa3`): the repflow block, spec §7."""

from ..protocol import DescriptorKind, PhaseSplit
from .check import check_tree
from .config import DPA3Config, finish
from .deepmd_init import draw_like_deepmd
from .descriptor import (
    build,
    dim_out,
    forward,
    forward_head,
    forward_tail,
    neighbor_spec,
    split_layer,
)
from .settings import DPA3Settings
from .stats import sel_keys, stat_blocks

DESCRIPTOR = DescriptorKind(
    name="dpa3",
    aliases=(),
    config=DPA3Config,
    finish=finish,
    build=build,
    settings=DPA3Settings.from_tree,
    forward=forward,
    dim_out=dim_out,
    neighbor_spec=neighbor_spec,
    stat_blocks=stat_blocks,
    sel_keys=sel_keys,
    check_tree=check_tree,
    draw_like_deepmd=draw_like_deepmd,
    flags=frozenset(
        """a_compress_use_split add_chg_spin_ebd edge_init_use_dist optim_update sequential_update smooth_edge_update update_angle use_dynamic_sel use_exp_switch""".split()
    ),
    phases=PhaseSplit(split_layer, forward_head, forward_tail),
)
