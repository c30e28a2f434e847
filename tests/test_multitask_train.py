"""Multi-task training end to end (DeePMD-kit 3.2's `model_dict` / `shared_dict` input): torch
and jax runs agree, shared parts are one array in the file and stay so, pooled statistics,
restart, task choice by model_prob and num_epoch_dict, and input errors before anything is
written.

The data are a few frames of the shared DFT data, copied into a temporary folder: two water
frames (periodic, 192 atoms) and 2-4 frames of three small molecules (no box). Branch names
follow their data; model_dict lists them out of alphabetical order on purpose (the lcurve
columns follow model_dict, the case embedding the alphabetical rank).
"""

from __future__ import annotations

import copy
import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
from builders import (
    DATA,
    TYPE_MAP,
    dpa2,
    dpa3,
    env_statistics,
    read_lcurve,
    se_e2_a,
    skip_unless_installed,
    xla_optimizations_off,
)

import dpa
from dpa.errors import ConfigError
from dpa.multitask import MultiTaskModel
from dpa.train.outdir import LOCK_NAME
from dpa.train.stat import compute_env_statistics, fit_energy_bias

pytest.importorskip("torch")
from dpa.train.loop import train  # noqa: E402
from dpa.train.tasks import task_of_step  # noqa: E402

SEED = 3
LOSS = {"start_pref_e": 0.02, "limit_pref_e": 1, "start_pref_f": 1000, "limit_pref_f": 1}

# (name, folder under DATA, first frame, number of frames)
_SLICES = [
    ("water", "water/data_0", 0, 2),
    ("water_val", "water/data_3", 0, 1),
    ("c1h4o2", "molecules_nopbc/C1H4O2", 0, 4),
    ("c3h3o4", "molecules_nopbc/C3H3O4", 0, 4),
    ("c3h3o4_val", "molecules_nopbc/C3H3O4", 10, 2),
    ("c4h3o1", "molecules_nopbc/C4H3O1", 0, 4),
    ("c4h3o1_2", "molecules_nopbc/C4H3O1", 4, 2),
]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, str]:
    """{name: folder} of small deepmd/npy systems cut from the shared data."""
    root = tmp_path_factory.mktemp("mt_data")
    out = {}
    for name, sub, first, count in _SLICES:
        src, dst = DATA / sub, root / name
        if not src.is_dir():
            pytest.skip(f"shared data not found at {src}")
        (dst / "set.000").mkdir(parents=True)
        for extra in ("type.raw", "type_map.raw", "nopbc"):
            if (src / extra).exists():
                shutil.copyfile(src / extra, dst / extra)
        for array in (src / "set.000").glob("*.npy"):
            np.save(dst / "set.000" / array.name, np.load(array)[first : first + count])
        out[name] = str(dst)
    return out


def _section(data: dict[str, str], names: list[str], batch_size: int, **options) -> dict:
    return {"systems": [data[n] for n in names], "batch_size": batch_size, **options}


def _write(tmp: Path, model: dict, data_dict: dict, steps: int | None = 4, **training) -> Path:
    """input.json in `tmp`: `model` (shared_dict + model_dict), one energy+force loss per
    branch, exp lr 1e-3 -> 1e-5, seed SEED."""
    config = {
        "model": model,
        "learning_rate": {"start_lr": 1e-3, "stop_lr": 1e-5, "decay_steps": 2},
        "loss_dict": {name: dict(LOSS) for name in model["model_dict"]},
        "training": {
            **({} if steps is None else {"numb_steps": steps}),
            "seed": SEED,
            "disp_freq": 2,
            "save_freq": 2,
            "data_dict": data_dict,
            **training,
        },
    }
    tmp.mkdir(parents=True, exist_ok=True)
    path = tmp / "input.json"
    path.write_text(json.dumps(config))
    return path


# ---------------------------------------------------------------------------------------------
# The runs several tests look at


def dpa2_pair_input(tmp: Path, data: dict[str, str]) -> Path:
    """DPA-2 descriptor shared at level 0, own fittings; c3h3o4 with validation data."""
    des = dpa2(16, seed=1)
    des["repformer"]["nsel"] = 12  # the molecules have at most 10 atoms
    model = {
        "shared_dict": {"tm": list(TYPE_MAP), "des": des},
        "model_dict": {
            "c3h3o4": {"type_map": "tm", "descriptor": "des", "fitting_net": {"neuron": [8], "seed": 2}},
            "c1h4o2": {"type_map": "tm", "descriptor": "des", "fitting_net": {"neuron": [8], "seed": 3}},
        },
    }  # fmt: skip
    data_dict = {
        "c3h3o4": {
            "training_data": _section(data, ["c3h3o4"], 2),
            "validation_data": _section(data, ["c3h3o4_val"], 2),
        },
        "c1h4o2": {"training_data": _section(data, ["c1h4o2"], 2)},
    }
    return _write(tmp, model, data_dict, steps=4)


def dpa3_sharefit_input(tmp: Path, data: dict[str, str]) -> Path:
    """DPA-3 descriptor and fitting both shared, dim_case_embd 2."""
    fit = {"neuron": [8], "dim_case_embd": 2, "seed": 2}
    model = {
        "shared_dict": {"tm": list(TYPE_MAP), "des": dpa3(20, seed=1), "fit": fit},
        "type_map": "tm",  # a top-level default for every branch
        "model_dict": {
            "c3h3o4": {"descriptor": "des", "fitting_net": "fit"},
            "c1h4o2": {"descriptor": "des", "fitting_net": "fit"},
        },
    }
    data_dict = {
        "c3h3o4": {
            "training_data": _section(data, ["c3h3o4"], 2),
            "validation_data": _section(data, ["c3h3o4_val"], 2),
        },
        "c1h4o2": {"training_data": _section(data, ["c1h4o2"], 2)},
    }
    return _write(tmp, model, data_dict, steps=4)


DPA2_DESCRIPTOR = dpa2(40, seed=1)
DPA2_DESCRIPTOR["repinit"]["set_davg_zero"] = False  # davg from data too (repformer: zero)


def dpa2_three_input(tmp: Path, data: dict[str, str]) -> Path:
    """Three branches over one DPA-2 descriptor: water (base) and mol at level 0, lone at
    level 1 (type embedding only); own fittings."""
    fit = {"neuron": [8]}
    model = {
        "shared_dict": {"tm": list(TYPE_MAP), "des": DPA2_DESCRIPTOR},
        "model_dict": {
            "water": {"type_map": "tm", "descriptor": "des", "fitting_net": {**fit, "seed": 2}},
            "mol": {"type_map": "tm", "descriptor": "des", "fitting_net": {**fit, "seed": 3}},
            "lone": {"type_map": "tm", "descriptor": "des:1", "fitting_net": {**fit, "seed": 4}},
        },
    }
    data_dict = {
        "water": {
            "training_data": _section(data, ["water"], 1),
            "validation_data": _section(data, ["water_val"], 1),
        },
        "mol": {"training_data": _section(data, ["c1h4o2", "c3h3o4"], 2)},
        "lone": {"training_data": _section(data, ["c4h3o1"], 2)},
    }
    return _write(tmp, model, data_dict, steps=6, save_freq=3)


@pytest.fixture(scope="module")
def three_run(tmp_path_factory, data) -> tuple[Path, Path]:
    """(input, output folder) of the torch run of dpa2_three_input."""
    tmp = tmp_path_factory.mktemp("three")
    inp = dpa2_three_input(tmp, data)
    train(inp, "torch", tmp / "out")
    return inp, tmp / "out"


# ---------------------------------------------------------------------------------------------
# Helpers


def _leaves(node, path=()):
    """(path, array) of every array below `node`, in tree order."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _leaves(value, (*path, key))
    elif isinstance(node, list | tuple):
        for i, value in enumerate(node):
            yield from _leaves(value, (*path, i))
    elif isinstance(node, np.ndarray):
        yield path, node


def _pairs(a: dict, b: dict):
    """(path, array of a, array of b) over the arrays of two trees of the same layout."""
    left, right = list(_leaves(a)), list(_leaves(b))
    assert [p for p, _ in left] == [p for p, _ in right]
    for (path, x), (_, y) in zip(left, right, strict=True):
        yield path, x, y


def _compare_runs(a: Path, b: Path, rtol: float, atol: float) -> None:
    """Two output folders of the same multi-task input: same lcurve header, same numbers
    (rtol), same final arrays branch by branch (atol)."""
    curves = [(d / "lcurve.out").read_text().splitlines() for d in (a, b)]
    assert curves[0][:2] == curves[1][:2]
    rows = [read_lcurve(d / "lcurve.out") for d in (a, b)]
    assert rows[0].shape == rows[1].shape
    np.testing.assert_allclose(rows[0], rows[1], rtol=rtol)
    models = [_final(d) for d in (a, b)]
    assert all(isinstance(m, MultiTaskModel) for m in models)
    assert models[0].names == models[1].names
    for name in models[0].names:
        for path, x, y in _pairs(models[0].branches[name].tree, models[1].branches[name].tree):
            np.testing.assert_allclose(x, y, rtol=0, atol=atol, err_msg=f"{name} {path}")


def _final(out: Path) -> MultiTaskModel:
    """The final model of an output folder (model.pth or model.jax)."""
    (path,) = [p for p in (out / "model.pth", out / "model.jax") if p.exists()]
    model = dpa.io.load_any(path)
    assert isinstance(model, MultiTaskModel)
    return model


def _both_tasks_step(inp: Path) -> None:
    """The run's steps draw every branch (else the comparison misses a branch's update)."""
    raw = json.loads(inp.read_text())
    n = len(raw["model"]["model_dict"])
    steps = raw["training"]["numb_steps"]
    drawn = {task_of_step(SEED, s, np.full(n, 1.0 / n)) for s in range(steps)}
    assert drawn == set(range(n))


def _nothing_written(out: Path) -> None:
    """Nothing but the run's lock file in the output folder (or no folder at all)."""
    assert not out.exists() or [p.name for p in out.iterdir()] in ([], [LOCK_NAME])


# ---------------------------------------------------------------------------------------------
# 1. torch and jax


@pytest.mark.parametrize(
    ("make_input", "restart_jax"),
    [(dpa2_pair_input, False), (dpa3_sharefit_input, True)],
    ids=["dpa2", "dpa3_sharefit"],
)
def test_torch_and_jax_give_the_same_run(tmp_path, data, make_input, restart_jax):
    skip_unless_installed("jax", training=True)
    inp = make_input(tmp_path, data)
    _both_tasks_step(inp)
    train(inp, "torch", tmp_path / "torch")
    with xla_optimizations_off():
        train(inp, "jax", tmp_path / "jax")
    _compare_runs(tmp_path / "torch", tmp_path / "jax", rtol=1e-8, atol=1e-10)
    # the last steps moved the shared descriptor: the runs did train, and alike
    middle, last = dpa.io.load_any(tmp_path / "torch/model.ckpt-2.pth"), _final(tmp_path / "torch")
    name = last.names[0]
    trees = [m.branches[name].tree["descriptor"] for m in (middle, last)]
    assert any(not np.array_equal(x, y) for _, x, y in _pairs(*trees))
    # the jax file keeps the descriptor as one set of arrays too
    jax_model = _final(tmp_path / "jax")
    a, b = (jax_model.branches[n].tree["descriptor"] for n in jax_model.names)
    assert all(x is y for _, x, y in _pairs(a, b))
    if not restart_jax:  # (one jax restart is enough: each costs new compilations)
        return
    # a jax restart from the middle checkpoint continues the same run, bitwise
    part = tmp_path / "part"
    part.mkdir()
    for file in ("model.ckpt-2.jax", "lcurve.out"):
        shutil.copyfile(tmp_path / "jax" / file, part / file)
    with xla_optimizations_off():
        train(inp, "jax", part, restart=str(part / "model.ckpt-2.jax"))
    assert (part / "lcurve.out").read_text() == (tmp_path / "jax" / "lcurve.out").read_text()
    _compare_runs(part, tmp_path / "jax", rtol=0, atol=0)


# ---------------------------------------------------------------------------------------------
# 2. shared arrays: stored once, shared after training; what stays per branch


def test_shared_descriptor_levels_in_the_final_file(three_run):
    _, out = three_run
    model = _final(out)
    assert model.names == ["water", "mol", "lone"]
    trees = {name: model.branches[name].tree for name in model.names}
    # level 0: every descriptor array of mol is water's (DPA-2 without tebd_transform)
    pairs = list(_pairs(trees["water"]["descriptor"], trees["mol"]["descriptor"]))
    assert len(pairs) > 10
    assert all(x is y for _, x, y in pairs)
    # level 1: only the type embedding
    for path, x, y in _pairs(trees["water"]["descriptor"], trees["lone"]["descriptor"]):
        assert (x is y) == (path[0] == "type_embedding"), path
    assert any(p[0] == "type_embedding" for p, _, _ in pairs)
    # own fittings and energy shifts, all trained or fitted to different values
    for a, b in (("water", "mol"), ("water", "lone"), ("mol", "lone")):
        for path, x, y in _pairs(trees[a]["fitting"], trees[b]["fitting"]):
            assert x is not y, (a, b, path)
            if path[0] == "nets":  # bias_atom_e stays 0: the energy shift is out_bias
                assert not np.array_equal(x, y), (a, b, path)
        assert not np.array_equal(
            trees[a]["@variables"]["out_bias"], trees[b]["@variables"]["out_bias"]
        )
    # stored once: the file's parameter count counts the shared arrays once
    per_branch = [model.branches[n].num_params for n in model.names]
    shared = sum(x.size for _, x, _ in pairs)
    type_embedding = sum(x.size for p, x, _ in pairs if p[0] == "type_embedding")
    assert model.num_params == sum(per_branch) - shared - type_embedding
    # each checkpoint keeps the sharing too
    ckpt = dpa.io.load_any(out / "model.ckpt-3.pth")
    x, y = (ckpt.branches[n].tree["descriptor"]["repinit_variable"] for n in ("water", "mol"))
    assert x["@variables"]["dstd"] is y["@variables"]["dstd"]


def test_shared_fitting_and_case_embedding(tmp_path, data):
    inp = dpa3_sharefit_input(tmp_path, data)
    train(inp, "torch", tmp_path / "out")
    for path in (tmp_path / "out" / "model.pth", tmp_path / "out" / "model.ckpt-2.pth"):
        model = dpa.io.load_any(path)
        a, b = (model.branches[n].tree for n in ("c3h3o4", "c1h4o2"))
        assert all(x is y for _, x, y in _pairs(a["descriptor"], b["descriptor"]))
        for key, x, y in _pairs(a["fitting"], b["fitting"]):
            own = key[-1] in ("bias_atom_e", "case_embd")
            assert (x is y) != own, key
        assert not np.array_equal(a["@variables"]["out_bias"], b["@variables"]["out_bias"])
        # one-hot by alphabetical rank (c1h4o2 first), exactly as set: training leaves it
        np.testing.assert_array_equal(b["fitting"]["@variables"]["case_embd"], [1.0, 0.0])
        np.testing.assert_array_equal(a["fitting"]["@variables"]["case_embd"], [0.0, 1.0])
        assert model.num_params < sum(model.branches[n].num_params for n in model.names)


# ---------------------------------------------------------------------------------------------
# 3. restart


def test_restart_from_the_middle_checkpoint_is_bitwise_the_same_run(tmp_path, three_run):
    inp, full = three_run
    part = tmp_path / "part"
    part.mkdir()
    for name in ("model.ckpt-3.pth", "lcurve.out"):
        shutil.copyfile(full / name, part / name)
    train(inp, "torch", part, restart=str(part / "model.ckpt-3.pth"))
    assert (part / "lcurve.out").read_text() == (full / "lcurve.out").read_text()
    _compare_runs(part, full, rtol=0, atol=0)
    for name in ("model.pth", "model.ckpt-6.pth"):
        a, b = (dpa.io.load_any(d / name) for d in (part, full))
        for branch in a.names:
            for path, x, y in _pairs(a.branches[branch].data, b.branches[branch].data):
                np.testing.assert_array_equal(x, y, err_msg=f"{name} {branch} {path}")


# ---------------------------------------------------------------------------------------------
# 4. task choice and the lcurve layout


def test_lcurve_columns_follow_deepmd_kit(three_run):
    _, out = three_run
    lines = (out / "lcurve.out").read_text().splitlines()
    header = ["step"]
    header += [f"{k}_{s}_water" for k in ("rmse", "rmse_e", "rmse_f") for s in ("val", "trn")]
    header += [f"{k}_trn_mol" for k in ("rmse", "rmse_e", "rmse_f")]
    header += [f"{k}_trn_lone" for k in ("rmse", "rmse_e", "rmse_f")]
    assert lines[0].split() == ["#", *header, "lr"]
    assert lines[1] == "# If there is no available reference data, rmse_*_{val,trn} will print nan"
    rows = read_lcurve(out / "lcurve.out")
    assert rows.shape == (4, len(header) + 1)
    assert rows[:, 0].tolist() == [1, 2, 4, 6]
    assert np.isfinite(rows).all()  # every branch has a training value at every display


def _two_branch_input(tmp: Path, data: dict[str, str], steps: int | None = 4, **training) -> Path:
    """A cheap se_e2_a with a shared descriptor: branch a on c1h4o2, b on c3h3o4 + c4h3o1."""
    model = {
        "shared_dict": {"des": se_e2_a([4, 4, 4], seed=1)},
        "type_map": list(TYPE_MAP),
        "model_dict": {
            "a": {"descriptor": "des", "fitting_net": {"neuron": [4], "seed": 2}},
            "b": {"descriptor": "des", "fitting_net": {"neuron": [4], "seed": 3}},
        },
    }
    data_dict = {
        "a": {"training_data": _section(data, ["c1h4o2"], 2)},
        "b": {"training_data": _section(data, ["c3h3o4", "c4h3o1"], 2)},
    }
    return _write(tmp, model, data_dict, steps=steps, **training)


@pytest.fixture
def record_tasks(monkeypatch) -> list[str]:
    """The task of every torch training step, in order."""
    from dpa.backends.torch.train import TorchTrainer

    real, tasks = TorchTrainer.step, []

    def step(self, *args, task=None, **kwargs):
        tasks.append(task)
        return real(self, *args, task=task, **kwargs)

    monkeypatch.setattr(TorchTrainer, "step", step)
    return tasks


def _probabilities(caplog) -> str:
    (line,) = [r.getMessage() for r in caplog.records if "task probabilities" in r.getMessage()]
    return line.split("task probabilities: ")[1]


def test_a_branch_of_weight_zero_is_never_trained(tmp_path, data, record_tasks, caplog):
    caplog.set_level(logging.INFO, logger="dpa.train")
    inp = _two_branch_input(
        tmp_path, data, steps=6, model_prob={"a": 1, "b": 0}, save_freq=1, max_ckpt_keep=6
    )
    train(inp, "torch", tmp_path / "out")
    assert record_tasks == ["a"] * 6
    assert _probabilities(caplog) == "a 1.000, b 0.000"
    first, last = (dpa.io.load_any(tmp_path / "out" / f"model.ckpt-{s}.pth") for s in (1, 6))
    fits = {n: (first.branches[n].tree["fitting"], last.branches[n].tree["fitting"]) for n in "ab"}
    assert all(np.array_equal(x, y) for _, x, y in _pairs(*fits["b"]))
    assert not all(np.array_equal(x, y) for _, x, y in _pairs(*fits["a"]))
    # b is still shown: a fresh batch evaluated at every display
    rows = read_lcurve(tmp_path / "out" / "lcurve.out")
    assert np.isfinite(rows).all() and rows.shape[1] == 1 + 3 + 3 + 1


def test_tasks_are_drawn_with_model_prob(tmp_path, data, record_tasks, caplog):
    caplog.set_level(logging.INFO, logger="dpa.train")
    inp = _two_branch_input(tmp_path, data, steps=12, model_prob={"a": 1, "b": 3})
    train(inp, "torch", tmp_path / "out")
    assert _probabilities(caplog) == "a 0.250, b 0.750"
    probs = np.array([0.25, 0.75])
    assert record_tasks == ["ab"[task_of_step(SEED, s, probs)] for s in range(12)]
    assert set(record_tasks) == {"a", "b"}
    # the draw has the asked frequencies and depends on the step, not on what ran before
    draws = np.array([task_of_step(SEED, s, probs) for s in range(4000)])
    assert abs(draws.mean() - 0.75) < 4 * np.sqrt(0.75 * 0.25 / 4000)
    again = [task_of_step(SEED, s, probs) for s in range(3000, 4000)]
    assert again == draws[3000:].tolist()
    assert draws.tolist() != [task_of_step(SEED + 1, s, probs) for s in range(4000)]


def test_without_model_prob_a_branch_weighs_its_number_of_systems(tmp_path, data, caplog):
    caplog.set_level(logging.INFO, logger="dpa.train")
    train(_two_branch_input(tmp_path, data, steps=1), "torch", tmp_path / "out")
    assert _probabilities(caplog) == "a 0.333, b 0.667"


# ---------------------------------------------------------------------------------------------
# 5. pooled statistics, own energy shifts


def _systems(data: dict[str, str], names: list[str]) -> list:
    return [dpa.data.load_system(data[n]) for n in names]


def test_statistics_pool_the_level0_branches(three_run, data):
    _, out = three_run
    model = _final(out)
    fresh = dpa.build_model(
        {"type_map": list(TYPE_MAP), "descriptor": DPA2_DESCRIPTOR, "fitting_net": {"neuron": [8]}}
    ).tree
    # water (base) and mol share the descriptor at level 0: one set of statistics over both
    # branches' data (10 batches of each system: all frames), as DeePMD-kit's merge
    pooled = compute_env_statistics(
        fresh, _systems(data, ["water", "c1h4o2", "c3h3o4"]), 10, [1, 2, 2]
    )
    water = compute_env_statistics(fresh, _systems(data, ["water"]), 10, 1)
    lone = compute_env_statistics(fresh, _systems(data, ["c4h3o1"]), 10, 2)
    for branch, want in (("water", pooled), ("mol", pooled), ("lone", lone)):
        got = env_statistics(model.branches[branch].tree["descriptor"])
        expected = env_statistics(want["descriptor"])
        assert len(got) == len(expected) == 2  # repinit, repformer
        for g, e in zip(got, expected, strict=True):
            np.testing.assert_allclose(g["dstd"], e["dstd"], rtol=1e-12, err_msg=branch)
            np.testing.assert_allclose(g["davg"], e["davg"], rtol=1e-12, err_msg=branch)
    # the pooled statistics are not the base's own, nor constant
    for p, w in zip(
        env_statistics(pooled["descriptor"]), env_statistics(water["descriptor"]), strict=True
    ):
        assert not np.allclose(p["dstd"], w["dstd"])
        assert np.ptp(p["dstd"][:2]) > 0.01
    repinit = env_statistics(pooled["descriptor"])[0]
    assert np.abs(repinit["davg"][:, :, 0]).min() > 0.01
    assert not np.allclose(repinit["davg"], env_statistics(water["descriptor"])[0]["davg"])
    # the energy shift is each branch's own least-squares fit
    for branch, names, batch in (
        ("water", ["water"], 1),
        ("mol", ["c1h4o2", "c3h3o4"], 2),
        ("lone", ["c4h3o1"], 2),
    ):
        want = fit_energy_bias(fresh, _systems(data, names), 10, batch)
        got = model.branches[branch].tree["@variables"]["out_bias"]
        np.testing.assert_allclose(got[0, :, 0], want, rtol=1e-12, atol=1e-12, err_msg=branch)


# ---------------------------------------------------------------------------------------------
# 6. input errors, before anything is written


def _set(path: str, value):
    def edit(raw: dict) -> None:
        *parents, last = path.split(".")
        node = raw
        for key in parents:
            node = node[key]
        node[last] = value

    return edit


def _drop(path: str):
    def edit(raw: dict) -> None:
        *parents, last = path.split(".")
        node = raw
        for key in parents:
            node = node[key]
        del node[last]

    return edit


def _rename_b(new: str):
    def edit(raw: dict) -> None:
        for section in (raw["model"]["model_dict"], raw["loss_dict"], raw["training"]["data_dict"]):
            section[new] = section.pop("b")

    return edit


def _epochs_with_steps(raw: dict) -> None:
    raw["training"]["num_epoch_dict"] = {"a": 1, "b": 1}


def _epochs_with_stop_batch(raw: dict) -> None:
    raw["training"]["stop_batch"] = raw["training"].pop("numb_steps")
    raw["training"]["num_epoch_dict"] = {"a": 1, "b": 1}


def _numb_epoch(raw: dict) -> None:
    raw["training"]["numb_epoch"] = raw["training"].pop("numb_steps")


BAD_INPUTS = {
    "model_prob missing a branch": (
        _set("training.model_prob", {"a": 1}),
        r"training\.model_prob has no entry for branch\(es\) \['b'\]",
    ),
    "model_prob naming an unknown branch": (
        _set("training.model_prob", {"a": 1, "b": 1, "c": 1}),
        r"training\.model_prob has entries for \['c'\], which are not branches",
    ),
    "data_dict missing a branch": (
        _drop("training.data_dict.b"),
        r"training\.data_dict has no entry for branch\(es\) \['b'\]",
    ),
    "different dim_case_embd": (
        _set("model.model_dict.b.fitting_net.dim_case_embd", 2),
        r"fitting_net\.dim_case_embd differs across branches \(a: 0; b: 2\)",
    ),
    "different data_stat_protect": (
        _set("model.model_dict.b.data_stat_protect", 0.1),
        r"data_stat_protect differs across branches \(a: 0\.01; b: 0\.1\)",
    ),
    "a missing shared_dict key": (
        _set("model.model_dict.b.descriptor", "dez"),
        r"model\.model_dict\.b\.descriptor = 'dez' names no entry of model\.shared_dict",
    ),
    "a branch named RANDOM": (
        _rename_b("RANDOM"),
        r"model\.model_dict\.RANDOM: 'RANDOM' is reserved",
    ),
    "a duplicate alias": (
        lambda raw: [
            _set("model.model_dict.a.model_branch_alias", ["x"])(raw),
            _set("model.model_dict.b.model_branch_alias", ["X"])(raw),
        ],
        r"model\.model_dict\.b\.model_branch_alias 'X' is already the name or an alias of branch 'a'",
    ),
    "an alias naming another branch": (
        _set("model.model_dict.b.model_branch_alias", ["a"]),
        r"model_branch_alias 'a' is already the name or an alias of branch 'a'",
    ),
    "num_epoch_dict with numb_steps": (
        _epochs_with_steps,
        r"training\.num_epoch_dict .* without numb_steps and model_prob \(training\.numb_steps",
    ),
    "num_epoch_dict with stop_batch": (
        _epochs_with_stop_batch,
        r"without numb_steps and model_prob \(training\.stop_batch is set\)",
    ),
    "num_epoch_dict with model_prob": (
        lambda raw: [
            _drop("training.numb_steps")(raw),
            _set("training.num_epoch_dict", {"a": 1, "b": 1})(raw),
            _set("training.model_prob", {"a": 1, "b": 1})(raw),
        ],
        r"without numb_steps and model_prob \(training\.model_prob is set\)",
    ),
    "no run length": (
        _drop("training.numb_steps"),
        r"a multi-task run needs training\.numb_steps, or training\.num_epoch_dict",
    ),
    "numb_epoch": (_numb_epoch, r"training\.numb_epoch is for single-task runs"),
    "an alias RANDOM": (
        _set("model.model_dict.a.model_branch_alias", ["random"]),
        r"model\.model_dict\.a\.model_branch_alias 'random': 'RANDOM' is reserved",
    ),
    "level 1 on se_e2_a": (
        _set("model.model_dict.b.descriptor", "des:1"),
        r"model\.model_dict\.b\.descriptor = 'des:1': level 1 is not defined",
    ),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_multitask_inputs_are_refused_before_writing(tmp_path, data, case):
    edit, message = BAD_INPUTS[case]
    inp = _two_branch_input(tmp_path, data, steps=2)
    raw = json.loads(inp.read_text())
    good = copy.deepcopy(raw)
    edit(raw)
    assert raw != good
    inp.write_text(json.dumps(raw))
    with pytest.raises(ConfigError, match=message):
        train(inp, "torch", tmp_path / "out")
    _nothing_written(tmp_path / "out")


# ---------------------------------------------------------------------------------------------
# 7. num_epoch_dict


def test_num_epoch_dict_sets_the_steps_and_the_task_probabilities(tmp_path, data, caplog):
    caplog.set_level(logging.INFO, logger="dpa.train")
    # a: 4 frames, batches of 2: 2 batches per epoch. b: 4 + 2 frames, batches of 1, drawn
    # uniformly: ceil(max(4 / 0.5, 2 / 0.5)) = 8 batches per epoch (DeePMD-kit's per-task total)
    model = {
        "shared_dict": {"des": se_e2_a([4, 4, 4], seed=1)},
        "type_map": list(TYPE_MAP),
        "model_dict": {
            "a": {"descriptor": "des", "fitting_net": {"neuron": [4], "seed": 2}},
            "b": {"descriptor": "des", "fitting_net": {"neuron": [4], "seed": 3}},
        },
    }
    data_dict = {
        "a": {"training_data": _section(data, ["c1h4o2"], 2)},
        "b": {"training_data": _section(data, ["c4h3o1", "c4h3o1_2"], 1, auto_prob="prob_uniform")},
    }
    inp = _write(
        tmp_path, model, data_dict, steps=None, num_epoch_dict={"a": 0.75, "b": 0.3}, disp_freq=1
    )
    train(inp, "torch", tmp_path / "out")
    work = np.array([0.75 * 2, 0.3 * 8])  # epochs x batches per epoch: 1.5 + 2.4 = 3.9
    assert read_lcurve(tmp_path / "out" / "lcurve.out")[:, 0].tolist() == [1, 2, 3, 4]
    probs = work / work.sum()
    assert _probabilities(caplog) == f"a {probs[0]:.3f}, b {probs[1]:.3f}" == "a 0.385, b 0.615"
    assert (tmp_path / "out" / "checkpoint").read_text().strip() == "model.ckpt-4.pth"


def test_shared_fparam_statistics_are_weighted_by_model_prob(tmp_path, data):
    # a: fparam 1 on 4 frames, b: fparam 3 on 4 frames; model_prob b/a = 3, so DeePMD-kit's
    # merge counts b's frames 3 times: avg (4 * 1 + 3 * 4 * 3) / (4 + 3 * 4) = 2.5
    systems = {}
    for name, source, value in (("a", "c1h4o2", 1.0), ("b", "c3h3o4", 3.0)):
        folder = tmp_path / f"sys_{name}"
        shutil.copytree(data[source], folder)
        np.save(folder / "set.000" / "fparam.npy", np.full((4, 1), value))
        systems[name] = str(folder)
    fit = {"neuron": [4], "numb_fparam": 1, "seed": 2}
    model = {
        "shared_dict": {"des": se_e2_a([4, 4, 4], seed=1), "fit": fit},
        "type_map": list(TYPE_MAP),
        "model_dict": {n: {"descriptor": "des", "fitting_net": "fit"} for n in "ab"},
    }
    data_dict = {n: {"training_data": {"systems": [systems[n]], "batch_size": 2}} for n in "ab"}
    inp = _write(tmp_path, model, data_dict, steps=1, model_prob={"a": 1, "b": 3})
    train(inp, "torch", tmp_path / "out")
    final = _final(tmp_path / "out")
    for name in "ab":
        avg = final.branches[name].tree["fitting"]["@variables"]["fparam_avg"]
        np.testing.assert_allclose(avg, [2.5], rtol=1e-12)
