"""Dispatch to the check of the model's descriptor type; gives the descriptor's output width."""

from __future__ import annotations

from ..dpmodel.descriptor.registry import kind_of
from ..errors import ConfigError
from .nodes import Node, fail
from .repflow import dpa3
from .repformer import dpa2
from .se_atten import dpa1, se_e2_a


def check_descriptor(desc: Node, ntypes: int) -> int:
    """Check a descriptor; returns its output width (`dim_out`)."""
    try:
        kind = kind_of(desc.value)
    except ConfigError as err:
        fail(desc["type"], f"is not supported ({err})", "convert the model to a supported type")
    {"se_e2_a": se_e2_a, "dpa1": dpa1, "dpa2": dpa2, "dpa3": dpa3}[kind.name](desc, ntypes)
    return int(kind.dim_out(desc.value))
