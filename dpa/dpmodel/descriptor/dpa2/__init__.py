"""DPA-2 (`dpa2`): repinit and repformer blocks, spec §6."""

from ..protocol import DescriptorKind
from .descriptor import build, dim_out, forward, neighbor_spec

DESCRIPTOR = DescriptorKind("dpa2", (), build, forward, dim_out, neighbor_spec)
