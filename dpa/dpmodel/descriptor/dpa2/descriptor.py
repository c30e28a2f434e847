"""DPA-2 (spec §6): se_atten repinit (+ optional three-body block) feeding the repformer layers."""

from __future__ import annotations

import dataclasses

import numpy as np

from ....errors import ConfigError
from ...array_api import Array, dtype_of, safe_norm, to_dtype, xp_of
from ...env_mat import environment_matrix, normalize
from ...network import (
    dense,
    embedding_net,
    make_embedding_net,
    make_layer,
    network_collection,
)
from ...type_embed import make_type_embedding, type_embedding_table
from ..common import Edges, contract_env, pair_keep_mask, symmetry_descriptor
from ..dpa1.descriptor import embed_pairs
from ..protocol import NeighborSpec
from .repformer import build_block, repformer_forward
from .settings import DPA2Settings, ThreeBodySettings


def dim_out(desc: dict) -> int:
    """Width: g1_dim (+ tebd_dim when concat_output_tebd)."""
    return DPA2Settings.from_tree(desc).dim_out


def _repinit_width(args: dict) -> int:
    """Width of the repinit output [p (, q)]."""
    width = args["neuron"][-1] * args["axis_neuron"]
    return width + (args["three_body_neuron"][-1] if args.get("use_three_body", False) else 0)


def sub_edges(edges: Edges, rcut: float, nsel: int) -> Edges:
    """The first `nsel` slots of the sorted list, slots farther than `rcut` emptied (spec §6.1)."""
    xp = xp_of(edges.rij)
    rij, nlist = edges.rij, edges.nlist
    width = nlist.shape[2]
    if nsel <= width:
        rij, nlist = rij[:, :, :nsel, :], nlist[:, :, :nsel]
    else:
        nf, nat = nlist.shape[0], nlist.shape[1]
        pad = nsel - width
        nlist = xp.concat([nlist, xp.full((nf, nat, pad), -1, dtype=nlist.dtype)], axis=-1)
        rij = xp.concat([rij, xp.ones((nf, nat, pad, 3), dtype=rij.dtype)], axis=2)
    mask = nlist >= 0
    safe = xp.where(mask[..., None], rij, xp.ones_like(rij))
    dist = safe_norm(safe)[..., 0]
    keep = xp.logical_and(mask, dist <= rcut)
    nlist = xp.where(keep, nlist, xp.full_like(nlist, -1))
    return Edges(rij, nlist, edges.atype, edges.atype_host)


def _block_env(
    cfg: DPA2Settings, var: dict, edges: Edges, rcut: float, rcut_smth: float
) -> tuple[Array, Array, Array]:
    """Normalized env-mat with exclusion applied (R ← e R), mask m' = m e and switch s m'."""
    xp = xp_of(edges.rij)
    mask = edges.mask
    env, sw = environment_matrix(edges.rij, mask, rcut, rcut_smth, cfg.protection)
    env = normalize(env, var["@variables"]["davg"], var["@variables"]["dstd"], edges.atype)
    if cfg.exclude_types:
        keep = pair_keep_mask(edges, cfg.exclude_types, cfg.ntypes)
        env = xp.where(keep[..., None], env, xp.zeros_like(env))
        mask = xp.logical_and(mask, keep)
        sw = xp.where(mask, sw, xp.zeros_like(sw))
    return env, mask, sw


def _repinit(cfg: DPA2Settings, desc: dict, edges: Edges, tebd_table: Array) -> Array:
    """The se_atten block without attention (spec §6.3): flatten(T T_<ᵀ), (nf, nat, M1·M2)."""
    rep = cfg.repinit
    var = desc["repinit_variable"]
    sub = sub_edges(edges, rep.rcut, rep.nsel)
    env, _, sw = _block_env(cfg, var, sub, rep.rcut, rep.rcut_smth)
    pairs = cfg.repinit_pairs
    g = embed_pairs(pairs, var, sub.atype, env[..., :1], tebd_table, sub.neighbor_types(), sw)
    return symmetry_descriptor(contract_env(g, env, rep.nsel), rep.axis_neuron)


def _finish_layer(layer: dict, pre: Array) -> Array:
    """φ(pre) ⊙ idt of a layer without skip (the rest of `dense`)."""
    from ...network import activation

    y = activation(layer.get("activation_function"))(xp_of(pre), pre)
    idt = layer["@variables"].get("idt")
    return y if idt is None else y * idt


def _three_body(
    cfg: DPA2Settings, three: ThreeBodySettings, desc: dict, edges: Edges, tebd_table: Array
) -> Array:
    """The se_t_tebd block (spec §6.4): q_i = (1/N3²) Σ_jk E_jk G_jk, (nf, nat, n3)."""
    xp = xp_of(edges.rij)
    var = desc["repinit_three_body_variable"]
    nsel = three.nsel
    sub = sub_edges(edges, three.rcut, nsel)
    env, _, sw = _block_env(cfg, var, sub, three.rcut, three.rcut_smth)
    v = env[..., 1:4]
    e = v @ xp.matrix_transpose(v)  # (nf, nat, N3, N3)
    nf, nat = e.shape[0], e.shape[1]
    nbr_type = sub.neighbor_types()
    net = var["embeddings"]["networks"][0]
    if cfg.repinit.tebd_input_mode != "strip":
        # [E_jk, T_j, T_k] W = E w_0 + (T W_1)_j + (T W_2)_k: project the table, not the pairs
        layers = net["layers"]
        d = tebd_table.shape[-1]
        w = layers[0]["@variables"]["w"]
        first = layers[0]
        n_in, n_out = w.shape
        if first.get("resnet", False) and n_out in (n_in, 2 * n_in):
            t = xp.reshape(
                xp.take(tebd_table, xp.reshape(nbr_type, (-1,)), axis=0), (nf, nat, nsel, d)
            )
            tj = xp.broadcast_to(t[:, :, :, None, :], (nf, nat, nsel, nsel, d))
            tk = xp.broadcast_to(t[:, :, None, :, :], (nf, nat, nsel, nsel, d))
            g = embedding_net(net, xp.concat([e[..., None], tj, tk], axis=-1))
        else:
            pj = tebd_table @ w[1 : 1 + d, :]
            pk = tebd_table @ w[1 + d :, :]
            flat = xp.reshape(nbr_type, (-1,))
            pj = xp.reshape(xp.take(pj, flat, axis=0), (nf, nat, nsel, n_out))
            pk = xp.reshape(xp.take(pk, flat, axis=0), (nf, nat, nsel, n_out))
            pre = e[..., None] * w[0, :] + pj[:, :, :, None, :] + pk[:, :, None, :, :]
            b = first["@variables"].get("b")
            if b is not None:
                pre = pre + b
            g = _finish_layer(first, pre)
            for layer in layers[1:]:
                g = dense(layer, g)
    else:
        gs = embedding_net(net, e[..., None])
        n_rows = tebd_table.shape[0]
        # row a·(N_t+1) + b holds EN_t([T_a, T_b])
        pairs = xp.concat(
            [xp.repeat(tebd_table, n_rows, axis=0), xp.tile(tebd_table, (n_rows, 1))], axis=-1
        )
        table = embedding_net(var["embeddings_strip"]["networks"][0], pairs)
        idx = nbr_type[:, :, :, None] * n_rows + nbr_type[:, :, None, :]
        gt = xp.reshape(xp.take(table, xp.reshape(idx, (-1,)), axis=0), (nf, nat, nsel, nsel, -1))
        if cfg.smooth:
            gt = gt * (sw[:, :, :, None] * sw[:, :, None, :])[..., None]
        g = gs * gt + gs
    # an elementwise product and a sum: as a (1 x N3²)·(N3² x n3) product its backward would be
    # a slow rank-one batched matmul
    return xp.sum(g * e[..., None], axis=(2, 3)) * (1.0 / (nsel * nsel))


def forward_parts(
    cfg: DPA2Settings, desc: dict, edges: Edges
) -> tuple[Array, Array, Array, Array, Array]:
    """(descriptor, rotation matrix (nf, nat, d2, 3), g2, h2, switch) in the descriptor's precision."""
    xp = xp_of(edges.rij)
    dtype = dtype_of(xp, cfg.precision)
    edges = dataclasses.replace(edges, rij=to_dtype(edges.rij, dtype))
    tebd_table = type_embedding_table(cfg.type_embedding, desc["type_embedding"], xp)
    t_center = xp.take(tebd_table, edges.atype, axis=0)  # (nat, d_T)
    g1 = _repinit(cfg, desc, edges, tebd_table)
    if cfg.three_body is not None:
        g1 = xp.concat([g1, _three_body(cfg, cfg.three_body, desc, edges, tebd_table)], axis=-1)
    if cfg.g1_shape_transform:
        g1 = dense(desc["g1_shape_tranform"], g1)
    if cfg.add_tebd_to_repinit_out:
        g1 = g1 + dense(desc["tebd_transform"], t_center)[None, ...]
    rcut = cfg.repformer.rcut
    nsel = cfg.repformer.nsel
    if dtype == xp.float64:
        # slots the host hint proves empty within rcut in every row are not materialized (the
        # softmax counts them analytically). Not in float32: the forces of a repformer amplify
        # round-off ~100x, and any other summation order than DeePMD-kit's full width moves
        # them by ~1e-5 relative, as far as both are from the float64 result.
        nsel = min(nsel, edges.slots_within(rcut))
    sub = sub_edges(edges, rcut, nsel)
    keep = None
    if cfg.exclude_types:
        keep = pair_keep_mask(sub, cfg.exclude_types, cfg.ntypes)
    f, g2, h2, rot, sw = repformer_forward(
        cfg.repformer, desc["repformers_variable"], g1, sub, keep, cfg.smooth, cfg.protection
    )
    if cfg.concat_output_tebd:
        nf, nat = f.shape[0], f.shape[1]
        f = xp.concat(
            [f, xp.broadcast_to(t_center[None, ...], (nf, nat, t_center.shape[-1]))], axis=-1
        )
    return f, rot, g2, h2, sw


def forward(cfg: DPA2Settings, desc: dict, edges: Edges) -> Array:
    """Descriptor (nf, nat, dim_out) in the descriptor's precision from a distance-sorted graph."""
    return forward_parts(cfg, desc, edges)[0]


# --------------------------------------------------------------------------- builders


def _stats(ntypes: int, nsel: int, precision: str) -> dict:
    """davg = 0, dstd = 1 until statistics are computed."""
    dtype = np.float32 if precision == "float32" else np.float64
    return {"davg": np.zeros((ntypes, nsel, 4), dtype), "dstd": np.ones((ntypes, nsel, 4), dtype)}


def _env_mat(rcut: float, rcut_smth: float) -> dict:
    """The serialized EnvMat DeePMD-kit stores (protection is the descriptor's, stored as 0)."""
    return {"rcut": rcut, "rcut_smth": rcut_smth, "protection": 0.0, "use_exp_switch": False}


def _collection(net: dict, ntypes: int) -> dict:
    """A one-network `NetworkCollection` (mixed types)."""
    return network_collection([net], 0, ntypes, "embedding_network")


def _check(config: dict) -> None:
    """Reject option combinations DeePMD-kit rejects."""
    rep, frm = config["repinit"], config["repformer"]
    if rep["tebd_input_mode"] not in ("concat", "strip"):
        raise ConfigError(
            f"descriptor.repinit.tebd_input_mode must be 'concat' or 'strip', "
            f"got {rep['tebd_input_mode']!r}"
        )
    if frm["update_style"] not in ("res_avg", "res_incr", "res_residual"):
        raise ConfigError(
            "descriptor.repformer.update_style must be 'res_avg', 'res_incr' or 'res_residual', "
            f"got {frm['update_style']!r}"
        )
    if frm["nlayers"] < 1:
        raise ConfigError("descriptor.repformer.nlayers must be at least 1")
    in1 = (0 if frm["g1_out_mlp"] else 1) + int(
        frm["update_g1_has_conv"] and not frm["g1_out_conv"]
    )
    if in1 + int(frm["update_g1_has_grrg"]) + int(frm["update_g1_has_drrd"]) == 0:
        raise ConfigError(
            "descriptor.repformer: linear1 would have no input (g1_out_mlp true, no conv into "
            "it, no grrg/drrd); enable update_g1_has_grrg or update_g1_has_drrd"
        )
    if float(rep["rcut"]) < float(frm["rcut"]) or int(rep["nsel"]) < int(frm["nsel"]):
        raise ConfigError(
            "descriptor: repinit rcut/nsel must be at least the repformer rcut/nsel "
            f"(got repinit {rep['rcut']}/{rep['nsel']}, repformer {frm['rcut']}/{frm['nsel']})"
        )


def build(config: dict, type_map: list[str], rng: np.random.Generator) -> dict:
    """A serialized dpa2 descriptor with fresh weights, in DeePMD-kit's layout (version 3)."""
    _check(config)
    ntypes = len(type_map)
    precision = config["precision"]
    rep, frm = dict(config["repinit"]), dict(config["repformer"])
    smooth = config["smooth"]
    trainable = config.get("trainable", True)
    d_t = rep["tebd_dim"]
    strip = rep["tebd_input_mode"] == "strip"
    net_kw = {
        "activation_function": rep["activation_function"],
        "resnet_dt": rep["resnet_dt"],
        "precision": precision,
    }
    repinit_args = {
        "rcut": rep["rcut"],
        "rcut_smth": rep["rcut_smth"],
        "nsel": rep["nsel"],
        "neuron": list(rep["neuron"]),
        "axis_neuron": rep["axis_neuron"],
        "tebd_dim": d_t,
        "tebd_input_mode": rep["tebd_input_mode"],
        "set_davg_zero": rep["set_davg_zero"],
        "activation_function": rep["activation_function"],
        "resnet_dt": rep["resnet_dt"],
        "type_one_side": rep["type_one_side"],
        "use_three_body": rep["use_three_body"],
        "three_body_neuron": list(rep["three_body_neuron"]),
        "three_body_sel": rep["three_body_sel"],
        "three_body_rcut": rep["three_body_rcut"],
        "three_body_rcut_smth": rep["three_body_rcut_smth"],
    }
    repformer_keys = [
        "rcut", "rcut_smth", "nsel", "nlayers", "g1_dim", "g2_dim", "axis_neuron", "direct_dist",
        "update_g1_has_conv", "update_g1_has_drrd", "update_g1_has_grrg", "update_g1_has_attn",
        "update_g2_has_g1g1", "update_g2_has_attn", "update_h2", "attn1_hidden", "attn1_nhead",
        "attn2_hidden", "attn2_nhead", "attn2_has_gate", "activation_function", "update_style",
        "update_residual", "update_residual_init", "set_davg_zero", "trainable_ln",
        "use_sqrt_nnei", "g1_out_conv", "g1_out_mlp", "ln_eps",
    ]  # fmt: skip
    repformer_args = {k: frm[k] for k in repformer_keys}
    if repformer_args["ln_eps"] is None:
        repformer_args["ln_eps"] = 1e-5
    g1_dim = frm["g1_dim"]
    desc = {
        "@class": "Descriptor",
        "type": "dpa2",
        "@version": 3,
        "ntypes": ntypes,
        "repinit_args": repinit_args,
        "repformer_args": repformer_args,
        "concat_output_tebd": config["concat_output_tebd"],
        "precision": precision,
        "smooth": smooth,
        "exclude_types": [list(p) for p in config["exclude_types"]],
        "env_protection": config["env_protection"],
        "trainable": trainable,
        "add_tebd_to_repinit_out": config["add_tebd_to_repinit_out"],
        "use_econf_tebd": config["use_econf_tebd"],
        "use_tebd_bias": config["use_tebd_bias"],
        "type_map": list(type_map),
        "type_embedding": make_type_embedding(
            rng,
            type_map,
            d_t,
            use_econf_tebd=config["use_econf_tebd"],
            use_tebd_bias=config["use_tebd_bias"],
            precision=precision,
        ),
    }
    width = _repinit_width(repinit_args)
    plain = {"activation_function": "none", "resnet": False, "bias": False, "precision": precision}
    if width == g1_dim:
        desc["g1_shape_tranform"] = {"@class": "Identity", "@version": 1}
    else:
        desc["g1_shape_tranform"] = make_layer(rng, width, g1_dim, **plain)
    if config["add_tebd_to_repinit_out"]:
        desc["tebd_transform"] = make_layer(rng, d_t, g1_dim, **plain)
    type_in = d_t if rep["type_one_side"] else 2 * d_t
    repinit_variable = {
        "embeddings": _collection(
            make_embedding_net(rng, 1 if strip else 1 + type_in, rep["neuron"], **net_kw), ntypes
        ),
        "env_mat": _env_mat(rep["rcut"], rep["rcut_smth"]),
        "@variables": _stats(ntypes, rep["nsel"], precision),
    }
    if strip:
        repinit_variable["embeddings_strip"] = _collection(
            make_embedding_net(rng, type_in, rep["neuron"], **net_kw), ntypes
        )
    desc["repinit_variable"] = repinit_variable
    desc["repformers_variable"] = build_block(
        rng, repformer_args, ntypes, smooth, precision, trainable
    )
    if rep["use_three_body"]:
        tb_neuron = rep["three_body_neuron"]
        three = {
            "embeddings": _collection(
                make_embedding_net(rng, 1 if strip else 1 + 2 * d_t, tb_neuron, **net_kw), ntypes
            ),
            "env_mat": _env_mat(rep["three_body_rcut"], rep["three_body_rcut_smth"]),
            "@variables": _stats(ntypes, rep["three_body_sel"], precision),
        }
        if strip:
            three["embeddings_strip"] = _collection(
                make_embedding_net(rng, 2 * d_t, tb_neuron, **net_kw), ntypes
            )
        desc["repinit_three_body_variable"] = three
    return desc


def neighbor_spec(desc: dict) -> NeighborSpec:
    """The repinit's list (the widest), compacted after pair exclusion; the repformer's radius
    as a counting hint."""
    rep = desc["repinit_args"]
    return NeighborSpec(
        float(rep["rcut"]),
        float(rep["rcut_smth"]),
        [int(rep["nsel"])],
        True,
        compact=True,
        count_radii=(float(desc["repformer_args"]["rcut"]),),
        message_passing=True,
    )
