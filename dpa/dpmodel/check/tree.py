"""Whole-tree checks: the parts every model has, its field names and flags, every variable array."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from ...errors import ConfigError, ModelFileError
from ..network import activation
from .nodes import FLAGS, FLOAT_DTYPES, PRECISIONS, Node, as_array, choice, fail


def structure(root: Node) -> None:
    """The parts every model has, as dicts; only standard energy models."""
    missing = [k for k in ("type_map", "descriptor", "fitting", "@variables") if not root.has(k)]
    if missing:
        raise ModelFileError(f"the model tree lacks {missing}; the file is incomplete")
    for key in ("descriptor", "fitting", "@variables"):
        if not isinstance(root.value[key], dict):
            fail(root[key], f"must be a dict, got {type(root.value[key]).__name__}")
    if root.get("type", "standard").value != "standard":
        fail(
            root["type"],
            f"is {root.value['type']!r}: only standard energy models are supported",
            "use an energy model",
        )
    if root["fitting"].get("type", "ener").value != "ener":
        fail(
            root["fitting"]["type"],
            f"is {root.value['fitting']['type']!r}: only energy fittings ('ener') are supported",
            "use an energy model",
        )


def walk_fields(node: Node, flags: frozenset[str] = FLAGS) -> None:
    """Every `activation_function` and `precision` field names a known function / precision,
    and every key in `flags` holds true or false."""
    value = node.value
    if isinstance(value, dict):
        for key, child in value.items():
            if key == "@variables":
                continue
            sub = Node(child, f"{node.path}.{key}")
            if key == "activation_function":
                try:
                    activation(child)
                except ConfigError as err:
                    fail(sub, f"is invalid ({err})")
            elif key == "precision":
                choice(sub, PRECISIONS)
            elif key in flags:
                if not isinstance(child, bool | np.bool_):
                    fail(sub, f"must be true or false, got {child!r}")
            else:
                walk_fields(sub, flags)
    elif isinstance(value, list | tuple):
        for item in node.items():
            walk_fields(item, flags)


def _leaves(node: Node, inside: bool = False) -> Iterator[Node]:
    """The variable leaves (non-None values under "@variables") with their paths."""
    value = node.value
    if isinstance(value, dict):
        for key, child in value.items():
            yield from _leaves(Node(child, f"{node.path}.{key}"), inside or key == "@variables")
    elif isinstance(value, list | tuple):
        for item in node.items():
            yield from _leaves(item, inside)
    elif value is not None and inside:
        yield node


def check_arrays(root: Node) -> None:
    """Every variable is a float32/float64 array of finite values; no dstd entry is zero."""
    for leaf in _leaves(root):
        array = as_array(leaf)
        if array.dtype not in FLOAT_DTYPES:
            fail(leaf, f"has dtype {array.dtype}; expected float32 or float64")
        finite = np.isfinite(array)
        if not finite.all():
            bad = np.argwhere(~finite)
            first = tuple(int(i) for i in bad[0])
            fail(
                leaf,
                f"holds {array[first]} at index {first} ({len(bad)} non-finite value(s) in all)",
                "the file is corrupt or was saved from a diverged training; re-export it from "
                "its source or retrain",
            )
        if leaf.path.endswith("@variables.dstd") and not np.all(array > 0):
            bad = np.argwhere(~(array > 0))
            first = tuple(int(i) for i in bad[0])
            fail(
                leaf,
                f"holds {array[first]} at index {first} ({len(bad)} entries <= 0): the "
                "environment matrix is divided by dstd",
                "the descriptor statistics are broken; recompute them (retrain) or re-export "
                "the model from its source",
            )
