"""DPA-1 / `se_atten` / `se_atten_v2` (spec §5): type-aware pair embedding + gated self-attention."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from array_api_compat import device

from ....errors import ConfigError
from ...array_api import (
    Array,
    dtype_of,
    like,
    neighbor_groups,
    row_blocks,
    safe_norm,
    stop_gradient,
    to_dtype,
    wants_neighbor_groups,
    xp_of,
)
from ...env_mat import environment_matrix, normalize
from ...network import (
    dense,
    embedding_net,
    layer_norm,
    make_embedding_net,
    make_layer,
    make_layer_norm,
    network_collection,
)
from ...type_embed import make_type_embedding, type_embedding_table
from ..common import (
    ATTN_LOGIT_SHIFT,
    MASKED_LOGIT,
    Edges,
    contract_env,
    empty_slots_alike,
    pair_keep_mask,
    stand_in_weights,
    symmetry_descriptor,
)
from ..protocol import NeighborSpec, trimmable_list_spec
from .settings import AttentionLayerSettings, DPA1Settings, PairEmbeddingSettings


def dim_out(desc: dict) -> int:
    """Width: neuron[-1]·axis_neuron (+ tebd_dim when concat_output_tebd)."""
    width = desc["neuron"][-1] * desc["axis_neuron"]
    return width + (desc["tebd_dim"] if DPA1Settings.from_tree(desc).concat_output_tebd else 0)


def embed_pairs(
    cfg: PairEmbeddingSettings,
    nets: dict,
    center_type: Array,
    rho: Array,
    tebd_table: Array,
    nbr_type: Array,
    sw: Array,
) -> Array:
    """G_ij (nf, nat, nnei, M1) from the radial input and the type embeddings (concat or strip);
    center_type (nat,) holds the types of the rows; `nets` holds `embeddings` (and in strip
    mode `embeddings_strip`)."""
    xp = xp_of(rho)
    one_side = cfg.one_side
    nf, nat, nnei = nbr_type.shape
    t_nbr = xp.reshape(
        xp.take(tebd_table, xp.reshape(nbr_type, (-1,)), axis=0), (nf, nat, nnei, -1)
    )
    if not cfg.strip:
        parts = [rho, t_nbr]
        if not one_side:
            t_center = xp.take(tebd_table, center_type, axis=0)[None, :, None, :]
            parts.append(xp.broadcast_to(t_center, t_nbr.shape))
        return embedding_net(nets["embeddings"]["networks"][0], xp.concat(parts, axis=-1))
    g_radial = embedding_net(nets["embeddings"]["networks"][0], rho)
    strip_net = nets["embeddings_strip"]["networks"][0]
    n_rows = tebd_table.shape[0]
    if one_side:
        pair_table = embedding_net(strip_net, tebd_table)
        idx = nbr_type
    else:
        # row c·(N_t+1) + τ holds EN_t([T_τ, T_c])
        t_nbr_all = xp.tile(tebd_table, (n_rows, 1))
        t_center_all = xp.repeat(tebd_table, n_rows, axis=0)
        pair_table = embedding_net(strip_net, xp.concat([t_nbr_all, t_center_all], axis=-1))
        idx = center_type[None, :, None] * n_rows + nbr_type
    g_type = xp.reshape(xp.take(pair_table, xp.reshape(idx, (-1,)), axis=0), (nf, nat, nnei, -1))
    if cfg.smooth:
        g_type = g_type * sw[..., None]
    return g_radial * g_type + g_radial


def _projection(layer: dict, x: Array, start: int, stop: int) -> Array:
    """Columns [start, stop) of a linear layer: three small products instead of one product and
    three slices (slicing the output costs full-size zero-filled buffers in the backward pass)."""
    var = layer["@variables"]
    y = x @ var["w"][:, start:stop]
    return y if var.get("b") is None else y + var["b"][start:stop]


# logit scales up to this skip the softmax's shift: exp(|λ| + 20) is far from overflow
BOUNDED_SCALE = 50.0


def _scaled_rows(t: Array, normalized: bool, scale: float, s: Array | None) -> Array:
    """q, k or v times the logit scale, 1/|row| (if normalized) and the switch s (if smooth),
    all folded into one (..., 1) factor: one full-size product, not three."""
    xp = xp_of(t)
    factor = scale / xp.linalg.vector_norm(t, axis=-1, keepdims=True) if normalized else scale
    if s is not None:
        factor = factor * s
    return t if isinstance(factor, float) and factor == 1.0 else t * factor


def _attention_layer(
    cfg: AttentionLayerSettings,
    layer: dict,
    x: Array,
    mask: Array,
    sw: Array,
    cosines: Array,
    dropped: int = 0,
) -> Array:
    """One gated self-attention layer over the neighbor rows, post-norm: LN(X + O).

    Spec §5.3 computes A = softmax(L) on the N×N logits, then masks and gates it. Here the same
    numbers come with fewer N×N passes (the hot spot of DPA-1): the smooth shift and the key mask
    ride along in the Q·Kᵀ product as an extra column (a constant shift of a softmax row cancels),
    and the row factors (1/Σ, query mask, s_j) and column factors (s_k) are applied to the
    N×d operands instead of the N×N matrix. `dropped` cut empty keys still count in the smooth
    softmax's denominator (their logit is the empty-slot one, 0 here, which the kept last slot
    already brings into the row max); the non-smooth softmax masks them out anyway.
    """
    xp = xp_of(x)
    attn = layer["attention_layer"]
    d = cfg.hidden_dim
    q, k, v = (_projection(attn["in_proj"], x, i * d, (i + 1) * d) for i in range(3))
    scale = cfg.scale
    normalized = cfg.normalize
    smooth = cfg.smooth
    s = sw[..., None] if smooth else None
    q = _scaled_rows(q, normalized, scale, s)
    k, v = (_scaled_rows(t, normalized, 1.0, s) for t in (k, v))
    if s is not None:  # smooth
        # (λ q·k + 20) s_j s_k  ==  [λ q s, 20 s]_j · [k s, s]_k
        q_aug = xp.concat([q, ATTN_LOGIT_SHIFT * s], axis=-1)
        k_aug = xp.concat([k, s], axis=-1)
        row_gate = s
    else:
        # a huge negative key bias removes empty keys from the softmax
        m = xp.astype(mask, x.dtype)[..., None]
        q_aug = xp.concat([q, xp.ones_like(m)], axis=-1)
        k_aug = xp.concat([k, (1.0 - m) * MASKED_LOGIT], axis=-1)
        row_gate = m
    logits = q_aug @ xp.matrix_transpose(k_aug)
    if x.dtype == xp.float64 and normalized and abs(scale) <= BOUNDED_SCALE:
        # unit q and k bound the logits (|λ| + 20 at most): exp needs no shift, and the N×N
        # row max is skipped (float32 keeps DeePMD-kit's operation order). A row whose keys
        # are all empty (an atom without neighbors, whose rows are all gated off) sums to 0.
        e = xp.exp(logits)
        denom = xp.sum(e, axis=-1, keepdims=True)
        if smooth and dropped:
            denom = denom + dropped
        denom = xp.where(denom > 0.0, denom, xp.ones_like(denom))
    else:
        top = xp.max(logits, axis=-1, keepdims=True)
        if x.dtype == xp.float64:  # the shift cancels: no gradient through the max
            top = stop_gradient(top)
        e = xp.exp(logits - top)
        denom = xp.sum(e, axis=-1, keepdims=True)
        if smooth and dropped:
            denom = denom + dropped * xp.exp(-top)
    if cfg.dotr:
        e = e * cosines
    out = dense(attn["out_proj"], (e @ v) * (row_gate / denom))
    return layer_norm(layer["attn_layer_norm"], x + out)


def forward(cfg: DPA1Settings, desc: dict, edges: Edges) -> Array:
    """Descriptor (nf, nat, dim_out) in the descriptor's precision from a distance-sorted graph.

    A list narrower than sel (cut by the host where `empty_slots_alike`) must end with a slot that is
    empty in every row: all empty slots of a row give the same G and R rows, so that last one
    stands in for the cut ones in the sum over neighbors (and smooth softmax denominators).
    Where the backend asks for it (`neighbor_groups`), rows of similar neighbor counts are
    computed together, each group cut to its own width the same way.
    """
    xp = xp_of(edges.rij)
    dtype = dtype_of(xp, cfg.precision)
    rij = to_dtype(edges.rij, dtype)
    var = desc["@variables"]
    mask = edges.mask
    width = edges.nlist.shape[-1]
    env, sw = environment_matrix(rij, mask, cfg.rcut, cfg.rcut_smth, cfg.protection)
    env = normalize(env, var["davg"][:, :width, :], var["dstd"][:, :width, :], edges.atype)
    if cfg.exclude_types:
        keep = pair_keep_mask(edges, cfg.exclude_types, cfg.ntypes)
        env = xp.where(keep[..., None], env, xp.zeros_like(env))
        mask = xp.logical_and(mask, keep)
        sw = xp.where(mask, sw, xp.zeros_like(sw))
    tebd_table = type_embedding_table(cfg.type_embedding, desc["type_embedding"], xp)
    rows = _Rows(env, sw, mask, edges.neighbor_types(), edges.atype)
    groups = None  # rows keep the full width where empty slots differ (empty_slots_alike)
    if wants_neighbor_groups(edges.mask) and empty_slots_alike(desc):
        groups = neighbor_groups(_extents(edges.mask), width)
    if groups is None:
        out = _descriptor_rows(cfg, desc, rows, tebd_table)
    else:
        out = _grouped(cfg, desc, rows, tebd_table, groups)
    if cfg.concat_output_tebd:
        nf, nat = out.shape[0], out.shape[1]
        t_center = xp.take(tebd_table, edges.atype, axis=0)[None, ...]
        out = xp.concat([out, xp.broadcast_to(t_center, (nf, nat, t_center.shape[-1]))], axis=-1)
    return out


def _extents(mask: Array) -> Array:
    """(nf, nat) one past the last real slot of each row (the list's holes included)."""
    xp = xp_of(mask)
    slots = xp.arange(1, mask.shape[-1] + 1, dtype=xp.int64, device=device(mask))
    return xp.max(xp.where(mask, slots, xp.zeros_like(slots)), axis=-1)


@dataclass(frozen=True)
class _Rows:
    """What the descriptor needs of each center atom's neighbor slots: the normalized env-mat
    (nf, nat, nnei, 4), switch and mask (nf, nat, nnei), neighbor types (nf, nat, nnei) and
    center types (nat,)."""

    env: Array
    sw: Array
    mask: Array
    nbr_type: Array
    center_type: Array

    def take(self, index: np.ndarray, width: int) -> _Rows:
        """Rows `index` of all frames' rows (frames flattened into one), first `width` slots."""
        xp = xp_of(self.env)
        nf, nat, nnei = self.mask.shape
        idx = like(self.mask, index)

        def pick(x: Array) -> Array:
            flat = xp.reshape(x, (1, nf * nat, nnei, *x.shape[3:]))
            return xp.take(flat[:, :, :width, ...], idx, axis=1)

        centers = xp.reshape(xp.broadcast_to(self.center_type[None, :], (nf, nat)), (-1,))
        return _Rows(
            pick(self.env),
            pick(self.sw),
            pick(self.mask),
            pick(self.nbr_type),
            xp.take(centers, idx, axis=0),
        )


def _grouped(cfg: DPA1Settings, desc: dict, rows: _Rows, tebd_table: Array, groups: list) -> Array:
    """`_descriptor_rows` per group of rows (each at its own width), back in row order."""
    xp = xp_of(rows.env)
    nf, nat = rows.mask.shape[0], rows.mask.shape[1]
    parts = [_descriptor_rows(cfg, desc, rows.take(index, w), tebd_table) for index, w in groups]
    merged = xp.concat(parts, axis=1)
    inverse = np.argsort(np.concatenate([index for index, _ in groups]), kind="stable")
    out = xp.take(merged, like(merged, inverse), axis=1)
    return xp.reshape(out, (nf, nat, out.shape[-1]))


def _descriptor_rows(cfg: DPA1Settings, desc: dict, rows: _Rows, tebd_table: Array) -> Array:
    """Pair embedding, attention and symmetry contraction: (nf, nat, M1 x axis_neuron) for rows
    whose lists are `rows.mask.shape[-1]` slots wide (the last one empty where cut)."""
    xp = xp_of(rows.env)
    nsel = cfg.nsel
    width = rows.mask.shape[-1]
    dropped = nsel - width
    env, mask, sw = rows.env, rows.mask, rows.sw
    g = embed_pairs(cfg.pair, desc, rows.center_type, env[..., :1], tebd_table, rows.nbr_type, sw)
    layers = desc["attention_layers"]["attention_layers"]
    if cfg.attention:
        # r̂_j · r̂_k of the normalized env-mat directions, shared by every layer
        rhat = env[..., 1:4] / safe_norm(env[..., 1:4], floor=1e-12)
        cosines = rhat @ xp.matrix_transpose(rhat)
        # the attention of an atom's neighbors only involves that atom's rows: cut the atoms
        # into blocks whose N x N intermediates fit the cache where the backend asks for it
        nnei, itemsize = g.shape[2], 8 if g.dtype == xp.float64 else 4
        blocks = row_blocks(g, g.shape[1], nnei * nnei * itemsize)
        parts = []
        for block in blocks:
            if len(blocks) > 1:
                gb, mb, sb, cb = (t[:, block, ...] for t in (g, mask, sw, cosines))
            else:
                gb, mb, sb, cb = g, mask, sw, cosines
            for layer_cfg, layer in zip(cfg.attention, layers, strict=True):
                gb = _attention_layer(layer_cfg, layer, gb, mb, sb, cb, dropped)
            parts.append(gb)
        g = parts[0] if len(parts) == 1 else xp.concat(parts, axis=1)
    if dropped:  # the last (empty) slot counts once for itself and once per cut slot
        env = env * stand_in_weights(width, dropped, env)
    return symmetry_descriptor(contract_env(g, env, nsel), cfg.axis_neuron)


def _attention_block(
    rng: np.random.Generator, config: dict, nnei: int, embed_dim: int, precision: str
) -> dict:
    """The serialized `NeighborGatedAttention` stack with `attn_layer` layers."""
    hidden = config["attn"]
    common = {
        "nnei": nnei,
        "embed_dim": embed_dim,
        "hidden_dim": hidden,
        "dotr": config["attn_dotr"],
        "do_mask": config["attn_mask"],
        "scaling_factor": config["scaling_factor"],
        "normalize": config["normalize"],
        "temperature": config["temperature"],
    }
    norm_common = {"trainable_ln": config["trainable_ln"], "ln_eps": config["ln_eps"]}
    layers = []
    for _ in range(config["attn_layer"]):
        proj: dict[str, Any] = {
            "activation_function": "none",
            "resnet": False,
            "precision": precision,
        }
        layers.append(
            {
                **common,
                **norm_common,
                "precision": precision,
                "attention_layer": {
                    **common,
                    "num_heads": 1,
                    "bias": True,
                    "smooth": config["smooth_type_embedding"],
                    "precision": precision,
                    "in_proj": make_layer(rng, embed_dim, 3 * hidden, **proj),
                    "out_proj": make_layer(rng, hidden, embed_dim, **proj),
                },
                "attn_layer_norm": make_layer_norm(embed_dim, config["ln_eps"], precision),
            }
        )
    return {
        "@class": "NeighborGatedAttention",
        "@version": 1,
        "layer_num": config["attn_layer"],
        **common,
        **norm_common,
        "precision": precision,
        "attention_layers": layers,
    }


def build(config: dict, type_map: list[str], rng: np.random.Generator) -> dict:
    """A serialized dpa1 / se_atten / se_atten_v2 descriptor with fresh weights."""
    if config.get("lmax", 1) != 1:
        raise ConfigError("descriptor.lmax > 1 (angular moments) is not supported yet; remove it")
    if config["attn_mask"]:
        raise ConfigError("descriptor.attn_mask = true is not supported (as in DeePMD-kit)")
    ntypes = len(type_map)
    precision = config["precision"]
    tebd_dim = config["tebd_dim"]
    one_side = config["type_one_side"]
    strip = config["tebd_input_mode"] == "strip"
    nnei = int(sum(config["sel"]))
    neuron = config["neuron"]
    net_kw = {
        "activation_function": config["activation_function"],
        "resnet_dt": config["resnet_dt"],
        "precision": precision,
    }
    type_in = tebd_dim if one_side else 2 * tebd_dim
    radial_in = 1 if strip else 1 + type_in
    desc = {
        "@class": "Descriptor",
        "type": "se_atten_v2" if config["type"] == "se_atten_v2" else "dpa1",
        "@version": 2,
        "rcut": config["rcut"],
        "rcut_smth": config["rcut_smth"],
        "sel": [nnei],
        "ntypes": ntypes,
        "neuron": list(neuron),
        "axis_neuron": config["axis_neuron"],
        "tebd_dim": tebd_dim,
        "tebd_input_mode": config["tebd_input_mode"],
        "set_davg_zero": config["set_davg_zero"],
        "attn": config["attn"],
        "attn_layer": config["attn_layer"],
        "attn_dotr": config["attn_dotr"],
        "attn_mask": config["attn_mask"],
        "activation_function": config["activation_function"],
        "resnet_dt": config["resnet_dt"],
        "scaling_factor": config["scaling_factor"],
        "normalize": config["normalize"],
        "temperature": config["temperature"],
        "trainable_ln": config["trainable_ln"],
        "ln_eps": config["ln_eps"],
        "smooth_type_embedding": config["smooth_type_embedding"],
        "type_one_side": one_side,
        "concat_output_tebd": config["concat_output_tebd"],
        "use_econf_tebd": config["use_econf_tebd"],
        "use_tebd_bias": config["use_tebd_bias"],
        "type_map": list(type_map),
        "precision": precision,
        "embeddings": network_collection(
            [make_embedding_net(rng, radial_in, neuron, **net_kw)], 0, ntypes, "embedding_network"
        ),
        "attention_layers": _attention_block(rng, config, nnei, neuron[-1], precision),
        "env_mat": {
            "rcut": config["rcut"],
            "rcut_smth": config["rcut_smth"],
            "protection": config["env_protection"],
            "use_exp_switch": False,
        },
        "type_embedding": make_type_embedding(
            rng,
            type_map,
            tebd_dim,
            use_econf_tebd=config["use_econf_tebd"],
            use_tebd_bias=config["use_tebd_bias"],
            precision=precision,
        ),
        "exclude_types": [list(p) for p in config["exclude_types"]],
        "env_protection": config["env_protection"],
        "@variables": {
            "davg": np.zeros((ntypes, nnei, 4), np.float32 if precision == "float32" else float),
            "dstd": np.ones((ntypes, nnei, 4), np.float32 if precision == "float32" else float),
        },
        "trainable": bool(config.get("trainable", True)),
        "spin": None,
    }
    if config["type"] == "se_atten_v2":  # strip + smooth are implied; DeePMD-kit rejects the keys
        del desc["tebd_input_mode"], desc["smooth_type_embedding"]
    if strip:
        desc["embeddings_strip"] = network_collection(
            [make_embedding_net(rng, type_in, neuron, **net_kw)], 0, ntypes, "embedding_network"
        )
    return desc


def neighbor_spec(desc: dict) -> NeighborSpec:
    """One distance-sorted list of width sum(sel), trimmed where the empty slots all look alike."""
    return trimmable_list_spec(desc, mixed_types=True)
