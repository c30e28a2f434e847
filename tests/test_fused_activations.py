"""The frameworks' native silu/silut kernels (`dpa.dpmodel.native`): value, slope and
curvature equal the closed forms of the spec's formula (SiLU below the threshold, its C1 tanh
continuation above), finite everywhere, on both sides of the threshold and at extreme inputs."""

from __future__ import annotations

import math

import numpy as np
import pytest

from dpa.dpmodel.network import silut_constants

THRESHOLD = 10.0
# both pieces, the threshold's neighbourhood, and inputs where a naive exp(-x) overflows
X = np.array(
    [-800.0, -60.0, -12.5, -1.0, -1e-3, 0.0, 0.7, 3.0, 9.99, 10.0, 10.01, 11.5, 25.0, 900.0]
)


def closed_forms(x: np.ndarray, threshold: float | None) -> tuple[np.ndarray, ...]:
    """(f, f', f'') of silu (threshold None) or silut, elementwise in float64."""
    values, slopes, curvatures = [], [], []
    for xi in x:
        if threshold is None or xi < threshold:
            s = 0.5 * (1.0 + math.tanh(0.5 * xi))  # sigmoid without overflow
            values.append(xi * s)
            slopes.append(s * (1.0 + xi * (1.0 - s)))
            curvatures.append(s * (1.0 - s) * (2.0 + xi * (1.0 - 2.0 * s)))
        else:
            slope, offset = silut_constants(threshold)
            t = math.tanh(slope * (xi - threshold))
            values.append(t + offset)
            slopes.append(slope * (1.0 - t * t))
            curvatures.append(-2.0 * slope**2 * t * (1.0 - t * t))
    return tuple(np.array(v) for v in (values, slopes, curvatures))


def check(value, slope, curvature, threshold: float | None) -> None:
    expected = closed_forms(X, threshold)
    names = ("value", "slope", "curvature")
    for name, got, want in zip(names, (value, slope, curvature), expected, strict=True):
        assert np.all(np.isfinite(got)), name
        np.testing.assert_allclose(got, want, rtol=1e-13, atol=1e-14, err_msg=name)


@pytest.mark.parametrize("threshold", [None, THRESHOLD])
def test_jax_kernels(threshold):
    jax = pytest.importorskip("jax")
    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp

    from dpa.dpmodel.native import jax as kernels

    fn = (
        kernels.silu if threshold is None else kernels.silut(threshold, *silut_constants(threshold))
    )

    def slope_of(x):
        return jax.grad(lambda v: jnp.sum(fn(v)))(x)

    x = jnp.asarray(X)
    curvature = jax.grad(lambda v: jnp.sum(slope_of(v)))(x)
    check(np.asarray(fn(x)), np.asarray(slope_of(x)), np.asarray(curvature), threshold)


@pytest.mark.parametrize("threshold", [None, THRESHOLD])
def test_torch_kernels(threshold):
    torch = pytest.importorskip("torch")
    from dpa.dpmodel.native import torch as kernels

    fn = (
        kernels.silu if threshold is None else kernels.silut(threshold, *silut_constants(threshold))
    )
    x = torch.tensor(X, dtype=torch.float64, requires_grad=True)
    value = fn(x)
    (slope,) = torch.autograd.grad(value.sum(), x, create_graph=True)
    (curvature,) = torch.autograd.grad(slope.sum(), x)
    check(*(t.detach().numpy() for t in (value, slope, curvature)), threshold)
