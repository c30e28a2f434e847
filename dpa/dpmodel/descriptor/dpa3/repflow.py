"""One DPA-3 repflow layer (spec §7.3): node, edge and angle updates on the padded neighbor graph.

Layouts: nodes (nf, nat, c); edges (nf, nat, W, c) over the W list slots; angles
(nf, nat, A, A, c) over the first A slots, stored **k-major**: entry [f, i, k, j] is the angle
j-i-k, so the edge-angle sum over k is one matrix product per atom (σ_i · q_i).

Every concatenation [n_i, ν_ij, e_ij] W or [a, n^c_i, e^c_ik, e^c_ij] W is applied by row blocks:
the node products are taken on nodes (and gathered to edges for ν), the edge products on edges,
and only the angle block touches the angle-sized tensors.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from array_api_compat import device

from ...array_api import Array, gather_neighbors, xp_of
from .settings import RepflowSettings

Activation = Callable[[Any, Array], Array]


@dataclass(frozen=True)
class Graph:
    """Per-call static pieces shared by every layer.

    nlist: (nf, nat, W) local neighbor index, 0 on empty slots; sw: (nf, nat, W) edge switch,
    0 on empty slots; hs: (nf, nat, W, 3) h_ij s_ij / √N' (the symmetrization weights);
    a_sw: (nf, nat, A) angle switch σ, 0 where μ = 0; a_mask: (nf, nat, A) bool μ;
    e_norm, a_norm: the normalizers N' and A'.
    """

    nlist: Array
    sw: Array
    hs: Array
    a_sw: Array
    a_mask: Array
    e_norm: float
    a_norm: float


@dataclass(frozen=True)
class RankOne:
    """Layer-0 angle features a_ijk = α_ijk w (rank one in the channel axis), kept factored."""

    alpha: Array  # (nf, nat, A, A)
    vec: Array  # (a_dim,)

    def matmul(self, w: Array) -> Array:
        """a W = α ⊗ (w W): one broadcast product instead of a product over the angle tensor."""
        return self.alpha[..., None] * (self.vec[None, :] @ w)[0, :]

    def dense(self) -> Array:
        """The materialized (nf, nat, A, A, a_dim) tensor."""
        return self.alpha[..., None] * self.vec


def _wb(layer: dict) -> tuple[Array, Array | None]:
    """A stored dense layer's weight and bias."""
    var = layer["@variables"]
    return var["w"], var.get("b")


def _angle_matmul(a: Array | RankOne, w: Array) -> Array:
    """a W for a dense or factored angle tensor."""
    return a.matmul(w) if isinstance(a, RankOne) else a @ w


def angle_dense(a: Array | RankOne) -> Array:
    """The angle tensor as an array."""
    return a.dense() if isinstance(a, RankOne) else a


def update(style: str, terms: list[Array], residuals: list[Array] | None) -> Array:
    """Combine [u_0, u_1, …] by res_avg / res_incr / res_residual (spec §1.7)."""
    out = terms[0]
    if style == "res_residual":
        for vec, term in zip(residuals or [], terms[1:], strict=True):
            out = out + vec * term
        return out
    if style == "res_avg":
        for term in terms[1:]:
            out = out + term
        return out / math.sqrt(len(terms))
    if style == "res_incr":
        scale = 1.0 / math.sqrt(len(terms) - 1) if len(terms) > 1 else 0.0
        for term in terms[1:]:
            out = out + scale * term
        return out
    raise ValueError(f"unknown update_style {style!r}")


def edge_linear(layer: dict, n: Array, e: Array, nlist: Array) -> Array:
    """[n_i, ν_ij, e_ij] W + b with the node blocks projected on nodes (then gathered for ν)."""
    w, b = _wb(layer)
    n_dim = n.shape[-1]
    center = n @ w[:n_dim, :]
    if b is not None:
        center = center + b
    neighbor = gather_neighbors(n @ w[n_dim : 2 * n_dim, :], nlist)
    return (e @ w[2 * n_dim :, :] + neighbor) + center[:, :, None, :]


def angle_linear(layer: dict, a: Array | RankOne, nc: Array, ec: Array, a_dim: int) -> Array:
    """[a_ijk, n^c_i, e^c_ik, e^c_ij] W + b in the k-major layout (nf, nat, A_k, A_j, out)."""
    w, b = _wb(layer)
    dn, de = nc.shape[-1], ec.shape[-1]
    start_k = a_dim + dn
    node = nc @ w[a_dim:start_k, :]
    if b is not None:
        node = node + b
    by_k = ec @ w[start_k : start_k + de, :] + node[:, :, None, :]  # (nf, nat, A_k, out)
    by_j = ec @ w[start_k + de : start_k + 2 * de, :]  # (nf, nat, A_j, out)
    return (_angle_matmul(a, w[:a_dim, :]) + by_k[:, :, :, None, :]) + by_j[:, :, None, :, :]


def symmetrize(hs: Array, x: Array, axis_neuron: int) -> Array:
    """flatten((1/3) H_<ᵀ H) with H = Σ_j hs_ij ⊗ x_ij (axis index slow): (nf, nat, M·c)."""
    xp = xp_of(x)
    h = xp.matrix_transpose(hs) @ x  # (nf, nat, 3, c)
    g = xp.matrix_transpose(h[..., :axis_neuron]) @ h / 3.0
    nf, nat = g.shape[0], g.shape[1]
    return xp.reshape(g, (nf, nat, g.shape[2] * g.shape[3]))


def compress(
    cfg: RepflowSettings, layer: dict, n: Array, e: Array, graph: Graph
) -> tuple[Array, Array]:
    """n^c (nf, nat, n_c) and e^c (nf, nat, A, e_c) on the first A slots, zero where μ = 0."""
    xp = xp_of(e)
    nslot = graph.a_mask.shape[-1]
    e = e[:, :, :nslot, :]
    rate = cfg.a_compress_rate
    if rate == 0:
        nc, ec = n, e
    elif cfg.a_compress_use_split:
        a_dim = cfg.a_dim
        nc = n[..., : a_dim // rate]
        ec = e[..., : a_dim // (2 * rate) * cfg.a_compress_e_rate]
    else:
        nc = n @ layer["a_compress_n_linear"]["@variables"]["w"]
        ec = e @ layer["a_compress_e_linear"]["@variables"]["w"]
    return nc, xp.where(graph.a_mask[..., None], ec, xp.zeros_like(ec))


def edge_angle_message(
    cfg: RepflowSettings,
    layer: dict,
    act: Activation,
    a: Array | RankOne,
    nc: Array,
    ec: Array,
    e_fallback: Array,
    graph: Graph,
) -> Array:
    """v_ang = φ(χ W_ea2 + b) with χ_ij = σ_ij/√A' Σ_k σ_ik φ(x_ijk W_ea1 + b) (spec §7.3)."""
    xp = xp_of(ec)
    q = act(xp, angle_linear(layer["edge_angle_linear1"], a, nc, ec, cfg.a_dim))
    nf, nat, nslot = graph.a_sw.shape
    width = q.shape[-1]
    # Σ_k σ_ik q[i, k, j, :] as one (1 × A) · (A × A·c) product per atom
    flat = xp.reshape(q, (nf, nat, nslot, nslot * width))
    chi = xp.reshape(graph.a_sw[:, :, None, :] @ flat, (nf, nat, nslot, width))
    chi = chi * (graph.a_sw[..., None] * (1.0 / math.sqrt(graph.a_norm)))
    total = e_fallback.shape[2]
    if total > nslot:
        pad = xp.zeros((nf, nat, total - nslot, width), dtype=chi.dtype, device=device(chi))
        chi = xp.concat([chi, pad], axis=2)
    if not cfg.smooth_edge_update:
        mask = graph.a_mask
        if total > nslot:
            pad_mask = xp.zeros((nf, nat, total - nslot), dtype=xp.bool, device=device(mask))
            mask = xp.concat([mask, pad_mask], axis=2)
        chi = xp.where(mask[..., None], chi, e_fallback)
    return act(xp, _dense(layer["edge_angle_linear2"], chi))


def _dense(layer: dict, x: Array) -> Array:
    """x W + b without activation (the repflow linears store activation 'none')."""
    w, b = _wb(layer)
    y = x @ w
    return y if b is None else y + b


def node_terms(
    cfg: RepflowSettings,
    layer: dict,
    act: Activation,
    n: Array,
    nu: Array,
    e: Array,
    graph: Graph,
) -> list[Array]:
    """[u_self, u_sym, u_msg^(1..H)] from the layer-input n, the gathered ν and the edges e."""
    xp = xp_of(n)
    n_dim = n.shape[-1]
    axis = cfg.axis_neuron
    u_self = act(xp, _dense(layer["node_self_mlp"], n))
    sym = xp.concat([symmetrize(graph.hs, e, axis), symmetrize(graph.hs, nu, axis)], axis=-1)
    u_sym = act(xp, _dense(layer["node_sym_linear"], sym))
    msg = act(xp, edge_linear(layer["node_edge_linear"], n, e, graph.nlist))
    # Σ_j s_ij φ(...) as one (1 × W) · (W × H·n) product per atom
    msg = (graph.sw[:, :, None, :] @ msg)[:, :, 0, :] * (1.0 / graph.e_norm)
    heads = cfg.n_multi_edge_message
    if heads == 1:
        return [u_self, u_sym, msg]
    return [u_self, u_sym, *(msg[..., h * n_dim : (h + 1) * n_dim] for h in range(heads))]


def layer_forward(
    cfg: RepflowSettings,
    layer: dict,
    act: Activation,
    n: Array,
    e: Array,
    a: Array | RankOne,
    graph: Graph,
    last: bool = False,
) -> tuple[Array, Array, Array | RankOne]:
    """One repflow layer (parallel or sequential mode): returns the updated (n, e, a).

    `last`: only n is used afterwards; in parallel mode the edge and angle updates (the angle
    tensors are most of the work) are then skipped, since n is computed from the layer inputs."""
    style = cfg.update_style
    var = layer.get("@variables") or {}
    n_res, e_res, a_res = (var.get(k) for k in ("n_residual", "e_residual", "a_residual"))
    nu = gather_neighbors(n, graph.nlist)
    xp = xp_of(n)
    if cfg.update_angle and cfg.sequential_update:
        e_res, a_res = var["e_residual"], var["a_residual"]  # sequential: res_residual only
        v_self = act(xp, edge_linear(layer["edge_self_linear"], n, e, graph.nlist))
        e1 = e + e_res[0] * v_self
        nc, ec = compress(cfg, layer, n, e1, graph)
        w_self = act(xp, angle_linear(layer["angle_self_linear"], a, nc, ec, cfg.a_dim))
        a1 = angle_dense(a) + a_res[0] * w_self
        v_ang = edge_angle_message(cfg, layer, act, a1, nc, ec, e1, graph)
        e2 = e1 + e_res[1] * v_ang
        n1 = update(style, [n, *node_terms(cfg, layer, act, n, nu, e2, graph)], n_res)
        return n1, e2, a1
    n1 = update(style, [n, *node_terms(cfg, layer, act, n, nu, e, graph)], n_res)
    if last:
        return n1, e, a
    v_self = act(xp, edge_linear(layer["edge_self_linear"], n, e, graph.nlist))
    if not cfg.update_angle:
        return n1, update(style, [e, v_self], e_res), a
    nc, ec = compress(cfg, layer, n, e, graph)
    v_ang = edge_angle_message(cfg, layer, act, a, nc, ec, e, graph)
    e1 = update(style, [e, v_self, v_ang], e_res)
    w_self = act(xp, angle_linear(layer["angle_self_linear"], a, nc, ec, cfg.a_dim))
    a1 = update(style, [angle_dense(a), w_self], a_res)
    return n1, e1, a1
