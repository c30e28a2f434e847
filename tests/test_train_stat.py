"""dpa.train.stat: descriptor davg/dstd and the energy bias, against DeePMD-kit and by hand."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
from builders import FIXTURES, WATER

import dpa
from dpa.data.load import load_system
from dpa.data.system import System
from dpa.train.stat import (
    compute_env_statistics,
    env_blocks,
    fit_energy_bias,
    set_energy_bias,
    stat_frames,
)

FIXTURE = FIXTURES / "stat"
META = json.loads((FIXTURE / "stat_cases.json").read_text())
REF = np.load(FIXTURE / "stat_reference.npz")
TYPE_MAP = META["type_map"]
BLOCK_PATHS = {
    "se_e2_a": {"main": ()},
    "dpa1": {"main": ()},
    "dpa2": {
        "repinit": ("repinit_variable",),
        "repformer": ("repformers_variable",),
        "three_body": ("repinit_three_body_variable",),
    },
    "dpa3": {"repflow": ("repflow_variable",)},
}


def fixture_systems() -> list[System]:
    """The two systems the fixture was made from: bundled water and the non-periodic cluster."""
    water = load_system(WATER)
    cluster = System(
        path="cluster",
        type_map=list(TYPE_MAP),
        atype=REF["cluster_atype"],
        coord=REF["cluster_coord"],
        energy=REF["cluster_energy"],
    )
    return [water, cluster]


def case_tree(name: str) -> dict:
    """The dpa model tree (fresh weights) of one fixture case."""
    config = {
        "type_map": list(TYPE_MAP),
        "fitting_net": dict(META["fitting_net"]),
        **copy.deepcopy(META["cases"][name]),
    }
    return dpa.build_model(config).tree


@pytest.mark.parametrize("name", list(META["cases"]))
def test_matches_deepmd(name: str, env_statistics) -> None:
    """davg/dstd of every block and out_bias agree with DeePMD-kit 3.2.0 on the same frames."""
    tree = case_tree(name)
    systems = fixture_systems()
    nbatch, batch_size = META["nbatch"], META["batch_size"]
    new = compute_env_statistics(tree, systems, nbatch, batch_size)
    bias = fit_energy_bias(new, systems, nbatch, batch_size)
    new = set_energy_bias(new, bias)
    worst = 0.0
    for block, path in BLOCK_PATHS[name].items():
        node = new["descriptor"]
        for key in path:
            node = node[key]
        for what in ("davg", "dstd"):
            ref = REF[f"{name}/{block}/{what}"]
            got = np.asarray(node["@variables"][what])
            np.testing.assert_allclose(got, ref, rtol=0, atol=1e-10, err_msg=f"{block}.{what}")
            worst = max(worst, float(np.max(np.abs(got - ref))))
    ref_bias = REF[f"{name}/out_bias"]
    np.testing.assert_allclose(new["@variables"]["out_bias"], ref_bias, rtol=1e-10, atol=1e-10)
    worst = max(worst, float(np.max(np.abs(new["@variables"]["out_bias"] - ref_bias))))
    print(f"{name}: max |dpa - DeePMD-kit| = {worst:.3g}")
    # the input tree is left untouched
    assert all(np.all(v["davg"] == 0) for v in env_statistics(tree["descriptor"]))


def small_tree(**descriptor) -> dict:
    """A small se_e2_a or dpa1 model over O, H, C."""
    base = {"rcut": 4.0, "rcut_smth": 0.5, "neuron": [4], "axis_neuron": 2}
    config = {
        "type_map": ["O", "H", "C"],
        "descriptor": {**base, **descriptor},
        "fitting_net": {"neuron": [4]},
    }
    return dpa.build_model(config).tree


def brute_moments(system: System, rcut: float, rcut_smth: float, nsel: int) -> np.ndarray:
    """Per-type [Σ R̃_r, Σ R̃_r², Σ R̃_a, Σ R̃_a²] of a non-periodic system, by explicit loops."""
    out = np.zeros((3, 4))
    for x in system.coord:
        for i in range(system.natoms):
            d = x - x[i]
            r = np.linalg.norm(d, axis=1)
            order = [j for j in np.argsort(r, kind="stable") if j != i and r[j] <= rcut][:nsel]
            for j in order:
                u = min(max((r[j] - rcut_smth) / (rcut - rcut_smth), 0.0), 1.0)
                w = u**3 * (-6 * u**2 + 15 * u - 10) + 1
                env = w * np.concatenate([[1 / r[j]], d[j] / r[j] ** 2])
                t = system.atype[i]
                out[t] += [env[0], env[0] ** 2, env[1:].sum(), (env[1:] ** 2).sum()]
    return out


def test_nonperiodic_by_hand() -> None:
    """A box-less system: mean and stds equal an independent loop over atoms and neighbors."""
    system = fixture_systems()[1].frames(slice(0, 2))
    tree = small_tree(type="dpa1", sel=30, set_davg_zero=False, attn_layer=0)
    new = compute_env_statistics(tree, [system], nbatch=None)
    var = new["descriptor"]["@variables"]
    sums = brute_moments(system, 4.0, 0.5, 30)
    for t in (0, 1):
        n = np.count_nonzero(system.atype == t) * system.nframes * 30
        mean = sums[t, 0] / n
        std_r = np.sqrt(sums[t, 1] / n - mean**2)
        mean_a = sums[t, 2] / (3 * n)
        std_a = np.sqrt(sums[t, 3] / (3 * n) - mean_a**2)
        np.testing.assert_allclose(var["davg"][t], np.tile([mean, 0, 0, 0], (30, 1)), atol=1e-14)
        np.testing.assert_allclose(var["dstd"][t, :, 0], std_r, rtol=1e-12)
        np.testing.assert_allclose(var["dstd"][t, :, 1:], std_a, rtol=1e-12)
    # C never occurs: davg 0, dstd 0.1
    assert np.all(var["davg"][2] == 0) and np.all(var["dstd"][2] == 0.1)


def test_absent_type_and_bias_zero() -> None:
    """A type without atoms gets std 0.1, davg 0 and energy bias 0."""
    system = load_system(WATER)
    tree = small_tree(type="se_e2_a", sel=[20, 40, 5], set_davg_zero=False)
    new = compute_env_statistics(tree, [system], nbatch=1)
    var = new["descriptor"]["@variables"]
    assert np.all(var["dstd"][2] == 0.1) and np.all(var["davg"][2] == 0)
    assert np.all(var["dstd"][:2] > 0.01) and np.all(var["davg"][:2, :, 0] > 0)
    bias = fit_energy_bias(new, [system], nbatch=None)
    assert bias.shape == (3,) and bias[2] == 0.0
    counts = np.array([64, 128])
    np.testing.assert_allclose(counts @ bias[:2], system.energy.mean(), rtol=1e-12)


def test_exclusion() -> None:
    """Excluded pairs count as zero: excluding every pair leaves mean 0 and std at its floor 0.01."""
    system = load_system(WATER)
    every = [[0, 0], [0, 1], [1, 1], [0, 2], [1, 2], [2, 2]]
    tree = small_tree(type="se_e2_a", sel=[20, 40, 5], set_davg_zero=False, exclude_types=every)
    var = compute_env_statistics(tree, [system], nbatch=1)["descriptor"]["@variables"]
    assert np.all(var["davg"] == 0)
    assert np.all(var["dstd"][:2] == 0.01)
    # model-level pair exclusion of O-H equals descriptor-level exclusion of O-H
    desc_level = small_tree(type="dpa1", sel=40, set_davg_zero=False, exclude_types=[[0, 1]])
    model_level = small_tree(type="dpa1", sel=40, set_davg_zero=False)
    model_level["pair_exclude_types"] = [[0, 1]]
    plain = small_tree(type="dpa1", sel=40, set_davg_zero=False)
    a, b, c = (
        compute_env_statistics(t, [system], nbatch=1)["descriptor"]["@variables"]
        for t in (desc_level, model_level, plain)
    )
    np.testing.assert_array_equal(a["davg"], b["davg"])
    np.testing.assert_array_equal(a["dstd"], b["dstd"])
    assert np.all(a["davg"][:2, :, 0] < c["davg"][:2, :, 0])


def test_set_davg_zero_and_dpa3_fixed_std() -> None:
    """set_davg_zero keeps davg (0) while dstd is computed; DPA-3 fix_stat_std skips the stats."""
    system = load_system(WATER)
    tree = small_tree(type="dpa1", sel=40, set_davg_zero=True)
    var = compute_env_statistics(tree, [system], nbatch=1)["descriptor"]["@variables"]
    assert np.all(var["davg"] == 0) and np.all(var["dstd"][:2] > 0.01)
    config = {
        "type_map": ["O", "H"],
        "descriptor": {
            "type": "dpa3",
            "repflow": {
                "n_dim": 4, "e_dim": 4, "a_dim": 4, "nlayers": 1, "e_rcut": 4.0,
                "e_rcut_smth": 3.5, "e_sel": 30, "a_rcut": 3.0, "a_rcut_smth": 2.5,
                "a_sel": 10, "axis_neuron": 2, "fix_stat_std": 0.25,
            },
        },
        "fitting_net": {"neuron": [4]},
    }  # fmt: skip
    tree = dpa.build_model(config).tree
    tree["descriptor"]["repflow_variable"]["@variables"]["dstd"][:] = 7.0
    new = compute_env_statistics(tree, [system], nbatch=1)
    var = new["descriptor"]["repflow_variable"]["@variables"]
    assert np.all(var["davg"] == 0) and np.all(var["dstd"] == 0.25)


def test_frames_and_blocks() -> None:
    """stat_frames takes the first nbatch*batch_size frames; DPA-2 lists its three blocks."""
    system = load_system(WATER)
    picked = stat_frames([system, system], nbatch=2, batch_size=[1, 3])
    assert [s.nframes for s in picked] == [2, 6]
    np.testing.assert_array_equal(picked[1].coord, system.coord[:6])
    assert stat_frames([system], nbatch=100)[0].nframes == system.nframes
    blocks = env_blocks(case_tree("dpa2")["descriptor"])
    assert [(b.rcut, b.nsel) for b in blocks] == [(5.0, 80), (3.0, 20), (3.5, 24)]


def test_bias_change_and_preset() -> None:
    """With predicted energies the fit returns the bias change; presets override their types."""
    water, cluster = fixture_systems()
    tree = small_tree(type="se_e2_a", sel=[20, 40, 5])
    true = np.array([-400.0, -20.0, 0.0])
    base = fit_energy_bias(tree, [water, cluster], nbatch=None)
    counts = [np.bincount(s.atype, minlength=3) @ true for s in (water, cluster)]
    predicted = [s.energy - c for s, c in zip((water, cluster), counts, strict=True)]
    change = fit_energy_bias(tree, [water, cluster], nbatch=None, predicted=predicted)
    np.testing.assert_allclose(change, true, atol=1e-8)
    assert not np.allclose(base, true)
    preset = fit_energy_bias(
        tree, [water, cluster], nbatch=None, preset_out_bias={"energy": [None, -7.0, None]}
    )
    assert preset[1] == -7.0 and preset[2] == 0.0
    ref = np.linalg.lstsq(
        np.array([[64.0], [np.count_nonzero(cluster.atype == 0)]]).repeat(
            [water.nframes, cluster.nframes], axis=0
        ),
        np.concatenate(
            [water.energy + 7.0 * 128, cluster.energy + 7.0 * np.count_nonzero(cluster.atype == 1)]
        ),
        rcond=None,
    )[0]
    np.testing.assert_allclose(preset[0], ref[0], rtol=1e-12)
    out = set_energy_bias(tree, preset)["@variables"]["out_bias"]
    assert out.shape == (1, 3, 1) and np.array_equal(out[0, :, 0], preset)
    assert np.all(tree["@variables"]["out_bias"] == 0)
