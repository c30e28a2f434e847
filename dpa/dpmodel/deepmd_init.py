"""DeePMD-kit's initial weights for a given seed: the draws `dp --pt train` makes (float64), so
that the same input starts from the same model in both codes.

DeePMD-kit seeds every layer with its own generator: a child-seed list `[idx, ..., seed]`
following the module tree, mixed into one integer; a layer draws its matrix
(N(0, 1/sqrt(n_in + n_out))), then its bias (N(0, 1)), then its timestep vector (N(0.1, 0.001))
from it. This module walks a freshly built model tree and redraws its layers that way, for the
descriptors whose module tree is mapped here (se_e2_a, DPA-1 / se_atten) and the fitting net;
other descriptors keep dpa's own draws (same distributions, other numbers).
"""

from __future__ import annotations

import math

import numpy as np

from .torch_rng import TorchCpuNormal, mix_seed

__all__ = ["MAPPED_DESCRIPTORS", "draw_like_deepmd"]

MAPPED_DESCRIPTORS = ("se_e2_a", "se_a", "dpa1", "se_atten", "se_atten_v2")


def _draw_layer(layer: dict, path: list[int]) -> None:
    """Redraw one serialized layer in place from the generator of child-seed list `path`."""
    var = layer["@variables"]
    gen = TorchCpuNormal(mix_seed(path))
    w = np.asarray(var["w"])
    n_in, n_out = w.shape
    var["w"] = gen.normal(w.shape, 0.0, 1.0 / math.sqrt(n_out + n_in)).astype(w.dtype)
    if var.get("b") is not None:
        b = np.asarray(var["b"])
        var["b"] = gen.normal(b.shape, 0.0, 1.0).astype(b.dtype)
    if var.get("idt") is not None:
        idt = np.asarray(var["idt"])
        var["idt"] = gen.normal(idt.shape, 0.1, 0.001).astype(idt.dtype)


def _draw_network(net: dict, path: list[int]) -> None:
    """Layer `idx` of an embedding or fitting network gets child seed `[idx, *path]`."""
    for idx, layer in enumerate(net["layers"]):
        _draw_layer(layer, [idx, *path])


def _draw_dpa1(desc: dict, seed: int) -> None:
    block = [1, seed]  # the se_atten block; the type embedding is [2, seed]
    for net in desc["embeddings"]["networks"]:
        _draw_network(net, [1, *block])
    if "embeddings_strip" in desc:
        for net in desc["embeddings_strip"]["networks"]:
            _draw_network(net, [2, *block])
    for i, layer in enumerate(desc["attention_layers"]["attention_layers"]):
        gated = [0, i, 0, *block]
        _draw_layer(layer["attention_layer"]["in_proj"], [0, *gated])
        _draw_layer(layer["attention_layer"]["out_proj"], [1, *gated])
    _draw_network(desc["type_embedding"]["embedding"], [2, seed])


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
    else:
        _draw_dpa1(desc, descriptor_seed)
    for ii, net in enumerate(tree["fitting"]["nets"]["networks"]):
        if net is not None:
            _draw_network(net, [ii, fitting_seed])
    return True
