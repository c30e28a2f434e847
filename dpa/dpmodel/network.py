"""Dense layer, embedding net, fitting net, layer norm and activations (spec §1.1-1.6).

Forward functions read the serialized dicts of DeePMD-kit v3 directly (`"@class": "Layer"`, ...),
so a `.dp` file is the parameter tree. Builders create such dicts with the spec's initialization.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ..errors import ConfigError
from .array_api import Array, xp_of
from .native import native_kernels

# --------------------------------------------------------------------------- activations


def _silut(threshold: float) -> Callable[[Any, Array], Array]:
    """SiLU below `threshold`, a tanh tail above it (C1 at the threshold)."""
    slope, const = silut_constants(threshold)

    def act(xp: Any, x: Array) -> Array:
        tail = xp.tanh(slope * (x - threshold)) + const
        return xp.where(x < threshold, _silu(xp, x), tail)

    return act


def _silu(xp: Any, x: Array) -> Array:
    """x·sigmoid(x) with sigmoid(x) = (1 + tanh(x/2))/2: no overflow anywhere, so no NaN
    gradient for very negative x (x/(1 + e^-x) gives inf/inf there in float32)."""
    half = 0.5 * x
    return half + half * xp.tanh(half)


def _sigmoid(xp: Any, x: Array) -> Array:
    """sigmoid(x) = (1 + tanh(x/2))/2, overflow-free."""
    return 0.5 + 0.5 * xp.tanh(0.5 * x)


def _softplus(xp: Any, x: Array) -> Array:
    """log(1 + e^x) in the overflow-free form."""
    return xp.maximum(x, xp.zeros_like(x)) + xp.log1p(xp.exp(-xp.abs(x)))


def _gelu(xp: Any, x: Array) -> Array:
    """tanh approximation of GELU (used for both `gelu` and `gelu_tf`)."""
    return 0.5 * x * (1.0 + xp.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x * x * x)))


def _silu_or_native(xp: Any, x: Array) -> Array:
    """silu: the framework's own kernel where it has one (`native_kernels`), else `_silu`."""
    kernels = native_kernels(xp)
    return _silu(xp, x) if kernels is None else kernels.silu(x)


def _silut_or_native(threshold: float) -> Callable[[Any, Array], Array]:
    """silut:threshold: the framework's own kernel where it has one, else `_silut`."""
    generic = _silut(threshold)
    constants = silut_constants(threshold)

    def act(xp: Any, x: Array) -> Array:
        kernels = native_kernels(xp)
        return generic(xp, x) if kernels is None else kernels.silut(threshold, *constants)(x)

    return act


_ACTIVATIONS: dict[str, Callable[[Any, Array], Array]] = {
    "tanh": lambda xp, x: xp.tanh(x),
    "relu": lambda xp, x: xp.maximum(x, xp.zeros_like(x)),
    "relu6": lambda xp, x: xp.clip(x, 0.0, 6.0),
    "softplus": _softplus,
    "sigmoid": _sigmoid,
    "silu": _silu_or_native,
    "gelu": _gelu,
    "gelu_tf": _gelu,
    "linear": lambda xp, x: x,
    "none": lambda xp, x: x,
}


def activation(name: str | None) -> Callable[[Any, Array], Array]:
    """The activation function φ(xp, x) named `name` (case-insensitive, `silut:T` allowed)."""
    key = "none" if name is None else str(name).lower()
    if key in _ACTIVATIONS:
        return _ACTIVATIONS[key]
    for prefix in ("silut", "custom_silu"):
        if key == prefix or key.startswith(prefix + ":"):
            _, _, tail = key.partition(":")
            try:
                threshold = float(tail) if tail else 3.0
            except ValueError:
                break
            return _silut_or_native(threshold)
    allowed = ", ".join([*sorted(_ACTIVATIONS), "silut[:T]"])
    raise ConfigError(f"unknown activation_function {name!r}; allowed: {allowed}")


def silut_constants(threshold: float) -> tuple[float, float]:
    """(slope, offset) of the tanh tail of silut above `threshold` (C1 continuation of SiLU)."""
    sig = 1.0 / (1.0 + math.exp(-threshold))
    return sig + threshold * sig * (1.0 - sig), threshold * sig


# --------------------------------------------------------------------------- forward


def dense(layer: dict, x: Array) -> Array:
    """One dense layer: φ(x W + b) ⊙ idt, plus the residual when `resnet` and the widths allow."""
    xp = xp_of(x)
    var = layer["@variables"]
    w = var["w"]
    y = x @ w
    if var.get("b") is not None:
        y = y + var["b"]
    y = activation(layer.get("activation_function"))(xp, y)
    if var.get("idt") is not None:
        y = y * var["idt"]
    if layer.get("resnet", False):
        n_in, n_out = w.shape
        if n_out == n_in:
            y = y + x
        elif n_out == 2 * n_in:
            y = y + xp.concat([x, x], axis=-1)
    return y


def embedding_net(net: dict, x: Array) -> Array:
    """An embedding network: its dense layers in order (all with resnet)."""
    for layer in net["layers"]:
        x = dense(layer, x)
    return x


# A fitting network has the same stored structure: hidden layers then a linear output layer.
fitting_net = embedding_net


def layer_norm(norm: dict, x: Array) -> Array:
    """LayerNorm over the last axis with the population variance."""
    xp = xp_of(x)
    var = norm["@variables"]
    mean = xp.mean(x, axis=-1, keepdims=True)
    centered = x - mean
    variance = xp.mean(centered * centered, axis=-1, keepdims=True)
    y = centered * (1.0 / xp.sqrt(variance + norm.get("eps", 1e-5)))
    if var.get("w") is not None:
        y = y * var["w"]
    if var.get("b") is not None:
        y = y + var["b"]
    return y


# --------------------------------------------------------------------------- builders


def make_layer(
    rng: np.random.Generator,
    n_in: int,
    n_out: int,
    *,
    activation_function: str | None = "tanh",
    resnet: bool = False,
    bias: bool = True,
    use_timestep: bool = False,
    precision: str = "float64",
) -> dict:
    """A serialized dense layer with W ~ N(0, 1/sqrt(n_in+n_out)), b ~ N(0,1), idt ~ N(0.1, 0.001)."""
    dtype = np.float32 if precision == "float32" else np.float64
    has_idt = use_timestep and n_out in (n_in, 2 * n_in)
    return {
        "@class": "Layer",
        "@version": 2,
        "bias": bias,
        "use_timestep": has_idt,
        "activation_function": activation_function,
        "resnet": resnet,
        "precision": precision,
        "trainable": True,
        "@variables": {
            "w": rng.normal(0.0, 1.0 / math.sqrt(n_in + n_out), (n_in, n_out)).astype(dtype),
            "b": rng.normal(0.0, 1.0, (n_out,)).astype(dtype) if bias else None,
            "idt": rng.normal(0.1, 0.001, (n_out,)).astype(dtype) if has_idt else None,
        },
    }


def make_embedding_net(
    rng: np.random.Generator,
    in_dim: int,
    neuron: Sequence[int],
    *,
    activation_function: str = "tanh",
    resnet_dt: bool = False,
    bias: bool = True,
    precision: str = "float64",
) -> dict:
    """A serialized embedding network: every layer activated and with resnet."""
    layers, n_in = [], in_dim
    for n_out in neuron:
        layers.append(
            make_layer(
                rng,
                n_in,
                n_out,
                activation_function=activation_function,
                resnet=True,
                bias=bias,
                use_timestep=resnet_dt,
                precision=precision,
            )
        )
        n_in = n_out
    return {
        "@class": "EmbeddingNetwork",
        "@version": 2,
        "in_dim": in_dim,
        "neuron": list(neuron),
        "activation_function": activation_function,
        "resnet_dt": resnet_dt,
        "bias": bias,
        "precision": precision,
        "layers": layers,
    }


def make_fitting_net(
    rng: np.random.Generator,
    in_dim: int,
    neuron: Sequence[int],
    out_dim: int = 1,
    *,
    activation_function: str = "tanh",
    resnet_dt: bool = True,
    precision: str = "float64",
) -> dict:
    """A serialized fitting network: embedding-style hidden layers + a linear output layer."""
    hidden = make_embedding_net(
        rng,
        in_dim,
        neuron,
        activation_function=activation_function,
        resnet_dt=resnet_dt,
        precision=precision,
    )["layers"]
    last = neuron[-1] if neuron else in_dim
    out = make_layer(rng, last, out_dim, activation_function="none", precision=precision)
    return {
        "@class": "FittingNetwork",
        "@version": 1,
        "in_dim": in_dim,
        "out_dim": out_dim,
        "neuron": list(neuron),
        "activation_function": activation_function,
        "resnet_dt": resnet_dt,
        "precision": precision,
        "bias_out": True,
        "layers": [*hidden, out],
    }


def make_layer_norm(dim: int, eps: float = 1e-5, precision: str = "float64") -> dict:
    """A serialized LayerNorm with γ = 1, β = 0."""
    dtype = np.float32 if precision == "float32" else np.float64
    return {
        "@class": "LayerNorm",
        "@version": 1,
        "eps": eps,
        "trainable": True,
        "precision": precision,
        "@variables": {"w": np.ones(dim, dtype), "b": np.zeros(dim, dtype)},
    }


def network_collection(networks: list[dict], ndim: int, ntypes: int, network_type: str) -> dict:
    """The `NetworkCollection` wrapper DeePMD-kit stores around lists of networks."""
    return {
        "@class": "NetworkCollection",
        "@version": 1,
        "ndim": ndim,
        "ntypes": ntypes,
        "network_type": network_type,
        "networks": networks,
    }
