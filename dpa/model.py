"""`Model`: a serialized model tree (the `.dp` schema of DeePMD-kit v3) with its metadata, and
`build_model`, which creates one with fresh weights from a DeePMD-kit style `model` config."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import numpy as np

from ._version import __version__
from .config import parse_model_config
from .dpmodel import fitting
from .dpmodel.model import NeighborSpec, descriptor_module, is_mixed_types, neighbor_spec
from .errors import ModelFileError
from .tree import variables


class Model:
    """A model as data: `data["model"]` is the serialized tree, `data["model_def_script"]` the config."""

    def __init__(self, data: dict[str, Any]) -> None:
        model = data.get("model") if isinstance(data, dict) else None
        if not isinstance(model, dict) or model.get("@class") != "Model":
            raise ModelFileError(
                "not a dpa/DeePMD-kit model tree: expected a dict with a 'model' entry whose "
                "'@class' is 'Model'"
            )
        missing = [k for k in ("type_map", "descriptor", "fitting", "@variables") if k not in model]
        if missing:
            raise ModelFileError(f"the model tree lacks {missing}; the file is incomplete")
        if model.get("type", "standard") != "standard":
            raise ModelFileError(
                f"model type {model.get('type')!r} is not supported (only standard energy models)"
            )
        if model.get("fitting", {}).get("type", "ener") != "ener":
            raise ModelFileError(
                f"fitting type {model['fitting'].get('type')!r} is not supported (only 'ener')"
            )
        descriptor_module(model["descriptor"])  # raises on unknown descriptor types
        _check_variables(model)
        self.data = data

    @property
    def tree(self) -> dict[str, Any]:
        """The serialized model tree (`data["model"]`)."""
        return self.data["model"]

    @property
    def type_map(self) -> list[str]:
        return list(self.tree["type_map"])

    @property
    def descriptor_type(self) -> str:
        return self.tree["descriptor"]["type"]

    @property
    def neighbor_spec(self) -> NeighborSpec:
        """The model-level neighbor list (cutoff, width, ordering) the descriptor consumes."""
        return neighbor_spec(self.tree["descriptor"])

    @property
    def rcut(self) -> float:
        return self.neighbor_spec.rcut

    @property
    def rcut_smth(self) -> float:
        return self.neighbor_spec.rcut_smth

    @property
    def sel(self) -> list[int]:
        return list(self.neighbor_spec.sel)

    @property
    def mixed_types(self) -> bool:
        return self.neighbor_spec.mixed_types

    @property
    def precision(self) -> str:
        return str(self.tree["descriptor"].get("precision", "float64"))

    @property
    def num_params(self) -> int:
        """Number of stored parameters (statistics such as davg/dstd included)."""
        return int(sum(np.asarray(v).size for v in variables(self.tree)))

    def save(self, path: str | Path) -> None:
        """Write the model; the format follows the suffix (.dp, .pth, .jax)."""
        from .io import save

        save(self, path)

    def __repr__(self) -> str:
        return (
            f"Model({self.descriptor_type}, type_map={self.type_map}, rcut={self.rcut}, "
            f"params={self.num_params})"
        )


def _check_variables(model: dict) -> None:
    """The arrays every evaluation needs are present (a truncated file fails here, not later)."""
    stats = {
        "dpa2": ["repinit_variable", "repformers_variable"],
        "dpa3": ["repflow_variable"],
    }.get(model["descriptor"].get("type"), [""])
    needed = {
        "@variables": ["out_bias"],
        **{
            f"descriptor.{block}.@variables".replace("..", "."): ["davg", "dstd"] for block in stats
        },
        "fitting.@variables": ["bias_atom_e"],
    }
    for where, names in needed.items():
        node = model
        for key in where.split("."):
            node = node.get(key) or {}
        absent = [n for n in names if node.get(n) is None]
        if absent:
            raise ModelFileError(f"the model tree lacks {where}.{absent}; the file is incomplete")


def build_model(config: dict[str, Any], seed: int = 0) -> Model:
    """A model with fresh random weights from a DeePMD-kit style `model` section."""
    cfg = parse_model_config(config)
    rng = np.random.default_rng(seed)
    type_map = cfg["type_map"]
    ntypes = len(type_map)
    desc_cfg = cfg["descriptor"]
    module = descriptor_module(desc_cfg)
    desc = module.build(desc_cfg, type_map, rng)
    fit_cfg = {**cfg["fitting_net"], "exclude_types": cfg["atom_exclude_types"]}
    fit = fitting.build(fit_cfg, type_map, module.dim_out(desc), is_mixed_types(desc), rng)
    tree = {
        "type_map": list(type_map),
        "atom_exclude_types": list(cfg["atom_exclude_types"]),
        "pair_exclude_types": [list(p) for p in cfg["pair_exclude_types"]],
        "rcond": cfg["fitting_net"]["rcond"],
        "preset_out_bias": cfg["preset_out_bias"],
        "@variables": {
            "out_bias": np.zeros((1, ntypes, 1)),
            "out_std": np.ones((1, ntypes, 1)),
        },
        "@class": "Model",
        "@version": 2,
        "type": "standard",
        "descriptor": desc,
        "fitting": fit,
    }
    data = {
        "backend": "dpa",
        "software": "dpa",
        "version": __version__,
        "model": tree,
        "model_def_script": copy.deepcopy(config),
        "@variables": {},
    }
    return Model(data)
