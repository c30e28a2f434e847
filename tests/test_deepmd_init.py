"""The same seeded input starts from the same weights as DeePMD-kit 3.2.0 (`dp --pt train`):
`build_model` against DeePMD-kit's initial models (tests/fixtures/init), and the NumPy copy of
torch's CPU normal draws against torch itself."""

from __future__ import annotations

import json

import numpy as np
import pytest
from builders import FIXTURES

import dpa
from dpa.dpmodel.torch_rng import TorchCpuGenerator, mix_seed
from dpa.dpmodel.trainable import trainable_flags
from dpa.model import build_model
from dpa.tree import split_variables

HERE = FIXTURES / "init"
CASES = json.loads((HERE / "cases.json").read_text())["cases"]


@pytest.mark.parametrize("case", sorted(CASES))
def test_build_model_draws_deepmd_kit_initial_weights(case: str) -> None:
    mine = build_model(CASES[case], seed=999).tree  # the sections' seeds decide, as in DeePMD-kit
    ref = dpa.io.load(HERE / f"{case}.dp").tree
    _, got = split_variables(mine)
    _, want = split_variables(ref)
    flags = trainable_flags(mine)
    assert sum(flags) > 5
    for a, b, trainable in zip(got, want, flags, strict=True):
        if trainable:
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-14, atol=1e-15)


def test_section_seed_missing_falls_back_to_the_run_seed() -> None:
    config = json.loads(json.dumps(CASES["dpa1_concat"]))
    del config["descriptor"]["seed"], config["fitting_net"]["seed"]
    a, b, c = (build_model(config, seed=s).tree for s in (7, 7, 8))
    np.testing.assert_array_equal(a["fitting"]["nets"]["networks"][0]["layers"][0]["@variables"]["w"],
                                  b["fitting"]["nets"]["networks"][0]["layers"][0]["@variables"]["w"])  # fmt: skip
    assert not np.array_equal(
        a["descriptor"]["attention_layers"]["attention_layers"][0]["attention_layer"]["in_proj"]["@variables"]["w"],
        c["descriptor"]["attention_layers"]["attention_layers"][0]["attention_layer"]["in_proj"]["@variables"]["w"],
    )  # fmt: skip


def test_normal_draws_equal_torch() -> None:
    torch = pytest.importorskip("torch")
    for path in ([0, 1, 1, 7], [3, 0, 0, 1, 7], [5, 123456789]):
        seed = mix_seed(path)
        gen = torch.Generator().manual_seed(seed)
        mine = TorchCpuGenerator(seed)
        # sizes >= 16 (blocks of 16, a partial last block) and < 16 (cached polar pairs)
        for shape, mean, std in (((17, 16), 0.0, 0.17), ((5,), 0.1, 0.001), ((1,), 0.0, 1.0),
                                 ((96, 64), 0.0, 0.08), ((3,), 0.0, 1.0), ((16,), 0.0, 1.0)):  # fmt: skip
            want = torch.empty(shape, dtype=torch.float64).normal_(mean, std, generator=gen)
            np.testing.assert_allclose(
                mine.normal(shape, mean, std), want.numpy(), rtol=1e-14, atol=1e-16
            )


def test_uniform_draws_equal_torch() -> None:
    torch = pytest.importorskip("torch")
    seed = mix_seed([3, 21])
    gen = torch.Generator().manual_seed(seed)
    mine = TorchCpuGenerator(seed)
    for shape, low, high in (((36, 8), -0.38, 0.38), ((7,), 0.0, 1.0), ((4, 16), -2.0, 5.0)):
        want = torch.empty(shape, dtype=torch.float64).uniform_(low, high, generator=gen)
        np.testing.assert_allclose(
            mine.uniform(shape, low, high), want.numpy(), rtol=1e-15, atol=1e-16
        )
