"""Input keys shared by several descriptors (spec §4.4, §5.7 defaults) and the check of `sel`
for the single-list descriptors."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AliasChoices, Field

from ...errors import ConfigError
from ...schema import Precision, Section

UpdateStyle = Literal["res_avg", "res_incr", "res_residual"]
ResidualInit = Literal["norm", "const"]
Sel = int | str
Neurons = list[Annotated[int, Field(gt=0)]]


class DescriptorCommon(Section):
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


def finish_single_list(desc: dict, ntypes: int, per_type: bool) -> None:
    """sel resolved and positive (one entry per type for per-type blocks, else their sum as one
    number) and rcut_smth < rcut, for se_e2_a and DPA-1."""
    sel = desc["sel"]
    if isinstance(sel, str):
        raise ConfigError(
            f"model.descriptor.sel = {sel!r} needs training data to resolve; give explicit "
            "numbers (e.g. run `dpa neighbor-stat` on your data)"
        )
    if per_type:
        if isinstance(sel, int) or len(sel) != ntypes:
            raise ConfigError(
                f"model.descriptor.sel for se_e2_a needs one entry per type ({ntypes}), got {sel!r}"
            )
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


def check_activation(key: str, section: dict) -> None:
    """The section's activation_function names a known activation."""
    from ..network import activation

    try:
        activation(section["activation_function"])
    except ConfigError as err:
        raise ConfigError(f"model.{key}.activation_function: {err}") from None
