"""`MultiTaskModel`: several single-task models ("branches", DeePMD-kit's heads) in one file,
with the parts they share stored once, and the choice of one branch by name or alias.

A branch is a complete single-task model (`Model`). Sharing is object identity: an array two
branches share is one NumPy object at both places, so every tree walk (`dpa.tree`) maps it
once, the trainers hold it as one leaf, and the formats store it once.

The data dict of a multi-task file:
    {"backend", "software", "version",
     "model": {"@class": "MultiTaskModel", "@version": 1,
               "branches": {name: {"model": tree, "model_def_script": branch config,
                                   "@variables": {...}}}},
     "model_def_script": the multi-task model config (shared_dict, model_dict),
     "@variables": {}}
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .errors import ConfigError, ModelFileError
from .model import Model

MULTITASK_CLASS = "MultiTaskModel"
#: The branch name DeePMD-kit gives a single-task model's only head, and the alias it falls back
#: to when no head is named.
DEFAULT_HEAD = "Default"
#: A `--model-branch` value that asks for a new random fitting instead of a branch.
RANDOM_BRANCH = "RANDOM"


def is_multitask(data: Any) -> bool:
    """Whether a model file's data dict holds several branches."""
    model = data.get("model") if isinstance(data, dict) else None
    return isinstance(model, dict) and model.get("@class") == MULTITASK_CLASS


class MultiTaskModel:
    """Branches (single-task `Model`s) sharing arrays by identity, as read from or written to
    one file; `branch(head)` selects one by name or alias, case-insensitively."""

    def __init__(self, data: dict[str, Any]) -> None:
        if not is_multitask(data):
            raise ModelFileError(
                f"not a multi-task model: expected model.@class '{MULTITASK_CLASS}'"
            )
        stored = data["model"].get("branches")
        if not isinstance(stored, dict) or not stored:
            raise ModelFileError("a multi-task model needs a non-empty 'branches' dict")
        meta = {k: v for k, v in data.items() if k in ("backend", "software", "version")}
        self.branches: dict[str, Model] = {}
        for name, part in stored.items():
            if not isinstance(part, dict):
                raise ModelFileError(f"branch {name!r}: expected a dict with a 'model' tree")
            try:
                self.branches[name] = Model({**meta, "@variables": {}, **part})
            except ModelFileError as err:
                raise ModelFileError(f"branch {name!r}: {err}") from None
        self.data = data

    @classmethod
    def from_branches(
        cls, branches: dict[str, Model], model_def_script: dict[str, Any] | None = None
    ) -> MultiTaskModel:
        """A multi-task model of these branches (arrays they share by identity stay shared)."""
        first = next(iter(branches.values()))
        data = {
            **{k: v for k, v in first.data.items() if k in ("backend", "software", "version")},
            "model": {
                "@class": MULTITASK_CLASS,
                "@version": 1,
                "branches": {
                    name: {k: v for k, v in m.data.items() if k in _BRANCH_KEYS}
                    for name, m in branches.items()
                },
            },
            "model_def_script": model_def_script if model_def_script is not None else {},
            "@variables": {},
        }
        return cls(data)

    @property
    def names(self) -> list[str]:
        return list(self.branches)

    def aliases(self, name: str) -> list[str]:
        """The aliases of branch `name` (`model_branch_alias` of its config)."""
        script = self.branches[name].data.get("model_def_script")
        found = script.get("model_branch_alias", []) if isinstance(script, dict) else []
        return [str(a) for a in found or []]

    def info(self, name: str) -> dict[str, Any]:
        """The free-form `info` dict of branch `name` (observed types, descriptions)."""
        script = self.branches[name].data.get("model_def_script")
        found = script.get("info", {}) if isinstance(script, dict) else {}
        return dict(found or {})

    def resolve(self, head: str | None, what: str = "head") -> str:
        """The branch named `head` (a name or an alias, any case); None picks the alias
        'Default' if a branch has it. Unknown names are a ConfigError listing the branches."""
        wanted = DEFAULT_HEAD if head is None else str(head)
        for name in self.branches:
            if wanted.lower() in [n.lower() for n in [name, *self.aliases(name)]]:
                return name
        listing = self.describe_branches()
        if head is None:
            raise ConfigError(f"this is a multi-task model: choose a branch with {what}: {listing}")
        raise ConfigError(f"{what} {head!r} is not a branch of this model; branches: {listing}")

    def describe_branches(self) -> str:
        """'a, b (aliases: x, y)' for error messages."""
        parts = []
        for name in self.branches:
            aliases = self.aliases(name)
            parts.append(name + (f" (aliases: {', '.join(aliases)})" if aliases else ""))
        return ", ".join(parts)

    def branch(self, head: str | None, what: str = "head") -> Model:
        """The single-task model of one branch (its arrays are this model's, not copies)."""
        return self.branches[self.resolve(head, what)]

    @property
    def num_params(self) -> int:
        """Distinct stored parameters: a shared array counts once."""
        from .tree import variables

        return sum(int(np.asarray(a).size) for a in variables(self.data["model"]))

    def save(self, path: Any) -> None:
        from .modelfiles import write_data

        write_data(path, self.data)

    def __repr__(self) -> str:
        return f"MultiTaskModel(branches={self.names}, params={self.num_params})"


# the per-branch part of a single-task model's data dict
_BRANCH_KEYS = ("model", "model_def_script", "@variables")


def select_branch(model: Model | MultiTaskModel, head: str | None, what: str = "head") -> Model:
    """`model` itself when single-task (a head other than its own name is refused), else the
    branch `head` names."""
    if isinstance(model, MultiTaskModel):
        return model.branch(head, what)
    if head is not None and head.lower() != DEFAULT_HEAD.lower():
        raise ConfigError(
            f"{what} {head!r}: this is a single-task model (no branches); leave {what} out"
        )
    return model
