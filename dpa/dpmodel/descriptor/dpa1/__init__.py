"""DPA-1 (`dpa1`, aliases `se_atten` and `se_atten_v2`), spec §5."""

from ..protocol import DescriptorKind
from .check import check_tree
from .config import DPA1Config, finish
from .deepmd_init import draw_like_deepmd
from .descriptor import build, dim_out, forward, neighbor_spec
from .settings import DPA1Settings
from .stats import sel_keys, stat_blocks

DESCRIPTOR = DescriptorKind(
    name="dpa1",
    aliases=("se_atten", "se_atten_v2"),
    config=DPA1Config,
    finish=finish,
    build=build,
    settings=DPA1Settings.from_tree,
    forward=forward,
    dim_out=dim_out,
    neighbor_spec=neighbor_spec,
    stat_blocks=stat_blocks,
    sel_keys=sel_keys,
    check_tree=check_tree,
    draw_like_deepmd=draw_like_deepmd,
)
