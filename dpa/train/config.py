"""Schema of a DeePMD-kit v3 training input (`input.json`): every section but `model`.

`model` is validated by dpa.config.parse_model_config; `learning_rate`, `loss`, `optimizer`,
`training` and `validating` are validated here with DeePMD-kit 3.2 names, aliases and defaults.
Unknown keys are errors naming the key path; keys starting with '_' are comments and ignored.
Keys DeePMD-kit accepts but dpa does not act on are listed in IGNORED_KEYS (the loop warns).
"""

from __future__ import annotations

import copy
import json
import re
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    AliasChoices,
    BaseModel,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError, PydanticUndefined

from ..config import parse_model_config
from ..dpmodel.descriptor.registry import names as descriptor_names
from ..errors import ConfigError
from ..schema import Section as _ModelSection
from ..schema import format_error, section_of, strip_comments

__all__ = [
    "IGNORED_KEYS",
    "DataConfig",
    "LearningRateConfig",
    "LossConfig",
    "MixedPrecisionConfig",
    "OptimizerConfig",
    "TrainInput",
    "TrainingConfig",
    "ValidatingConfig",
    "ValidationDataConfig",
    "doc_train_input",
    "load_train_input",
    "parse_train_input",
]


class _Section(_ModelSection):
    """A config section: no unknown keys, aliases accepted, no true/false for numbers."""


def _aliases(*names: str) -> AliasChoices:
    """The accepted spellings of a key, the canonical one first."""
    return AliasChoices(*names)


# ---------------------------------------------------------------- learning_rate


class LearningRateConfig(_Section):
    """`learning_rate`: exponential decay from start_lr to stop_lr, with an optional warmup."""

    type: Literal["exp"] = Field("exp", description="schedule kind; dpa implements 'exp' only")
    start_lr: float = Field(1e-3, gt=0, description="learning rate at the end of the warmup")
    stop_lr: float | None = Field(
        None,
        gt=0,
        description="learning rate reached at the last step; 5e-8 when neither it nor "
        "stop_lr_ratio is given",
    )
    stop_lr_ratio: float | None = Field(
        None, gt=0, description="stop_lr as a fraction of start_lr (excludes stop_lr)"
    )
    warmup_steps: int = Field(
        0, ge=0, description="steps of linear warmup before the decay (excludes warmup_ratio)"
    )
    warmup_ratio: float | None = Field(
        None, ge=0, lt=1, description="warmup length as a fraction of numb_steps"
    )
    warmup_start_factor: float = Field(
        0.0, ge=0, description="warmup starts at this fraction of start_lr"
    )
    scale_by_worker: Literal["linear", "sqrt", "none"] = Field(
        "linear", description="how parallel workers scale the rate; dpa trains in one process"
    )
    decay_steps: int = Field(5000, gt=0, description="the rate drops once every this many steps")
    decay_rate: float | None = Field(
        None,
        gt=0,
        le=1,
        description="factor per decay step; derived from start_lr and stop_lr when not given",
    )
    smooth: bool = Field(False, description="decay continuously instead of in steps of decay_steps")

    @model_validator(mode="after")
    def _default_stop_lr(self) -> LearningRateConfig:
        """DeePMD-kit's stop_lr default applies only when stop_lr_ratio is not given either."""
        if self.stop_lr is None and self.stop_lr_ratio is None:
            self.stop_lr = 5e-8
        return self


# ---------------------------------------------------------------- loss

#: Keys of DeePMD-kit 3.2's "ener" loss that dpa does not implement -> what they switch on. The
#: schema accepts them only at their default, so no input trains with a term silently dropped.
_UNSUPPORTED_LOSS_KEYS: dict[str, str] = {
    "start_pref_pf": "the atomic-prefactor force term (atom_pref.npy)",
    "limit_pref_pf": "the atomic-prefactor force term (atom_pref.npy)",
    "use_default_pf": "the atomic-prefactor force term (atom_pref.npy)",
    "start_pref_gf": "the generalized-force loss term (drdq.npy)",
    "limit_pref_gf": "the generalized-force loss term (drdq.npy)",
    "numb_generalized_coord": "the generalized-force loss term (drdq.npy)",
    "start_pref_h": "the Hessian loss term",
    "limit_pref_h": "the Hessian loss term",
    "enable_atom_ener_coeff": "the energy weighted by atom_ener_coeff.npy",
}
_UNSUPPORTED = "not supported by dpa, only the default is accepted: "


class LossConfig(_Section):
    """`loss` (type `ener`): weighted energy, force, virial and atomic-energy terms, as squared
    errors (mse), absolute errors (mae) or Huber; each weight moves from its start_pref to its
    limit_pref as the learning rate decays."""

    type: Literal["ener"] = Field("ener", description="loss kind; dpa implements 'ener' only")
    start_pref_e: float = Field(0.02, ge=0, description="energy weight at the start")
    limit_pref_e: float = Field(1.0, ge=0, description="energy weight at the end")
    start_pref_f: float = Field(1000.0, ge=0, description="force weight at the start")
    limit_pref_f: float = Field(1.0, ge=0, description="force weight at the end")
    start_pref_v: float = Field(0.0, ge=0, description="virial weight at the start")
    limit_pref_v: float = Field(0.0, ge=0, description="virial weight at the end")
    start_pref_h: float = Field(0.0, ge=0, description=_UNSUPPORTED + "Hessian weight at the start")
    limit_pref_h: float = Field(0.0, ge=0, description=_UNSUPPORTED + "Hessian weight at the end")
    start_pref_ae: float = Field(
        0.0, ge=0, description="atomic-energy weight at the start (needs atom_ener.npy)"
    )
    limit_pref_ae: float = Field(0.0, ge=0, description="atomic-energy weight at the end")
    start_pref_pf: float = Field(
        0.0, ge=0, description=_UNSUPPORTED + "per-atom weighted force term at the start"
    )
    limit_pref_pf: float = Field(
        0.0, ge=0, description=_UNSUPPORTED + "per-atom weighted force term at the end"
    )
    use_default_pf: bool = Field(
        False, description=_UNSUPPORTED + "atom_pref = 1 for systems without atom_pref.npy"
    )
    relative_f: float | None = Field(
        None,
        ge=0,
        description="divide each atom's force error by |F_label| + relative_f (off when null; "
        "not with use_huber)",
    )
    enable_atom_ener_coeff: bool = Field(
        False,
        description=_UNSUPPORTED + "energy is sum_i c_i E_i with c_i from atom_ener_coeff.npy",
    )
    start_pref_gf: float = Field(
        0.0, ge=0, description=_UNSUPPORTED + "generalized-force weight at the start"
    )
    limit_pref_gf: float = Field(
        0.0, ge=0, description=_UNSUPPORTED + "generalized-force weight at the end"
    )
    numb_generalized_coord: int = Field(
        0, ge=0, description=_UNSUPPORTED + "dimension of the generalized coordinates"
    )
    # the validators of f_use_norm and use_huber read the keys declared before them
    use_huber: bool = Field(
        False,
        description="with loss_func 'mse': Huber instead of squared errors for energy/N, force, "
        "virial/N and atomic energy (the rmse_* columns stay RMSEs); no effect with 'mae'",
    )
    loss_func: Literal["mse", "mae"] = Field(
        "mse",
        description="'mse': squared errors, lcurve columns rmse_*; 'mae': absolute errors "
        "(energy and virial per atom), columns mae_*",
    )
    f_use_norm: bool = Field(
        False,
        description="with loss_func 'mae' or use_huber: one error per atom, |F_label - F_pred|, "
        "instead of three components",
    )
    huber_delta: float | list[float] = Field(
        0.01,
        description="Huber threshold: one value, or [energy, force, virial] (the energy one also "
        "serves the atomic-energy term)",
    )
    intensive_ener_virial: bool = Field(
        False,
        description="mse without Huber: scale energy/virial squared errors by 1/N^2 instead of "
        "the legacy 1/N",
    )

    @field_validator(*_UNSUPPORTED_LOSS_KEYS)
    @classmethod
    def _unsupported(cls, value: Any, info: ValidationInfo) -> Any:
        """Options dpa does not implement pass only at their default, never silently ignored."""
        key = info.field_name or ""
        default = cls.model_fields[key].default
        if value != default:
            raise PydanticCustomError(
                "unsupported",
                "{what} is not supported by dpa; remove loss.{key} from the input or set it "
                "to {default}",
                {"what": _UNSUPPORTED_LOSS_KEYS[key], "key": key, "default": json.dumps(default)},
            )
        return value

    @field_validator("use_huber")
    @classmethod
    def _huber_not_relative(cls, value: bool, info: ValidationInfo) -> bool:
        """DeePMD-kit has no Huber form of the relative force error (its EnergyStdLoss refuses)."""
        if value and info.data.get("relative_f") is not None:
            raise PydanticCustomError(
                "huber_relative_f",
                "the Huber loss has no relative-force form; remove loss.use_huber or "
                "loss.relative_f",
            )
        return value

    @field_validator("f_use_norm")
    @classmethod
    def _norm_needs_mae_or_huber(cls, value: bool, info: ValidationInfo) -> bool:
        """f_use_norm changes only the mae and Huber force terms; DeePMD-kit refuses it elsewhere."""
        if "loss_func" not in info.data:  # loss_func itself is invalid, reported on its own
            return value
        if value and not (info.data.get("use_huber") or info.data["loss_func"] == "mae"):
            raise PydanticCustomError(
                "f_use_norm",
                "only the mae and Huber force terms use it; set loss.loss_func = 'mae' or "
                "loss.use_huber = true, or remove loss.f_use_norm",
            )
        return value

    @field_validator("huber_delta")
    @classmethod
    def _huber_delta(cls, value: float | list[float]) -> float | list[float]:
        """One positive threshold, or three (energy, force, virial)."""
        values = value if isinstance(value, list) else [value]
        if isinstance(value, list) and len(value) != 3:
            raise PydanticCustomError(
                "huber_delta", "give one value or three ([energy, force, virial])"
            )
        if any(v <= 0 for v in values):
            raise PydanticCustomError("huber_delta", "thresholds must be > 0")
        return value


# ---------------------------------------------------------------- optimizer


class OptimizerConfig(_Section):
    """`optimizer`: Adam (weight decay as an L2 term on the gradient) or AdamW (decoupled)."""

    type: Literal["Adam", "AdamW"] = Field(
        "Adam",
        description="'Adam' or 'AdamW'; DeePMD-kit's LKF and Muon variants are not supported",
    )
    adam_beta1: float = Field(0.9, ge=0, lt=1, description="decay of the first-moment average")
    adam_beta2: float = Field(0.999, ge=0, lt=1, description="decay of the second-moment average")
    weight_decay: float | None = Field(
        None, ge=0, description="weight decay; default 0 for Adam and 0.001 for AdamW"
    )

    @model_validator(mode="after")
    def _default_decay(self) -> OptimizerConfig:
        """The weight-decay default depends on the optimizer type, as in DeePMD-kit."""
        if self.weight_decay is None:
            self.weight_decay = 0.001 if self.type == "AdamW" else 0.0
        return self


# ---------------------------------------------------------------- training

_AUTO_BATCH = re.compile(r"^auto(:(\d+))?$")
_OTHER_BATCH = re.compile(r"^(mixed|max|filter|mix):")


def _check_batch_size(value: Any) -> Any:
    """A positive int, a list of them (one per system), 'auto' or 'auto:N' with N > 0."""
    if isinstance(value, bool):
        raise PydanticCustomError(
            "batch_size", "must be an int, a list of ints, 'auto' or 'auto:N'"
        )
    if isinstance(value, int):
        if value <= 0:
            raise PydanticCustomError("batch_size", "must be > 0")
        return value
    if isinstance(value, list):
        if not value or not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
            raise PydanticCustomError("batch_size", "a list batch_size needs one int per system")
        if any(v <= 0 for v in value):
            raise PydanticCustomError("batch_size", "every batch size must be > 0")
        return value
    if isinstance(value, str):
        match = _AUTO_BATCH.match(value)
        if match and (match.group(2) is None or int(match.group(2)) > 0):
            return value
        if _OTHER_BATCH.match(value):
            raise PydanticCustomError(
                "batch_size",
                "this batch_size rule is not supported by dpa; use an int, 'auto' or 'auto:N'",
            )
    raise PydanticCustomError(
        "batch_size", "must be an int, a list of ints, 'auto' or 'auto:N' with N a positive int"
    )


def _check_systems(value: Any) -> Any:
    """One path, or a non-empty list of paths."""
    if isinstance(value, str) and value:
        return value
    if isinstance(value, list) and value and all(isinstance(v, str) and v for v in value):
        return value
    raise PydanticCustomError("systems", "must be a path or a non-empty list of paths")


class _DataCommon(_Section):
    """Keys shared by training_data and validation_data."""

    systems: str | list[str] = Field(
        description="data system folders, or parent folders searched for systems"
    )
    rglob_patterns: list[str] | None = Field(
        None, description="glob patterns used to collect systems under the given folders"
    )
    batch_size: int | list[int] | str = Field(
        "auto",
        description="frames per batch: an int, one int per system, 'auto' (>= 32 atoms) "
        "or 'auto:N' (>= N atoms)",
    )
    auto_prob: str = Field(
        "prob_sys_size",
        validation_alias=_aliases("auto_prob", "auto_prob_style"),
        description="how systems are sampled: 'prob_uniform', 'prob_sys_size' or "
        "'prob_sys_size;start:end:weight;...'",
    )
    sys_probs: list[float] | None = Field(
        None,
        validation_alias=_aliases("sys_probs", "sys_weights"),
        description="explicit sampling probability of each system (overrides auto_prob)",
    )
    fmt: str | None = Field(
        None,
        description="format of the systems (dpa extension): deepmd/npy by default (read as "
        "deepmd/npy/mixed when set.* folders hold real_atom_types.npy), or any dpdata format "
        "such as vasp/outcar or extxyz; a mixed-type folder or a file of several compositions "
        "counts as one system in batch_size and sys_probs lists",
    )

    _systems = field_validator("systems", mode="before")(_check_systems)
    _batch = field_validator("batch_size", mode="before")(_check_batch_size)

    @field_validator("auto_prob")
    @classmethod
    def _auto_prob(cls, value: str) -> str:
        """One of the sampling rules DeePMD-kit knows."""
        if value == "prob_uniform" or value.split(";")[0] == "prob_sys_size":
            return value
        raise PydanticCustomError(
            "auto_prob",
            "must be 'prob_uniform', 'prob_sys_size' or 'prob_sys_size;start:end:weight;...'",
        )

    @field_validator("sys_probs")
    @classmethod
    def _sys_probs(cls, value: list[float] | None) -> list[float] | None:
        """Probabilities are non-negative with a positive sum."""
        if value is not None and (any(p < 0 for p in value) or sum(value) <= 0):
            raise PydanticCustomError("sys_probs", "must be >= 0 with a positive sum")
        return value


class DataConfig(_DataCommon):
    """`training.training_data`: the systems trained on and how batches are drawn."""

    min_pair_dist: float = Field(
        0.0, ge=0, description="skip frames with an atom pair closer than this (Angstrom; 0 = off)"
    )
    set_prefix: str | None = Field(
        None, description="removed from DeePMD-kit; accepted and ignored"
    )


class ValidationDataConfig(_DataCommon):
    """`training.validation_data`: the systems the learning curve is validated on."""

    numb_btch: int = Field(
        1,
        gt=0,
        validation_alias=_aliases("numb_btch", "numb_batch"),
        description="validation batches evaluated at each display step",
    )


class MixedPrecisionConfig(_Section):
    """`training.mixed_precision` (DeePMD-kit TensorFlow only; ignored by dpa)."""

    output_prec: str = Field("float32", description="precision of the trainable parameters")
    compute_prec: str = Field(description="precision of the computation (float16 or bfloat16)")


class TrainingConfig(_Section):
    """`training`: data, run length, logging and checkpoints."""

    training_data: DataConfig = Field(description="the training systems (section)")
    validation_data: ValidationDataConfig | None = Field(
        None, description="the validation systems (section); no validation when absent"
    )
    numb_steps: int | None = Field(
        None,
        gt=0,
        validation_alias=_aliases("numb_steps", "stop_batch", "num_step", "num_steps", "numb_step"),
        description="number of training steps (one batch each); excludes numb_epoch",
    )
    numb_epoch: float | None = Field(
        None,
        gt=0,
        validation_alias=_aliases("numb_epoch", "num_epochs", "num_epoch", "numb_epochs"),
        description="expected passes over the training data, turned into steps; excludes "
        "numb_steps",
    )
    seed: int | None = Field(None, description="random seed of the batch sampling")
    batch_order: Literal["deepmd", "dpa"] = Field(
        "deepmd",
        description="dpa extension: 'deepmd' trains on the batches, in the order, that "
        "`dp --pt train` (DeePMD-kit 3.2) draws for the same input and seed; like DeePMD-kit's, "
        "that order depends on its loader's worker count ($NUM_WORKERS, else min(4, CPUs)). "
        "'dpa' walks shuffled per-system epochs that do not depend on the machine",
    )
    disp_file: str = Field("lcurve.out", description="learning-curve file")
    disp_freq: int = Field(1000, gt=0, description="write the learning curve every this many steps")
    save_freq: int = Field(1000, gt=0, description="write a checkpoint every this many steps")
    save_ckpt: str = Field("model.ckpt", description="path prefix of the checkpoint files")
    save_dir: str | None = Field(None, description="folder of the periodic checkpoints")
    max_ckpt_keep: int = Field(5, gt=0, description="number of recent checkpoints kept")
    ckpt_keep_ratio: float | None = Field(
        None, gt=0, lt=1, description="keep this fraction of all checkpoints instead"
    )
    gradient_max_norm: float | None = Field(
        None, ge=0, description="clip the gradient norm to this value (0 or absent: no clipping)"
    )
    data_stat_nbatch: int | None = Field(
        None,
        gt=0,
        description="batches used for data statistics (dpa extension; overrides "
        "model.data_stat_nbatch)",
    )
    gradient_checkpointing: bool = Field(
        False,
        description="dpa extension, jax backend, descriptors that declare phases (DPA-3): "
        "compute each step's gradient in three compiled phases with the descriptor's layers cut "
        "in two, recomputing the forward pass; "
        "about 0.7x the step's peak memory for about 1.4x its time",
    )
    disp_training: bool = Field(True, description="log progress while training")
    time_training: bool = Field(True, description="log the time per step")
    disp_avg: bool = Field(False, description="report losses averaged over each display interval")
    stat_file: str | None = Field(
        None,
        description="HDF5 cache of the descriptor statistics per data system (dpa keeps its "
        "entries in its own group): a later run on the same systems reads them instead of "
        "computing",
    )
    stat_file_mode: Literal["read", "update"] = Field(
        "update", description="'update' computes and adds missing entries; 'read' needs them all"
    )
    mixed_precision: MixedPrecisionConfig | None = Field(
        None, description="mixed-precision training (section)"
    )
    enable_ema: bool = Field(False, description="keep an exponential moving average of weights")
    ema_decay: float = Field(0.999, ge=0, lt=1, description="decay of the weight average")
    ema_ckpt_keep: int | None = Field(None, gt=0, description="number of EMA checkpoints kept")
    change_bias_after_training: bool = Field(
        False, description="refit the output bias on the training data after the last step"
    )
    profiling: bool = Field(False, description="write a profiler trace")
    profiling_file: str = Field("timeline.json", description="file of the profiler trace")
    enable_profiler: bool = Field(False, description="run the backend profiler")
    tensorboard: bool = Field(False, description="write TensorBoard events")
    tensorboard_log_dir: str = Field("log", description="folder of the TensorBoard events")
    tensorboard_freq: int = Field(1, gt=0, description="write TensorBoard events every N steps")
    acc_freq: int = Field(1, gt=0, description="steps of gradient accumulation per update")
    zero_stage: int = Field(0, ge=0, le=3, description="ZeRO sharding stage of distributed runs")
    neighbor_graph_method: Literal["auto", "dense", "nv"] = Field(
        "auto", description="neighbor-graph builder of DeePMD-kit's exportable PyTorch backend"
    )
    enable_compile: bool = Field(False, description="compile the training step")
    enable_tf32: bool = Field(False, description="allow TF32 matrix products on CUDA")


def _cross_checks(sections: dict[str, Any]) -> list[str]:
    """Checks across keys of a section, each naming the keys involved."""
    lr, tr = sections["learning_rate"], sections["training"]
    problems = []
    if "stop_lr" in lr.model_fields_set and lr.stop_lr_ratio is not None:
        problems.append("learning_rate: give stop_lr or stop_lr_ratio, not both")
    if lr.warmup_steps and lr.warmup_ratio is not None:
        problems.append("learning_rate: give warmup_steps or warmup_ratio, not both")
    if tr.numb_steps is not None and tr.numb_epoch is not None:
        problems.append(
            "training: give numb_steps or numb_epoch, not both (both set the run length)"
        )
    if tr.numb_steps is None and tr.numb_epoch is None:
        problems.append("training: missing numb_steps (or numb_epoch), the length of the run")
    if tr.stat_file_mode == "read" and not tr.stat_file:
        problems.append("training.stat_file_mode = 'read' needs training.stat_file")
    for name in ("training_data", "validation_data"):
        data = getattr(tr, name)
        if data is None or not isinstance(data.systems, list) or data.rglob_patterns:
            continue
        for key in ("batch_size", "sys_probs"):
            value = getattr(data, key)
            if isinstance(value, list) and len(value) != len(data.systems):
                problems.append(
                    f"training.{name}.{key} has {len(value)} entries for "
                    f"{len(data.systems)} systems"
                )
    return problems


# ---------------------------------------------------------------- validating


class ValidatingConfig(_Section):
    """`validating`: DeePMD-kit's full-dataset validation during training (ignored by dpa)."""

    full_validation: bool = Field(False, description="validate on all validation data")
    ema_full_validation: bool = Field(False, description="also validate the EMA weights")
    validation_freq: int = Field(5000, gt=0, description="full validation every this many steps")
    save_best: bool = Field(True, description="keep the checkpoint with the best metric")
    save_best_dir: str | None = Field(None, description="folder of the best checkpoints")
    max_best_ckpt: int = Field(1, gt=0, description="number of best checkpoints kept")
    validation_metric: str = Field("E:MAE", description="metric that ranks checkpoints")
    full_val_file: str = Field("val.log", description="log file of the full validation")
    full_val_start: float = Field(
        0.5, ge=0, description="first validated step (fraction of the run, or a step)"
    )
    compiled_infer: bool = Field(False, description="compile the validation forward pass")
    tf32_infer: bool = Field(False, description="allow TF32 in the validation forward pass")
    amp_infer: bool = Field(False, description="mixed precision in the validation forward pass")


# ---------------------------------------------------------------- ignored keys

#: Keys DeePMD-kit 3.2 accepts that dpa parses but does not act on; the training loop warns
#: about those an input sets explicitly (TrainInput.ignored_keys()).
IGNORED_KEYS: tuple[str, ...] = (
    "learning_rate.scale_by_worker",
    "training.training_data.rglob_patterns",
    "training.training_data.min_pair_dist",
    "training.training_data.set_prefix",
    "training.validation_data.rglob_patterns",
    "training.save_dir",
    "training.ckpt_keep_ratio",
    "training.disp_avg",
    "training.mixed_precision",
    "training.enable_ema",
    "training.ema_decay",
    "training.ema_ckpt_keep",
    "training.change_bias_after_training",
    "training.profiling",
    "training.profiling_file",
    "training.enable_profiler",
    "training.tensorboard",
    "training.tensorboard_log_dir",
    "training.tensorboard_freq",
    "training.acc_freq",
    "training.zero_stage",
    "training.neighbor_graph_method",
    "training.enable_compile",
    "training.enable_tf32",
) + tuple(f"validating.{key}" for key in ValidatingConfig.model_fields)


# ---------------------------------------------------------------- the whole input

_SECTION_CLASSES: dict[str, type[_Section]] = {
    "learning_rate": LearningRateConfig,
    "loss": LossConfig,
    "optimizer": OptimizerConfig,
    "training": TrainingConfig,
    "validating": ValidatingConfig,
}
_TOP_LEVEL = ("model", *_SECTION_CLASSES)
_TOP_LEVEL_HINTS = {
    "nvnmd": "NVNMD hardware training is not supported by dpa",
    "model_dict": "a multi-task input has model_dict inside the model section",
    "loss_dict": "loss_dict goes with a multi-task model (model.model_dict); a single-task input "
    "has loss",
}


@dataclass(frozen=True)
class TrainInput:
    """A validated training input: the model dict plus one section object per other section."""

    model: dict[str, Any]
    learning_rate: LearningRateConfig
    loss: LossConfig
    optimizer: OptimizerConfig
    training: TrainingConfig
    validating: ValidatingConfig
    raw: dict[str, Any]

    def ignored_keys(self) -> list[str]:
        """The IGNORED_KEYS this input sets explicitly (so the training loop can warn)."""
        found = []
        for path in IGNORED_KEYS:
            *parents, key = path.split(".")
            section: Any = self
            for part in parents:
                section = getattr(section, part, None)
            if isinstance(section, BaseModel) and key in section.model_fields_set:
                found.append(path)
        return found


def _names(field: Any, name: str) -> tuple[str, ...]:
    """Every accepted spelling of a field: its name and its aliases."""
    alias = field.validation_alias
    choices = alias.choices if isinstance(alias, AliasChoices) else []
    return tuple(dict.fromkeys([name, *(c for c in choices if isinstance(c, str))]))


def _key_problems(data: dict, cls: type[BaseModel], path: str) -> list[str]:
    """Unknown keys and keys given under two spellings, in a section and its sub-sections."""
    problems = []
    spelling = {}
    for name, field in cls.model_fields.items():
        for alias in _names(field, name):
            spelling[alias] = name
    given: dict[str, list[str]] = {}
    for key, value in data.items():
        if key not in spelling:
            allowed = ", ".join(sorted(cls.model_fields))
            problems.append(f"unknown key '{path}.{key}'; allowed keys: {allowed}")
            continue
        given.setdefault(spelling[key], []).append(key)
        sub = section_of(cls.model_fields[spelling[key]].annotation)
        if sub is not None and isinstance(value, dict):
            problems += _key_problems(value, sub, f"{path}.{key}")
    for name, keys in given.items():
        if len(keys) > 1:
            problems.append(f"{path}: {' and '.join(keys)} both set {name}; give one of them")
    return problems


def parse_train_input(config: dict, source: str = "input") -> TrainInput:
    """Validate a whole training input (a dict as read from input.json); ConfigError if invalid.

    Error messages start with `source` (the file name) and name the dotted key path.
    """
    if not isinstance(config, dict):
        raise ConfigError(
            f"{source}: a training input must be a JSON object, got {type(config).__name__}"
        )
    data = strip_comments(config)
    problems = []
    for key in data:
        if key not in _TOP_LEVEL:
            hint = _TOP_LEVEL_HINTS.get(key)
            allowed = ", ".join(sorted(_TOP_LEVEL))
            problems.append(
                f"unknown section {key!r}"
                + (f" ({hint})" if hint else "")
                + f"; allowed sections: {allowed}"
            )
    for key in ("model", "training"):
        if key not in data:
            problems.append(f"missing section {key!r}")
    for key, cls in _SECTION_CLASSES.items():
        value = data.get(key)
        if isinstance(value, dict):
            problems += _key_problems(value, cls, key)
        elif key in data and value is not None:
            problems.append(f"{key}: must be an object (got {value!r})")
    if problems:
        raise ConfigError(f"{source}: " + "; ".join(problems))
    sections: dict[str, Any] = {}
    for key, cls in _SECTION_CLASSES.items():
        try:
            sections[key] = cls.model_validate(data.get(key) or {})
        except ValidationError as err:
            message = format_error(err, key, cls)
            raise ConfigError(f"{source}: {message}") from None
    problems = _cross_checks(sections)
    if problems:
        raise ConfigError(f"{source}: " + "; ".join(problems))
    try:
        model = parse_model_config(data["model"])
    except ConfigError as err:
        raise ConfigError(f"{source}: {err}") from None
    return TrainInput(model=model, raw=copy.deepcopy(config), **sections)


def load_train_input(path: str | Path) -> TrainInput:
    """Read and validate a training input file (.json, or .yaml/.yml with PyYAML)."""
    return parse_train_input(read_train_input(path), source=str(path))


def read_train_input(path: str | Path) -> dict:
    """The dict of a training input file (.json, or .yaml/.yml with PyYAML), not yet validated."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: training input file not found")
    text = path.read_text(encoding="utf-8")
    suffix = path.suffix.lower()
    if suffix in (".yaml", ".yml"):
        try:
            import yaml
        except ImportError:
            raise ConfigError(
                f"{path}: reading YAML inputs needs PyYAML (pip install pyyaml), or use JSON"
            ) from None
        try:
            config = yaml.safe_load(text)
        except yaml.YAMLError as err:
            mark = getattr(err, "problem_mark", None)
            where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
            problem = getattr(err, "problem", None) or str(err)
            raise ConfigError(f"{path}: invalid YAML{where}: {problem}") from None
    elif suffix == ".json":
        try:
            config = json.loads(text)
        except json.JSONDecodeError as err:
            raise ConfigError(
                f"{path}: invalid JSON at line {err.lineno}, column {err.colno}: {err.msg}"
            ) from None
    else:
        raise ConfigError(
            f"{path}: unknown input file type {suffix or '(none)'!r}; use .json, .yaml or .yml"
        )
    if not isinstance(config, dict):
        raise ConfigError(f"{path}: the input must be a mapping of sections (model, training, ...)")
    return config


# ---------------------------------------------------------------- documentation


def _type_name(annotation: Any) -> str:
    """A short, JSON-minded name of a field type."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is Literal:
        return " | ".join(json.dumps(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        return " | ".join(_type_name(a) for a in args)
    if origin is typing.Annotated:
        return _type_name(args[0])
    if origin is list:
        return f"list[{_type_name(args[0])}]" if args else "list"
    if annotation is type(None):
        return "null"
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return "section"
    return getattr(annotation, "__name__", str(annotation))


def _default_text(field: Any) -> str:
    """The default in JSON spelling, or 'required'."""
    if field.default is PydanticUndefined:
        return "required"
    return json.dumps(field.default)


_DEFAULT_NOTES = {
    "learning_rate.stop_lr": "null (5e-8 if stop_lr_ratio is null too)",
    "optimizer.weight_decay": "0.0 for Adam, 0.001 for AdamW",
    "training.numb_steps": "required unless numb_epoch is given",
}


def _doc_section(cls: type[BaseModel], path: str, lines: list[str]) -> None:
    """Append the doc lines of one section, then of its sub-sections."""
    summary = " ".join((cls.__doc__ or "").split()).split(": ", 1)[-1]
    lines.append(f"{path}: {summary}")
    subs = []
    for name, field in cls.model_fields.items():
        key = f"{path}.{name}"
        aliases = _names(field, name)[1:]
        also = f" (also: {', '.join(aliases)})" if aliases else ""
        ignored = " [ignored by dpa]" if key in IGNORED_KEYS else ""
        default = _DEFAULT_NOTES.get(key, _default_text(field))
        lines.append(f"  {name}{also}: {_type_name(field.annotation)} = {default}{ignored}")
        lines.append(f"      {field.description}")
        sub = section_of(field.annotation)
        if sub is not None:
            subs.append((sub, key))
    for sub, key in subs:
        lines.append("")
        _doc_section(sub, key, lines)


def doc_train_input() -> str:
    """Every key of a training input: type, default and meaning, section by section."""
    lines = [
        "dpa training input (DeePMD-kit v3 input.json). Keys starting with '_' are comments.",
        "",
        "model: the model section; see the DeePMD-kit v3 `model` documentation "
        f"(descriptor types {', '.join(descriptor_names())}; fitting_net type ener).",
    ]
    for name, cls in _SECTION_CLASSES.items():
        lines.append("")
        _doc_section(cls, name, lines)
    return "\n".join(lines) + "\n"
