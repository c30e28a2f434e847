"""Walking the serialized model tree: its arrays are the non-None leaves under "@variables" keys."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np


def map_variables(tree: Any, fn: Callable[[Any], Any]) -> Any:
    """A copy of `tree` with `fn` applied to every variable (array) leaf; containers are new.

    A leaf object that appears at several places (an array shared between the branches of a
    multi-task model) is mapped once, and its result appears at each place: sharing survives
    every conversion, and the formats store a shared array once.
    """
    return _map(tree, fn, False, {})


def _map(tree: Any, fn: Callable[[Any], Any], inside: bool, done: dict[int, tuple]) -> Any:
    if isinstance(tree, dict):
        return {k: _map(v, fn, inside or k == "@variables", done) for k, v in tree.items()}
    if isinstance(tree, (list, tuple)):
        return [_map(v, fn, inside, done) for v in tree]
    if tree is None or not inside:
        return tree
    key = id(tree)
    if key not in done:  # the leaf is kept with its result, so its id stays unique meanwhile
        done[key] = (tree, fn(tree))
    return done[key][1]


def variables(tree: Any) -> list[Any]:
    """The distinct variable leaves of `tree` in traversal order (a shared one once)."""
    found: list[Any] = []
    map_variables(tree, found.append)
    return found


def split_variables(tree: Any) -> tuple[Any, list[Any]]:
    """(skeleton with variables replaced by their index, list of distinct variables); a shared
    variable has one index."""
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
