"""The multi-task training input of DeePMD-kit 3.2 (`model.shared_dict`, `model.model_dict`,
`loss_dict`, `training.data_dict`, `model_prob` / `num_epoch_dict`), expanded into one
single-task input per branch plus the list of parts the branches share.

A branch's model section may name a shared part by string: `"descriptor": "dpa3_des"` or
`"dpa3_des:1"` (the sharing level after the colon, 0 by default). Top-level `model` keys other
than these two are defaults for every branch. Each branch is then validated as a single-task
input, so errors name the same keys as for single-task training, prefixed with the branch.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

from ..errors import ConfigError
from ..multitask import RANDOM_BRANCH
from .config import TrainingConfig, TrainInput, parse_train_input

#: keys of `training` that belong to the multi-task layout, not to a branch
_MULTI_TRAINING_KEYS = ("data_dict", "model_prob", "num_epoch_dict")
_DATA_DICT_KEYS = ("training_data", "validation_data", "stat_file", "stat_file_mode")


def _spellings(field: str) -> tuple[str, ...]:
    """The accepted spellings of a `training` key (numb_steps: stop_batch, num_steps, ...)."""
    alias = TrainingConfig.model_fields[field].validation_alias
    return tuple(getattr(alias, "choices", None) or (field,))


@dataclass(frozen=True)
class SharedPart:
    """One entry of `shared_dict` that several branches use: `part` is the model key
    ("descriptor", "fitting_net") and `links` the (branch, level) pairs, base first."""

    key: str
    part: str
    links: tuple[tuple[str, int], ...]


@dataclass(frozen=True)
class MultiTaskInput:
    """A validated multi-task input: one single-task `TrainInput` per branch (in model_dict
    order), the shared parts, the task probabilities or epochs, and the expanded model section."""

    tasks: dict[str, TrainInput]
    shared: tuple[SharedPart, ...]
    model_prob: dict[str, float] | None
    num_epoch_dict: dict[str, float] | None
    model_section: dict[str, Any]
    raw: dict[str, Any]


def is_multitask_input(raw: Any) -> bool:
    """Whether a training input is DeePMD-kit's multi-task layout (`model.model_dict`)."""
    model = raw.get("model") if isinstance(raw, dict) else None
    return isinstance(model, dict) and "model_dict" in model


def _reference(value: Any) -> tuple[str, int] | None:
    """("key", level) of a `"key"` / `"key:level"` reference, None for a literal value."""
    if not isinstance(value, str):
        return None
    key, _, level = value.partition(":")
    if level and not level.isdigit():
        raise ConfigError(f"shared reference {value!r}: the level after ':' must be an integer")
    return key, int(level or 0)


def _expand_model(model: dict, source: str) -> tuple[dict[str, dict], list[SharedPart]]:
    """Each branch's full model section, and the shared parts with their links."""
    shared = model.get("shared_dict", {}) or {}
    branches = model.get("model_dict")
    if not isinstance(shared, dict):
        raise ConfigError(f"{source}: model.shared_dict must be an object")
    if not isinstance(branches, dict) or not branches:
        raise ConfigError(f"{source}: model.model_dict must be an object with one entry per branch")
    defaults = {k: v for k, v in model.items() if k not in ("model_dict", "shared_dict")}
    expanded: dict[str, dict] = {}
    links: dict[str, list[tuple[str, int, str]]] = {}
    for name, section in branches.items():
        where = f"model.model_dict.{name}"
        if name.upper() == RANDOM_BRANCH:
            raise ConfigError(
                f"{source}: {where}: '{RANDOM_BRANCH}' is reserved; rename the branch"
            )
        if not isinstance(section, dict):
            raise ConfigError(f"{source}: {where} must be an object (a model section)")
        branch = copy.deepcopy(section)
        for key, value in defaults.items():
            branch.setdefault(key, copy.deepcopy(value))
        for key, value in list(branch.items()):
            ref = _reference(value) if key in ("type_map", "descriptor", "fitting_net") else None
            if ref is None:
                continue
            if ref[0] not in shared:
                known = ", ".join(sorted(shared)) or "none"
                raise ConfigError(
                    f"{source}: {where}.{key} = {value!r} names no entry of model.shared_dict "
                    f"(entries: {known})"
                )
            branch[key] = copy.deepcopy(shared[ref[0]])
            if key != "type_map":
                links.setdefault(ref[0], []).append((name, ref[1], key))
        expanded[name] = branch
    parts = []
    for key, found in links.items():
        kinds = {part for _, _, part in found}
        if len(kinds) > 1:
            raise ConfigError(f"{source}: model.shared_dict.{key} is used as {sorted(kinds)}")
        ordered = sorted(found, key=lambda link: link[1])  # stable: model_dict order per level
        if len(ordered) > 1:
            parts.append(SharedPart(key, ordered[0][2], tuple((b, lv) for b, lv, _ in ordered)))
    return expanded, parts


_LEVELS = {"descriptor": (0, 1), "fitting_net": (0,)}


def _check_levels(expanded: dict[str, dict], shared: list[SharedPart], source: str) -> None:
    """ConfigError for a sharing level the part does not have (DeePMD-kit's: a descriptor 0 or
    1, se_e2_a and fittings 0 only)."""
    for part in shared:
        for branch, level in part.links:
            allowed = _LEVELS[part.part]
            section = expanded[branch].get(part.part)
            kind = section.get("type") if isinstance(section, dict) else None
            if part.part == "descriptor" and kind in ("se_e2_a", "se_a"):
                allowed = (0,)
            if level not in allowed:
                raise ConfigError(
                    f"{source}: model.model_dict.{branch}.{part.part} = '{part.key}:{level}': "
                    f"level {level} is not defined for this {part.part} (levels: {list(allowed)})"
                )


def _check_branches(expanded: dict[str, dict], source: str) -> None:
    """What must agree across branches (type_map, dim_case_embd, data_stat_protect) and
    aliases that must be unique."""
    names = list(expanded)
    first = names[0]
    for key, default in (("type_map", None), ("data_stat_protect", 1e-2)):
        values = {name: expanded[name].get(key, default) for name in names}
        if any(v != values[first] for v in values.values()):
            shown = "; ".join(f"{n}: {v}" for n, v in values.items())
            raise ConfigError(
                f"{source}: model.model_dict: {key} differs across branches ({shown}); it must be the same in every branch"
            )
    dims = {n: (expanded[n].get("fitting_net") or {}).get("dim_case_embd", 0) for n in names}
    if len(set(dims.values())) > 1:
        shown = "; ".join(f"{n}: {v}" for n, v in dims.items())
        raise ConfigError(
            f"{source}: fitting_net.dim_case_embd differs across branches ({shown}); the case "
            "embedding needs one width for all"
        )
    dim = dims[first]
    if isinstance(dim, int) and 0 < dim < len(names):
        raise ConfigError(
            f"{source}: fitting_net.dim_case_embd = {dim} is too small for {len(names)} "
            f"branches: set it to at least {len(names)}"
        )
    seen: dict[str, str] = {n.lower(): n for n in names}
    for name in names:
        for alias in expanded[name].get("model_branch_alias", []) or []:
            if str(alias).upper() == RANDOM_BRANCH:
                raise ConfigError(
                    f"{source}: model.model_dict.{name}.model_branch_alias {alias!r}: "
                    f"'{RANDOM_BRANCH}' is reserved (it asks for a new random fitting)"
                )
            other = seen.get(str(alias).lower())
            if other is not None and other != name:
                raise ConfigError(
                    f"{source}: model.model_dict.{name}.model_branch_alias {alias!r} is already "
                    f"the name or an alias of branch {other!r}; aliases must be unique"
                )
            seen[str(alias).lower()] = name


def _per_branch(
    raw: dict, key: str, names: list[str], source: str, required: bool
) -> dict[str, Any]:
    """A {branch: value} dict of the input (loss_dict, data_dict) checked against the branches."""
    section = raw.get(key) if key == "loss_dict" else (raw.get("training") or {}).get(key)
    where = key if key == "loss_dict" else f"training.{key}"
    if section is None:
        if required:
            raise ConfigError(
                f"{source}: missing {where}, one entry per branch ({', '.join(names)})"
            )
        return {}
    if not isinstance(section, dict):
        raise ConfigError(f"{source}: {where} must be an object with one entry per branch")
    unknown = [k for k in section if k not in names]
    if unknown:
        raise ConfigError(
            f"{source}: {where} has entries for {unknown}, which are not branches of "
            f"model.model_dict ({', '.join(names)})"
        )
    missing = [n for n in names if n not in section]
    if required and missing:
        raise ConfigError(f"{source}: {where} has no entry for branch(es) {missing}")
    return section


def _weights(raw: dict, key: str, names: list[str], source: str) -> dict[str, float] | None:
    """model_prob / num_epoch_dict as floats, every branch listed, positive where needed."""
    value = (raw.get("training") or {}).get(key)
    if value is None or value == {}:
        return None
    section = _per_branch(raw, key, names, source, required=False)
    missing = [n for n in names if n not in section]
    if missing:
        raise ConfigError(
            f"{source}: training.{key} has no entry for branch(es) {missing}; list every "
            f"branch ({', '.join(names)})"
        )
    out = {}
    for name in names:
        v = section[name]
        if isinstance(v, bool) or not isinstance(v, int | float) or v < 0:
            raise ConfigError(f"{source}: training.{key}.{name} = {v!r} must be a number >= 0")
        out[name] = float(v)
    if key == "num_epoch_dict" and any(v <= 0 for v in out.values()):
        raise ConfigError(f"{source}: training.num_epoch_dict: every entry must be > 0")
    if key == "model_prob" and sum(out.values()) <= 0:
        raise ConfigError(f"{source}: training.model_prob: the weights sum to 0")
    return out


def parse_multitask_input(raw: dict, source: str = "input") -> MultiTaskInput:
    """Validate a multi-task input and split it into one single-task input per branch."""
    expanded, shared = _expand_model(raw["model"], source)
    _check_branches(expanded, source)
    _check_levels(expanded, shared, source)
    names = list(expanded)
    losses = _per_branch(raw, "loss_dict", names, source, required=False)
    data = _per_branch(raw, "data_dict", names, source, required=True)
    model_prob = _weights(raw, "model_prob", names, source)
    epochs = _weights(raw, "num_epoch_dict", names, source)
    training = dict(raw.get("training") or {})
    steps = [k for k in training if k in _spellings("numb_steps")]
    single_epochs = [k for k in training if k in _spellings("numb_epoch")]
    if single_epochs:
        raise ConfigError(
            f"{source}: training.{single_epochs[0]} is for single-task runs; a multi-task run "
            "takes training.numb_steps, or training.num_epoch_dict (epochs per branch)"
        )
    if epochs is not None and (model_prob is not None or steps):
        given = f"training.{steps[0]}" if steps else "training.model_prob"
        raise ConfigError(
            f"{source}: training.num_epoch_dict sets the run length and the task weights: "
            f"give it without numb_steps and model_prob ({given} is set)"
        )
    if epochs is None and not steps:
        raise ConfigError(
            f"{source}: a multi-task run needs training.numb_steps, or training.num_epoch_dict "
            "(epochs per branch)"
        )
    if "loss" in raw and losses:
        raise ConfigError(f"{source}: give loss_dict (one loss per branch) or loss, not both")
    base_training = {k: v for k, v in training.items() if k not in _MULTI_TRAINING_KEYS}
    tasks = {}
    for name in names:
        entry = data[name]
        if not isinstance(entry, dict):
            raise ConfigError(f"{source}: training.data_dict.{name} must be an object")
        unknown = [k for k in entry if k not in _DATA_DICT_KEYS and not k.startswith("_")]
        if unknown:
            raise ConfigError(
                f"{source}: unknown key(s) {unknown} in training.data_dict.{name}; allowed: "
                f"{', '.join(_DATA_DICT_KEYS)}"
            )
        branch_training = {**base_training, **entry}
        if epochs is not None:  # the run length comes from all tasks together (see the loop)
            branch_training["numb_steps"] = 1
        single = {
            **{k: v for k, v in raw.items() if k not in ("model", "loss_dict", "training")},
            "model": expanded[name],
            "loss": losses.get(name, raw.get("loss", {})),
            "training": branch_training,
        }
        tasks[name] = parse_train_input(single, source=f"{source} (branch {name})")
    section = {
        "shared_dict": copy.deepcopy(raw["model"].get("shared_dict", {})),
        "model_dict": expanded,
    }
    return MultiTaskInput(tasks, tuple(shared), model_prob, epochs, section, copy.deepcopy(raw))
