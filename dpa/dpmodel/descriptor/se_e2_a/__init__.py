"""DeepPot-SE `se_e2_a` (alias `se_a`), spec §4."""

from ..protocol import DescriptorKind
from .check import check_tree
from .config import SeE2AConfig, finish
from .deepmd_init import draw_like_deepmd
from .descriptor import build, dim_out, forward, neighbor_spec
from .settings import SeE2ASettings
from .stats import sel_keys, stat_blocks

DESCRIPTOR = DescriptorKind(
    name="se_e2_a",
    aliases=("se_a",),
    config=SeE2AConfig,
    finish=finish,
    build=build,
    settings=SeE2ASettings.from_tree,
    forward=forward,
    dim_out=dim_out,
    neighbor_spec=neighbor_spec,
    stat_blocks=stat_blocks,
    sel_keys=sel_keys,
    check_tree=check_tree,
    draw_like_deepmd=draw_like_deepmd,
)
