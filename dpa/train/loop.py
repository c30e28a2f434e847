"""`dpa train`: build or load the model, fill its statistics from the data, then the step loop
with learning curve, checkpoints and a final deployable model (backend-neutral; each backend
brings only its trainer: `TorchTrainer`, `JaxTrainer`)."""

from __future__ import annotations

import json
import logging
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

from .. import io
from ..atomic import atomic_path
from ..backends.base import Trainer, get_backend
from ..data.deepmd_order import DeepmdOrder
from ..errors import BackendError, ConfigError, DPAError, OutputError
from ..model import Model
from ..multitask import MultiTaskModel
from .auto_sel import has_auto_sel, resolve_auto_sel
from .batches import (
    DataSource,
    LabelledBatch,
    Prefetcher,
    follow_deepmd_order,
    make_batch,
)
from .checkpoint import (
    POINTER,
    read_training_state,
    resolve_checkpoint,
    training_state,
    write_checkpoint,
)
from .config import TrainInput, parse_train_input, read_train_input
from .finetune import pretrain_script_config, single_task_source
from .loss import (
    display_metrics,
    lcurve_header,
    lcurve_line,
    multitask_lcurve_header,
    multitask_lcurve_line,
    weighted_average,
)
from .multitask_input import MultiTaskInput, is_multitask_input, parse_multitask_input
from .outdir import LOCK_NAME, inside_output, locked_output_folder
from .schedule import ExpDecay
from .start import (
    finetuned_models,
    multitask_statistics,
    saved_model,
    starting_models,
    stat_nbatch,
    with_observed_types,
    with_statistics,
)
from .tasks import Task, make_tasks, task_arg, task_configs, task_of_step, task_weights

log = logging.getLogger("dpa.train")
SUFFIX = {"torch": ".pth", "jax": ".jax"}


class TrainingDiverged(DPAError):
    """The loss became NaN or infinite."""


def _trainer(backend: str, tree: dict, cfg: TrainInput) -> Trainer:
    """The backend's trainer over `tree` with the input's optimizer."""
    opt = cfg.optimizer
    try:
        return get_backend(backend).trainer(
            tree,
            optimizer=opt.type,
            weight_decay=float(opt.weight_decay or 0.0),
            betas=(opt.adam_beta1, opt.adam_beta2),
            max_norm=cfg.training.gradient_max_norm or None,
            checkpointing=cfg.training.gradient_checkpointing,
        )
    except BackendError as err:
        raise ConfigError(str(err)) from None


def _schedule(cfg: TrainInput, numb_steps: int) -> ExpDecay:
    lr = cfg.learning_rate
    warmup = lr.warmup_steps if lr.warmup_ratio is None else int(lr.warmup_ratio * numb_steps)
    stop = lr.stop_lr if lr.stop_lr is not None else lr.start_lr * lr.stop_lr_ratio
    return ExpDecay(
        lr.start_lr,
        stop,
        lr.decay_steps,
        numb_steps,
        lr.decay_rate,
        lr.smooth,
        warmup_steps=warmup,
        warmup_start_factor=lr.warmup_start_factor,
    )


def _systems_for_auto_sel(raw: dict) -> list | None:
    """The training systems when the model asks for "auto" sel (None otherwise, or when the
    input is too incomplete to say; validation then reports what is missing)."""
    model, training = raw.get("model"), raw.get("training")
    if not isinstance(model, dict) or not isinstance(training, dict) or not has_auto_sel(model):
        return None
    data = training.get("training_data")
    if not isinstance(data, dict) or "systems" not in data or "type_map" not in model:
        return None
    from ..data.load import load_systems

    return load_systems(data["systems"], data.get("fmt"))


def _check_type_map(model: Model, raw: dict, path: Path) -> None:
    """The model file training starts from must have the input's type_map."""
    wanted = raw.get("model", {}).get("type_map") if isinstance(raw.get("model"), dict) else None
    if wanted is not None and list(model.type_map) != list(wanted):
        raise ConfigError(
            f"{path}: its type_map {model.type_map} differs from the input's {list(wanted)}"
        )


def _use_deepmd_order(cfg: TrainInput, state: dict[str, Any] | None) -> bool:
    """The input's batch_order, or for a restart the order its checkpoint was drawing."""
    if state is not None:
        return json.loads(state["samplers"]["training"]).get("order") == "deepmd"
    return cfg.training.batch_order == "deepmd"


def _follow_deepmd(
    cfg: TrainInput,
    train_src: DataSource,
    valid_src: DataSource | None,
    seed: int,
    model: Model,
    fresh: bool,
) -> None:
    """Draw DeePMD-kit's batches (see `follow_deepmd_order`) and say so; warn where the input
    lets DeePMD-kit start from unseeded weights, which no order can match."""
    tcfg = cfg.training
    numb_btch = 1 if tcfg.validation_data is None else tcfg.validation_data.numb_btch
    nbatch = stat_nbatch(cfg) if fresh else None
    workers = follow_deepmd_order(
        train_src, valid_src, seed, model.tree, nbatch, tcfg.disp_freq, numb_btch
    )
    if workers is None:
        log.info("batch order: dpa's (a data path holds several systems)")
        return
    log.info("batch order: DeePMD-kit's (dp --pt train with %d loader workers)", workers)
    unseeded = [
        f"model.{key}.seed"
        for key in ("descriptor", "fitting_net")
        if cfg.raw["model"].get(key, {}).get("seed") is None
    ]
    if fresh and unseeded:
        log.warning(
            "%s not set: DeePMD-kit then draws those initial weights from its global generator, "
            "so its run starts elsewhere and draws other batches; set %s for the same run in "
            "both codes",
            " and ".join(unseeded),
            "them" if len(unseeded) > 1 else "it",
        )


def _validate(trainer, batches: list[LabelledBatch], task: Task, lr: float) -> dict[str, float]:
    """Loss metrics averaged over validation batches, weighted by atoms (as DeePMD-kit)."""
    results = []
    for batch in batches:
        metrics = trainer.metrics(
            batch.inputs, batch.labels, lr, task.losses(batch), **task_arg(task)
        )
        results.append((display_metrics(metrics), batch.natoms * len(batch.frames)))
    return weighted_average(results)


def _trim_lcurve(path: Path, last_step: int) -> None:
    """Keep the header and the lines up to `last_step` (a restart continues from there)."""
    if not path.is_file():
        return
    keep = [
        line
        for line in path.read_text().splitlines(keepends=True)
        if line.startswith("#") or (line.split() and int(line.split()[0]) <= last_step)
    ]
    with atomic_path(path) as tmp:
        tmp.write_text("".join(keep))


def train(
    input_path: str | os.PathLike,
    backend: str,
    outdir: str | os.PathLike = ".",
    init_model: str | None = None,
    restart: str | None = None,
    skip_neighbor_stat: bool = False,
    finetune: str | None = None,
    model_branch: str | None = None,
    use_pretrain_script: bool = False,
) -> Path:
    """Train as `input_path` says (single- or multi-task); returns the path of the final model.

    finetune: a pretrained model file (any format) to start from (see `dpa.train.finetune`),
    with `model_branch` its branch (or RANDOM) and `use_pretrain_script` taking the pretrained
    descriptor and fitting configs instead of the input's.
    """
    raw = read_train_input(input_path)
    if finetune is not None:
        if restart is not None or init_model is not None:
            raise ConfigError("--finetune starts a new run: give it without --restart/--init-model")
        return _finetune(
            raw, Path(input_path), backend, outdir, finetune, model_branch,
            use_pretrain_script, skip_neighbor_stat,
        )  # fmt: skip
    if model_branch is not None or use_pretrain_script:
        raise ConfigError("--model-branch and --use-pretrain-script go with --finetune")
    source: Model | MultiTaskModel | None = None  # what --restart or --init-model starts from
    state_path = None
    if restart is not None or init_model is not None:
        state_path = resolve_checkpoint(restart) if restart is not None else Path(init_model)
        source = io.load_any(state_path)
    if is_multitask_input(raw):
        plan: TrainInput | MultiTaskInput = parse_multitask_input(raw, source=str(input_path))
        if source is not None and not isinstance(source, MultiTaskModel):
            raise ConfigError(
                f"{state_path}: a single-task model; a multi-task input continues from a "
                "multi-task checkpoint (use --finetune to start from a single-task model)"
            )
        systems = None
    else:
        if isinstance(source, MultiTaskModel):
            raise ConfigError(
                f"{state_path}: a multi-task model ({source.describe_branches()}); a "
                "single-task input starts from one branch: use --finetune with --model-branch"
            )
        if source is not None:
            _check_type_map(source, raw, state_path)
            script = source.data.get("model_def_script")  # its architecture, resolved sel
            if isinstance(script, dict) and isinstance(raw.get("model"), dict):
                raw = {**raw, "model": script}
        systems = None if skip_neighbor_stat or source is not None else _systems_for_auto_sel(raw)
        if systems is not None:
            atypes = [s.remap_types(raw["model"]["type_map"]) for s in systems]
            raw = {**raw, "model": resolve_auto_sel(raw["model"], systems, atypes)}
        plan = parse_train_input(raw, source=str(input_path))
    with locked_output_folder(outdir) as out:
        return _train_in(
            out, plan, Path(input_path), backend, source, state_path, init_model, systems
        )


def _finetune(
    raw: dict,
    input_path: Path,
    backend: str,
    outdir: str | os.PathLike,
    path: str,
    model_branch: str | None,
    use_pretrain_script: bool,
    skip_neighbor_stat: bool,
) -> Path:
    """`train --finetune PATH`: validate, read the pretrained model, then run."""
    pretrained = io.load_any(path)
    systems = None
    if is_multitask_input(raw):
        if use_pretrain_script:
            raise ConfigError(
                "--use-pretrain-script is supported for single-task inputs; for a multi-task "
                "input write each branch's descriptor and fitting_net (dpa show PRE prints them)"
            )
        plan: TrainInput | MultiTaskInput = parse_multitask_input(raw, source=str(input_path))
    else:
        if use_pretrain_script:
            cfg0 = parse_train_input(raw, source=str(input_path))
            source = single_task_source(cfg0, pretrained, model_branch)
            raw = {**raw, "model": pretrain_script_config(raw["model"], source)}
        elif not skip_neighbor_stat:
            systems = _systems_for_auto_sel(raw)
            if systems is not None:
                atypes = [s.remap_types(raw["model"]["type_map"]) for s in systems]
                raw = {**raw, "model": resolve_auto_sel(raw["model"], systems, atypes)}
        plan = parse_train_input(raw, source=str(input_path))
    with locked_output_folder(outdir) as out:
        return _train_in(
            out, plan, input_path, backend, None, None, None, systems,
            finetune=(pretrained, model_branch),
        )  # fmt: skip


def _output_paths(out: Path, cfg: TrainInput, input_path: Path, suffix: str) -> tuple[Path, Path]:
    """(learning-curve file, checkpoint prefix) inside `out`, refusing names that leave it or
    land on the input, the final model, the checkpoint pointer or the lock."""
    final = out / f"model{suffix}"
    reserved = {
        input_path: "the training input",
        final: "the final model",
        out / POINTER: "the checkpoint pointer",
        out / LOCK_NAME: "the run's lock file",
    }
    tcfg = cfg.training
    lcurve = inside_output(out, tcfg.disp_file, "disp_file", reserved)
    if lcurve.is_dir() or (lcurve.is_file() and not _is_lcurve(lcurve)):
        raise ConfigError(
            f"training.disp_file = {tcfg.disp_file!r}: {lcurve} exists and is not a learning "
            "curve; choose another name"
        )
    prefix = inside_output(out, tcfg.save_ckpt, "save_ckpt", reserved)
    for folder in (lcurve.parent, prefix.parent):
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise OutputError(f"{folder}: cannot create ({err.strerror or err})") from None
    return lcurve, prefix


def _is_lcurve(path: Path) -> bool:
    """Whether the file starts like a learning curve (so a fresh run may overwrite it)."""
    with open(path, "rb") as f:
        return f.read(1) == b"#"


def _train_in(
    out: Path,
    plan: TrainInput | MultiTaskInput,
    input_path: Path,
    backend: str,
    source: Model | MultiTaskModel | None,
    path: Path | None,
    init_model: str | None,
    systems: list | None,
    finetune: tuple[Model | MultiTaskModel, str | None] | None = None,
) -> Path:
    """The run itself, in the locked output folder `out` (see `train`): `source` is the model
    file read from `path` (a checkpoint to continue, or with `init_model` a start), `systems`
    the training systems already loaded for auto sel, `finetune` (pretrained model, branch)."""
    restart = source is not None and init_model is None
    multi = isinstance(plan, MultiTaskInput)
    cfg = next(iter(task_configs(plan).values()))  # the run-wide sections are every task's
    suffix = SUFFIX.get(backend, "")
    lcurve, ckpt_prefix = _output_paths(out, cfg, input_path, suffix)
    for key in cfg.ignored_keys():
        log.warning("%s is accepted for compatibility but ignored by dpa", key)
    tcfg = cfg.training
    seed = int(tcfg.seed) if tcfg.seed is not None else 0
    state: dict[str, Any] | None = None
    if restart:
        assert source is not None and path is not None
        state = read_training_state(source, path)  # type: ignore[arg-type]
    models = starting_models(plan, source, seed, case_embedding=finetune is None)
    tasks = make_tasks(plan, models, seed, systems)
    single = tasks.get(None)
    if single is not None and _use_deepmd_order(cfg, state):
        _follow_deepmd(
            cfg, single.train_src, single.valid_src, seed, models[None],
            fresh=state is None and not init_model,
        )  # fmt: skip
    numb_steps, probs = task_weights(plan, tasks)
    if multi:
        shown = ", ".join(f"{n} {p:.3f}" for n, p in zip(tasks, probs, strict=True))
        log.info("multi-task run: %d branches; task probabilities: %s", len(tasks), shown)
    if finetune is not None:
        pretrained, branch = finetune
        models = finetuned_models(plan, tasks, models, pretrained, branch, seed, backend)
    elif source is None:
        if isinstance(plan, MultiTaskInput):
            task_probs = dict(zip(tasks, map(float, probs), strict=True))
            models = multitask_statistics(plan, models, tasks, task_probs)
        else:
            assert single is not None
            models = {None: with_statistics(models[None], cfg, single.train_src)}
    if source is None:  # a fresh run or a fine-tune: record what the data holds
        models = with_observed_types(models, tasks)
    schedule = _schedule(cfg, numb_steps)
    trainer_tree = models[None].tree if not multi else {n: m.tree for n, m in models.items()}
    trainer = _trainer(backend, trainer_tree, cfg)
    start = 0
    samplers_key = {
        name: ("training", "validation")
        if name is None
        else (f"training:{name}", f"validation:{name}")
        for name in tasks
    }
    if state is not None:
        trainer.load_optimizer_state(state["@variables"])
        for name, task in tasks.items():
            train_key, valid_key = samplers_key[name]
            task.train_src.set_state(state["samplers"][train_key])
            if task.valid_src is not None and valid_key in state["samplers"]:
                task.valid_src.set_state(state["samplers"][valid_key])
        start = int(state["step"])
    rounding = trainer.slot_rounding
    for name, task in tasks.items():
        task.prefetch = Prefetcher(task.train_src, models[name], rounding)
    if state is not None and lcurve.is_file():
        _trim_lcurve(lcurve, start)
    else:
        with atomic_path(lcurve) as tmp:
            if multi:
                columns = [(str(n), t.keys, t.valid_src is not None) for n, t in tasks.items()]
                tmp.write_text(multitask_lcurve_header(columns))
            else:
                assert single is not None
                tmp.write_text(lcurve_header(single.keys, single.valid_src is not None))
    progress = _Progress(start, numb_steps)
    names = list(tasks)
    last_good: Path | None = None
    try:
        for step in range(start, numb_steps):
            lr = schedule.value(step)
            task = tasks[names[task_of_step(seed, step, probs)]]
            assert task.prefetch is not None
            batch = task.prefetch.next()
            metrics = trainer.step(
                batch.inputs, batch.labels, lr, task.losses(batch), **task_arg(task)
            )
            if not math.isfinite(metrics["loss"]):
                system = task.train_src.systems[batch.system].path
                where = f"{task.label}{system} frames {batch.frames.tolist()}"
                kept = f"; the last good checkpoint is {last_good}" if last_good else ""
                raise TrainingDiverged(
                    f"the loss became {metrics['loss']} at step {step + 1} ({where}); lower "
                    f"learning_rate.start_lr or check the labels{kept}"
                )
            done = step + 1
            if done % tcfg.disp_freq == 0 or done == numb_steps or done == 1:
                rows = [
                    _display(trainer, t, t is task, metrics, done, lr, models[t.name], rounding)
                    for t in tasks.values()
                ]
                if multi:
                    _append(lcurve, multitask_lcurve_line(done, rows, lr))
                else:
                    _append(lcurve, lcurve_line(done, rows[0][0], rows[0][1], lr))
                progress.report(done, rows[names.index(task.name)][1], lr, task.name)
            if done % tcfg.save_freq == 0 or done == numb_steps:
                samplers = {}
                for name, t in tasks.items():
                    assert t.prefetch is not None
                    train_key, valid_key = samplers_key[name]
                    samplers[train_key] = t.prefetch.resume_state()
                    if t.valid_src is not None:
                        samplers[valid_key] = t.valid_src.state()
                training = training_state(done, trainer.optimizer_state(), samplers, backend)
                ckpt = saved_model(plan, models, trainer.tree(), training)
                last_good = write_checkpoint(  # the prefix relative to the folder
                    out, str(ckpt_prefix.relative_to(out)), done, suffix, ckpt, tcfg.max_ckpt_keep
                )
    finally:
        for t in tasks.values():
            if t.prefetch is not None:
                t.prefetch.close()
    final = out / f"model{suffix}"
    io.save(saved_model(plan, models, trainer.tree()), final)
    return final


def _display(
    trainer: Trainer,
    task: Task,
    stepped: bool,
    metrics: dict[str, float],
    done: int,
    lr: float,
    model: Model,
    rounding: int,
) -> tuple[dict[str, float] | None, dict[str, float]]:
    """(validation, training) metrics of a task at a display step: the step's own batch for
    the task that stepped, a fresh training batch for the others (as DeePMD-kit)."""
    if stepped:
        shown = display_metrics(metrics)
    else:
        assert task.prefetch is not None
        extra = task.prefetch.next()
        shown = display_metrics(
            trainer.metrics(extra.inputs, extra.labels, lr, task.losses(extra), **task_arg(task))
        )
    valid = None
    if task.valid_src is not None:
        # DeePMD-kit's validation batches when following its order, else our own
        picks = None
        if isinstance(task.train_src.sampler, DeepmdOrder):
            picks = task.train_src.sampler.validation_batches(done)
        if picks is None:
            numb_btch = task.cfg.training.validation_data.numb_btch  # type: ignore[union-attr]
            picks = [task.valid_src.sampler.next() for _ in range(numb_btch)]
        vb = [make_batch(task.valid_src, i, f, model, rounding) for i, f in picks]
        valid = _validate(trainer, vb, task, lr)
    trn = {k: shown.get(k, math.nan) for k in task.keys}
    val = None if valid is None else {k: valid.get(k, math.nan) for k in task.keys}
    return val, trn


def _append(path: Path, text: str) -> None:
    """Append a line to the learning curve; a failed write is an OutputError naming the file."""
    try:
        with open(path, "a") as f:
            f.write(text)
    except OSError as err:
        raise OutputError(
            f"{path}: cannot append to the learning curve ({err.strerror or err})"
        ) from None


class _Progress:
    """Progress with ETA: a tqdm bar on a terminal, plain log lines otherwise."""

    def __init__(self, start: int, total: int) -> None:
        self.start, self.total = start, total
        self.t0 = time.perf_counter()
        self.bar = None
        if sys.stderr.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=start, unit="step", dynamic_ncols=True)

    def report(self, step: int, metrics: dict[str, float], lr: float, task: str | None) -> None:
        text = " ".join(f"{k}={v:.3e}" for k, v in metrics.items()) + f" lr={lr:.2e}"
        if task is not None:
            text = f"task {task} {text}"
        if self.bar is not None:
            self.bar.n = step
            self.bar.set_postfix_str(text, refresh=True)
            return
        rate = (step - self.start) / max(time.perf_counter() - self.t0, 1e-9)
        eta = (self.total - step) / rate if rate > 0 else float("nan")
        log.info("step %d/%d %s (%.2f steps/s, ETA %.0f s)", step, self.total, text, rate, eta)
