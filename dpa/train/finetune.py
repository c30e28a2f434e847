"""Fine-tuning (`dpa train --finetune PRE`): a run that starts from a pretrained model's weights,
with DeePMD-kit 3.2's rules for which branch the weights come from, which parts are copied, how
a different type map is handled, and how the energy bias is then adjusted.

Per target branch (the one task of a single-task run, named None):
- its source: `--model-branch`, else `model.finetune_head`, else the pretrained model's only
  branch; on a multi-task pretrained model with neither, its first branch with a random
  fitting ("RANDOM" asks for that explicitly);
- the descriptor is copied; the fitting and the output bias too unless the fitting is random;
- a type map that differs keeps the pretrained types' rows (subset, reorder) and adds new types
  with the statistics of the new data, zero bias and random type-embedding rows;
- the bias is then re-fitted on the training data: changed by statistic for a copied fitting,
  set by statistic for a random one; a multi-task branch of the same name is resumed as is.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import ConfigError
from ..model import Model
from ..multitask import RANDOM_BRANCH, MultiTaskModel
from ..tree import map_variables
from .config import TrainInput
from .multitask_input import MultiTaskInput

log = logging.getLogger("dpa.train")

#: bias adjustment after the copy: "change" (copied fitting), "set" (random fitting), None (resume)
BiasMode = str | None


@dataclass(frozen=True)
class Source:
    """Where a target branch's weights come from: a pretrained branch, and whether its fitting
    is replaced by a random one."""

    model: Model
    name: str
    random_fitting: bool


@dataclass(frozen=True)
class FinetuneStart:
    """The models a fine-tuning run starts from and each one's bias adjustment."""

    models: dict[str | None, Model]
    bias_modes: dict[str | None, BiasMode]


def _branches(pretrained: Model | MultiTaskModel) -> dict[str, Model]:
    if isinstance(pretrained, MultiTaskModel):
        return pretrained.branches
    return {"Default": pretrained}


def pick_source(pretrained: Model | MultiTaskModel, wanted: str | None, what: str) -> Source:
    """The source of a single-task target (`wanted` from --model-branch or finetune_head)."""
    branches = _branches(pretrained)
    first = next(iter(branches))
    if wanted is None or wanted == "" or wanted.upper() == RANDOM_BRANCH:
        random = wanted is not None and wanted.upper() == RANDOM_BRANCH
        if isinstance(pretrained, MultiTaskModel) and not random:
            log.warning(
                "fine-tuning from a multi-task model without %s: its first branch %r gives the "
                "descriptor and the fitting is new (random), so the bias is set by statistic; "
                "name a branch to keep its fitting (%s)",
                what,
                first,
                pretrained.describe_branches(),
            )
            random = True
        return Source(branches[first], first, random)
    if isinstance(pretrained, MultiTaskModel):
        name = pretrained.resolve(wanted, what)
        return Source(branches[name], name, False)
    if wanted.lower() != "default":
        raise ConfigError(
            f"{what} {wanted!r}: the pretrained model is single-task (its only branch is "
            f"'Default'); leave {what} out, or give {RANDOM_BRANCH} for a new fitting"
        )
    return Source(pretrained, "Default", False)


def _copy_arrays(tree: Any) -> Any:
    """A copy of a (sub)tree with its own arrays (the pretrained model stays as it was)."""
    return map_variables(tree, lambda a: np.array(a, copy=True))


def pretrain_script_config(target: dict, source: Source) -> dict:
    """--use-pretrain-script: the target's model section with the pretrained branch's
    descriptor (and fitting, unless random); type_map and `trainable` flags stay the input's."""
    script = source.model.data.get("model_def_script")
    if not isinstance(script, dict):
        raise ConfigError(
            "--use-pretrain-script: the pretrained model stores no model config "
            "(model_def_script); write the descriptor and fitting_net in the input instead"
        )
    out = copy.deepcopy(target)
    parts = ["descriptor"] if source.random_fitting else ["descriptor", "fitting_net"]
    for part in parts:
        section = copy.deepcopy(script[part])
        trainable = (target.get(part) or {}).get("trainable")
        if trainable is not None:
            section["trainable"] = trainable
        else:
            section.pop("trainable", None)
        if target.get(part) is not None and _config_differs(target[part], section):
            log.warning("--use-pretrain-script: model.%s replaced by the pretrained one", part)
        out[part] = section
    return out


def _config_differs(a: dict, b: dict) -> bool:
    keys = (set(a) | set(b)) - {"trainable", "seed"}
    return any(a.get(k) != b.get(k) for k in keys)


# ------------------------------------------------------------------ type maps


def type_index_map(old: list[str], new: list[str]) -> list[int]:
    """For each new type, its index in `old`, or i - len(new) (a row of an appended block)
    for a type the old map lacks (DeePMD-kit's rule)."""
    return [old.index(name) if name in old else i - len(new) for i, name in enumerate(new)]


def _remap_rows(array: Any, index: list[int], ext: np.ndarray | None) -> np.ndarray:
    a = np.asarray(array)
    if ext is not None:
        a = np.concatenate([a, np.asarray(ext, dtype=a.dtype)], axis=0)
    return a[np.asarray(index)]


def _remap_types(values: list, old: list[str], new: list[str]) -> list:
    """Type indices (or pairs) re-expressed in the new map; those of dropped types removed."""
    out: list = []
    for value in values:
        if isinstance(value, list):
            names = [old[t] for t in value]
            if all(n in new for n in names):
                out.append([new.index(n) for n in names])
        elif old[value] in new:
            out.append(new.index(old[value]))
    return out


def change_type_map(
    model: Model, new_map: list[str], fresh: Model, rng: np.random.Generator
) -> Model:
    """`model` over the types of `new_map` (a subset, a reordering, new elements): per-type
    rows selected, new types with the statistics `fresh` (the target model, its statistics
    computed on the new data) holds for them, zero bias, unit std and random type-embedding
    rows (uniform in [0, 1), as DeePMD-kit draws them)."""
    old = list(model.type_map)
    if old == list(new_map):
        return model
    if model.descriptor_type == "se_e2_a":
        raise ConfigError(
            f"the pretrained model is a DeepPot-SE (se_e2_a) over {old}; its per-type-pair "
            f"networks cannot take the type map {list(new_map)}: fine-tune with the same "
            "type_map, or pretrain a type-embedding model (DPA-1/2/3)"
        )
    index = type_index_map(old, list(new_map))
    new_types = any(i < 0 for i in index)
    n_new = len(new_map)
    tree = _copy_arrays(model.tree)
    fresh_tree = fresh.tree

    def visit(node: Any, fresh_node: Any) -> Any:
        if isinstance(node, dict):
            out = {}
            for k, v in node.items():
                f = fresh_node.get(k) if isinstance(fresh_node, dict) else None
                if k == "@variables" and isinstance(v, dict):
                    out[k] = {
                        name: _stat_rows(name, arr, f, index, new_types, len(old))
                        for name, arr in v.items()
                    }
                elif k == "type_map" and isinstance(v, list):
                    out[k] = list(new_map)
                elif k == "ntypes" and isinstance(v, int):
                    out[k] = n_new
                elif k in ("exclude_types", "atom_exclude_types", "pair_exclude_types"):
                    out[k] = _remap_types(v, old, list(new_map)) if isinstance(v, list) else v
                elif k == "type_embedding" and isinstance(v, dict):
                    out[k] = _type_embedding(v, index, len(old), rng)
                    if "type_map" in v:
                        out[k]["type_map"] = list(new_map)
                else:
                    out[k] = visit(v, f)
            return out
        if isinstance(node, list):
            fl = fresh_node if isinstance(fresh_node, list) else [None] * len(node)
            return [
                visit(v, f) for v, f in zip(node, fl + [None] * (len(node) - len(fl)), strict=False)
            ]
        return node

    out = visit(tree, fresh_tree)
    return Model({**model.data, "model": out})


def _stat_rows(
    name: str, array: Any, fresh_vars: Any, index: list[int], new_types: bool, n_old: int
) -> Any:
    """A per-type array of `@variables` remapped (arrays not indexed by type unchanged)."""
    a = None if array is None else np.asarray(array)
    if a is None:
        return array
    if name in ("davg", "dstd") and a.ndim >= 1 and a.shape[0] == n_old:
        ext = None
        if new_types:
            fresh = (fresh_vars or {}).get(name)
            if fresh is None:
                fill = np.zeros if name == "davg" else np.ones
                ext = fill((len(index), *a.shape[1:]))
            else:
                ext = np.asarray(fresh)
        return _remap_rows(a, index, ext)
    if name in ("out_bias", "out_std") and a.ndim == 3 and a.shape[1] == n_old:
        moved = np.moveaxis(a, 1, 0)
        ext = None
        if new_types:
            fill = np.zeros if name == "out_bias" else np.ones
            ext = fill((len(index), *moved.shape[1:]))
        return np.moveaxis(_remap_rows(moved, index, ext), 0, 1)
    if name == "bias_atom_e" and a.ndim >= 1 and a.shape[0] == n_old:
        ext = np.zeros((len(index), *a.shape[1:])) if new_types else None
        return _remap_rows(a, index, ext)
    return array


def _type_embedding(tebd: dict, index: list[int], n_old: int, rng: np.random.Generator) -> dict:
    """The type embedding net over the new types: one-hot inputs select rows of its first
    layer's matrix, so those rows are remapped (new ones drawn in [0, 1)); an econf embedding
    reads the type map and needs nothing but that."""
    out = {**tebd, "ntypes": len(index)}
    if tebd.get("use_econf_tebd"):
        return out
    net = tebd["embedding"]
    layer = net["layers"][0]
    w = np.asarray(layer["@variables"]["w"])
    if w.shape[0] != n_old:
        raise ConfigError(f"type embedding: first-layer matrix {w.shape} is not one row per type")
    if w.shape[1] in (n_old, 2 * n_old):
        raise ConfigError(
            f"the pretrained type embedding has width {w.shape[1]}, equal to (or twice) its "
            f"{n_old} types, which makes its first layer residual; dpa cannot change the type "
            "map of such a model"
        )
    ext = rng.random((len(index), w.shape[1])).astype(w.dtype)
    new_w = _remap_rows(w, index, ext if any(i < 0 for i in index) else None)
    layers = [{**layer, "@variables": {**layer["@variables"], "w": new_w}}, *net["layers"][1:]]
    out["embedding"] = {**net, "layers": layers}
    return out


# ------------------------------------------------------------------ the weight copy


def transfer(target: Model, source: Model, random_fitting: bool) -> Model:
    """The target with the source's descriptor (and fitting and output bias, unless random);
    array shapes must agree, and the `trainable` flags stay the target's."""
    tree = dict(target.tree)
    parts = ["descriptor"] if random_fitting else ["descriptor", "fitting"]
    for part in parts:
        _check_shapes(target.tree[part], source.tree[part], part)
        copied = _copy_arrays(source.tree[part])
        copied["trainable"] = target.tree[part].get("trainable", True)
        tree[part] = copied
    if not random_fitting:
        tree["@variables"] = _copy_arrays({"@variables": source.tree["@variables"]})["@variables"]
    return Model({**target.data, "model": tree})


def _check_shapes(target: Any, source: Any, where: str) -> None:
    """ConfigError when the input's architecture differs from the pretrained one."""
    from ..tree import split_variables

    t_skel, t_leaves = split_variables(target)
    s_skel, s_leaves = split_variables(source)
    t_shapes = [np.shape(a) for a in t_leaves]
    s_shapes = [np.shape(a) for a in s_leaves]
    if t_shapes != s_shapes:
        raise ConfigError(
            f"model.{'fitting_net' if where == 'fitting' else where} of the input differs from "
            "the pretrained model's (different layer sizes or layers); make them equal, or pass "
            "--use-pretrain-script to take the pretrained architecture"
        )


def finetune_starts(
    plan: TrainInput | MultiTaskInput,
    pretrained: Model | MultiTaskModel,
    model_branch: str | None,
    fresh: dict[str | None, Model],
    seed: int,
    stats: Any,
) -> FinetuneStart:
    """The models a fine-tune starts from: each target branch's `fresh` model (built from the
    input) filled from its source. `stats(name, model) -> model` fills a fresh model's
    statistics from branch `name`'s training data (for the statistics of new types)."""
    if isinstance(plan, TrainInput):
        source = single_task_source(plan, pretrained, model_branch)
        model = _start_branch(fresh[None], source, seed, lambda m: stats(None, m))
        return FinetuneStart({None: model}, {None: "set" if source.random_fitting else "change"})
    if model_branch is not None:
        raise ConfigError(
            "--model-branch is for a single-task input; in a multi-task input give each "
            "branch its source as model.model_dict.<branch>.finetune_head"
        )
    branches = _branches(pretrained)
    models: dict[str | None, Model] = {}
    modes: dict[str | None, BiasMode] = {}
    for name, cfg in plan.tasks.items():
        head = cfg.raw["model"].get("finetune_head")
        mode: BiasMode
        if head is not None and str(head).upper() != RANDOM_BRANCH:
            source = pick_source(pretrained, str(head), f"model.model_dict.{name}.finetune_head")
            mode = "change"
        elif head is None and name in branches:
            source, mode = Source(branches[name], name, False), None
        else:
            first = next(iter(branches))
            source, mode = Source(branches[first], first, True), "set"
        models[name] = _start_branch(fresh[name], source, seed, lambda m, n=name: stats(n, m))
        modes[name] = mode
    return FinetuneStart(models, modes)


def single_task_source(
    cfg: TrainInput, pretrained: Model | MultiTaskModel, model_branch: str | None
) -> Source:
    """The source of a single-task target: --model-branch, else model.finetune_head."""
    wanted = model_branch if model_branch is not None else cfg.raw["model"].get("finetune_head")
    what = "--model-branch" if model_branch is not None else "model.finetune_head"
    return pick_source(pretrained, wanted, what)


def _start_branch(fresh: Model, source: Source, seed: int, stats: Any) -> Model:
    """A target branch (`fresh`, built from the input) filled with the source's weights."""
    src = source.model
    if list(src.type_map) != list(fresh.type_map):
        new = [t for t in fresh.type_map if t not in src.type_map]
        log.info(
            "type map %s -> %s%s", src.type_map, fresh.type_map,
            f" (new types {new}: statistics from the training data)" if new else "",
        )  # fmt: skip
        fresh_stats = stats(fresh) if new else fresh
        src = change_type_map(src, list(fresh.type_map), fresh_stats, np.random.default_rng(seed))
    return transfer(fresh, src, source.random_fitting)
