"""DPA-3 (spec §7): the repflow block on the line-graph series, with node, edge and angle features."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ....errors import ConfigError
from ...array_api import Array, dtype_of, safe_norm, to_dtype, xp_of
from ...env_mat import environment_matrix, exponential_switch, polynomial_switch
from ...network import activation, make_layer
from ...type_embed import make_type_embedding, type_embedding_table
from ..common import Edges, pair_keep_mask
from ..protocol import NeighborSpec
from .repflow import Activation, Graph, RankOne, angle_dense, layer_forward
from .settings import DPA3Settings, RepflowSettings

UNIT_EPS = 1e-6  # û = r / (|r| + 1e-6)
COS_SCALE = 1.0 - 1e-6  # cosines shrunk for acos stability in the reference


def dim_out(desc: dict) -> int:
    """Width: n_dim (twice that with concat_output_tebd)."""
    n_dim = desc["repflow_args"]["n_dim"]
    return 2 * n_dim if desc.get("concat_output_tebd", False) else n_dim


def _angle_width(cfg: RepflowSettings, edges: Edges) -> int:
    """A: the leading slots that can hold angle neighbors (a_sel, the width, the host hint)."""
    return min(cfg.a_sel, edges.slots_within(cfg.a_rcut))


def _edge_graph(
    cfg: DPA3Settings, desc: dict, edges: Edges, dtype: Any
) -> tuple[Graph, Array, Array, Array]:
    """The Graph, the edge-init input, the layer-0 angle input α and the (masked) distances."""
    xp = xp_of(edges.rij)
    flow = cfg.repflow
    rij = to_dtype(edges.rij, dtype)
    mask = edges.mask
    if cfg.exclude_types:
        mask = xp.logical_and(mask, pair_keep_mask(edges, cfg.exclude_types, cfg.ntypes))
    env, sw = environment_matrix(
        rij, mask, flow.e_rcut, flow.e_rcut_smth, cfg.protection, flow.use_exp_switch
    )
    var = desc["repflow_variable"]["@variables"]
    width = rij.shape[2]
    avg = xp.take(to_dtype(var["davg"][:, :width, :], dtype), edges.atype, axis=0)
    std = xp.take(to_dtype(var["dstd"][:, :width, :], dtype), edges.atype, axis=0)
    env = (env - avg) / std
    dist = safe_norm(xp.where(mask[..., None], rij, xp.ones_like(rij)))[..., 0]
    if flow.edge_init_use_dist:
        edge_in = xp.where(mask, dist, xp.zeros_like(dist))[..., None]
    else:
        edge_in = env[..., :1]
    e_norm, a_norm = flow.normalizers
    hs = env[..., 1:4] * (sw[..., None] * (1.0 / math.sqrt(e_norm)))

    nslot = _angle_width(flow, edges)
    dist_a = dist[:, :, :nslot]
    a_mask = xp.logical_and(mask[:, :, :nslot], dist_a < flow.a_rcut)
    switch = exponential_switch if flow.use_exp_switch else polynomial_switch
    a_sw = switch(dist_a, flow.a_rcut_smth, flow.a_rcut)
    a_sw = xp.where(a_mask, a_sw, xp.zeros_like(a_sw))
    unit = rij[:, :, :nslot, :] / (dist_a[..., None] + UNIT_EPS)
    unit = xp.where(a_mask[..., None], unit, xp.zeros_like(unit))
    alpha = (unit @ xp.matrix_transpose(unit)) * (COS_SCALE / math.sqrt(math.pi))
    nlist = xp.where(mask, edges.nlist, xp.zeros_like(edges.nlist))
    graph = Graph(nlist, sw, hs, a_sw, a_mask, e_norm, a_norm)
    return graph, edge_in, alpha, dist


def _start(cfg: DPA3Settings, desc: dict, edges: Edges) -> tuple[Graph, Activation, Array, tuple]:
    """The Graph, the activation, the type embedding of the atoms and the layer-0 state."""
    xp = xp_of(edges.rij)
    dtype = dtype_of(xp, cfg.precision)
    flow = desc["repflow_variable"]
    act = activation(cfg.activation_function)
    graph, edge_in, alpha, _ = _edge_graph(cfg, desc, edges, dtype)
    nf, nat = edges.rij.shape[0], edges.rij.shape[1]

    table = type_embedding_table(cfg.type_embedding, desc["type_embedding"], xp)
    tebd = xp.take(table, edges.atype, axis=0)
    tebd = xp.broadcast_to(tebd[None, ...], (nf, nat, tebd.shape[-1]))
    n = act(xp, tebd)
    edge_var = flow["edge_embd"]["@variables"]
    e = edge_in @ edge_var["w"] + edge_var["b"]
    if not cfg.repflow.edge_init_use_dist:
        e = act(xp, e)
    a = RankOne(alpha, flow["angle_embd"]["@variables"]["w"][0, :])
    return graph, act, tebd, (n, e, a)


def _layers(
    cfg: DPA3Settings,
    desc: dict,
    graph: Graph,
    act: Activation,
    state: tuple,
    start: int,
    stop: int,
) -> tuple[Array, Array, Array | RankOne]:
    """Repflow layers [start, stop) applied to the state (n, e, a)."""
    layers = desc["repflow_variable"]["repflow_layers"]
    n, e, a = state
    for index in range(start, stop):
        last = index == cfg.repflow.nlayers - 1
        n, e, a = layer_forward(cfg.repflow, layers[index], act, n, e, a, graph, last)
    return n, e, a


def _output(cfg: DPA3Settings, n: Array, tebd: Array) -> Array:
    xp = xp_of(n)
    return xp.concat([n, tebd], axis=-1) if cfg.concat_output_tebd else n


def forward(cfg: DPA3Settings, desc: dict, edges: Edges) -> Array:
    """Descriptor (nf, nat, dim_out) in the descriptor's precision from a distance-sorted graph."""
    graph, act, tebd, state = _start(cfg, desc, edges)
    n, _, _ = _layers(cfg, desc, graph, act, state, 0, cfg.repflow.nlayers)
    return _output(cfg, n, tebd)


def split_layer(cfg: DPA3Settings) -> int | None:
    """Where a checkpointed training step cuts the repflow stack (`forward_head`/`forward_tail`):
    after half of the layers; None for a single layer."""
    count = cfg.repflow.nlayers
    return count // 2 if count >= 2 else None


def forward_head(
    cfg: DPA3Settings, desc: dict, edges: Edges, stop: int
) -> tuple[Array, Array, Array]:
    """The state (n, e, a) after the embeddings and layers [0, stop), as arrays (a is still the
    factored layer-0 tensor when the layers do not update angles)."""
    graph, act, _, state = _start(cfg, desc, edges)
    n, e, a = _layers(cfg, desc, graph, act, state, 0, stop)
    return n, e, angle_dense(a)


def forward_tail(
    cfg: DPA3Settings, desc: dict, edges: Edges, state: tuple[Array, ...], start: int
) -> Array:
    """The descriptor from a `forward_head(cfg, desc, edges, start)` state: layers [start, …)
    and the output; forward_tail(forward_head(·, k), k) is `forward`."""
    graph, act, tebd, _ = _start(cfg, desc, edges)
    n, _, _ = _layers(cfg, desc, graph, act, state, start, cfg.repflow.nlayers)
    return _output(cfg, n, tebd)


# --------------------------------------------------------------------------- build


def _residuals(
    rng: np.random.Generator, count: int, dim: int, args: dict, dtype: Any, trainable: bool
) -> list[np.ndarray]:
    """`count` residual vectors: const (all = update_residual) or norm N(0, update_residual)."""
    scale = args["update_residual"]
    out = []
    for _ in range(count):
        if not trainable:
            vec = np.zeros(dim)
        elif args["update_residual_init"] == "norm":
            vec = rng.normal(0.0, scale, dim)
        elif args["update_residual_init"] == "const":
            vec = np.full(dim, scale)
        else:
            raise ConfigError(
                f"unknown update_residual_init {args['update_residual_init']!r}; "
                "use 'norm' or 'const'"
            )
        out.append(vec.astype(dtype))
    return out


def _repflow_layer(
    rng: np.random.Generator, args: dict, ntypes: int, act: str, precision: str, trainable: bool
) -> dict:
    """One serialized `RepFlowLayer` with fresh weights."""
    n_dim, e_dim, a_dim = args["n_dim"], args["e_dim"], args["a_dim"]
    heads = args["n_multi_edge_message"]
    dtype = np.float32 if precision == "float32" else np.float64

    def lin(n_in: int, n_out: int, bias: bool = True) -> dict:
        out = make_layer(
            rng, n_in, n_out, activation_function="none", bias=bias, precision=precision
        )
        out["trainable"] = trainable
        return out

    layer = {
        "@class": "RepFlowLayer",
        "@version": 2,
        **{k: args[k] for k in ("e_rcut", "e_rcut_smth")},
        "e_sel": [args["e_sel"]],
        **{k: args[k] for k in ("a_rcut", "a_rcut_smth", "a_sel")},
        "ntypes": ntypes,
        **{
            k: args[k]
            for k in (
                "n_dim",
                "e_dim",
                "a_dim",
                "a_compress_rate",
                "a_compress_e_rate",
                "a_compress_use_split",
                "n_multi_edge_message",
                "axis_neuron",
            )
        },
        "activation_function": act,
        **{
            k: args[k]
            for k in ("update_angle", "update_style", "update_residual", "update_residual_init")
        },
        "precision": precision,
        **{
            k: args[k]
            for k in (
                "optim_update",
                "smooth_edge_update",
                "use_dynamic_sel",
                "sel_reduce_factor",
                "sequential_update",
            )
        },
        "node_self_mlp": lin(n_dim, n_dim),
        "node_sym_linear": lin(args["axis_neuron"] * (n_dim + e_dim), n_dim),
        "node_edge_linear": lin(2 * n_dim + e_dim, heads * n_dim),
        "edge_self_linear": lin(2 * n_dim + e_dim, e_dim),
    }
    if args["update_angle"]:
        rate = args["a_compress_rate"]
        if rate == 0:
            angle_in = a_dim + n_dim + 2 * e_dim
        else:
            angle_in = a_dim + (1 + args["a_compress_e_rate"]) * (a_dim // rate)
        layer["edge_angle_linear1"] = lin(angle_in, e_dim)
        layer["edge_angle_linear2"] = lin(e_dim, e_dim)
        layer["angle_self_linear"] = lin(angle_in, a_dim)
        if rate != 0 and not args["a_compress_use_split"]:
            e_c = a_dim // (2 * rate) * args["a_compress_e_rate"]
            layer["a_compress_n_linear"] = lin(n_dim, a_dim // rate, bias=False)
            layer["a_compress_e_linear"] = lin(e_dim, e_c, bias=False)
    if args["update_style"] == "res_residual":
        n_edge = 2 if args["update_angle"] else 1
        layer["@variables"] = {
            "n_residual": _residuals(rng, 2 + heads, n_dim, args, dtype, trainable),
            "e_residual": _residuals(rng, n_edge, e_dim, args, dtype, trainable),
            "a_residual": _residuals(rng, n_edge - 1, a_dim, args, dtype, trainable),
        }
    return layer


_ARG_KEYS = (
    "n_dim",
    "e_dim",
    "a_dim",
    "nlayers",
    "e_rcut",
    "e_rcut_smth",
    "e_sel",
    "a_rcut",
    "a_rcut_smth",
    "a_sel",
    "a_compress_rate",
    "a_compress_e_rate",
    "a_compress_use_split",
    "n_multi_edge_message",
    "axis_neuron",
    "update_angle",
    "update_style",
    "update_residual",
    "update_residual_init",
    "fix_stat_std",
    "optim_update",
    "smooth_edge_update",
    "edge_init_use_dist",
    "use_exp_switch",
    "use_dynamic_sel",
    "sel_reduce_factor",
    "sequential_update",
)


def build(config: dict, type_map: list[str], rng: np.random.Generator) -> dict:
    """A serialized dpa3 descriptor with fresh weights, in DeePMD-kit's layout."""
    args = {k: config["repflow"][k] for k in _ARG_KEYS}  # checked by dpa.config
    ntypes = len(type_map)
    precision = config["precision"]
    trainable = config.get("trainable", True)
    act = config["activation_function"]
    dtype = np.float32 if precision == "float32" else np.float64
    tebd = make_type_embedding(
        rng,
        type_map,
        args["n_dim"],
        use_econf_tebd=config["use_econf_tebd"],
        use_tebd_bias=config["use_tebd_bias"],
        precision=precision,
    )
    tebd["trainable"] = trainable
    for layer in tebd["embedding"]["layers"]:
        layer["trainable"] = trainable

    def lin(n_in: int, n_out: int, bias: bool) -> dict:
        out = make_layer(
            rng, n_in, n_out, activation_function="none", bias=bias, precision=precision
        )
        out["trainable"] = trainable
        return out

    std = args["fix_stat_std"] if args["fix_stat_std"] != 0.0 else 1.0
    return {
        "@class": "Descriptor",
        "type": "dpa3",
        "@version": 2,
        "ntypes": ntypes,
        "repflow_args": args,
        "concat_output_tebd": config["concat_output_tebd"],
        "activation_function": act,
        "precision": precision,
        "exclude_types": [list(p) for p in config["exclude_types"]],
        "env_protection": config["env_protection"],
        "trainable": trainable,
        "use_econf_tebd": config["use_econf_tebd"],
        "use_tebd_bias": config["use_tebd_bias"],
        "use_loc_mapping": config["use_loc_mapping"],
        "add_chg_spin_ebd": False,
        "default_chg_spin": config.get("default_chg_spin"),
        "type_map": list(type_map),
        "type_embedding": tebd,
        "repflow_variable": {
            "edge_embd": lin(1, args["e_dim"], True),
            "angle_embd": lin(1, args["a_dim"], False),
            "repflow_layers": [
                _repflow_layer(rng, args, ntypes, act, precision, trainable)
                for _ in range(args["nlayers"])
            ],
            "env_mat": {
                "rcut": args["e_rcut"],
                "rcut_smth": args["e_rcut_smth"],
                "protection": 0.0,
                "use_exp_switch": False,
            },
            "@variables": {
                "davg": np.zeros((ntypes, args["e_sel"], 4), dtype),
                "dstd": np.full((ntypes, args["e_sel"], 4), std, dtype),
            },
        },
    }


def neighbor_spec(desc: dict) -> NeighborSpec:
    """The edge list, compacted after pair exclusion and trimmable; the angle radius as a
    counting hint."""
    flow = desc["repflow_args"]
    return NeighborSpec(
        float(flow["e_rcut"]),
        float(flow["e_rcut_smth"]),
        [int(flow["e_sel"])],
        True,
        compact=True,
        trimmable=True,
        count_radii=(float(flow["a_rcut"]),),
        message_passing=True,
    )
