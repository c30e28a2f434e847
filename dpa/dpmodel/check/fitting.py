"""The energy fitting check (input width, nets, parameters, per-type biases) and the
model-level output biases and exclusions."""

from __future__ import annotations

import math

from .networks import collection, network
from .nodes import (
    Node,
    array,
    fail,
    integer,
    number,
    optional_array,
    same_ntypes,
    type_list,
    type_pairs,
)


def check_fitting(fit: Node, ntypes: int, dim_descrpt: int) -> None:
    """The energy fitting: input width from the descriptor, one output, per-type biases."""
    same_ntypes(fit["ntypes"], ntypes)
    nfp = integer(fit.get("numb_fparam", 0), 0)
    nap = integer(fit.get("numb_aparam", 0), 0)
    ncase = integer(fit.get("dim_case_embd", 0), 0)
    stored = fit.get("dim_descrpt")
    if stored.value is not None and integer(stored, 1) != dim_descrpt:
        fail(stored, f"is {stored.value}; the descriptor gives {dim_descrpt} features")
    use_mask = bool(fit.get("use_aparam_as_mask", False).value)
    n_in = dim_descrpt + nfp + (0 if use_mask else nap) + ncase
    why = (
        f"descriptor width {dim_descrpt} + numb_fparam {nfp} + numb_aparam "
        f"{0 if use_mask else nap} + dim_case_embd {ncase}"
    )
    mixed = bool(fit.get("mixed_types", True).value)
    count = 1 if mixed else ntypes
    for net in collection(fit["nets"], count, "one shared" if mixed else "one per type"):
        network(net, n_in, 1, why, "one energy per atom")
    default = fit.get("default_fparam")
    if default.value is not None:
        values = default.items()
        if len(values) != nfp:
            fail(default, f"has {len(values)} values; expected numb_fparam = {nfp}")
        for value in values:
            number(value, -math.inf, math.inf)
    type_list(fit.get("exclude_types", []), ntypes)
    _atom_ener(fit.get("atom_ener"))
    var = fit["@variables"]
    array(var["bias_atom_e"], (ntypes, 1), "one bias per type of model.type_map")
    for key, size in (
        ("fparam_avg", nfp),
        ("fparam_inv_std", nfp),
        ("aparam_avg", 0 if use_mask else nap),
        ("aparam_inv_std", 0 if use_mask else nap),
        ("case_embd", ncase),
    ):
        if size:
            array(var[key], (size,), f"{key.split('_')[0]} size {size}")


def _atom_ener(node: Node) -> None:
    """atom_ener: None or a list of per-type vacuum energies (numbers or None)."""
    for item in node.items() if node.value is not None else []:
        if item.value is not None:
            number(item, -math.inf, math.inf)


def check_model_level(root: Node, ntypes: int) -> None:
    """out_bias/out_std (1, ntypes, 1) and the model-level exclusions."""
    var = root["@variables"]
    why = f"(1, ntypes, 1) for the {ntypes} types of model.type_map"
    array(var["out_bias"], (1, ntypes, 1), why)
    optional_array(var.get("out_std"), (1, ntypes, 1), why)
    type_list(root.get("atom_exclude_types", []), ntypes)
    type_pairs(root.get("pair_exclude_types", []), ntypes)
