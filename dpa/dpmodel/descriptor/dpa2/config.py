"""The DPA-2 input section: repinit and repformer blocks (spec §6.3-6.7, defaults §6.10)."""

from __future__ import annotations

from typing import Literal

from pydantic import AliasChoices, Field

from ....schema import Precision, Section, check_radii, need_number, ordered
from ..config import Neurons, ResidualInit, Sel, UpdateStyle, check_activation


class RepinitConfig(Section):
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


class RepformerConfig(Section):
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


class DPA2Config(Section):
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


def finish(desc: dict, ntypes: int) -> None:
    """Radii and sel of the DPA-2 blocks are consistent (spec §6.1); ln_eps default."""
    rep, fmr = desc["repinit"], desc["repformer"]
    rep["nsel"] = need_number("repinit.nsel", rep["nsel"])
    fmr["nsel"] = need_number("repformer.nsel", fmr["nsel"])
    check_radii("repinit", rep["rcut"], rep["rcut_smth"], ("rcut", "rcut_smth"))
    check_radii("repformer", fmr["rcut"], fmr["rcut_smth"], ("rcut", "rcut_smth"))
    ordered(("repformer.rcut", fmr["rcut"]), ("repinit.rcut", rep["rcut"]), strict=True)
    ordered(("repformer.nsel", fmr["nsel"]), ("repinit.nsel", rep["nsel"]), strict=True)
    if rep["use_three_body"]:
        rep["three_body_sel"] = need_number("repinit.three_body_sel", rep["three_body_sel"])
        check_radii(
            "repinit",
            rep["three_body_rcut"],
            rep["three_body_rcut_smth"],
            ("three_body_rcut", "three_body_rcut_smth"),
        )
        ordered(
            ("repinit.three_body_rcut", rep["three_body_rcut"]),
            ("repinit.rcut", rep["rcut"]),
            strict=False,
        )
        ordered(
            ("repinit.three_body_sel", rep["three_body_sel"]),
            ("repinit.nsel", rep["nsel"]),
            strict=False,
        )
    if fmr["ln_eps"] is None:
        fmr["ln_eps"] = 1e-5
    check_activation("descriptor.repinit", rep)
    check_activation("descriptor.repformer", fmr)
