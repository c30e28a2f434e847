"""The DPA-2 repformer block (spec §6.6-6.8): message passing on atom (f) and pair (g, h) channels.

Shapes: f (nf, nat, d1) per atom; g (nf, nat, N, d2) and h (nf, nat, N, 3) per neighbor slot.
Neighbor features are gathered from local atoms (`gather_neighbors`); empty slots point at atom 0
and are masked wherever they could reach the output.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ....errors import ConfigError
from ...array_api import Array, gather_neighbors, like, safe_norm, stop_gradient, xp_of
from ...env_mat import environment_matrix, normalize
from ...network import activation, dense, layer_norm, make_layer, make_layer_norm
from ..common import ATTN_LOGIT_SHIFT, MASKED_LOGIT, Edges
from .settings import AttentionSettings, RepformerLayerSettings, RepformerSettings

NNEI_EPS = 1e-4  # protection of 1/n_i in the non-smooth normalizers


@dataclass(frozen=True)
class PairContext:
    """What every layer needs about the neighbor slots of the repformer sub-list."""

    index: Array  # (nf, nat, N) neighbor index, empty slots redirected to atom 0
    mask: Array  # (nf, nat, N) bool, real (and not excluded) neighbor
    weight: Array  # (nf, nat, N) s_ij (smooth) or m_ij (not smooth): per-slot factor of sums
    sw: Array  # (nf, nat, N) switch, 0 on empty slots
    smooth: bool
    nnei: int  # the block's nsel: normalizers use it, not the (possibly trimmed) slot count
    dropped: int = 0  # trailing slots cut off because they are empty in every row


@dataclass(frozen=True)
class AttentionMap:
    """The g2 attention per head: [(W^η (nf, nat, N, N), row^η (nf, nat, N, 1))] and the
    column factor col (nf, nat, N, 1), with A^η_jk = W^η_jk row^η_j col_k."""

    heads: list[tuple[Array, Array]]
    colf: Array


def _act(name: str) -> Callable[[Array], Array]:
    """φ(x) of the block's activation, bound to the array namespace of x."""
    fn = activation(name)
    return lambda x: fn(xp_of(x), x)


def _linear(layer: dict, x: Array) -> Array:
    """x W (+ b) of a dense layer without activation."""
    var = layer["@variables"]
    y = x @ var["w"]
    return y if var.get("b") is None else y + var["b"]


def _neighbor_norm(ctx: PairContext, sqrt: bool) -> Array:
    """κ of the sums over slots: 1/√N or 1/N (smooth), 1/(ε + √n_i) or 1/(ε + n_i) otherwise."""
    xp = xp_of(ctx.weight)
    if ctx.smooth:
        return 1.0 / (math.sqrt(ctx.nnei) if sqrt else float(ctx.nnei))
    count = xp.sum(xp.astype(ctx.mask, ctx.weight.dtype), axis=-1)
    if sqrt:
        count = xp.sqrt(count)
    return (1.0 / (NNEI_EPS + count))[..., None, None]


def _hg(x: Array, h: Array, ctx: PairContext, sqrt: bool) -> Array:
    """H_i = κ Σ_j h_ij ⊗ (x_ij w_ij): (nf, nat, 3, c)."""
    xp = xp_of(x)
    # the slot weight rides on the 3-wide h, not on the c-wide x
    return (xp.matrix_transpose(h * ctx.weight[..., None]) @ x) * _neighbor_norm(ctx, sqrt)


def _sym(x: Array, h: Array, ctx: PairContext, axis: int, sqrt: bool) -> Array:
    """sym(x, h) = flatten((1/3) H[:, :M]ᵀ H), index b·c + a (axis-major)."""
    xp = xp_of(x)
    hg = _hg(x, h, ctx, sqrt)
    out = xp.matrix_transpose(hg[..., :axis]) @ hg * (1.0 / 3.0)
    nf, nat = out.shape[0], out.shape[1]
    return xp.reshape(out, (nf, nat, out.shape[2] * out.shape[3]))


def _softmax_rows(logits: Array, dropped: int = 0, empty_logit: float = 0.0) -> tuple[Array, Array]:
    """exp(L - max) and its row sums (normalization is applied later, to smaller operands).

    `dropped` trimmed empty slots, each with logit `empty_logit`, still count in the max and the
    sums, so the result equals that of the untrimmed list.
    """
    xp = xp_of(logits)
    top = xp.max(logits, axis=-1, keepdims=True)
    if dropped:
        # a constant for autodiff (the result does not depend on it); through this clip, XLA
        # CPU without optimizations returned NaN gradients
        top = stop_gradient(xp.clip(top, min=empty_logit))
    e = xp.exp(logits - top)
    denom = xp.sum(e, axis=-1, keepdims=True)
    if dropped:
        denom = denom + dropped * xp.exp(empty_logit - top)
    return e, denom


def _local_attention(
    att: AttentionSettings, layer: dict, f: Array, fn: Array, ctx: PairContext
) -> Array:
    """g1 self-attention over the neighbors (`loc_attn`), heads concatenated head-major.

    Keys and values are f̂ W_k, f̂ W_v; instead of projecting every neighbor, the query is pulled
    back through W_k (q W_kᵀ · f̂) and W_v is applied after the weighted sum of f̂.
    """
    xp = xp_of(f)
    nf, nat, n = ctx.mask.shape
    d1 = f.shape[-1]
    nd, nh = att.hidden_dim, att.head_num
    wq = layer["mapq"]["@variables"]["w"]
    wkv = xp.reshape(layer["mapkv"]["@variables"]["w"], (d1, nd + d1, nh))
    wk = xp.permute_dims(wkv[:, :nd, :], (2, 0, 1))  # (nh, d1, nd)
    wv = xp.permute_dims(wkv[:, nd:, :], (2, 0, 1))  # (nh, d1, d1)
    q = xp.permute_dims(xp.reshape(f @ wq, (nf, nat, nd, nh)), (0, 1, 3, 2))  # (nf,nat,nh,nd)
    u = (wk @ q[..., None])[..., 0] * (1.0 / math.sqrt(nd))  # (nf, nat, nh, d1)
    logits = u @ xp.matrix_transpose(fn)  # (nf, nat, nh, N)
    if ctx.smooth:
        s = ctx.sw[:, :, None, :]
        logits = (logits + ATTN_LOGIT_SHIFT) * s
        gate = s
        e, denom = _softmax_rows(logits, ctx.dropped, 0.0)  # empty slots: logit 0
    else:
        m = ctx.mask[:, :, None, :]
        logits = xp.where(m, logits, xp.full_like(logits, MASKED_LOGIT))
        gate = xp.astype(m, f.dtype)
        e, denom = _softmax_rows(logits)  # trimmed slots would add exp(MASKED_LOGIT - max) = 0
    alpha = e * gate / denom
    pooled = alpha @ fn  # (nf, nat, nh, d1)
    out = (pooled[..., None, :] @ wv)[..., 0, :]  # (nf, nat, nh, d1)
    return dense(layer["head_map"], xp.reshape(out, (nf, nat, nh * d1)))


def _columns(w: Array, index: np.ndarray, axis: int) -> Array:
    """The rows (axis 0) or columns (axis 1) `index` of a stored weight matrix."""
    return xp_of(w).take(w, like(w, index), axis=axis)


def _attention_map(
    att: AttentionSettings, layer: dict, g: Array, h: Array, ctx: PairContext
) -> AttentionMap:
    """Gated attention weights between the slots of each center (`attn2g_map`), per head.

    A_jk^η = W_jk^η · row_j^η · col_k with W = exp(L - max)·(h_j·h_k): the row/column factors
    (softmax normalizer, masks, switches, 1/√3) are applied to N×d operands later. The N×N
    logits are small (N = repformer nsel ≈ 48), so the gate and the smooth shift act on them
    directly. Heads are taken with weight-column slices, so no (N, head) transposes are copied.
    """
    xp = xp_of(g)
    nd, nh = att.hidden_dim, att.head_num
    w = layer["mapqk"]["@variables"]["w"]  # column δ·2H + c: query head c, key head c - H
    cos = h @ xp.matrix_transpose(h)  # (nf, nat, N, N)
    if ctx.smooth:
        s = ctx.sw[..., None]  # (nf, nat, N, 1)
        pair = s * xp.matrix_transpose(s)
        colf = s
    else:
        colf = xp.astype(ctx.mask, g.dtype)[..., None]
        keys = xp.matrix_transpose(colf) > 0.5
    heads = []
    for eta in range(nh):
        q = g @ _columns(w, np.arange(nd) * 2 * nh + eta, 1) * (1.0 / math.sqrt(nd))
        k = g @ _columns(w, np.arange(nd) * 2 * nh + nh + eta, 1)
        logits = q @ xp.matrix_transpose(k)  # (nf, nat, N, N)
        if att.has_gate:
            logits = logits * cos
        if ctx.smooth:
            logits = (logits + ATTN_LOGIT_SHIFT) * pair - ATTN_LOGIT_SHIFT
            e, denom = _softmax_rows(logits, ctx.dropped, -ATTN_LOGIT_SHIFT)
        else:
            logits = xp.where(keys, logits, xp.full_like(logits, MASKED_LOGIT))
            e, denom = _softmax_rows(logits)
        heads.append((e * cos, colf * (1.0 / math.sqrt(3.0)) / denom))
    return AttentionMap(heads, colf)


def _attention_apply_g(layer: dict, amap: AttentionMap, g: Array) -> Array:
    """LayerNorm(head_map(Σ_k A_jk v_k)); head_map's input is channel-major (c·H + η), so each
    head's output meets its own rows of the head_map weight and the heads are summed. Its head
    count is the map's (`attn2_mh_apply.head_num`, equal to it on load)."""
    mh = layer["attn2_mh_apply"]
    d2 = g.shape[-1]
    nh = len(amap.heads)
    wv = mh["mapv"]["@variables"]["w"]  # column c·H + η
    head_map = mh["head_map"]["@variables"]
    out = 0.0 if head_map.get("b") is None else head_map["b"]
    for eta, (w, rowf) in enumerate(amap.heads):
        rows = np.arange(d2) * nh + eta
        v = (g @ _columns(wv, rows, 1)) * amap.colf
        out = out + ((w @ v) * rowf) @ _columns(head_map["w"], rows, 0)
    return layer_norm(layer["attn2_lm"], out)


def _attention_apply_h(layer: dict, amap: AttentionMap, h: Array) -> Array:
    """h'_j = Σ_η w_η Σ_k A_jk^η h_k (`attn2_ev_apply`)."""
    mix = layer["attn2_ev_apply"]["head_map"]["@variables"]["w"]  # (nh, 1)
    hc = h * amap.colf
    out = None
    for eta, (w, rowf) in enumerate(amap.heads):
        term = (w @ hc) * (rowf * mix[eta, 0])
        out = term if out is None else out + term
    return out


def _update(old: Array, terms: list[Array], style: str, residual: list | None) -> Array:
    """Combine an update list (spec §1.7)."""
    if style == "res_avg":
        out = old
        for t in terms:
            out = out + t
        return out / math.sqrt(len(terms) + 1)
    if style == "res_incr":
        if not terms:
            return old
        acc = terms[0]
        for t in terms[1:]:
            acc = acc + t
        return old + acc * (1.0 / math.sqrt(len(terms)))
    if style == "res_residual":
        out = old
        for zeta, t in zip(residual or [], terms, strict=True):
            out = out + zeta * t
        return out
    raise ConfigError(f"unknown repformer update_style {style!r}")


def _conv_term(
    cfg: RepformerLayerSettings,
    layer: dict,
    f_proj: Array | None,
    g: Array,
    fn: Array,
    ctx: PairContext,
) -> Array:
    """Convolution κ_c Σ_j (g W_p) ⊙ f̂ w (g1_out_conv) or κ_c Σ_j g ⊙ (f̂ W_p) w (into linear1)."""
    xp = xp_of(g)
    if ctx.smooth:
        norm = 1.0 / ctx.nnei
    else:
        count = xp.sum(xp.astype(ctx.mask, g.dtype), axis=-1)
        norm = (1.0 / (NNEI_EPS + count))[..., None]
    w = ctx.weight[..., None]
    if cfg.g1_out_conv:
        # Σ_j (g_j W_p)_c f̂_jc w_j = Σ_e W_p[e, c] (Σ_j g_je w_j f̂_jc): no N×d1 temporaries
        pooled = xp.matrix_transpose(g * w) @ fn  # (nf, nat, d2, d1)
        return xp.sum(pooled * layer["proj_g1g2"]["@variables"]["w"], axis=-2) * norm
    fp = gather_neighbors(f_proj, ctx.index)  # projected on atoms, then gathered
    return xp.sum((g * w) * fp, axis=2) * norm


def layer_forward(
    cfg: RepformerLayerSettings, layer: dict, f: Array, g: Array, h: Array, ctx: PairContext
) -> tuple[Array, Array, Array]:
    """One repformer layer (spec §6.7); every update reads the layer-input f, g, h."""
    xp = xp_of(f)
    act = _act(cfg.activation_function)
    residual = layer.get("@variables", {}) if cfg.update_style == "res_residual" else {}
    has_conv = cfg.update_g1_has_conv
    chnnl_2 = cfg.update_chnnl_2
    need_fn = (
        cfg.update_g1_has_drrd
        or (has_conv and cfg.g1_out_conv)
        or cfg.update_g1_has_attn
        or (chnnl_2 and cfg.update_g2_has_g1g1)
    )
    fn = gather_neighbors(f, ctx.index) if need_fn else None
    sqrt = cfg.use_sqrt_nnei

    g_terms: list[Array] = []
    h_terms: list[Array] = []
    if chnnl_2:
        g_terms.append(act(_linear(layer["linear2"], g)))
        if cfg.update_g2_has_g1g1:
            prod = fn * (f[:, :, None, :] * ctx.weight[..., None])
            g_terms.append(prod @ layer["proj_g1g1g2"]["@variables"]["w"])
        if cfg.pair_attention is not None:  # update_g2_has_attn or update_h2
            amap = _attention_map(cfg.pair_attention, layer["attn2g_map"], g, h, ctx)
            if cfg.update_g2_has_attn:
                g_terms.append(_attention_apply_g(layer, amap, g))
            if cfg.update_h2:
                h_terms.append(_attention_apply_h(layer, amap, h))

    f_terms: list[Array] = []
    mlp_in: list[Array] = []
    if cfg.g1_out_mlp:
        f_terms.append(act(_linear(layer["g1_self_mlp"], f)))
    else:
        mlp_in.append(f)
    if has_conv:
        f_proj = None if cfg.g1_out_conv else f @ layer["proj_g1g2"]["@variables"]["w"]
        conv = _conv_term(cfg, layer, f_proj, g, fn, ctx)
        (f_terms if cfg.g1_out_conv else mlp_in).append(conv)
    if cfg.update_g1_has_grrg:
        mlp_in.append(_sym(g, h, ctx, cfg.axis_neuron, sqrt))
    if cfg.update_g1_has_drrd:
        mlp_in.append(_sym(fn, h, ctx, cfg.axis_neuron, sqrt))
    f_terms.append(act(_linear(layer["linear1"], xp.concat(mlp_in, axis=-1))))
    if cfg.local_attention is not None:  # update_g1_has_attn
        f_terms.append(_local_attention(cfg.local_attention, layer["loc_attn"], f, fn, ctx))

    style = cfg.update_style
    f_new = _update(f, f_terms, style, residual.get("g1_residual"))
    if chnnl_2:
        g = _update(g, g_terms, style, residual.get("g2_residual"))
        h = _update(h, h_terms, style, residual.get("h2_residual"))
    return f_new, g, h


def repformer_forward(
    cfg: RepformerSettings,
    block: dict,
    g1: Array,
    edges: Edges,
    keep: Array | None,
    smooth: bool,
    protection: float,
) -> tuple[Array, Array, Array, Array, Array]:
    """(f, g, h, rot, sw) after all layers; `edges` is the repformer sub-list (holes allowed),
    its first `nsel` slots or fewer when the slots cut off are empty in every row."""
    xp = xp_of(g1)
    mask = edges.mask if keep is None else xp.logical_and(edges.mask, keep)
    rcut = cfg.rcut
    env, sw = environment_matrix(edges.rij, mask, rcut, cfg.rcut_smth, protection)
    var = block["@variables"]
    nsel, width = cfg.nsel, int(edges.nlist.shape[2])
    davg, dstd = var["davg"][:, :width, :], var["dstd"][:, :width, :]
    env = normalize(env, davg, dstd, edges.atype)
    act = _act(cfg.activation_function)
    if cfg.direct_dist:
        diff = xp.where(mask[..., None], edges.rij, xp.zeros_like(edges.rij))
        g = safe_norm(diff) / rcut
        h = diff / rcut
    else:
        g, h = env[..., :1], env[..., 1:4]
    g = act(_linear(block["g2_embd"], g))
    index = xp.where(mask, edges.nlist, xp.zeros_like(edges.nlist))
    weight = sw if smooth else xp.astype(mask, g1.dtype)
    ctx = PairContext(index, mask, weight, sw, smooth, nsel, nsel - width)
    f = act(g1)
    for layer_cfg, layer in zip(cfg.layers, block["repformer_layers"], strict=True):
        f, g, h = layer_forward(layer_cfg, layer, f, g, h, ctx)
    rot = xp.matrix_transpose(_hg(g, h, ctx, cfg.use_sqrt_nnei))
    return f, g, h, rot, sw


# --------------------------------------------------------------------------- builders


def _residuals(
    rng: np.random.Generator, dim: int, count: int, args: dict, precision: str, trainable: bool
) -> list[np.ndarray]:
    """`count` residual vectors initialised per `update_residual_init` (zeros if not trainable)."""
    dtype = np.float32 if precision == "float32" else np.float64
    scale, mode = args["update_residual"], args["update_residual_init"]
    if mode not in ("norm", "const"):
        raise ConfigError(f"unknown update_residual_init {mode!r}; use 'norm' or 'const'")
    out = []
    for _ in range(count):
        if not trainable:
            out.append(np.zeros(dim, dtype))
        elif mode == "norm":
            out.append(rng.normal(0.0, scale, dim).astype(dtype))
        else:
            out.append(np.full(dim, scale, dtype))
    return out


def _plain(
    rng: np.random.Generator, n_in: int, n_out: int, precision: str, bias: bool = True
) -> dict:
    """A dense layer without activation or resnet."""
    return make_layer(
        rng, n_in, n_out, activation_function="none", resnet=False, bias=bias, precision=precision
    )


def build_layer(
    rng: np.random.Generator,
    args: dict,
    ntypes: int,
    last: bool,
    smooth: bool,
    precision: str,
    trainable: bool,
) -> dict:
    """A serialized `RepformerLayer` (the last one has no channel-2 update)."""
    d1, d2, axis = args["g1_dim"], args["g2_dim"], args["axis_neuron"]
    chnnl_2 = not last
    g1g1 = args["update_g2_has_g1g1"] and chnnl_2
    g2_attn = args["update_g2_has_attn"] and chnnl_2
    h2 = args["update_h2"] and chnnl_2
    conv, out_conv, out_mlp = args["update_g1_has_conv"], args["g1_out_conv"], args["g1_out_mlp"]
    n1, n2, ah, a2 = (
        args["attn1_nhead"],
        args["attn2_nhead"],
        args["attn1_hidden"],
        args["attn2_hidden"],
    )
    in1 = (0 if out_mlp else d1) + (d2 if conv and not out_conv else 0)
    in1 += axis * d2 if args["update_g1_has_grrg"] else 0
    in1 += axis * d1 if args["update_g1_has_drrd"] else 0
    layer = {
        "@class": "RepformerLayer",
        "@version": 2,
        "rcut": args["rcut"],
        "rcut_smth": args["rcut_smth"],
        "sel": [args["nsel"]],
        "ntypes": ntypes,
        "g1_dim": d1,
        "g2_dim": d2,
        "axis_neuron": axis,
        "update_chnnl_2": chnnl_2,
        "update_g1_has_conv": conv,
        "update_g1_has_drrd": args["update_g1_has_drrd"],
        "update_g1_has_grrg": args["update_g1_has_grrg"],
        "update_g1_has_attn": args["update_g1_has_attn"],
        "update_g2_has_g1g1": g1g1,
        "update_g2_has_attn": g2_attn,
        "update_h2": h2,
        "attn1_hidden": ah,
        "attn1_nhead": n1,
        "attn2_hidden": a2,
        "attn2_nhead": n2,
        "attn2_has_gate": args["attn2_has_gate"],
        "activation_function": args["activation_function"],
        "update_style": args["update_style"],
        "smooth": smooth,
        "precision": precision,
        "trainable_ln": args["trainable_ln"],
        "use_sqrt_nnei": args["use_sqrt_nnei"],
        "g1_out_conv": out_conv,
        "g1_out_mlp": out_mlp,
        "ln_eps": args["ln_eps"],
        "linear1": _plain(rng, in1, d1, precision),
    }
    if chnnl_2:
        layer["linear2"] = _plain(rng, d2, d2, precision)
    if conv:
        shape = (d2, d1) if out_conv else (d1, d2)
        layer["proj_g1g2"] = _plain(rng, *shape, precision, bias=False)
    if g1g1:
        layer["proj_g1g1g2"] = _plain(rng, d1, d2, precision, bias=False)
    if g2_attn or h2:
        layer["attn2g_map"] = {
            "@class": "Atten2Map",
            "@version": 1,
            "input_dim": d2,
            "hidden_dim": a2,
            "head_num": n2,
            "has_gate": args["attn2_has_gate"],
            "smooth": smooth,
            "attnw_shift": ATTN_LOGIT_SHIFT,
            "precision": precision,
            "mapqk": _plain(rng, d2, 2 * a2 * n2, precision, bias=False),
        }
        if g2_attn:
            layer["attn2_mh_apply"] = {
                "@class": "Atten2MultiHeadApply",
                "@version": 1,
                "input_dim": d2,
                "head_num": n2,
                "precision": precision,
                "mapv": _plain(rng, d2, d2 * n2, precision, bias=False),
                "head_map": _plain(rng, d2 * n2, d2, precision),
            }
            norm = make_layer_norm(d2, args["ln_eps"], precision)
            norm["trainable"] = args["trainable_ln"]
            layer["attn2_lm"] = norm
        if h2:
            layer["attn2_ev_apply"] = {
                "@class": "Atten2EquiVarApply",
                "@version": 1,
                "input_dim": d2,
                "head_num": n2,
                "precision": precision,
                "head_map": _plain(rng, n2, 1, precision, bias=False),
            }
    if args["update_g1_has_attn"]:
        layer["loc_attn"] = {
            "@class": "LocalAtten",
            "@version": 1,
            "input_dim": d1,
            "hidden_dim": ah,
            "head_num": n1,
            "smooth": smooth,
            "attnw_shift": ATTN_LOGIT_SHIFT,
            "precision": precision,
            "mapq": _plain(rng, d1, ah * n1, precision, bias=False),
            "mapkv": _plain(rng, d1, (ah + d1) * n1, precision, bias=False),
            "head_map": _plain(rng, d1 * n1, d1, precision),
        }
    if out_mlp:
        layer["g1_self_mlp"] = _plain(rng, d1, d1, precision)
    if args["update_style"] == "res_residual":
        n_g1 = int(out_mlp) + int(conv and out_conv) + 1 + int(args["update_g1_has_attn"])
        n_g2 = (1 + int(g1g1) + int(g2_attn)) if chnnl_2 else 0
        layer["@variables"] = {
            "g1_residual": _residuals(rng, d1, n_g1, args, precision, trainable),
            "g2_residual": _residuals(rng, d2, n_g2, args, precision, trainable),
            "h2_residual": _residuals(rng, 1, int(h2), args, precision, trainable),
        }
    return layer


def build_block(
    rng: np.random.Generator, args: dict, ntypes: int, smooth: bool, precision: str, trainable: bool
) -> dict:
    """The serialized `repformers_variable` of a DPA-2 descriptor."""
    if args["update_style"] not in ("res_avg", "res_incr", "res_residual"):
        raise ConfigError(
            f"unknown repformer update_style {args['update_style']!r}; "
            "use 'res_avg', 'res_incr' or 'res_residual'"
        )
    dtype = np.float32 if precision == "float32" else np.float64
    nsel = args["nsel"]
    layers = [
        build_layer(rng, args, ntypes, i == args["nlayers"] - 1, smooth, precision, trainable)
        for i in range(args["nlayers"])
    ]
    return {
        "g2_embd": _plain(rng, 1, args["g2_dim"], precision),
        "repformer_layers": layers,
        "env_mat": {
            "rcut": args["rcut"],
            "rcut_smth": args["rcut_smth"],
            "protection": 0.0,
            "use_exp_switch": False,
        },
        "@variables": {
            "davg": np.zeros((ntypes, nsel, 4), dtype),
            "dstd": np.ones((ntypes, nsel, 4), dtype),
        },
    }
