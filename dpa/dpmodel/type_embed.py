"""Type embedding table T ∈ R^{(N_t+1) × d_T} (spec §3): one row per type plus a zero padding row."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import ConfigError
from .array_api import dtype_of, like
from .econf_data import OCCUPATIONS
from .network import embedding_net, make_embedding_net

ECONF_DIM = 118
_SPIN_PAIRS = {"0": (-1, -1), "1": (-1, 1), "2": (1, 1)}


def econf_vectors(type_map: list[str]) -> np.ndarray:
    """(N_t, 118) electronic-configuration inputs, each ±1 entry scaled by 1/sqrt(118)."""
    rows = []
    for element in type_map:
        if element not in OCCUPATIONS:
            raise ConfigError(
                f"use_econf_tebd needs chemical elements in type_map; {element!r} is not one "
                "(use element symbols such as 'O', 'H', or set use_econf_tebd to false)"
            )
        rows.append([s for occ in OCCUPATIONS[element] for s in _SPIN_PAIRS[occ]])
    return np.asarray(rows, dtype=np.float64) / math.sqrt(ECONF_DIM)


@dataclass(frozen=True)
class TypeEmbeddingSettings:
    """What the table reads from a stored `TypeEmbedNet` besides its weights (defaults here)."""

    ntypes: int
    precision: str
    use_econf_tebd: bool
    type_map: tuple[str, ...]
    padding: bool

    @classmethod
    def from_tree(cls, tebd: dict) -> TypeEmbeddingSettings:
        return cls(
            ntypes=int(tebd["ntypes"]),
            precision=str(tebd.get("precision", "float64")),
            use_econf_tebd=bool(tebd.get("use_econf_tebd", False)),
            type_map=tuple(tebd.get("type_map") or ()),
            padding=bool(tebd.get("padding", True)),
        )


def type_embedding_table(cfg: TypeEmbeddingSettings, tebd: dict, xp: Any) -> Any:
    """The table T with the zero padding row appended when `padding` is set."""
    net = tebd["embedding"]
    dtype = dtype_of(xp, cfg.precision)
    weights = net["layers"][0]["@variables"]["w"]  # places the table on the weights' device
    if cfg.use_econf_tebd:
        inputs = like(weights, econf_vectors(list(cfg.type_map)), dtype=dtype)
    else:
        inputs = like(weights, np.eye(cfg.ntypes), dtype=dtype)
    table = embedding_net(net, inputs)
    if cfg.padding:
        table = xp.concat([table, xp.zeros_like(table[:1, :])], axis=0)
    return table


def make_type_embedding(
    rng: np.random.Generator,
    type_map: list[str],
    tebd_dim: int,
    *,
    use_econf_tebd: bool = False,
    use_tebd_bias: bool = False,
    precision: str = "float64",
) -> dict:
    """A serialized `TypeEmbedNet` as the DPA descriptors store it (linear, padded)."""
    in_dim = ECONF_DIM if use_econf_tebd else len(type_map)
    if use_econf_tebd:
        econf_vectors(type_map)  # validate the elements early
    net = make_embedding_net(
        rng,
        in_dim,
        [tebd_dim],
        activation_function="Linear",
        resnet_dt=False,
        bias=use_tebd_bias,
        precision=precision,
    )
    return {
        "@class": "TypeEmbedNet",
        "@version": 2,
        "ntypes": len(type_map),
        "neuron": [tebd_dim],
        "resnet_dt": False,
        "precision": precision,
        "activation_function": "Linear",
        "trainable": True,
        "padding": True,
        "use_econf_tebd": use_econf_tebd,
        "use_tebd_bias": use_tebd_bias,
        "type_map": list(type_map),
        "embedding": net,
    }
