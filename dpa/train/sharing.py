"""Sharing parts of a model between the branches of a multi-task model, as DeePMD-kit's
PyTorch backend defines the levels: the shared part of a link becomes the base branch's own
objects, so the arrays are one (one leaf in training, stored once in files).

Descriptor level 0: everything but DPA-2's `tebd_transform` and DPA-3's charge/spin
embeddings (DeePMD-kit keeps those per branch); level 1: the type embedding only. Fitting
level 0: the networks and the fparam/aparam normalization; `bias_atom_e` and the case
embedding stay per branch, as the model's `out_bias`/`out_std` always do.
"""

from __future__ import annotations

import numpy as np

from ..errors import ConfigError
from ..model import Model
from .multitask_input import SharedPart

_DESCRIPTOR_OWN = ("tebd_transform", "chg_embedding", "spin_embedding", "mix_cs_mlp")
_FITTING_SHARED_VARIABLES = ("fparam_avg", "fparam_inv_std", "aparam_avg", "aparam_inv_std")


def _share_descriptor(base: dict, link: dict, level: int) -> dict:
    if level == 1:
        return {**link, "type_embedding": base["type_embedding"]}
    return {k: (link[k] if k in _DESCRIPTOR_OWN and k in link else v) for k, v in base.items()}


def _share_fitting(base: dict, link: dict) -> dict:
    own = link["@variables"]
    shared = {k: base["@variables"][k] for k in _FITTING_SHARED_VARIABLES if k in own}
    return {**base, "@variables": {**own, **shared}}


def share(models: dict[str, Model], shared: tuple[SharedPart, ...]) -> dict[str, Model]:
    """The branches with each link's shared part replaced by its base's objects."""
    trees = {name: dict(m.tree) for name, m in models.items()}
    for part in shared:
        (base, _), *links = part.links
        key = "descriptor" if part.part == "descriptor" else "fitting"
        for branch, level in links:
            if key == "descriptor":
                trees[branch][key] = _share_descriptor(trees[base][key], trees[branch][key], level)
            else:
                trees[branch][key] = _share_fitting(trees[base][key], trees[branch][key])
    return {name: Model({**m.data, "model": trees[name]}) for name, m in models.items()}


def pooled_branches(name: str, part: str, shared: tuple[SharedPart, ...]) -> list[str]:
    """The branches whose data a branch's `part` statistics pool: itself, and when it is the
    base of a level-0 link, every branch linked to it (DeePMD-kit's unweighted merge)."""
    found = [name]
    for sp in shared:
        (base, _), *links = sp.links
        if sp.part == part and base == name:
            found += [b for b, level in links if level == 0]
    return found


def with_case_embedding(models: dict[str, Model]) -> dict[str, Model]:
    """Each branch's one-hot case embedding, by the alphabetical rank of its name (DeePMD-kit's
    rule for a multi-task run from scratch); branches without one are unchanged."""
    ranks = {name: i for i, name in enumerate(sorted(models))}
    out = {}
    for name, m in models.items():
        fit = m.tree["fitting"]
        dim = int(fit.get("dim_case_embd") or 0)
        if dim == 0:
            out[name] = m
            continue
        if ranks[name] >= dim:
            raise ConfigError(
                f"fitting_net.dim_case_embd = {dim} is too small for {len(models)} branches: "
                f"set it to at least {len(models)}"
            )
        old = np.asarray(fit["@variables"]["case_embd"])
        onehot = np.eye(dim, dtype=old.dtype)[ranks[name]]
        fitting = {**fit, "@variables": {**fit["@variables"], "case_embd": onehot}}
        out[name] = Model({**m.data, "model": {**m.tree, "fitting": fitting}})
    return out
