"""DeepPot-SE `se_e2_a` (spec §4): per-type embedding of the radial env-mat, then T T_<ᵀ."""

from __future__ import annotations

import numpy as np

from ...array_api import Array, dtype_of, to_dtype, xp_of
from ...env_mat import environment_matrix, normalize
from ...network import embedding_net, make_embedding_net, network_collection
from ..common import (
    Edges,
    apply_per_center_type,
    contract_env,
    pair_keep_mask,
    stand_in_weights,
    symmetry_descriptor,
)
from ..protocol import NeighborSpec, trimmable_list_spec
from .settings import SeE2ASettings


def dim_out(desc: dict) -> int:
    """Width of the descriptor: neuron[-1] · axis_neuron."""
    return desc["neuron"][-1] * desc["axis_neuron"]


def forward(cfg: SeE2ASettings, desc: dict, edges: Edges) -> Array:
    """Descriptor (nf, nat, M1·M2) in the descriptor's precision from a per-type-split graph.

    Type blocks narrower than sel (cut by the host where `empty_slots_alike`, widths in
    `edges.type_block_widths`) end with a slot empty in every row, standing in for the cut ones.
    """
    xp = xp_of(edges.rij)
    dtype = dtype_of(xp, cfg.precision)
    rij = to_dtype(edges.rij, dtype)
    var = desc["@variables"]
    env, _ = environment_matrix(rij, edges.mask, cfg.rcut, cfg.rcut_smth, cfg.protection)
    sel = list(cfg.sel)
    widths = edges.type_block_widths(sel)
    width = sum(widths)  # davg/dstd are equal across slots whenever the blocks are cut
    env = normalize(env, var["davg"][:, :width, :], var["dstd"][:, :width, :], edges.atype)
    ntypes = cfg.ntypes
    if cfg.exclude_types:
        keep = pair_keep_mask(edges, cfg.exclude_types, ntypes)
        env = xp.where(keep[..., None], env, xp.zeros_like(env))
    nnei = sum(sel)
    networks = desc["embeddings"]["networks"]
    offsets = np.cumsum([0, *widths])
    weights = [
        stand_in_weights(w, n - w, env) if w < n else None for w, n in zip(widths, sel, strict=True)
    ]

    def contract(center_type: int | None, env_c: Array) -> Array:
        total = None
        for tau in range(ntypes):
            block = env_c[:, :, offsets[tau] : offsets[tau + 1], :]
            k = tau if center_type is None else center_type + ntypes * tau
            g = embedding_net(networks[k], block[..., :1])
            if weights[tau] is not None:  # the last slot counts for itself and the cut ones
                block = block * weights[tau]
            part = contract_env(g, block, nnei)
            total = part if total is None else total + part
        return symmetry_descriptor(total, cfg.axis_neuron)

    if cfg.type_one_side:
        return contract(None, env)
    return apply_per_center_type(env, edges.atype_host, ntypes, contract)


def build(config: dict, type_map: list[str], rng: np.random.Generator) -> dict:
    """A serialized se_e2_a descriptor with fresh weights (davg = 0, dstd = 1)."""
    ntypes = len(type_map)
    sel = list(config["sel"])
    precision = config["precision"]
    one_side = config["type_one_side"]
    nets = [
        make_embedding_net(
            rng,
            1,
            config["neuron"],
            activation_function=config["activation_function"],
            resnet_dt=config["resnet_dt"],
            precision=precision,
        )
        for _ in range(ntypes if one_side else ntypes * ntypes)
    ]
    dtype = np.float32 if precision == "float32" else np.float64
    return {
        "@class": "Descriptor",
        "type": "se_e2_a",
        "@version": 2,
        "rcut": config["rcut"],
        "rcut_smth": config["rcut_smth"],
        "sel": sel,
        "neuron": list(config["neuron"]),
        "axis_neuron": config["axis_neuron"],
        "resnet_dt": config["resnet_dt"],
        "set_davg_zero": config["set_davg_zero"],
        "activation_function": config["activation_function"],
        "precision": precision,
        "embeddings": network_collection(nets, 1 if one_side else 2, ntypes, "embedding_network"),
        "env_mat": {
            "rcut": config["rcut"],
            "rcut_smth": config["rcut_smth"],
            "protection": config["env_protection"],
            "use_exp_switch": False,
        },
        "exclude_types": [list(p) for p in config["exclude_types"]],
        "env_protection": config["env_protection"],
        "@variables": {
            "davg": np.zeros((ntypes, sum(sel), 4), dtype),
            "dstd": np.ones((ntypes, sum(sel), 4), dtype),
        },
        "type_map": list(type_map),
        "trainable": bool(config.get("trainable", True)),
        "type_one_side": one_side,
        "spin": None,
    }


def neighbor_spec(desc: dict) -> NeighborSpec:
    """Per-type blocks of widths sel, trimmed where the empty slots all look alike."""
    return trimmable_list_spec(desc, mixed_types=False)
