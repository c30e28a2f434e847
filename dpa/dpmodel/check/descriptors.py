"""The check of the model's descriptor, by the check its type declares; gives its output width."""

from __future__ import annotations

from ...errors import ConfigError
from ..descriptor.registry import kind_of
from .nodes import Node, fail


def check_descriptor(desc: Node, ntypes: int) -> int:
    """Check a descriptor; returns its output width (`dim_out`)."""
    try:
        kind = kind_of(desc.value)
    except ConfigError as err:
        fail(desc["type"], f"is not supported ({err})", "convert the model to a supported type")
    kind.check_tree(desc, ntypes)
    return int(kind.dim_out(desc.value))


def descriptor_flags(desc: Node) -> frozenset[str]:
    """The boolean keys the descriptor's type declares (none for an unknown type, which
    `check_descriptor` reports)."""
    try:
        return kind_of(desc.value).flags
    except (ConfigError, AttributeError):
        return frozenset()
