"""Row blocks: DPA-1's attention cut into atom blocks (under jax) gives the numbers of one block."""

from __future__ import annotations

import numpy as np
import pytest

import dpa
from dpa.dpmodel.array_api import row_blocks

DPA1 = {
    "type_map": ["O", "H"],
    "descriptor": {
        "type": "se_atten",
        "sel": 60,
        "rcut": 4.5,
        "rcut_smth": 0.5,
        "neuron": [4, 8],
        "axis_neuron": 4,
        "attn": 8,
        "attn_layer": 2,
        "precision": "float64",
        "seed": 1,
    },
    "fitting_net": {"neuron": [8, 8], "precision": "float64", "seed": 1},
}


def test_blocks_cover_every_row_once() -> None:
    x = np.zeros(3)
    assert row_blocks(x, 10, 100) == [slice(0, 10)]  # NumPy has no row blocks
    jnp = pytest.importorskip("jax.numpy")
    pytest.importorskip("dpa.backends.jax.backend")
    y = jnp.zeros(3)
    budget = 6 << 20
    for nrows, per_row, count in ((192, 91_592, 3), (192, 1000, 1), (10_000, 91_592, 8)):
        blocks = row_blocks(y, nrows, per_row)
        assert len(blocks) == count
        covered = np.concatenate([np.arange(nrows)[b] for b in blocks])
        assert covered.tolist() == list(range(nrows))
        if count < 8:
            assert max(b.stop - b.start for b in blocks) * per_row <= budget


def test_blocked_attention_equals_one_block(get_system, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("jax")
    pytest.importorskip("torch")
    from dpa.dpmodel.native import jax as kernels

    system = get_system("water")
    model = dpa.build_model(DPA1, seed=0)
    ref = dpa.load_model(model, backend="torch").evaluate(system.coord, system.atype, system.box)
    # a budget of one byte: the most blocks allowed (8 of 24 atoms for 192 atoms)
    monkeypatch.setattr(kernels, "ROW_BLOCK_BYTES", 1)
    out = dpa.load_model(model, backend="jax").evaluate(system.coord, system.atype, system.box)
    np.testing.assert_allclose(out["energy"], ref["energy"], rtol=0, atol=1e-10)
    np.testing.assert_allclose(out["force"], ref["force"], rtol=0, atol=1e-10)
    np.testing.assert_allclose(out["virial"], ref["virial"], rtol=0, atol=1e-10)
