"""The DPA-3 input section: the repflow block (spec §7, defaults §7.8)."""

from __future__ import annotations

from typing import Literal

from pydantic import AliasChoices, Field

from ....errors import ConfigError
from ....schema import Precision, Section, check_radii, need_number, ordered
from ..config import ResidualInit, Sel, UpdateStyle


class RepflowConfig(Section):
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


class DPA3Config(Section):
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


def finish(desc: dict, ntypes: int) -> None:
    """Radii, sel and compression of the DPA-3 repflow are consistent (spec §7.2-7.3)."""
    flow = desc["repflow"]
    if desc["add_chg_spin_ebd"]:
        raise ConfigError(
            "model.descriptor.add_chg_spin_ebd = true (charge/spin conditioning) is not supported "
            "yet; remove it"
        )
    flow["e_sel"] = need_number("repflow.e_sel", flow["e_sel"])
    flow["a_sel"] = need_number("repflow.a_sel", flow["a_sel"])
    check_radii("repflow", flow["e_rcut"], flow["e_rcut_smth"], ("e_rcut", "e_rcut_smth"))
    check_radii("repflow", flow["a_rcut"], flow["a_rcut_smth"], ("a_rcut", "a_rcut_smth"))
    ordered(("repflow.a_rcut", flow["a_rcut"]), ("repflow.e_rcut", flow["e_rcut"]), False)
    ordered(("repflow.a_sel", flow["a_sel"]), ("repflow.e_sel", flow["e_sel"]), False)
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
