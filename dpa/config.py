"""Schema of the DeePMD-kit v3 style `model` section (spec §4.4, §5.7, §8.5 defaults).

Validated by pydantic: unknown keys are errors that name the key and list the allowed ones;
keys starting with '_' (comments in DeePMD-kit inputs) are ignored.
"""

from __future__ import annotations

import typing
from typing import Annotated, Any, Literal

from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    model_validator,
)
from pydantic_core import PydanticCustomError

from .errors import ConfigError

Precision = Literal["default", "float64", "float32", "double", "single"]


def _takes_bool(annotation: Any) -> bool:
    """Whether a field's type admits a JSON true/false (bool itself, Any, or inside a union)."""
    if annotation is bool or annotation is Any:
        return True
    return any(_takes_bool(arg) for arg in typing.get_args(annotation))


class _Section(BaseModel):
    """A config section: no unknown keys, aliases accepted, and no true/false where a number or
    a list is expected (pydantic's lax mode would read `"numb_steps": true` as 1)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    @model_validator(mode="before")
    @classmethod
    def _no_bool_for_numbers(cls, data: Any) -> Any:
        if isinstance(data, dict):
            for key, value in data.items():
                annotation = _field_annotations(cls).get(key)
                if isinstance(value, bool) and annotation is not None:
                    if not _takes_bool(annotation):
                        raise PydanticCustomError(
                            "bool_not_allowed",
                            "true/false is not a valid value; give a value of the key's type",
                            {"key": key},
                        )
        return data


def _field_annotations(section: type[BaseModel]) -> dict[str, Any]:
    """Every accepted spelling of a section's keys (names and aliases) -> the field's type."""
    found = {}
    for name, field in section.model_fields.items():
        alias = field.validation_alias
        spellings = [name, *(alias.choices if isinstance(alias, AliasChoices) else [alias])]
        found.update({s: field.annotation for s in spellings if isinstance(s, str)})
    return found


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


UpdateStyle = Literal["res_avg", "res_incr", "res_residual"]
ResidualInit = Literal["norm", "const"]
Sel = int | str
Neurons = list[Annotated[int, Field(gt=0)]]


class RepinitConfig(_Section):
    """DPA-2 `repinit` block (spec §6.3-6.4, defaults §6.10)."""

    rcut: float = Field(gt=0)
    rcut_smth: float = Field(ge=0)
    nsel: Sel
    neuron: Neurons = Field([25, 50, 100], min_length=1)
    axis_neuron: int = Field(16, gt=0)
    tebd_dim: int = Field(8, gt=0)
    tebd_input_mode: Literal["concat", "strip"] = "concat"
    set_davg_zero: bool = True
    activation_function: str = "tanh"
    type_one_side: bool = False
    resnet_dt: bool = False
    use_three_body: bool = False
    three_body_neuron: Neurons = Field([2, 4, 8], min_length=1)
    three_body_rcut: float = Field(4.0, gt=0)
    three_body_rcut_smth: float = Field(0.5, ge=0)
    three_body_sel: Sel = 40


class RepformerConfig(_Section):
    """DPA-2 `repformer` block (spec §6.6-6.7, defaults §6.10)."""

    rcut: float = Field(gt=0)
    rcut_smth: float = Field(ge=0)
    nsel: Sel
    nlayers: int = Field(3, gt=0)
    g1_dim: int = Field(128, gt=0)
    g2_dim: int = Field(16, gt=0)
    axis_neuron: int = Field(4, gt=0)
    direct_dist: bool = False
    update_g1_has_conv: bool = True
    update_g1_has_drrd: bool = True
    update_g1_has_grrg: bool = True
    update_g1_has_attn: bool = True
    update_g2_has_g1g1: bool = True
    update_g2_has_attn: bool = True
    use_sqrt_nnei: bool = True
    g1_out_conv: bool = True
    g1_out_mlp: bool = True
    update_h2: bool = False
    attn1_hidden: int = Field(64, gt=0)
    attn1_nhead: int = Field(4, gt=0)
    attn2_hidden: int = Field(16, gt=0)
    attn2_nhead: int = Field(4, gt=0)
    attn2_has_gate: bool = False
    activation_function: str = "tanh"
    update_style: UpdateStyle = "res_avg"
    update_residual: float = 0.001
    update_residual_init: ResidualInit = "norm"
    set_davg_zero: bool = True
    trainable_ln: bool = True
    ln_eps: float | None = None


class DPA2Config(_Section):
    """`dpa2`: repinit + repformer (spec §6)."""

    type: Literal["dpa2"]
    repinit: RepinitConfig
    repformer: RepformerConfig
    concat_output_tebd: bool = True
    precision: Precision = "default"
    smooth: bool = True
    exclude_types: list[tuple[int, int]] = []
    env_protection: float = 0.0
    trainable: bool = True
    seed: int | None = None
    add_tebd_to_repinit_out: bool = Field(
        False,
        validation_alias=AliasChoices("add_tebd_to_repinit_out", "repformer_add_type_ebd_to_seq"),
    )
    use_econf_tebd: bool = False
    use_tebd_bias: bool = False


class RepflowConfig(_Section):
    """DPA-3 `repflow` block (spec §7, defaults §7.8)."""

    n_dim: int = Field(128, gt=0)
    e_dim: int = Field(64, gt=0)
    a_dim: int = Field(64, gt=0)
    nlayers: int = Field(6, gt=0)
    e_rcut: float = Field(gt=0)
    e_rcut_smth: float = Field(ge=0)
    e_sel: Sel
    a_rcut: float = Field(gt=0)
    a_rcut_smth: float = Field(ge=0)
    a_sel: Sel
    a_compress_rate: int = Field(0, ge=0)
    a_compress_e_rate: int = Field(1, gt=0)
    a_compress_use_split: bool = False
    n_multi_edge_message: int = Field(1, gt=0)
    axis_neuron: int = Field(4, gt=0)
    fix_stat_std: float = Field(0.3, ge=0)
    skip_stat: bool = False
    update_angle: bool = True
    update_style: UpdateStyle = "res_residual"
    update_residual: float = 0.1
    update_residual_init: ResidualInit = "const"
    optim_update: bool = True
    smooth_edge_update: bool = False
    edge_init_use_dist: bool = Field(
        False, validation_alias=AliasChoices("edge_init_use_dist", "edge_use_dist")
    )
    use_exp_switch: bool = Field(
        False, validation_alias=AliasChoices("use_exp_switch", "use_env_envelope")
    )
    use_dynamic_sel: bool = False
    sel_reduce_factor: float = Field(10.0, gt=0)
    sequential_update: bool = False


class DPA3Config(_Section):
    """`dpa3`: the repflow block on the line-graph series (spec §7)."""

    type: Literal["dpa3"]
    repflow: RepflowConfig
    concat_output_tebd: bool = False
    add_chg_spin_ebd: bool = False
    default_chg_spin: list[float] | None = None
    activation_function: str = "silu"
    precision: Precision = "default"
    exclude_types: list[tuple[int, int]] = []
    env_protection: float = 0.0
    trainable: bool = True
    seed: int | None = None
    use_econf_tebd: bool = False
    use_tebd_bias: bool = False
    use_loc_mapping: bool = True


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
    descriptor: Annotated[
        SeE2AConfig | DPA1Config | DPA2Config | DPA3Config, Field(discriminator="type")
    ]
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
    bridging_method: Literal["None"] = "None"
    bridging_r_inner: float = 0.5
    bridging_r_outer: float = 0.8


def _strip_comments(value: Any) -> Any:
    """Drop keys starting with '_' (DeePMD-kit's `_comment` convention) at every level."""
    if isinstance(value, dict):
        return {k: _strip_comments(v) for k, v in value.items() if not str(k).startswith("_")}
    if isinstance(value, list):
        return [_strip_comments(v) for v in value]
    return value


_TAGS = {"se_e2_a", "se_a", "dpa1", "se_atten", "se_atten_v2", "dpa2", "dpa3"}
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
        elif e["type"] == "bool_not_allowed":
            lines.append(f"{key}.{e['ctx']['key']}: {e['msg']} (got {e['input'][e['ctx']['key']]})")
        elif e["type"] == "union_tag_invalid":
            lines.append(
                f"{key}: unsupported descriptor type {e['input'].get('type')!r}; "
                "supported: se_e2_a, se_a, dpa1, se_atten, se_atten_v2, dpa2, dpa3"
            )
        else:
            lines.append(f"{key}: {e['msg']} (got {e.get('input')!r})")
    return "invalid model config: " + "; ".join(lines)


_SECTIONS: dict[str, type[BaseModel]] = {
    "SeE2AConfig": SeE2AConfig,
    "se_e2_a": SeE2AConfig,
    "se_a": SeE2AConfig,
    "DPA1Config": DPA1Config,
    "dpa1": DPA1Config,
    "se_atten": DPA1Config,
    "se_atten_v2": DPA1Config,
    "dpa2": DPA2Config,
    "dpa3": DPA3Config,
    "fitting_net": FittingConfig,
}


def _allowed_keys(loc: tuple) -> str:
    """Comma-separated field names of the section that holds the bad key."""
    section: type[BaseModel] = ModelConfig
    for part in loc[:-1]:
        if part in _SECTIONS:
            section = _SECTIONS[part]
        elif isinstance(part, str) and part in section.model_fields:
            sub = section.model_fields[part].annotation
            if isinstance(sub, type) and issubclass(sub, BaseModel):
                section = sub
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
    if desc["type"] == "dpa2":
        _check_dpa2(desc)
    elif desc["type"] == "dpa3":
        _check_dpa3(desc)
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
    desc = cfg["descriptor"]
    sections = {
        "descriptor": desc,
        "descriptor.repinit": desc.get("repinit"),
        "descriptor.repformer": desc.get("repformer"),
        "fitting_net": cfg["fitting_net"],
    }
    for name, section in sections.items():
        if section is None or "activation_function" not in section:
            continue
        try:
            activation(section["activation_function"])
        except ConfigError as err:
            raise ConfigError(f"model.{name}.activation_function: {err}") from None
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
    if desc["type"] in ("dpa2", "dpa3"):
        return
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


def _need_number(key: str, value: Any) -> int:
    """A resolved neighbor count; `"auto"` needs data (neighbor statistics)."""
    if isinstance(value, str):
        raise ConfigError(
            f"model.descriptor.{key} = {value!r} needs training data to resolve; give an explicit "
            "number (e.g. from `dpa neighbor-stat` on your data)"
        )
    if value <= 0:
        raise ConfigError(f"model.descriptor.{key} = {value} must be a positive neighbor count")
    return int(value)


def _check_radii(block: str, rcut: float, rcut_smth: float, names: tuple[str, str]) -> None:
    """rcut_smth < rcut of one block."""
    if rcut_smth >= rcut:
        raise ConfigError(
            f"model.descriptor.{block}.{names[1]} ({rcut_smth}) must be smaller than "
            f"{block}.{names[0]} ({rcut})"
        )


def _ordered(small: tuple[str, float], large: tuple[str, float], strict: bool) -> None:
    """ConfigError unless small's value is below (or with strict=False, at most) large's."""
    (k_small, v_small), (k_large, v_large) = small, large
    bad = v_small >= v_large if strict else v_small > v_large
    if bad:
        relation = "smaller than" if strict else "at most"
        raise ConfigError(
            f"model.descriptor.{k_small} ({v_small}) must be {relation} "
            f"model.descriptor.{k_large} ({v_large})"
        )


def _check_dpa2(desc: dict) -> None:
    """Radii and sel of the DPA-2 blocks are consistent (spec §6.1); ln_eps default."""
    rep, fmr = desc["repinit"], desc["repformer"]
    rep["nsel"] = _need_number("repinit.nsel", rep["nsel"])
    fmr["nsel"] = _need_number("repformer.nsel", fmr["nsel"])
    _check_radii("repinit", rep["rcut"], rep["rcut_smth"], ("rcut", "rcut_smth"))
    _check_radii("repformer", fmr["rcut"], fmr["rcut_smth"], ("rcut", "rcut_smth"))
    _ordered(("repformer.rcut", fmr["rcut"]), ("repinit.rcut", rep["rcut"]), strict=True)
    _ordered(("repformer.nsel", fmr["nsel"]), ("repinit.nsel", rep["nsel"]), strict=True)
    if rep["use_three_body"]:
        rep["three_body_sel"] = _need_number("repinit.three_body_sel", rep["three_body_sel"])
        _check_radii(
            "repinit",
            rep["three_body_rcut"],
            rep["three_body_rcut_smth"],
            ("three_body_rcut", "three_body_rcut_smth"),
        )
        _ordered(
            ("repinit.three_body_rcut", rep["three_body_rcut"]),
            ("repinit.rcut", rep["rcut"]),
            strict=False,
        )
        _ordered(
            ("repinit.three_body_sel", rep["three_body_sel"]),
            ("repinit.nsel", rep["nsel"]),
            strict=False,
        )
    if fmr["ln_eps"] is None:
        fmr["ln_eps"] = 1e-5


def _check_dpa3(desc: dict) -> None:
    """Radii, sel and compression of the DPA-3 repflow are consistent (spec §7.2-7.3)."""
    flow = desc["repflow"]
    if desc["add_chg_spin_ebd"]:
        raise ConfigError(
            "model.descriptor.add_chg_spin_ebd = true (charge/spin conditioning) is not supported "
            "yet; remove it"
        )
    flow["e_sel"] = _need_number("repflow.e_sel", flow["e_sel"])
    flow["a_sel"] = _need_number("repflow.a_sel", flow["a_sel"])
    _check_radii("repflow", flow["e_rcut"], flow["e_rcut_smth"], ("e_rcut", "e_rcut_smth"))
    _check_radii("repflow", flow["a_rcut"], flow["a_rcut_smth"], ("a_rcut", "a_rcut_smth"))
    _ordered(("repflow.a_rcut", flow["a_rcut"]), ("repflow.e_rcut", flow["e_rcut"]), False)
    _ordered(("repflow.a_sel", flow["a_sel"]), ("repflow.e_sel", flow["e_sel"]), False)
    rate, e_rate, a_dim = flow["a_compress_rate"], flow["a_compress_e_rate"], flow["a_dim"]
    if rate and (a_dim * e_rate) % (2 * rate):
        raise ConfigError(
            f"model.descriptor.repflow: a_dim * a_compress_e_rate ({a_dim} * {e_rate}) must be "
            f"divisible by 2 * a_compress_rate (2 * {rate})"
        )
    if rate and a_dim % (2 * rate):
        # DeePMD-kit 3.2.0 sizes the angle layers for a + (1 + e_rate) n_c inputs while the
        # angle input holds a + n_c + 2 e_c channels: the two agree only for an even n_c
        raise ConfigError(
            f"model.descriptor.repflow.a_dim ({a_dim}) must be divisible by 2 * a_compress_rate "
            f"(2 * {rate}): with an odd a_dim / a_compress_rate the angle layers' widths do not "
            "match their input (DeePMD-kit fails on such a model as well)"
        )
    if rate and flow["a_compress_use_split"]:
        n_c, e_c = a_dim // rate, (a_dim // (2 * rate)) * e_rate
        if n_c > flow["n_dim"] or e_c > flow["e_dim"]:
            raise ConfigError(
                f"model.descriptor.repflow: a_compress_use_split keeps the first {n_c} node and "
                f"{e_c} edge channels, more than n_dim ({flow['n_dim']}) or e_dim "
                f"({flow['e_dim']}); lower a_compress_e_rate or raise a_compress_rate"
            )
    if flow["sequential_update"] and flow["update_style"] != "res_residual":
        raise ConfigError(
            "model.descriptor.repflow.sequential_update = true needs update_style "
            f"'res_residual' (got update_style = {flow['update_style']!r})"
        )
    if flow["sequential_update"] and not flow["update_angle"]:
        raise ConfigError(
            "model.descriptor.repflow.sequential_update = true needs update_angle = true"
        )
    if flow["use_dynamic_sel"] and not flow["smooth_edge_update"]:
        raise ConfigError(
            "model.descriptor.repflow.use_dynamic_sel = true needs smooth_edge_update = true"
        )
    if flow["skip_stat"]:
        flow["fix_stat_std"] = 0.3
