"""The tasks of a training run: one per branch of a multi-task input, or the one task of a
single-task input (named None), each with its data sources, loss and lcurve columns; the run
length and the task of each step."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import ConfigError
from ..model import Model
from .batches import DataSource, LabelledBatch, Prefetcher, check_model_inputs
from .config import TrainInput
from .loss import EnerLossConfig, ener_loss
from .multitask_input import MultiTaskInput


class Losses:
    """One loss function per (atom count, label flags), so jit caches stay few and hashable."""

    def __init__(self, cfg: EnerLossConfig) -> None:
        self.cfg = cfg
        self.cache: dict = {}

    def __call__(self, batch: LabelledBatch):
        key = (batch.natoms, tuple(sorted(batch.finds.items())))
        if key not in self.cache:
            cfg, natoms, finds = self.cfg, batch.natoms, dict(batch.finds)

            def loss_fn(pred, labels, lr):
                return ener_loss(pred, {**labels, **finds}, natoms, lr, cfg)

            self.cache[key] = loss_fn
        return self.cache[key]


def numb_steps_of(cfg: TrainInput, source: DataSource) -> int:
    """numb_steps, or numb_epoch converted with the sampler's batches per epoch."""
    if cfg.training.numb_steps is not None:
        return int(cfg.training.numb_steps)
    per_epoch = sum(source.sampler.nbatches)
    return max(1, int(math.ceil(cfg.training.numb_epoch * per_epoch)))


@dataclass
class Task:
    """One task of a run: a branch's input, model, data, loss and batch prefetcher (the single
    task of a single-task run has name None)."""

    name: str | None
    cfg: TrainInput
    train_src: DataSource
    valid_src: DataSource | None
    losses: Losses
    keys: list[str]
    prefetch: Prefetcher | None = None

    @property
    def label(self) -> str:
        return "" if self.name is None else f"[{self.name}] "


def task_configs(plan: TrainInput | MultiTaskInput) -> dict[str | None, TrainInput]:
    return {None: plan} if isinstance(plan, TrainInput) else dict(plan.tasks)


def make_tasks(
    plan: TrainInput | MultiTaskInput,
    models: dict[str | None, Model],
    seed: int,
    systems: list | None,
) -> dict[str | None, Task]:
    """Each task's data sources (checked against its model), loss and metric keys."""
    tasks = {}
    for i, (name, cfg) in enumerate(task_configs(plan).items()):
        where = "" if name is None else f"data_dict.{name}."
        tcfg, model = cfg.training, models[name]
        task_seed = seed + 1000 * i
        train_src = DataSource(
            tcfg.training_data, model.type_map, task_seed, f"{where}training_data", systems
        )
        valid_src = None
        if tcfg.validation_data is not None:
            valid_src = DataSource(
                tcfg.validation_data, model.type_map, task_seed + 1, f"{where}validation_data"
            )
        for src in (train_src, valid_src):
            if src is not None:
                check_model_inputs(src, model)
        loss_cfg = EnerLossConfig.from_config(cfg.loss, cfg.learning_rate.start_lr)
        keys = sorted(metric_keys(loss_cfg))
        tasks[name] = Task(name, cfg, train_src, valid_src, Losses(loss_cfg), keys)
    return tasks


def task_weights(plan: TrainInput | MultiTaskInput, tasks: dict) -> tuple[int, np.ndarray]:
    """(numb_steps, probability of each task per step): model_prob, else num_epoch_dict
    (steps = sum of epochs x batches per epoch of each task), else the number of systems."""
    first = next(iter(tasks.values()))
    if isinstance(plan, TrainInput):
        return numb_steps_of(plan, first.train_src), np.ones(1)
    names = list(tasks)
    if plan.num_epoch_dict is not None:
        per_epoch = []
        for name in names:
            sampler = tasks[name].train_src.sampler
            ratios = [n / p for n, p in zip(sampler.nbatches, sampler.probs, strict=True) if p > 0]
            per_epoch.append(math.ceil(max(ratios)))
        work = np.array([plan.num_epoch_dict[n] * t for n, t in zip(names, per_epoch, strict=True)])
        return int(math.ceil(work.sum())), work / work.sum()
    if first.cfg.training.numb_steps is None:
        raise ConfigError(
            "a multi-task run needs training.numb_steps, or training.num_epoch_dict (epochs per "
            "branch); numb_epoch is for single-task runs"
        )
    if plan.model_prob is not None:
        weights = np.array([plan.model_prob[n] for n in names])
    else:
        weights = np.array([len(tasks[n].train_src.systems) for n in names], dtype=float)
    return int(first.cfg.training.numb_steps), weights / weights.sum()


def task_of_step(seed: int, step: int, probs: np.ndarray) -> int:
    """The task of a step, drawn with the task probabilities from (seed, step) alone: the same
    on a restart and whatever ran before."""
    if len(probs) == 1:
        return 0
    u = np.random.default_rng([seed, step, 0x7A5C]).random()
    return int(min(np.searchsorted(np.cumsum(probs), u, side="right"), len(probs) - 1))


def task_arg(task: Task) -> dict[str, Any]:
    """The trainer's `task` keyword for a branch (none for a single-task run)."""
    return {} if task.name is None else {"task": task.name}


def metric_keys(cfg: EnerLossConfig) -> list[str]:
    """The lcurve columns of this loss: rmse plus rmse_* (mse) or mae_* (mae) per active term."""
    return cfg.metric_keys()
