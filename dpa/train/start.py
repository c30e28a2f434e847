"""The model a training run starts from: fresh with its statistics from the data (single- or
multi-task, shared parts linked after), a fine-tune's copy of pretrained weights with its bias
refitted, or a checkpoint's; and the model a run saves."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np

from ..data.deepmd_order import DeepmdOrder
from ..errors import ConfigError
from ..model import Model, build_model
from ..multitask import MultiTaskModel
from .batches import DataSource
from .change_bias import bias_from_frames, with_bias
from .checkpoint import checkpoint_model
from .config import TrainInput
from .finetune import finetune_starts
from .multitask_input import MultiTaskInput
from .sharing import pooled_branches, share, with_case_embedding
from .stat import (
    compute_env_statistics,
    compute_parameter_statistics,
    fit_energy_bias,
    pooled_parameter_statistics,
    set_energy_bias,
    stat_frames,
)
from .stat_cache import StatCache
from .tasks import Task

log = logging.getLogger("dpa.train")


def stat_nbatch(cfg: TrainInput) -> int:
    return int(cfg.training.data_stat_nbatch or cfg.raw["model"].get("data_stat_nbatch", 10))


def with_statistics(model: Model, cfg: TrainInput, source: DataSource) -> Model:
    """davg/dstd and the energy bias from data_stat_nbatch batches of every system: the ones
    DeePMD-kit packs when following its batch order, else each system's first batches."""
    nbatch: int | None = stat_nbatch(cfg)
    sizes = source.sampler.batch_sizes
    systems = source.systems
    picks = source.sampler.stat_frames if isinstance(source.sampler, DeepmdOrder) else None
    if picks is not None:
        systems, nbatch = [s.frames(f) for s, f in zip(systems, picks, strict=True)], None
    with stat_cache(cfg) as cache:
        tree = compute_env_statistics(model.tree, systems, nbatch, sizes, cache)
    tree = compute_parameter_statistics(tree, systems, nbatch, sizes)
    if any(s.energy is not None for s in systems):
        tree = set_energy_bias(tree, fit_energy_bias(tree, systems, nbatch, sizes))
    return Model({**model.data, "model": tree})


@contextmanager
def stat_cache(cfg: TrainInput) -> Iterator[StatCache | None]:
    """The input's statistics cache (`training.stat_file`), saved after use; None without."""
    tcfg = cfg.training
    if not tcfg.stat_file:
        yield None
        return
    cache = StatCache(tcfg.stat_file, tcfg.stat_file_mode)
    start = time.perf_counter()
    yield cache
    cache.save()
    log.info(
        "descriptor statistics: %d system entries from %s, %d computed and added (%.1f s)",
        cache.hits, tcfg.stat_file, cache.computed,
        time.perf_counter() - start,
    )  # fmt: skip


def starting_models(
    plan: TrainInput | MultiTaskInput,
    source: Model | MultiTaskModel | None,
    seed: int,
    case_embedding: bool = True,
) -> dict[str | None, Model]:
    """The models training starts from: fresh ones (each branch built as a single-task model,
    then the case embedding; sharing comes after the statistics), or the source's."""
    if isinstance(plan, TrainInput):
        if source is None:
            return {None: build_model(plan.raw["model"], seed=seed)}
        assert isinstance(source, Model)
        return {None: Model({k: v for k, v in source.data.items() if k != "training"})}
    if source is None:
        models = {
            name: build_model(cfg.raw["model"], seed=seed) for name, cfg in plan.tasks.items()
        }
        if not case_embedding:  # a fine-tune: copied from the source, or zeros when random
            return models  # type: ignore[return-value]
        return with_case_embedding(models)  # type: ignore[arg-type,return-value]
    assert isinstance(source, MultiTaskModel)
    if sorted(source.names) != sorted(plan.tasks):
        raise ConfigError(
            f"the checkpoint's branches {source.names} differ from the input's model_dict "
            f"branches {list(plan.tasks)}"
        )
    return {name: source.branches[name] for name in plan.tasks}


def multitask_statistics(
    plan: MultiTaskInput,
    models: dict[str | None, Model],
    tasks: dict[str | None, Task],
    probs: dict[str | None, float],
) -> dict[str | None, Model]:
    """Each branch's statistics, then the sharing: a shared part's base pools the data of its
    level-0 links (a descriptor's unweighted, a fitting's fparam/aparam weighted by the task
    probabilities, as DeePMD-kit's PyTorch backend); the energy bias is each branch's own."""
    links = {(b, sp.part) for sp in plan.shared for b, lv in sp.links[1:] if lv == 0}
    out = {}
    for name, task in tasks.items():
        assert name is not None
        tree, nbatch = models[name].tree, stat_nbatch(task.cfg)
        for part in ("descriptor", "fitting_net"):
            if (name, part) in links:
                continue  # replaced by its base's part below
            branches = pooled_branches(name, part, plan.shared)
            pool = [tasks[b].train_src for b in branches]
            systems = [s for src in pool for s in src.systems]
            sizes = [b for src in pool for b in src.sampler.batch_sizes]
            if part == "descriptor":
                with stat_cache(task.cfg) as cache:
                    tree = compute_env_statistics(tree, systems, nbatch, sizes, cache)
            else:  # DeePMD-kit weights a linked branch's sums by p_link / p_base
                weights = [probs[b] / probs[name] if probs[name] > 0 else 1.0 for b in branches]
                groups = [
                    (src.systems, src.sampler.batch_sizes, w)
                    for src, w in zip(pool, weights, strict=True)
                ]
                tree = pooled_parameter_statistics(tree, groups, nbatch)
        own = task.train_src
        if any(s.energy is not None for s in own.systems):
            bias = fit_energy_bias(tree, own.systems, nbatch, own.sampler.batch_sizes)
            tree = set_energy_bias(tree, bias)
        out[name] = Model({**models[name].data, "model": tree})
    return share(out, plan.shared)  # type: ignore[arg-type,return-value]


def finetuned_models(
    plan: TrainInput | MultiTaskInput,
    tasks: dict[str | None, Task],
    fresh: dict[str | None, Model],
    pretrained: Model | MultiTaskModel,
    model_branch: str | None,
    seed: int,
    backend: str,
) -> dict[str | None, Model]:
    """The fine-tune's start (see `dpa.train.finetune`), shared parts linked, then each
    branch's energy bias adjusted on data_stat_nbatch batches of each training system."""

    def stats(name: str | None, model: Model) -> Model:
        task = tasks[name]
        src = task.train_src
        nbatch, sizes = stat_nbatch(task.cfg), src.sampler.batch_sizes
        with stat_cache(task.cfg) as cache:
            tree = compute_env_statistics(model.tree, src.systems, nbatch, sizes, cache)
        return Model({**model.data, "model": tree})

    start = finetune_starts(plan, pretrained, model_branch, fresh, seed, stats)
    models = start.models
    if isinstance(plan, MultiTaskInput):
        models = share(models, plan.shared)  # type: ignore[arg-type,assignment]
    out = {}
    for name, model in models.items():
        mode = start.bias_modes[name]
        if mode is None:
            out[name] = model
            continue
        src = tasks[name].train_src
        frames = stat_frames(src.systems, stat_nbatch(tasks[name].cfg), src.sampler.batch_sizes)
        frames = [f for f in frames if f.energy is not None]
        if not frames:
            log.warning("%sno energy labels: the energy bias is kept", tasks[name].label)
            out[name] = model
            continue
        old = np.asarray(model.tree["@variables"]["out_bias"]).ravel()
        bias, std, replaced = bias_from_frames(model, frames, mode, backend)
        new = with_bias(model, model, bias, std, replaced)
        assert isinstance(new, Model)
        log.info(
            "%s%s output bias of %s from %s to %s", tasks[name].label,
            "changed" if mode == "change" else "set", model.type_map,
            np.array2string(old, precision=3), np.array2string(np.ravel(bias), precision=3),
        )  # fmt: skip
        out[name] = new
    if isinstance(plan, MultiTaskInput):
        out = share(out, plan.shared)  # type: ignore[arg-type,assignment]
    return out


def saved_model(
    plan: TrainInput | MultiTaskInput,
    models: dict[str | None, Model],
    tree: dict,
    training: dict[str, Any] | None = None,
) -> Model | MultiTaskModel:
    """The run's model (a checkpoint with `training`) with the trainer's `tree`."""
    if isinstance(plan, TrainInput):
        if training is not None:
            return checkpoint_model(models[None], tree, training)
        return Model({**models[None].data, "model": tree})
    branches = {name: Model({**m.data, "model": tree[name]}) for name, m in models.items()}
    mt = MultiTaskModel.from_branches(branches, plan.model_section)  # type: ignore[arg-type]
    if training is not None:
        mt = MultiTaskModel({**mt.data, "training": training})
    return mt


def with_observed_types(
    models: dict[str | None, Model], tasks: dict[str | None, Task]
) -> dict[str | None, Model]:
    """Each model with `info.observed_type` in its config: the elements its training data
    holds, sorted by name (what DeePMD-kit records and `dpa show` lists)."""
    out = {}
    for name, model in models.items():
        src = tasks[name].train_src
        seen = {model.type_map[t] for atype in src.atypes for t in np.unique(atype) if t >= 0}
        script = model.data.get("model_def_script")
        if not isinstance(script, dict):
            out[name] = model
            continue
        info = {**(script.get("info") or {}), "observed_type": sorted(seen)}
        out[name] = Model({**model.data, "model_def_script": {**script, "info": info}})
    return out
