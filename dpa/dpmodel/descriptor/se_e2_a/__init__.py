"""DeepPot-SE `se_e2_a` (alias `se_a`), spec §4."""

from ..protocol import DescriptorKind
from .config import SeE2AConfig, finish
from .descriptor import build, dim_out, forward, neighbor_spec

DESCRIPTOR = DescriptorKind(
    "se_e2_a", ("se_a",), SeE2AConfig, finish, build, forward, dim_out, neighbor_spec
)
