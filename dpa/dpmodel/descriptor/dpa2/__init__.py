"""DPA-2 (`dpa2`): repinit and repformer blocks, spec §6."""

from ..protocol import DescriptorKind
from .check import check_tree
from .config import DPA2Config, finish
from .deepmd_init import draw_like_deepmd
from .descriptor import build, dim_out, forward, neighbor_spec
from .settings import DPA2Settings
from .stats import sel_keys, stat_blocks

DESCRIPTOR = DescriptorKind(
    name="dpa2",
    aliases=(),
    config=DPA2Config,
    finish=finish,
    build=build,
    settings=DPA2Settings.from_tree,
    forward=forward,
    dim_out=dim_out,
    neighbor_spec=neighbor_spec,
    stat_blocks=stat_blocks,
    sel_keys=sel_keys,
    check_tree=check_tree,
    draw_like_deepmd=draw_like_deepmd,
    flags=frozenset(
        """add_tebd_to_repinit_out attn2_has_gate direct_dist g1_out_conv g1_out_mlp update_chnnl_2 update_g1_has_attn update_g1_has_conv update_g1_has_drrd update_g1_has_grrg update_g2_has_attn update_g2_has_g1g1 update_h2 use_sqrt_nnei use_three_body""".split()
    ),
)
