"""The DPA-1 input section (`dpa1`, `se_atten`, `se_atten_v2`; defaults spec §5.7-5.8)."""

from __future__ import annotations

from typing import Literal

from pydantic import AliasChoices, Field

from ..config import DescriptorCommon, finish_single_list


class DPA1Config(DescriptorCommon):
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


def finish(desc: dict, ntypes: int) -> None:
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
    finish_single_list(desc, ntypes, per_type=False)
