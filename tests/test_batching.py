"""Multi-system batch sampling: DeePMD-kit batch-size rules, system probabilities, epochs, restarts."""

from __future__ import annotations

import json

import numpy as np
import pytest

from dpa.data.batching import (
    BatchSampler,
    auto_batch_sizes,
    system_probabilities,
    validation_batches,
)
from dpa.errors import ConfigError, DataError


def test_auto_batch_size_rules():
    natoms = [1, 5, 31, 32, 33, 100, 192]
    # auto:N -> smallest b with b * natoms >= N (deepmd/pt/utils/dataloader.py, ceiling rule)
    assert auto_batch_sizes("auto", natoms) == [32, 7, 2, 1, 1, 1, 1]
    assert auto_batch_sizes("auto:32", natoms) == auto_batch_sizes("auto", natoms)
    assert auto_batch_sizes("auto:192", natoms) == [192, 39, 7, 6, 6, 2, 1]
    # max:N -> largest b with b * natoms <= N, at least 1
    assert auto_batch_sizes("max:64", natoms) == [64, 12, 2, 2, 1, 1, 1]
    assert auto_batch_sizes(4, natoms) == [4] * len(natoms)
    assert auto_batch_sizes([1, 2], [3, 4]) == [1, 2]
    for bad in ("mixed:4", "auto:x", "auto:0", "max", "foo"):
        with pytest.raises(ConfigError, match="batch_size"):
            auto_batch_sizes(bad, natoms)
    with pytest.raises(ConfigError, match="batch_size has 1 entries but there are 2"):
        auto_batch_sizes([1], [3, 4])
    with pytest.raises(ConfigError, match="positive"):
        auto_batch_sizes(0, [3])


def test_system_probabilities():
    nb = [1, 3, 4, 2]
    np.testing.assert_allclose(system_probabilities(nb, "prob_uniform"), [0.25] * 4)
    np.testing.assert_allclose(system_probabilities(nb, "prob_sys_size"), [0.1, 0.3, 0.4, 0.2])
    # blocks: each block gets its weight (normalized), split in proportion to nbatch inside
    np.testing.assert_allclose(
        system_probabilities(nb, "prob_sys_size;0:2:0.5;2:4:0.5"),
        [0.5 * 1 / 4, 0.5 * 3 / 4, 0.5 * 4 / 6, 0.5 * 2 / 6],
    )
    np.testing.assert_allclose(
        system_probabilities(nb, "prob_sys_size;0:1:3;1:4:1"),
        [0.75, 0.25 * 3 / 9, 0.25 * 4 / 9, 0.25 * 2 / 9],
    )
    np.testing.assert_allclose(
        system_probabilities(nb, sys_probs=[1, 1, 2, 0]), [0.25, 0.25, 0.5, 0]
    )
    with pytest.raises(ConfigError, match="sys_probs has 3 entries but there are 4"):
        system_probabilities(nb, sys_probs=[0.2, 0.3, 0.5])
    with pytest.raises(ConfigError, match="sys_probs must be finite and non-negative"):
        system_probabilities(nb, sys_probs=[0.5, -0.1, 0.3, 0.3])
    with pytest.raises(ConfigError, match="auto_prob"):
        system_probabilities(nb, "prob_foo")
    with pytest.raises(ConfigError, match="start:end:weight"):
        system_probabilities(nb, "prob_sys_size;0:2")
    with pytest.raises(ConfigError, match="0 <= start < end <= 4"):
        system_probabilities(nb, "prob_sys_size;0:5:1")


def test_sampler_nbatches_and_probs_follow_pt_loader():
    s = BatchSampler([10, 7, 3], [4, 8, 64], batch_size="auto", rng=np.random.default_rng(0))
    assert s.batch_sizes == [8, 4, 1]
    assert s.nbatches == [2, 2, 3]  # ceil(nframes / bs): a last partial batch counts
    np.testing.assert_allclose(s.probs, [2 / 7, 2 / 7, 3 / 7])
    s = BatchSampler([10, 7, 3], [4, 8, 64], 3, rng=np.random.default_rng(0), drop_last=True)
    assert s.nbatches == [3, 2, 1]


def test_sampler_epochs_cover_every_frame_once():
    rng = np.random.default_rng(1)
    s = BatchSampler([10], [5], batch_size=3, rng=rng)
    seen = [s.next() for _ in range(8)]  # 4 batches per epoch: 3 + 3 + 3 + 1
    assert all(sid == 0 for sid, _ in seen)
    sizes = [len(f) for _, f in seen]
    assert sizes == [3, 3, 3, 1, 3, 3, 3, 1]
    for epoch in (seen[:4], seen[4:]):
        frames = np.concatenate([f for _, f in epoch])
        assert sorted(frames.tolist()) == list(range(10))
    assert not np.array_equal(
        np.concatenate([f for _, f in seen[:4]]), np.concatenate([f for _, f in seen[4:]])
    )
    s = BatchSampler([10], [5], batch_size=3, rng=np.random.default_rng(1), drop_last=True)
    assert [len(s.next()[1]) for _ in range(6)] == [3] * 6


def test_sampler_draws_systems_by_probability():
    s = BatchSampler(
        [100, 100, 100], [2, 2, 2], 1, sys_probs=[0.2, 0.0, 0.8], rng=np.random.default_rng(3)
    )
    counts = np.bincount([s.next()[0] for _ in range(4000)], minlength=3)
    assert counts[1] == 0
    assert abs(counts[0] / 4000 - 0.2) < 0.03


def test_sampler_is_deterministic_given_the_generator():
    def run(seed):
        s = BatchSampler([13, 5, 40], [3, 12, 6], "auto:16", rng=np.random.default_rng(seed))
        return [(i, f.tolist()) for i, f in (s.next() for _ in range(30))]

    assert run(7) == run(7)
    assert run(7) != run(8)


def test_state_restore_continues_bitwise():
    def make():
        return BatchSampler(
            [13, 5, 40], [3, 12, 6], "auto:16", "prob_uniform", rng=np.random.default_rng(42)
        )

    s = make()
    for _ in range(10):
        s.next()
    saved = json.loads(json.dumps(s.state()))  # plain python values survive a JSON round trip
    after = [(i, f.tolist()) for i, f in (s.next() for _ in range(10))]

    fresh = make()
    fresh.set_state(saved)
    again = [(i, f.tolist()) for i, f in (fresh.next() for _ in range(10))]
    assert again == after

    with pytest.raises(DataError, match="sampler state holds 3 systems"):
        BatchSampler([3], [1], 1, rng=np.random.default_rng(0)).set_state(saved)


def test_batch_larger_than_system_is_an_error():
    with pytest.raises(DataError, match=r"system 1: batch size 8 is larger than its 5 frames"):
        BatchSampler([20, 5], [4, 4], 8, rng=np.random.default_rng(0))
    # an auto rule may exceed a tiny system: the batch is then the whole system, as in DeePMD
    s = BatchSampler([20, 5], [1, 1], "auto", rng=np.random.default_rng(0))
    assert s.batch_sizes == [32, 32] and s.nbatches == [1, 1]
    sid, frames = s.next()
    assert sorted(frames.tolist()) == list(range([20, 5][sid]))
    with pytest.raises(DataError, match="system 0 has no frames"):
        BatchSampler([0], [3], 1)
    with pytest.raises(ConfigError, match="sys_probs"):
        BatchSampler([3, 3], [1, 1], 1, sys_probs=[1.0])


def test_validation_batches():
    s = BatchSampler([6, 4], [2, 2], 2, rng=np.random.default_rng(5))
    batches = validation_batches(s, 3)
    assert len(batches) == 3 and all(len(f) == 2 for _, f in batches)
    with pytest.raises(ConfigError, match="numb_btch"):
        validation_batches(s, 0)
