"""Which variables of a model tree training updates: everything under "@variables" except the
statistics and output buffers, and except networks marked `"trainable": false`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..tree import merge_variables

# statistics and buffers fixed before training (env-mat stats, energy bias, input normalization)
BUFFERS = frozenset(
    {
        "davg",
        "dstd",
        "out_bias",
        "out_std",
        "bias_atom_e",
        "fparam_avg",
        "fparam_inv_std",
        "aparam_avg",
        "aparam_inv_std",
    }
)


def trainable_flags(tree: Any) -> list[bool]:
    """One flag per variable leaf, in the traversal order of `dpa.tree.split_variables`."""
    flags: list[bool] = []

    def walk(node: Any, trainable: bool, inside: bool, key: str) -> None:
        if isinstance(node, dict):
            here = trainable and node.get("trainable", True) is not False
            for k, v in node.items():
                walk(
                    v, here, inside or k == "@variables", k if inside or k == "@variables" else key
                )
        elif isinstance(node, (list, tuple)):
            for v in node:
                walk(v, trainable, inside, key)
        elif node is not None and inside:
            flags.append(trainable and key not in BUFFERS)

    walk(tree, True, False, "")
    return flags


def gradient_tree(skeleton: Any, flags: Sequence[bool], grads: Sequence[Any]) -> Any:
    """A model tree (the `split_variables` skeleton) holding `grads`, one per trainable leaf in
    traversal order, and None at the fixed leaves (statistics, buffers)."""
    it = iter(grads)
    return merge_variables(skeleton, [next(it) if f else None for f in flags])
