"""DPA-1 (`dpa1`, aliases `se_atten` and `se_atten_v2`), spec §5."""

from ..protocol import DescriptorKind
from .config import DPA1Config, finish
from .descriptor import build, dim_out, forward, neighbor_spec

DESCRIPTOR = DescriptorKind(
    "dpa1", ("se_atten", "se_atten_v2"), DPA1Config, finish, build, forward, dim_out, neighbor_spec
)
