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

import pytest
from builders import xla_optimizations_off


@pytest.fixture(autouse=True)
def _fast_xla_compilation(request):
    if "f32" in request.node.name:
        yield
        return
    with xla_optimizations_off():
        yield
