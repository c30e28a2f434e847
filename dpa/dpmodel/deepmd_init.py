"""DeePMD-kit's initial weights for a given seed: the draws `dp --pt train` makes (float64), so
that the same input starts from the same model in both codes.

DeePMD-kit seeds every layer with its own generator: a child-seed list `[idx, ..., seed]`
following the module tree, mixed into one integer; a layer draws its matrix
(N(0, 1/sqrt(n_in + n_out))), then its bias (N(0, 1)), then its timestep vector (N(0.1, 0.001))
from it. This module walks a freshly built model tree and redraws its layers that way, for the
descriptors that map their module tree (`DescriptorKind.draw_like_deepmd`, in their folder's
deepmd_init.py, with the helpers here) and the fitting net; other descriptors keep dpa's own
draws (same distributions, other numbers).
"""

from __future__ import annotations

import math

import numpy as np

from .descriptor.registry import kind_of
from .torch_rng import TorchCpuGenerator, mix_seed

__all__ = [
    "draw_embeddings",
    "draw_glorot",
    "draw_layer",
    "draw_like_deepmd",
    "draw_network",
    "draw_residual",
    "skip_seedless_network_draws",
]


def draw_layer(layer: dict, path: list[int]) -> None:
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


def draw_glorot(layer: dict, path: list[int]) -> None:
    """A bias-free layer with Glorot-uniform weights, U(-a, a), a = sqrt(6 / (n_in + n_out))."""
    var = layer["@variables"]
    w = np.asarray(var["w"])
    bound = math.sqrt(6.0 / sum(w.shape))
    var["w"] = TorchCpuGenerator(mix_seed(path)).uniform(w.shape, -bound, bound).astype(w.dtype)


def draw_network(net: dict, path: list[int]) -> None:
    """Layer `idx` of an embedding or fitting network gets child seed `[idx, *path]`."""
    for idx, layer in enumerate(net["layers"]):
        draw_layer(layer, [idx, *path])


def draw_embeddings(block: dict, path: list[int]) -> None:
    """A type-embedded block's embedding nets at [1, *path], their strip nets at [2, *path]."""
    for net in block["embeddings"]["networks"]:
        draw_network(net, [1, *path])
    if "embeddings_strip" in block:
        for net in block["embeddings_strip"]["networks"]:
            draw_network(net, [2, *path])


def draw_residual(var: list, key: int, path: list[int], args: dict) -> None:
    """A residual scale vector: N(0, update_residual) from its own generator in "norm" mode,
    the constant (already set, no draw) in "const" mode."""
    if args["update_residual_init"] == "norm":
        old = np.asarray(var[key])
        gen = TorchCpuGenerator(mix_seed(path))
        var[key] = gen.normal(old.shape, 0.0, float(args["update_residual"])).astype(old.dtype)


def draw_like_deepmd(tree: dict, descriptor_seed: int, fitting_seed: int) -> bool:
    """Redraw, in place, the layers of a fresh model tree as DeePMD-kit would for these seeds;
    False (tree untouched) when the descriptor's module tree is not mapped."""
    desc = tree["descriptor"]
    draw = kind_of(desc).draw_like_deepmd
    if draw is None:
        return False
    draw(desc, descriptor_seed)
    for ii, net in enumerate(tree["fitting"]["nets"]["networks"]):
        if net is not None:
            draw_network(net, [ii, fitting_seed])
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
