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
from ..model import Model, build_model
from .auto_sel import has_auto_sel, resolve_auto_sel
from .batches import (
    DataSource,
    LabelledBatch,
    Prefetcher,
    check_model_inputs,
    follow_deepmd_order,
    make_batch,
)
from .checkpoint import (
    POINTER,
    checkpoint_model,
    read_training_state,
    resolve_checkpoint,
    training_state,
    write_checkpoint,
)
from .config import TrainInput, parse_train_input, read_train_input
from .loss import (
    EnerLossConfig,
    display_metrics,
    ener_loss,
    lcurve_header,
    lcurve_line,
    weighted_average,
)
from .outdir import LOCK_NAME, inside_output, locked_output_folder
from .schedule import ExpDecay
from .stat import (
    compute_env_statistics,
    compute_parameter_statistics,
    fit_energy_bias,
    set_energy_bias,
)

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


def _numb_steps(cfg: TrainInput, source: DataSource) -> int:
    """numb_steps, or numb_epoch converted with the sampler's batches per epoch."""
    if cfg.training.numb_steps is not None:
        return int(cfg.training.numb_steps)
    per_epoch = sum(source.sampler.nbatches)
    return max(1, int(math.ceil(cfg.training.numb_epoch * per_epoch)))


class _Losses:
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


def _stat_nbatch(cfg: TrainInput) -> int:
    return int(cfg.training.data_stat_nbatch or cfg.raw["model"].get("data_stat_nbatch", 10))


def _with_statistics(model: Model, cfg: TrainInput, source: DataSource) -> Model:
    """davg/dstd and the energy bias from data_stat_nbatch batches of every system: the ones
    DeePMD-kit packs when following its batch order, else each system's first batches."""
    nbatch: int | None = _stat_nbatch(cfg)
    sizes = source.sampler.batch_sizes
    systems = source.systems
    picks = source.sampler.stat_frames if isinstance(source.sampler, DeepmdOrder) else None
    if picks is not None:
        systems, nbatch = [s.frames(f) for s, f in zip(systems, picks, strict=True)], None
    tree = compute_env_statistics(model.tree, systems, nbatch, sizes)
    tree = compute_parameter_statistics(tree, systems, nbatch, sizes)
    if any(s.energy is not None for s in systems):
        tree = set_energy_bias(tree, fit_energy_bias(tree, systems, nbatch, sizes))
    return Model({**model.data, "model": tree})


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
    stat_nbatch = _stat_nbatch(cfg) if fresh else None
    workers = follow_deepmd_order(
        train_src, valid_src, seed, model.tree, stat_nbatch, tcfg.disp_freq, numb_btch
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


def _validate(
    trainer, batches: list[LabelledBatch], losses: _Losses, lr: float
) -> dict[str, float]:
    """Loss metrics averaged over validation batches, weighted by atoms (as DeePMD-kit)."""
    results = []
    for batch in batches:
        metrics = trainer.metrics(batch.inputs, batch.labels, lr, losses(batch))
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
) -> Path:
    """Train as `input_path` says; returns the path of the final model."""
    raw = read_train_input(input_path)
    source = None  # the model file training starts from (--restart or --init-model)
    state_path = None
    if restart is not None or init_model is not None:
        state_path = resolve_checkpoint(restart) if restart is not None else Path(init_model)
        source = io.load(state_path)
        _check_type_map(source, raw, state_path)
        script = source.data.get("model_def_script")  # its architecture, resolved sel included
        if isinstance(script, dict) and isinstance(raw.get("model"), dict):
            raw = {**raw, "model": script}
    systems = None if skip_neighbor_stat or source is not None else _systems_for_auto_sel(raw)
    if systems is not None:
        atypes = [s.remap_types(raw["model"]["type_map"]) for s in systems]
        raw = {**raw, "model": resolve_auto_sel(raw["model"], systems, atypes)}
    cfg = parse_train_input(raw, source=str(input_path))
    with locked_output_folder(outdir) as out:
        return _train_in(
            out, cfg, Path(input_path), backend, source, state_path, init_model, systems
        )


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
    cfg: TrainInput,
    input_path: Path,
    backend: str,
    source: Model | None,
    path: Path | None,
    init_model: str | None,
    systems: list | None,
) -> Path:
    """The run itself, in the locked output folder `out` (see `train`): `source` is the model
    file read from `path` (a checkpoint to continue, or with `init_model` a start), `systems`
    the training systems already loaded for auto sel."""
    restart = source is not None and init_model is None
    suffix = SUFFIX.get(backend, "")
    lcurve, ckpt_prefix = _output_paths(out, cfg, input_path, suffix)
    for key in cfg.ignored_keys():
        log.warning("%s is accepted for compatibility but ignored by dpa", key)
    tcfg = cfg.training
    seed = int(tcfg.seed) if tcfg.seed is not None else 0
    state: dict[str, Any] | None = None
    if source is None:
        model = build_model(cfg.raw["model"], seed=seed)
    else:
        if restart:
            state = read_training_state(source, path)
        model = Model({k: v for k, v in source.data.items() if k != "training"})
    train_src = DataSource(tcfg.training_data, model.type_map, seed, "training_data", systems)
    valid_src = None
    if tcfg.validation_data is not None:
        valid_src = DataSource(tcfg.validation_data, model.type_map, seed + 1, "validation_data")
    for src in (train_src, valid_src):
        if src is not None:
            check_model_inputs(src, model)
    if _use_deepmd_order(cfg, state):
        _follow_deepmd(
            cfg, train_src, valid_src, seed, model, fresh=state is None and not init_model
        )
    numb_steps = _numb_steps(cfg, train_src)
    if state is None and init_model is None:
        model = _with_statistics(model, cfg, train_src)
    schedule = _schedule(cfg, numb_steps)
    loss_cfg = EnerLossConfig.from_config(cfg.loss, cfg.learning_rate.start_lr)
    losses = _Losses(loss_cfg)
    trainer = _trainer(backend, model.tree, cfg)
    start = 0
    if state is not None:
        trainer.load_optimizer_state(state["@variables"])
        train_src.set_state(state["samplers"]["training"])
        if valid_src is not None and "validation" in state["samplers"]:
            valid_src.set_state(state["samplers"]["validation"])
        start = int(state["step"])
    rounding = trainer.slot_rounding
    prefetch = Prefetcher(train_src, model, rounding)
    keys = sorted(_metric_keys(loss_cfg))
    if state is not None and lcurve.is_file():
        _trim_lcurve(lcurve, start)
    else:
        with atomic_path(lcurve) as tmp:
            tmp.write_text(lcurve_header(keys, valid_src is not None))
    progress = _Progress(start, numb_steps)
    last_good: Path | None = None
    try:
        for step in range(start, numb_steps):
            lr = schedule.value(step)
            batch = prefetch.next()
            metrics = trainer.step(batch.inputs, batch.labels, lr, losses(batch))
            if not math.isfinite(metrics["loss"]):
                where = f"{train_src.systems[batch.system].path} frames {batch.frames.tolist()}"
                kept = f"; the last good checkpoint is {last_good}" if last_good else ""
                raise TrainingDiverged(
                    f"the loss became {metrics['loss']} at step {step + 1} ({where}); lower "
                    f"learning_rate.start_lr or check the labels{kept}"
                )
            done = step + 1
            if done % tcfg.disp_freq == 0 or done == numb_steps or done == 1:
                shown = display_metrics(metrics)
                valid = None
                if valid_src is not None:
                    # DeePMD-kit's validation batches when following its order, else our own
                    picks = None
                    if isinstance(train_src.sampler, DeepmdOrder):
                        picks = train_src.sampler.validation_batches(done)
                    if picks is None:
                        numb_btch = tcfg.validation_data.numb_btch
                        picks = [valid_src.sampler.next() for _ in range(numb_btch)]
                    vb = [make_batch(valid_src, i, f, model, rounding) for i, f in picks]
                    valid = _validate(trainer, vb, losses, lr)
                trn = {k: shown.get(k, math.nan) for k in keys}
                val = None if valid is None else {k: valid.get(k, math.nan) for k in keys}
                _append(lcurve, lcurve_line(done, val, trn, lr))
                progress.report(done, trn, lr)
            if done % tcfg.save_freq == 0 or done == numb_steps:
                samplers = {"training": prefetch.resume_state()}
                if valid_src is not None:
                    samplers["validation"] = valid_src.state()
                training = training_state(done, trainer.optimizer_state(), samplers, backend)
                ckpt_model = checkpoint_model(model, trainer.tree(), training)
                last_good = write_checkpoint(
                    out, ckpt_prefix, done, suffix, ckpt_model, tcfg.max_ckpt_keep
                )
    finally:
        prefetch.close()
    final = out / f"model{suffix}"
    io.save(Model({**model.data, "model": trainer.tree()}), final)
    return final


def _append(path: Path, text: str) -> None:
    """Append a line to the learning curve; a failed write is an OutputError naming the file."""
    try:
        with open(path, "a") as f:
            f.write(text)
    except OSError as err:
        raise OutputError(
            f"{path}: cannot append to the learning curve ({err.strerror or err})"
        ) from None


def _metric_keys(cfg: EnerLossConfig) -> list[str]:
    """The lcurve columns of this loss: rmse plus rmse_* (mse) or mae_* (mae) per active term."""
    return cfg.metric_keys()


class _Progress:
    """Progress with ETA: a tqdm bar on a terminal, plain log lines otherwise."""

    def __init__(self, start: int, total: int) -> None:
        self.start, self.total = start, total
        self.t0 = time.perf_counter()
        self.bar = None
        if sys.stderr.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=start, unit="step", dynamic_ncols=True)

    def report(self, step: int, metrics: dict[str, float], lr: float) -> None:
        text = " ".join(f"{k}={v:.3e}" for k, v in metrics.items()) + f" lr={lr:.2e}"
        if self.bar is not None:
            self.bar.n = step
            self.bar.set_postfix_str(text, refresh=True)
            return
        rate = (step - self.start) / max(time.perf_counter() - self.t0, 1e-9)
        eta = (self.total - step) / rate if rate > 0 else float("nan")
        log.info("step %d/%d %s (%.2f steps/s, ETA %.0f s)", step, self.total, text, rate, eta)
