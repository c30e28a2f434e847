"""DPA-2 (`dpa2`): repinit and repformer blocks, spec §6."""

from ..protocol import DescriptorKind
from .config import DPA2Config, finish
from .descriptor import build, dim_out, forward, neighbor_spec

DESCRIPTOR = DescriptorKind("dpa2", (), DPA2Config, finish, build, forward, dim_out, neighbor_spec)
