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
from .dpmodel.check import MAX_SEL, MAX_WIDTH, check_model_tree
from .dpmodel.deepmd_init import draw_like_deepmd
from .dpmodel.descriptor.protocol import NeighborSpec
from .dpmodel.descriptor.registry import kind_of
from .dpmodel.model import is_mixed_types, neighbor_spec
from .errors import ConfigError, ModelFileError
from .modelfiles import write_data
from .tree import map_variables, variables

#: Precisions a model can be evaluated in (`Model.with_precision`, `load_model(precision=...)`).
PRECISIONS = ("float64", "float32")


class Model:
    """A model as data: `data["model"]` is the serialized tree, `data["model_def_script"]` the config."""

    def __init__(self, data: dict[str, Any]) -> None:
        model = data.get("model") if isinstance(data, dict) else None
        if not isinstance(model, dict) or model.get("@class") != "Model":
            raise ModelFileError(
                "not a dpa/DeePMD-kit model tree: expected a dict with a 'model' entry whose "
                "'@class' is 'Model'"
            )
        check_model_tree(model)  # shapes, dtypes, finiteness, bounds: fail here, not later
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

    def with_precision(self, precision: str) -> Model:
        """A copy of this model that computes in `precision` ("float64" or "float32").

        Inference only, no retraining: the descriptor's and fitting's variables are cast and
        every `precision` field under them (networks, type embedding, layers) is set, which is
        what the forward pass reads (each block's settings `precision`, each layer's
        arrays). Model-level `out_bias`/`out_std` stay float64 (the forward always reduces in
        float64), and so do inputs and outputs. float64 -> float32 rounds the weights (~1e-7
        relative); float32 -> float64 is exact on the weights and removes float32 round-off
        from the arithmetic. The model this is called on is not changed.
        """
        dtype = np.dtype(check_precision(precision))
        tree = dict(self.tree)
        for part in ("descriptor", "fitting"):
            tree[part] = _set_precision(
                map_variables(tree[part], lambda a: _cast_float(a, dtype)), precision
            )
        data = {**self.data, "model": tree}
        script = self.data.get("model_def_script")
        if isinstance(script, dict):  # keep the stored config consistent with the weights
            script = dict(script)
            for part in ("descriptor", "fitting_net"):
                if isinstance(script.get(part), dict):
                    script[part] = _set_precision(script[part], precision)
            data["model_def_script"] = script
        try:
            return Model(data)
        except ModelFileError as err:  # a weight beyond float32's range becomes inf
            raise ConfigError(f"this model cannot be evaluated in {precision}: {err}") from None

    def save(self, path: str | Path) -> None:
        """Write the model atomically; the format follows the suffix (.dp, .pth, .jax,
        .savedmodel)."""
        write_data(path, self.data)

    def __repr__(self) -> str:
        return (
            f"Model({self.descriptor_type}, type_map={self.type_map}, rcut={self.rcut}, "
            f"params={self.num_params})"
        )


def check_precision(precision: str) -> str:
    """`precision` if it is one of PRECISIONS, else a ConfigError naming the allowed values."""
    if precision not in PRECISIONS:
        raise ConfigError(
            f"unknown inference precision {precision!r}; allowed: {', '.join(PRECISIONS)}"
        )
    return precision


def _cast_float(array: Any, dtype: np.dtype) -> Any:
    """A floating-point array as `dtype`; other leaves (integer tables) unchanged."""
    a = np.asarray(array)
    if not np.issubdtype(a.dtype, np.floating):
        return array
    with np.errstate(over="ignore"):  # a value beyond float32 becomes inf: the load check names it
        return a.astype(dtype)


def _set_precision(node: Any, precision: str) -> Any:
    """A copy of a serialized subtree with every `precision` field set to `precision`."""
    if isinstance(node, dict):
        return {
            k: precision if k == "precision" else _set_precision(v, precision)
            for k, v in node.items()
        }
    if isinstance(node, list | tuple):
        return [_set_precision(v, precision) for v in node]
    return node


def build_model(config: dict[str, Any], seed: int = 0) -> Model:
    """A model with fresh random weights from a DeePMD-kit style `model` section."""
    cfg = parse_model_config(config)
    rng = np.random.default_rng(seed)
    type_map = cfg["type_map"]
    ntypes = len(type_map)
    desc_cfg = cfg["descriptor"]
    _check_sizes(desc_cfg, "model.descriptor")
    _check_sizes(cfg["fitting_net"], "model.fitting_net")
    kind = kind_of(desc_cfg)
    desc = kind.build(desc_cfg, type_map, rng)
    fit_cfg = {**cfg["fitting_net"], "exclude_types": cfg["atom_exclude_types"]}
    fit = fitting.build(fit_cfg, type_map, kind.dim_out(desc), is_mixed_types(desc), rng)
    # DeePMD-kit's own draws where its module tree is mapped: the same input, the same start
    draw_like_deepmd(
        {"descriptor": desc, "fitting": fit},
        _seed_or(desc_cfg.get("seed"), seed),
        _seed_or(cfg["fitting_net"].get("seed"), seed),
    )
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
    try:
        return Model(data)
    except ModelFileError as err:  # the config made it: say so, not "the file is corrupt"
        raise ConfigError(f"the model config gives an invalid model: {err}") from None


def _seed_or(section_seed: Any, seed: int) -> int:
    """A section's own `seed` (as DeePMD-kit uses it), else the run's seed."""
    return int(section_seed) if section_seed is not None else int(seed)


def _check_sizes(section: Any, where: str) -> None:
    """ConfigError for a neighbor count or layer width too large to allocate (before `build`
    allocates it): sel entries up to MAX_SEL in all, each width up to MAX_WIDTH."""
    if isinstance(section, dict):
        for key, value in section.items():
            _check_sizes(value, f"{where}.{key}")
        return
    leaf = where.rsplit(".", 1)[-1]
    values = section if isinstance(section, list) else [section]
    if leaf not in _SEL_KEYS + _WIDTH_KEYS or not all(
        isinstance(v, int) and not isinstance(v, bool) for v in values
    ):
        return
    total, limit = (
        (sum(values), MAX_SEL) if leaf in _SEL_KEYS else (max(values, default=0), MAX_WIDTH)
    )
    if total > limit:
        raise ConfigError(f"{where} = {section} is too large (at most {limit})")


_SEL_KEYS = ("sel", "nsel", "three_body_sel", "e_sel", "a_sel")
_WIDTH_KEYS = (
    "neuron", "three_body_neuron", "tebd_dim", "n_dim", "e_dim", "a_dim", "g1_dim", "g2_dim",
    "attn", "attn_layer", "attn1_hidden", "attn2_hidden", "attn1_nhead", "attn2_nhead",
    "axis_neuron", "nlayers", "numb_fparam", "numb_aparam", "dim_case_embd",
    "n_multi_edge_message",
)  # fmt: skip
