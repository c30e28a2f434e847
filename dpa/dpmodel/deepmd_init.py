"""DeePMD-kit's initial weights for a given seed: the draws `dp --pt train` makes (float64), so
that the same input starts from the same model in both codes.

DeePMD-kit seeds every layer with its own generator: a child-seed list `[idx, ..., seed]`
following the module tree, mixed into one integer; a layer draws its matrix
(N(0, 1/sqrt(n_in + n_out))), then its bias (N(0, 1)), then its timestep vector (N(0.1, 0.001))
from it. This module walks a freshly built model tree and redraws its layers that way, for the
descriptors whose module tree is mapped here (se_e2_a, DPA-1 / se_atten, DPA-2, DPA-3) and the
fitting net; other descriptors keep dpa's own draws (same distributions, other numbers).
"""

from __future__ import annotations

import math

import numpy as np

from .torch_rng import TorchCpuGenerator, mix_seed

__all__ = ["MAPPED_DESCRIPTORS", "draw_like_deepmd", "skip_seedless_network_draws"]

MAPPED_DESCRIPTORS = ("se_e2_a", "se_a", "dpa1", "se_atten", "se_atten_v2", "dpa2", "dpa3")


def _draw_layer(layer: dict, path: list[int]) -> None:
    """Redraw one serialized layer in place from the generator of child-seed list `path`."""
    var = layer["@variables"]
    gen = TorchCpuGenerator(mix_seed(path))
    w = np.asarray(var["w"])
    n_in, n_out = w.shape
    var["w"] = gen.normal(w.shape, 0.0, 1.0 / math.sqrt(n_out + n_in)).astype(w.dtype)
    if var.get("b") is not None:
        b = np.asarray(var["b"])
        var["b"] = gen.normal(b.shape, 0.0, 1.0).astype(b.dtype)
    if var.get("idt") is not None:
        idt = np.asarray(var["idt"])
        var["idt"] = gen.normal(idt.shape, 0.1, 0.001).astype(idt.dtype)


def _draw_glorot(layer: dict, path: list[int]) -> None:
    """A bias-free layer with Glorot-uniform weights, U(-a, a), a = sqrt(6 / (n_in + n_out))."""
    var = layer["@variables"]
    w = np.asarray(var["w"])
    bound = math.sqrt(6.0 / sum(w.shape))
    var["w"] = TorchCpuGenerator(mix_seed(path)).uniform(w.shape, -bound, bound).astype(w.dtype)


def _draw_network(net: dict, path: list[int]) -> None:
    """Layer `idx` of an embedding or fitting network gets child seed `[idx, *path]`."""
    for idx, layer in enumerate(net["layers"]):
        _draw_layer(layer, [idx, *path])


def _draw_embeddings(block: dict, path: list[int]) -> None:
    """A type-embedded block's embedding nets at [1, *path], their strip nets at [2, *path]."""
    for net in block["embeddings"]["networks"]:
        _draw_network(net, [1, *path])
    if "embeddings_strip" in block:
        for net in block["embeddings_strip"]["networks"]:
            _draw_network(net, [2, *path])


def _draw_dpa1(desc: dict, seed: int) -> None:
    block = [1, seed]  # the se_atten block; the type embedding is [2, seed]
    _draw_embeddings(desc, block)
    for i, layer in enumerate(desc["attention_layers"]["attention_layers"]):
        gated = [0, i, 0, *block]
        _draw_layer(layer["attention_layer"]["in_proj"], [0, *gated])
        _draw_layer(layer["attention_layer"]["out_proj"], [1, *gated])
    _draw_network(desc["type_embedding"]["embedding"], [2, seed])


def _draw_residual(var: list, key: int, path: list[int], args: dict) -> None:
    """A residual scale vector: N(0, update_residual) from its own generator in "norm" mode,
    the constant (already set, no draw) in "const" mode."""
    if args["update_residual_init"] == "norm":
        old = np.asarray(var[key])
        gen = TorchCpuGenerator(mix_seed(path))
        var[key] = gen.normal(old.shape, 0.0, float(args["update_residual"])).astype(old.dtype)


# repflow layer members and their child index in DeePMD-kit's RepFlowLayer
_REPFLOW_LINEARS = {
    "node_self_mlp": 0,
    "node_sym_linear": 2,
    "node_edge_linear": 4,
    "edge_self_linear": 6,
    "a_compress_n_linear": 8,
    "a_compress_e_linear": 9,
    "edge_angle_linear1": 10,
    "edge_angle_linear2": 11,
    "angle_self_linear": 13,
}


def _draw_dpa3(desc: dict, seed: int) -> None:
    """Type embedding [2, S]; repflows [1, S]: edge_embd [0, ...], angle_embd [1, ...], layer ii
    [ii, 1, ...] with its linears and residuals at the indices DeePMD-kit gives them."""
    flow = desc["repflow_variable"]
    args = desc["repflow_args"]
    block = [1, seed]
    _draw_layer(flow["edge_embd"], [0, *block])
    _draw_layer(flow["angle_embd"], [1, *block])
    for ii, layer in enumerate(flow["repflow_layers"]):
        at = [ii, 1, *block]
        for name, index in _REPFLOW_LINEARS.items():
            if name in layer:
                _draw_layer(layer[name], [index, *at])
        residuals = layer.get("@variables")
        if residuals is None:
            continue
        n_res, e_res, a_res = (residuals[k] for k in ("n_residual", "e_residual", "a_residual"))
        _draw_residual(n_res, 0, [1, *at], args)
        _draw_residual(n_res, 1, [3, *at], args)
        for head in range(len(n_res) - 2):
            _draw_residual(n_res, 2 + head, [head, 5, *at], args)
        _draw_residual(e_res, 0, [7, *at], args)
        if len(e_res) > 1:
            _draw_residual(e_res, 1, [12, *at], args)
        if a_res:
            _draw_residual(a_res, 0, [14, *at], args)
    _draw_network(desc["type_embedding"]["embedding"], [2, seed])


# repformer layer members (name, sub-layer or None, child indices) in DeePMD-kit's RepformerLayer
_REPFORMER_LINEARS = (
    ("linear1", None, [1]),
    ("linear2", None, [2]),
    ("proj_g1g2", None, [4]),
    ("proj_g1g1g2", None, [5]),
    ("attn2g_map", "mapqk", [7]),
    ("attn2_mh_apply", "mapv", [0, 8]),
    ("attn2_mh_apply", "head_map", [1, 8]),
    ("attn2_ev_apply", "head_map", [11]),
    ("loc_attn", "mapq", [0, 13]),
    ("loc_attn", "mapkv", [1, 13]),
    ("loc_attn", "head_map", [2, 13]),
    ("g1_self_mlp", None, [15]),
)


def _repformer_residual_seeds(layer: dict) -> dict[str, list[int]]:
    """Child index of each residual vector, in the order the layer appends them."""
    g1 = [0]
    if "g1_self_mlp" in layer:
        g1.append(16)
    if layer.get("g1_out_conv") and "proj_g1g2" in layer:
        g1.append(17)
    if "loc_attn" in layer:
        g1.append(14)
    g2 = []
    if "linear2" in layer:
        g2.append(3)
        if "proj_g1g1g2" in layer:
            g2.append(6)
        if "attn2_mh_apply" in layer:
            g2.append(10)
    return {"g1_residual": g1, "g2_residual": g2, "h2_residual": [12]}


def _draw_dpa2(desc: dict, seed: int) -> None:
    """repinit [0, S] (embeddings only), repformers [1, S] (g2_embd [0, ...], layer ii
    [ii, 1, ...]), type embedding [2, S], g1_shape_tranform [3, S] (Glorot), tebd_transform
    [4, S], the three-body block [5, S]."""
    _draw_embeddings(desc["repinit_variable"], [0, seed])
    if "repinit_three_body_variable" in desc:
        _draw_embeddings(desc["repinit_three_body_variable"], [5, seed])
    formers = desc["repformers_variable"]
    block = [1, seed]
    _draw_layer(formers["g2_embd"], [0, *block])
    args = desc["repformer_args"]
    for ii, layer in enumerate(formers["repformer_layers"]):
        at = [ii, 1, *block]
        for name, sub, index in _REPFORMER_LINEARS:
            if name in layer:
                _draw_layer(layer[name] if sub is None else layer[name][sub], [*index, *at])
        residuals = layer.get("@variables")
        if residuals is None:
            continue
        for key, indices in _repformer_residual_seeds(layer).items():
            for k in range(len(residuals[key])):
                _draw_residual(residuals[key], k, [indices[k], *at], args)
    _draw_network(desc["type_embedding"]["embedding"], [2, seed])
    if desc["g1_shape_tranform"].get("@variables") is not None:
        _draw_glorot(desc["g1_shape_tranform"], [3, seed])
    if "tebd_transform" in desc:
        _draw_layer(desc["tebd_transform"], [4, seed])


def _draw_se_e2_a(desc: dict, seed: int) -> None:
    """Network (t_0, ..., t_{d-1}) is stored at sum t_i N^i but seeded with its position in
    DeePMD-kit's construction order, itertools.product over the types (t_0 slowest)."""
    collection = desc["embeddings"]
    ntypes, ndim = int(collection["ntypes"]), int(collection["ndim"])
    for k, net in enumerate(collection["networks"]):
        if net is None:
            continue
        key = [(k // ntypes**i) % ntypes for i in range(ndim)]
        position = sum(t * ntypes ** (ndim - 1 - i) for i, t in enumerate(key))
        _draw_network(net, [position, seed])


def draw_like_deepmd(tree: dict, descriptor_seed: int, fitting_seed: int) -> bool:
    """Redraw, in place, the layers of a fresh model tree as DeePMD-kit would for these seeds;
    False (tree untouched) when the descriptor's module tree is not mapped."""
    desc = tree["descriptor"]
    kind = desc.get("type")
    if kind not in MAPPED_DESCRIPTORS:
        return False
    if kind in ("se_e2_a", "se_a"):
        _draw_se_e2_a(desc, descriptor_seed)
    elif kind == "dpa3":
        _draw_dpa3(desc, descriptor_seed)
    elif kind == "dpa2":
        _draw_dpa2(desc, descriptor_seed)
    else:
        _draw_dpa1(desc, descriptor_seed)
    for ii, net in enumerate(tree["fitting"]["nets"]["networks"]):
        if net is not None:
            _draw_network(net, [ii, fitting_seed])
    return True


_NETWORK_CLASSES = ("EmbeddingNetwork", "FittingNetwork")


def skip_seedless_network_draws(node: object, gen: TorchCpuGenerator) -> None:
    """Advance `gen` (torch's global generator) as building `node`'s model in DeePMD-kit does.

    DeePMD-kit's PyTorch embedding and fitting networks build each hidden layer twice: once
    seeded, then again from the serialized layer with no generator, so every such layer draws its
    matrix, bias and timestep vector once more from the global generator (values discarded; a
    fitting network's output layer is built once). The batch order of `dp --pt train` depends on
    how far that moves the generator.
    """
    if isinstance(node, dict):
        if node.get("@class") in _NETWORK_CLASSES:
            layers = node["layers"]
            if node["@class"] == "FittingNetwork":
                layers = layers[:-1]
            for layer in layers:
                for key in ("w", "b", "idt"):
                    value = layer["@variables"].get(key)
                    if value is not None:
                        value = np.asarray(value)
                        gen.skip_normal(value.size, float32=value.dtype == np.float32)
            return
        for key, value in node.items():
            if key != "@variables":
                skip_seedless_network_draws(value, gen)
    elif isinstance(node, list | tuple):
        for value in node:
            skip_seedless_network_draws(value, gen)
