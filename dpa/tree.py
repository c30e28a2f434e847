"""Walking the serialized model tree: its arrays are the non-None leaves under "@variables" keys."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np


def map_variables(tree: Any, fn: Callable[[Any], Any], _inside: bool = False) -> Any:
    """A copy of `tree` with `fn` applied to every variable (array) leaf; containers are new."""
    if isinstance(tree, dict):
        return {k: map_variables(v, fn, _inside or k == "@variables") for k, v in tree.items()}
    if isinstance(tree, (list, tuple)):
        return [map_variables(v, fn, _inside) for v in tree]
    if tree is None or not _inside:
        return tree
    return fn(tree)


def variables(tree: Any) -> list[Any]:
    """The variable leaves of `tree` in traversal order."""
    found: list[Any] = []
    map_variables(tree, lambda a: found.append(a) or a)
    return found


def split_variables(tree: Any) -> tuple[Any, list[Any]]:
    """(skeleton with variables replaced by their index, list of variables)."""
    leaves: list[Any] = []

    def take(a: Any) -> int:
        leaves.append(a)
        return len(leaves) - 1

    return map_variables(tree, take), leaves


def merge_variables(skeleton: Any, leaves: list[Any]) -> Any:
    """Inverse of `split_variables`: put `leaves` back at their indices."""
    return map_variables(skeleton, lambda i: leaves[i])


def jsonable(value: Any) -> Any:
    """Plain Python numbers for NumPy scalars in the non-array part of the tree."""
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value
