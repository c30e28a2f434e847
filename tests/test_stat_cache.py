"""The statistics cache (`training.stat_file`): the same davg/dstd bit for bit with and without
it, entries reused across runs and systems, stale data never read, and the read-only mode."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
from builders import DATA, WATER, dpa1, model_config

import dpa
from dpa.data.load import load_system
from dpa.errors import ConfigError, DataError
from dpa.train.stat import compute_env_statistics
from dpa.train.stat_cache import GROUP, StatCache


def _systems():
    water = load_system(WATER)
    molecule = DATA / "molecules_nopbc" / "C1H4O2"
    if not molecule.is_dir():
        pytest.skip("../shared/data is not available")
    return [water, load_system(molecule)]


def _tree():
    return dpa.build_model(model_config(dpa1(40), ["O", "H", "C"]), seed=1).tree


def _stats(tree):
    var = tree["descriptor"]["@variables"]
    return np.asarray(var["davg"]), np.asarray(var["dstd"])


def test_cached_statistics_equal_uncached_and_are_reused(tmp_path):
    systems, tree = _systems(), _tree()
    plain = _stats(compute_env_statistics(tree, systems, 2, [1, 3]))
    path = tmp_path / "stat.hdf5"
    first = StatCache(path)
    cached = _stats(compute_env_statistics(tree, systems, 2, [1, 3], first))
    first.save()
    assert (first.hits, first.computed) == (0, 2)
    for a, b in zip(plain, cached, strict=True):
        np.testing.assert_array_equal(a, b)
    second = StatCache(path, "read")  # every entry is there now
    again = _stats(compute_env_statistics(tree, systems, 2, [1, 3], second))
    assert (second.hits, second.computed) == (2, 0)
    for a, b in zip(plain, again, strict=True):
        np.testing.assert_array_equal(a, b)
    # one system reused in another combination: its entry is read, the new one computed
    third = StatCache(path)
    compute_env_statistics(tree, systems[:1], 2, [1], third)
    assert (third.hits, third.computed) == (1, 0)


def test_changed_frames_or_block_miss_the_cache(tmp_path):
    systems, tree = _systems(), _tree()
    path = tmp_path / "stat.hdf5"
    cache = StatCache(path)
    compute_env_statistics(tree, systems[:1], 2, [1], cache)
    cache.save()
    moved = systems[0].frames(slice(0, 2))
    moved.coord[0, 0, 0] += 0.01  # one coordinate of the same frames
    other = StatCache(path)
    compute_env_statistics(tree, [moved], None, 1, other)
    assert other.hits == 0 and other.computed == 1
    wider = dpa.build_model(model_config(dpa1(40, rcut=4.5), ["O", "H", "C"]), seed=1).tree
    third = StatCache(path)
    compute_env_statistics(wider, systems[:1], 2, [1], third)
    assert third.hits == 0 and third.computed == 1


def test_read_mode_needs_the_file_and_its_entries(tmp_path):
    systems, tree = _systems(), _tree()
    with pytest.raises(ConfigError, match="stat_file_mode 'read'"):
        StatCache(tmp_path / "absent.hdf5", "read")
    path = tmp_path / "stat.hdf5"
    cache = StatCache(path)
    compute_env_statistics(tree, systems[:1], 2, [1], cache)
    cache.save()
    with pytest.raises(DataError, match="no statistics for a system"):
        compute_env_statistics(tree, systems, 2, [1, 1], StatCache(path, "read"))


def test_a_foreign_stat_file_keeps_its_content(tmp_path):
    path = tmp_path / "deepmd_stat.hdf5"
    with h5py.File(path, "w") as f:  # what another program keeps in its stat file
        f.create_dataset("O H/stats", data=np.arange(3.0))
    cache = StatCache(path)
    compute_env_statistics(_tree(), _systems()[:1], 1, [1], cache)
    cache.save()
    with h5py.File(path, "r") as f:
        np.testing.assert_array_equal(f["O H/stats"][()], np.arange(3.0))
        assert len(f[GROUP]) == 1


def test_an_unreadable_stat_file_is_named(tmp_path):
    path = tmp_path / "stat.hdf5"
    path.write_text("not hdf5")
    with pytest.raises(DataError, match="stat.hdf5"):
        StatCache(path)
