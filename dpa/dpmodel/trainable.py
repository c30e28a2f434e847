"""Which variables of a model tree training updates: everything under "@variables" except the
statistics and output buffers, and except networks marked `"trainable": false`."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..tree import map_variables, merge_variables, split_variables

# statistics and buffers fixed before training (env-mat stats, energy bias, input normalization)
BUFFERS = frozenset(
    {
        "davg",
        "dstd",
        "out_bias",
        "out_std",
        "bias_atom_e",
        "case_embd",
        "fparam_avg",
        "fparam_inv_std",
        "aparam_avg",
        "aparam_inv_std",
    }
)


def trainable_flags(tree: Any) -> list[bool]:
    """One flag per distinct variable leaf, in the traversal order of
    `dpa.tree.split_variables` (a leaf shared by several places: its first place decides)."""
    flags: list[bool] = []
    seen: set[int] = set()

    def walk(node: Any, trainable: bool, inside: bool, key: str, layers: Any = None) -> None:
        if isinstance(node, dict):
            flag = node.get("trainable", True)
            if isinstance(flag, list):  # per layer (a fitting net): applied at its "layers"
                layers, flag = flag, True
            here = trainable and flag is not False
            for k, v in node.items():
                sub = k if inside or k == "@variables" else key
                if k == "layers" and isinstance(v, list) and layers is not None:
                    for i, layer in enumerate(v):
                        on = bool(layers[i]) if i < len(layers) else True
                        walk(layer, here and on, inside, sub)
                    continue
                walk(v, here, inside or k == "@variables", sub, layers)
        elif isinstance(node, (list, tuple)):
            for v in node:
                walk(v, trainable, inside, key, layers)
        elif node is not None and inside and id(node) not in seen:
            seen.add(id(node))
            flags.append(trainable and key not in BUFFERS)

    walk(tree, True, False, "")
    return flags


def gradient_tree(skeleton: Any, flags: Sequence[bool], grads: Sequence[Any]) -> Any:
    """A model tree (the `split_variables` skeleton) holding `grads`, one per trainable leaf in
    traversal order, and None at the fixed leaves (statistics, buffers)."""
    it = iter(grads)
    return merge_variables(skeleton, [next(it) if f else None for f in flags])


@dataclass(frozen=True)
class Layout:
    """The variables a trainer holds: one model tree, or the trees of a multi-task model's
    branches (`{name: tree}`) whose shared arrays become one leaf, so a step on any branch
    updates them for all.

    skeletons: {branch: tree skeleton} (branch None for a single tree); leaves: the distinct
    variables; flags: which leaves train; members: per branch, the positions in the trainable
    list its loss reaches (a step on it updates only those, as torch's optimizers skip
    parameters without a gradient).
    """

    single: bool
    skeletons: dict[str | None, Any]
    leaves: list[Any]
    flags: tuple[bool, ...]
    members: dict[str | None, tuple[int, ...]]

    def tree(self, leaves: Sequence[Any]) -> dict:
        """The trees with `leaves` in place: a model tree, or {branch: tree} (sharing kept)."""
        trees = merge_variables(self.skeletons, list(leaves))
        return trees[None] if self.single else trees

    def skeleton(self, branch: str | None) -> Any:
        return self.skeletons[branch]


def is_branch_dict(tree: Any) -> bool:
    """Whether `tree` is {branch name: model tree} rather than one model tree."""
    return (
        isinstance(tree, dict)
        and tree.get("@class") != "Model"
        and all(isinstance(v, dict) and v.get("@class") == "Model" for v in tree.values())
    )


def layout(tree: dict) -> Layout:
    """The `Layout` of one model tree or of {branch: model tree}."""
    single = not is_branch_dict(tree)
    trees: dict[str | None, Any] = {None: tree} if single else dict(tree)
    skeletons, leaves = split_variables(trees)
    flags = tuple(trainable_flags(trees))
    position, count = {}, 0
    for i, trainable in enumerate(flags):
        if trainable:
            position[i], count = count, count + 1
    members = {}
    for name, skeleton in skeletons.items():
        indices: list[int] = []
        map_variables(skeleton, indices.append)
        members[name] = tuple(sorted({position[i] for i in indices if i in position}))
    return Layout(single, skeletons, leaves, flags, members)
