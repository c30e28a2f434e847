"""Schema of the DeePMD-kit v3 style `model` section (spec §4.4, §5.7, §8.5 defaults).

Validated by pydantic: unknown keys are errors that name the key and list the allowed ones;
keys starting with '_' (comments in DeePMD-kit inputs) are ignored.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AliasChoices, Field, ValidationError

from .dpmodel.descriptor.config import check_activation
from .dpmodel.descriptor.registry import kind_of, names
from .errors import ConfigError
from .schema import CANONICAL_PRECISION, Precision, Section, format_error, strip_comments


class FittingConfig(Section):
    """Energy fitting net (`fitting_net`, type `ener`)."""

    type: Literal["ener"] = "ener"
    numb_fparam: int = Field(0, ge=0)
    numb_aparam: int = Field(0, ge=0)
    default_fparam: list[float] | None = None
    dim_case_embd: int = Field(0, ge=0)
    neuron: list[Annotated[int, Field(gt=0)]] = Field(
        [120, 120, 120], validation_alias=AliasChoices("neuron", "n_neuron")
    )
    activation_function: str = "tanh"
    precision: Precision = "default"
    resnet_dt: bool = True
    trainable: bool | list[bool] = True
    rcond: float | None = None
    seed: int | None = None
    atom_ener: list[float | None] = []
    use_aparam_as_mask: bool = False


class ModelConfig(Section):
    """The `model` section of an input file."""

    type: Literal["standard"] = "standard"
    type_map: list[str] = Field(min_length=1)
    descriptor: dict[str, Any]  # validated by its descriptor's own section (registry)
    fitting_net: FittingConfig = FittingConfig()
    atom_exclude_types: list[int] = []
    pair_exclude_types: list[tuple[int, int]] = []
    preset_out_bias: dict[str, list[float | None]] | None = None
    data_stat_nbatch: int = 10
    data_stat_protect: float = 1e-2
    data_bias_nsample: int = 10
    # keys DeePMD-kit's argcheck writes into every model_def_script (so its .dp/.pth files carry
    # them); at these values they change nothing: the table potential and ZBL bridging are off,
    # branch aliases only name multi-task heads, `info` records the observed types
    srtab_add_bias: bool = True
    model_branch_alias: list[str] = []
    info: dict[str, Any] = {}
    # fine-tuning: the pretrained branch this model starts from (`dpa train --finetune`)
    finetune_head: str | None = None
    bridging_method: Literal["None"] = "None"
    bridging_r_inner: float = 0.5
    bridging_r_outer: float = 0.8


def parse_model_config(config: dict) -> dict:
    """Validated `model` section with every default filled in (plain dicts and lists)."""
    if not isinstance(config, dict):
        raise ConfigError(f"the model config must be a dict, got {type(config).__name__}")
    unsupported = {"type_embedding", "spin", "modifier", "compress", "model_dict", "use_srtab"}
    found = sorted(unsupported & set(config))
    if found:
        raise ConfigError(
            f"model config key(s) {found} are not supported by dpa (remove them; the DPA "
            "descriptors carry their own type embedding)"
        )
    config = strip_comments(config)
    try:
        parsed = ModelConfig.model_validate(config)
    except ValidationError as err:
        raise ConfigError(
            "invalid model config: " + format_error(err, "model", ModelConfig)
        ) from None
    out = parsed.model_dump()
    out["descriptor"] = desc = _descriptor_section(config["descriptor"])
    ntypes = len(out["type_map"])
    for section in (desc, out["fitting_net"]):
        if "precision" in section:
            section["precision"] = CANONICAL_PRECISION.get(
                section["precision"], section["precision"]
            )
    _check_types(out, ntypes)
    kind_of(desc).finish(desc, ntypes)
    _check_values(out)
    return out


def _descriptor_section(section: Any) -> dict:
    """`model.descriptor` validated by the section class of its type, as a plain dict."""
    if not isinstance(section, dict):
        raise ConfigError(
            f"invalid model config: model.descriptor must be an object, got {section!r}"
        )
    try:
        kind = kind_of(section)
    except ConfigError:
        raise ConfigError(
            f"invalid model config: model.descriptor: unsupported descriptor type "
            f"{section.get('type')!r}; supported: {', '.join(names())}"
        ) from None
    try:
        return kind.config.model_validate(section).model_dump()
    except ValidationError as err:
        message = format_error(err, "model.descriptor", kind.config)
        raise ConfigError(f"invalid model config: {message}") from None


def _check_values(cfg: dict) -> None:
    """Checks across keys: unique type_map, known activations, fparam defaults of the right size."""
    type_map = cfg["type_map"]
    repeated = sorted({t for t in type_map if type_map.count(t) > 1})
    if repeated:
        raise ConfigError(f"model.type_map lists {repeated} more than once; names must be unique")
    for name in ("descriptor", "fitting_net"):
        if "activation_function" in cfg[name]:
            check_activation(name, cfg[name])
    fit = cfg["fitting_net"]
    default = fit["default_fparam"]
    if default is not None and len(default) != fit["numb_fparam"]:
        raise ConfigError(
            f"model.fitting_net.default_fparam has {len(default)} values but numb_fparam is "
            f"{fit['numb_fparam']}"
        )
    if len(fit["atom_ener"]) > len(type_map):
        raise ConfigError(
            f"model.fitting_net.atom_ener has {len(fit['atom_ener'])} entries for "
            f"{len(type_map)} types"
        )


def _check_types(cfg: dict, ntypes: int) -> None:
    """Type indices in exclusion lists must exist in type_map."""
    desc = cfg["descriptor"]
    pairs = [("descriptor.exclude_types", p) for p in desc.get("exclude_types", [])]
    pairs += [("pair_exclude_types", p) for p in cfg["pair_exclude_types"]]
    for key, pair in pairs:
        if any(not 0 <= t < ntypes for t in pair):
            raise ConfigError(
                f"model.{key}: pair {list(pair)} names a type outside type_map (0..{ntypes - 1})"
            )
    for t in cfg["atom_exclude_types"]:
        if not 0 <= t < ntypes:
            raise ConfigError(f"model.atom_exclude_types: type {t} is outside 0..{ntypes - 1}")
