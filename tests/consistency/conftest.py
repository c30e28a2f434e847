"""Keep the consistency tests fast: XLA compiles with most optimizations off here.

Every (model, system) pair needs its own jax compilation; with XLA's optimization passes that
costs 2-5 s for even a tiny model, without them about half. The numbers checked here do not
depend on XLA's optimizations (fusion changes round-off only, far below the tolerances);
tests/test_formats.py still evaluates on jax with the default settings.

float32 models keep the default settings: with most optimizations off, XLA:CPU (jaxlib 0.10.2)
computes NaN gradients for one float32 DPA-2 fixture whose default-compiled and eager
gradients are finite and match DeePMD-kit.
"""

from __future__ import annotations

import importlib.util

import pytest


@pytest.fixture(autouse=True)
def _fast_xla_compilation(request):
    if importlib.util.find_spec("jax") is None or "f32" in request.node.name:
        yield
        return
    import jax

    try:
        previous = jax.config.read("jax_disable_most_optimizations")
    except (AttributeError, KeyError):  # option gone in this jax: compile with the defaults
        yield
        return
    jax.config.update("jax_disable_most_optimizations", True)
    yield
    jax.config.update("jax_disable_most_optimizations", previous)
