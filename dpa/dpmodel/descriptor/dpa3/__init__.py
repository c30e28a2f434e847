"""DPA-3 (`dpa3`): the repflow block, spec §7."""

from ..protocol import DescriptorKind, PhaseSplit
from .config import DPA3Config, finish
from .descriptor import (
    build,
    dim_out,
    forward,
    forward_head,
    forward_tail,
    neighbor_spec,
    split_layer,
)

DESCRIPTOR = DescriptorKind(
    "dpa3",
    (),
    DPA3Config,
    finish,
    build,
    forward,
    dim_out,
    neighbor_spec,
    phases=PhaseSplit(split_layer, forward_head, forward_tail),
)
