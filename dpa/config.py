"""Schema of the DeePMD-kit v3 style `model` section (spec §4.4, §5.7, §8.5 defaults).

Validated by pydantic: unknown keys are errors that name the key and list the allowed ones;
keys starting with '_' (comments in DeePMD-kit inputs) are ignored.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, ValidationError

from .errors import ConfigError

Precision = Literal["default", "float64", "float32", "double", "single"]


class _Section(BaseModel):
    """A config section: no unknown keys, aliases accepted."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class _DescriptorCommon(_Section):
    sel: list[int] | int | str = "auto"
    rcut: float = Field(6.0, gt=0)
    rcut_smth: float = Field(0.5, ge=0)
    neuron: list[Annotated[int, Field(gt=0)]] = Field([10, 20, 40], min_length=1)
    axis_neuron: int = Field(4, gt=0, validation_alias=AliasChoices("axis_neuron", "n_axis_neuron"))
    activation_function: str = "tanh"
    resnet_dt: bool = False
    type_one_side: bool = False
    precision: Precision = "default"
    trainable: bool = True
    seed: int | None = None
    exclude_types: list[tuple[int, int]] = []
    env_protection: float = 0.0


class SeE2AConfig(_DescriptorCommon):
    """`se_e2_a` (alias `se_a`)."""

    type: Literal["se_e2_a", "se_a"]
    set_davg_zero: bool = False


class DPA1Config(_DescriptorCommon):
    """`dpa1` / `se_atten` / `se_atten_v2`."""

    type: Literal["dpa1", "se_atten", "se_atten_v2"]
    set_davg_zero: bool | None = None  # True for dpa1/se_atten, False for se_atten_v2
    attn: int = Field(128, gt=0)
    attn_layer: int = Field(2, ge=0)
    attn_dotr: bool = True
    attn_mask: bool = False
    stripped_type_embedding: bool | None = None
    smooth_type_embedding: bool = Field(
        False, validation_alias=AliasChoices("smooth_type_embedding", "smooth_type_embdding")
    )
    trainable_ln: bool = True
    ln_eps: float | None = None
    tebd_dim: int = Field(8, gt=0)
    use_econf_tebd: bool = False
    use_tebd_bias: bool = False
    tebd_input_mode: Literal["concat", "strip"] = "concat"
    scaling_factor: float = Field(1.0, gt=0)
    normalize: bool = True
    temperature: float | None = None
    concat_output_tebd: bool = True
    lmax: int = 1


class FittingConfig(_Section):
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


class ModelConfig(_Section):
    """The `model` section of an input file."""

    type: Literal["standard"] = "standard"
    type_map: list[str] = Field(min_length=1)
    descriptor: Annotated[SeE2AConfig | DPA1Config, Field(discriminator="type")]
    fitting_net: FittingConfig = FittingConfig()
    atom_exclude_types: list[int] = []
    pair_exclude_types: list[tuple[int, int]] = []
    preset_out_bias: dict[str, list[float | None]] | None = None
    data_stat_nbatch: int = 10
    data_stat_protect: float = 1e-2
    data_bias_nsample: int = 10


def _strip_comments(value: Any) -> Any:
    """Drop keys starting with '_' (DeePMD-kit's `_comment` convention) at every level."""
    if isinstance(value, dict):
        return {k: _strip_comments(v) for k, v in value.items() if not str(k).startswith("_")}
    if isinstance(value, list):
        return [_strip_comments(v) for v in value]
    return value


_TAGS = {"se_e2_a", "se_a", "dpa1", "se_atten", "se_atten_v2"}
_CANONICAL_PRECISION = {"default": "float64", "double": "float64", "single": "float32"}


def _format_error(err: ValidationError, section: str) -> str:
    """One readable line per problem: the dotted key, what is wrong, the allowed keys."""
    lines = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"] if str(p) not in _TAGS)
        key = f"{section}.{loc}" if loc else section
        if e["type"] == "extra_forbidden":
            allowed = _allowed_keys(e["loc"])
            lines.append(f"unknown key {key!r}" + (f"; allowed keys: {allowed}" if allowed else ""))
        elif e["type"] == "union_tag_invalid":
            lines.append(
                f"{key}: unsupported descriptor type {e['input'].get('type')!r}; "
                "supported: se_e2_a, se_a, dpa1, se_atten, se_atten_v2"
            )
        else:
            lines.append(f"{key}: {e['msg']} (got {e.get('input')!r})")
    return "invalid model config: " + "; ".join(lines)


def _allowed_keys(loc: tuple) -> str:
    """Comma-separated field names of the section that holds the bad key."""
    section: type[BaseModel] = ModelConfig
    for part in loc[:-1]:
        if part == "descriptor":
            continue
        if part in ("SeE2AConfig", "se_e2_a", "se_a"):
            section = SeE2AConfig
        elif part in ("DPA1Config", "dpa1", "se_atten", "se_atten_v2"):
            section = DPA1Config
        elif part == "fitting_net":
            section = FittingConfig
    return ", ".join(sorted(section.model_fields))


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
    try:
        parsed = ModelConfig.model_validate(_strip_comments(config))
    except ValidationError as err:
        raise ConfigError(_format_error(err, "model")) from None
    out = parsed.model_dump()
    desc = out["descriptor"]
    ntypes = len(out["type_map"])
    for section in (desc, out["fitting_net"]):
        section["precision"] = _CANONICAL_PRECISION.get(section["precision"], section["precision"])
    if desc["type"] in ("dpa1", "se_atten", "se_atten_v2"):
        _finish_dpa1(desc)
    _check_types(out, ntypes)
    _check_values(out)
    return out


def _finish_dpa1(desc: dict) -> None:
    """Resolve the DPA-1 options that depend on each other (se_atten_v2 forcing, aliases)."""
    if desc["type"] == "se_atten_v2":
        desc["tebd_input_mode"] = "strip"
        desc["smooth_type_embedding"] = True
        if desc["set_davg_zero"] is None:
            desc["set_davg_zero"] = False
    if desc["stripped_type_embedding"] is not None:
        desc["tebd_input_mode"] = "strip" if desc["stripped_type_embedding"] else "concat"
    if desc["set_davg_zero"] is None:
        desc["set_davg_zero"] = True
    if desc["ln_eps"] is None:
        desc["ln_eps"] = 1e-5


def _check_values(cfg: dict) -> None:
    """Checks across keys: unique type_map, known activations, fparam defaults of the right size."""
    from .dpmodel.network import activation

    type_map = cfg["type_map"]
    repeated = sorted({t for t in type_map if type_map.count(t) > 1})
    if repeated:
        raise ConfigError(f"model.type_map lists {repeated} more than once; names must be unique")
    for section in ("descriptor", "fitting_net"):
        try:
            activation(cfg[section]["activation_function"])
        except ConfigError as err:
            raise ConfigError(f"model.{section}.activation_function: {err}") from None
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
    """Type indices in exclusion lists must exist in type_map; sel resolved and positive."""
    desc = cfg["descriptor"]
    pairs = [("descriptor.exclude_types", p) for p in desc["exclude_types"]]
    pairs += [("pair_exclude_types", p) for p in cfg["pair_exclude_types"]]
    for key, pair in pairs:
        if any(not 0 <= t < ntypes for t in pair):
            raise ConfigError(
                f"model.{key}: pair {list(pair)} names a type outside type_map (0..{ntypes - 1})"
            )
    for t in cfg["atom_exclude_types"]:
        if not 0 <= t < ntypes:
            raise ConfigError(f"model.atom_exclude_types: type {t} is outside 0..{ntypes - 1}")
    sel = desc["sel"]
    if isinstance(sel, str):
        raise ConfigError(
            f"model.descriptor.sel = {sel!r} needs training data to resolve; give explicit "
            "numbers (e.g. run `dpa neighbor-stat` on your data)"
        )
    if desc["type"] in ("se_e2_a", "se_a"):
        if isinstance(sel, int) or len(sel) != ntypes:
            raise ConfigError(
                f"model.descriptor.sel for se_e2_a needs one entry per type ({ntypes}), got {sel!r}"
            )
        desc["type"] = "se_e2_a"
    else:
        desc["sel"] = [sel] if isinstance(sel, int) else [int(sum(sel))]
    if any(n < 0 for n in desc["sel"]) or sum(desc["sel"]) == 0:
        raise ConfigError(
            f"model.descriptor.sel = {sel!r}: neighbor counts must be >= 0 with a positive total"
        )
    if desc["rcut_smth"] >= desc["rcut"]:
        raise ConfigError(
            f"model.descriptor.rcut_smth ({desc['rcut_smth']}) must be smaller than rcut "
            f"({desc['rcut']})"
        )
