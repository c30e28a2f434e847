"""Fine-tuning (`dpa train --finetune PRE`): DeePMD-kit 3.2's source-branch rules, the weight copy,
type-map changes, the energy-bias adjustment, `trainable`, --use-pretrain-script, errors before
anything is written, and both training backends.

Tiny DPA-1 and DPA-3 models on a few frames of the shared data (written into tmp folders); the
pretrained models are trained once per module for 2 steps."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
from builders import DATA, dpa1, dpa3, read_lcurve, se_e2_a, xla_optimizations_off

import dpa
from dpa.errors import ConfigError, DPAError
from dpa.train import loop
from dpa.train.config import parse_train_input
from dpa.train.finetune import change_type_map, finetune_starts, transfer
from dpa.train.stat import compute_env_statistics
from dpa.tree import variables

pytest.importorskip("torch")
pytestmark = pytest.mark.skipif(not DATA.is_dir(), reason=f"shared data not found at {DATA}")

TRAIN = "torch"


# ---------------------------------------------------------------------------------------------
# Data and inputs


def _subset(src: Path, dst: Path, nframes: int) -> Path:
    """The first `nframes` frames of the deepmd/npy system `src`, written to `dst`."""
    (dst / "set.000").mkdir(parents=True)
    for name in ("type.raw", "type_map.raw", "nopbc"):
        if (src / name).exists():
            (dst / name).write_bytes((src / name).read_bytes())
    for array in (src / "set.000").glob("*.npy"):
        np.save(dst / "set.000" / array.name, np.load(array)[:nframes])
    return dst


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, Path]:
    """Small systems: water (3 frames of 192 atoms, O H), mol1 and mol2 (4 frames of C1H4O2 and
    C3H3O4, no box)."""
    tmp = tmp_path_factory.mktemp("data")
    return {
        "water": _subset(DATA / "water/data_0", tmp / "water", 3),
        "mol1": _subset(DATA / "molecules_nopbc/C1H4O2", tmp / "mol1", 4),
        "mol2": _subset(DATA / "molecules_nopbc/C3H3O4", tmp / "mol2", 4),
    }


def _training(systems: list[Path], batch_size: int = 1, steps: int = 2, **options) -> dict:
    return {
        "training_data": {"systems": [str(s) for s in systems], "batch_size": batch_size},
        "numb_steps": steps,
        "seed": 3,
        "disp_freq": 1,
        "save_freq": steps,
        **options,
    }


LR = {"start_lr": 1e-3, "stop_lr": 1e-5, "decay_steps": 2}
LOSS = {"start_pref_e": 0.02, "limit_pref_e": 1, "start_pref_f": 1000, "limit_pref_f": 1}


def _write(tmp: Path, name: str, config: dict) -> Path:
    path = tmp / f"{name}.json"
    path.write_text(json.dumps(config))
    return path


def _single(model: dict, training: dict) -> dict:
    return {"model": model, "learning_rate": LR, "loss": LOSS, "training": training}


def _dpa1_model(type_map: list[str], **descriptor) -> dict:
    return {
        "type_map": type_map,
        "descriptor": {**dpa1(40), "seed": 1, **descriptor},
        "fitting_net": {"neuron": [8, 8], "seed": 1},
    }


REPFLOW = {
    "n_dim": 8,
    "e_dim": 8,
    "a_dim": 4,
    "nlayers": 2,
    "e_rcut": 4.0,
    "e_rcut_smth": 0.5,
    "e_sel": 40,
    "a_rcut": 3.0,
    "a_rcut_smth": 0.5,
    "a_sel": 10,
    "axis_neuron": 2,
    "update_angle": True,
}


def _dpa3_model(type_map: list[str], dim_case_embd: int = 0) -> dict:
    fit: dict = {"neuron": [8, 8], "seed": 1}
    if dim_case_embd:
        fit["dim_case_embd"] = dim_case_embd
    return {
        "type_map": type_map,
        "descriptor": {"type": "dpa3", "repflow": dict(REPFLOW), "seed": 1},
        "fitting_net": fit,
    }


def _multitask(data: dict[str, Path], branches: dict[str, dict], steps: int = 2) -> dict:
    """A multi-task input whose branches share the DPA-3 descriptor "des"; `branches` gives
    each one's "data" (keys of `data`), optional "batch_size", "fit_seed" (its own fitting with
    this seed; else the shared fitting "fit") and extra model_dict keys ("model")."""
    base = _dpa3_model(["O", "H", "C"], dim_case_embd=2)
    model_dict, loss_dict, data_dict = {}, {}, {}
    for name, spec in branches.items():
        fitting = "fit"
        if "fit_seed" in spec:
            fitting = {**base["fitting_net"], "seed": spec["fit_seed"]}
        model_dict[name] = {
            "type_map": "tm",
            "descriptor": "des",
            "fitting_net": fitting,
            **spec.get("model", {}),
        }
        loss_dict[name] = dict(LOSS)
        systems = [str(data[k]) for k in spec["data"]]
        data_dict[name] = {
            "training_data": {"systems": systems, "batch_size": spec.get("batch_size", 1)}
        }
    return {
        "model": {
            "shared_dict": {
                "tm": base["type_map"],
                "des": base["descriptor"],
                "fit": base["fitting_net"],
            },
            "model_dict": model_dict,
        },
        "learning_rate": LR,
        "loss_dict": loss_dict,
        "training": {
            "data_dict": data_dict,
            "model_prob": {name: 1.0 for name in branches},
            "numb_steps": steps,
            "seed": 3,
            "disp_freq": 1,
            "save_freq": steps,
        },
    }


# ---------------------------------------------------------------------------------------------
# Pretrained models (trained once per module)


@pytest.fixture(scope="module")
def pre_dpa1(tmp_path_factory, data) -> Path:
    """A DPA-1 over O, H, C trained 2 steps on the water and molecule frames."""
    tmp = tmp_path_factory.mktemp("pre_dpa1")
    training = _training([data["water"], data["mol1"], data["mol2"]])
    inp = _write(tmp, "input", _single(_dpa1_model(["O", "H", "C"]), training))
    return loop.train(inp, TRAIN, tmp / "out")


@pytest.fixture(scope="module")
def pre_mt(tmp_path_factory, data) -> Path:
    """A DPA-3 multi-task model over O, H, C sharing its descriptor, 4 steps: branch "water"
    (alias "W", fitting seed 1) on the water frames, "mol" (fitting seed 2) on the molecules."""
    tmp = tmp_path_factory.mktemp("pre_mt")
    config = _multitask(
        data,
        {
            "water": {"data": ["water"], "fit_seed": 1, "model": {"model_branch_alias": ["W"]}},
            "mol": {"data": ["mol1", "mol2"], "fit_seed": 2},
        },
        steps=4,
    )
    return loop.train(_write(tmp, "input", config), TRAIN, tmp / "out")


@pytest.fixture
def capture(monkeypatch) -> dict:
    """Records the models a fine-tune starts from (after the bias adjustment) as
    captured["start"]."""
    captured: dict = {}
    real = loop.finetuned_models

    def wrapper(*args, **kwargs):
        out = real(*args, **kwargs)
        captured["start"] = out
        return out

    monkeypatch.setattr(loop, "finetuned_models", wrapper)
    return captured


# ---------------------------------------------------------------------------------------------
# Helpers


def _same_arrays(a: object, b: object, top: bool = False) -> None:
    """Equal variable leaves, in the same order and shapes (`top`: a and b are `@variables`
    dicts themselves)."""
    if top:
        a, b = {"@variables": a}, {"@variables": b}
    xs, ys = variables(a), variables(b)
    assert len(xs) == len(ys) > 0
    for x, y in zip(xs, ys, strict=True):
        np.testing.assert_array_equal(x, y)


def _differ(a: object, b: object) -> bool:
    """Whether some variable leaf of `a` differs from the matching one of `b`."""
    return any(not np.array_equal(x, y) for x, y in zip(variables(a), variables(b), strict=True))


def _nets(fitting: dict) -> dict:
    """A fitting's networks (what a copy or a random init decides; not the statistics)."""
    return fitting["nets"]


def _expected_bias(
    model: dpa.Model, systems: list[Path], nbatch: int, sizes: list[int], mode: str
) -> tuple[np.ndarray, float]:
    """(out_bias, out_std) DeePMD-kit's bias adjustment gives, computed here with NumPy: on the
    first nbatch x batch_size frames of each system, "change": old + lstsq(N, E - E_pred) with
    E_pred the model's own prediction (numpy backend), "set": lstsq(N, E); out_std the
    population std of the residual."""
    ntypes = len(model.type_map)
    pot = dpa.load_model(model, backend="numpy")
    counts, targets = [], []
    for path, size in zip(systems, sizes, strict=True):
        system = dpa.data.load_system(path)
        n = min(nbatch * size, system.nframes)
        atype = system.remap_types(model.type_map)
        energy = np.asarray(system.energy[:n], dtype=np.float64)
        if mode == "change":
            box = None if system.box is None else system.box[:n]
            energy = energy - pot.evaluate(system.coord[:n], atype, box)["energy"].reshape(-1)
        counts.append(np.tile(np.bincount(atype, minlength=ntypes), (n, 1)).astype(float))
        targets.append(energy)
    counts_, target = np.concatenate(counts), np.concatenate(targets)
    delta = np.linalg.lstsq(counts_, target, rcond=None)[0]
    std = float(np.std(target - counts_ @ delta))
    old = np.asarray(model.tree["@variables"]["out_bias"])[0, :, 0]
    return (old + delta if mode == "change" else delta), std


def _check_bias(model: dpa.Model, bias: np.ndarray, std: float) -> None:
    variables_ = model.tree["@variables"]
    np.testing.assert_allclose(variables_["out_bias"][0, :, 0], bias, rtol=1e-9, atol=1e-6)
    np.testing.assert_allclose(variables_["out_std"][0, :, 0], std, rtol=1e-6)


def _plan_and_fresh(raw: dict, seed: int = 3) -> tuple:
    """(TrainInput, {None: the model built from it}) as a single-task run starts."""
    return parse_train_input(raw), {None: dpa.build_model(raw["model"], seed=seed)}


def _no_stats(name, model):
    return model


def _nothing_written(out: Path) -> None:
    """No learning curve, checkpoint or model in `out` (the folder itself may exist)."""
    if out.is_dir():
        names = [p.name for p in out.iterdir()]
        assert not [n for n in names if n.startswith(("lcurve", "model", "checkpoint"))], names


# ---------------------------------------------------------------------------------------------
# 1. Single-task fine-tune from a single-task model


def test_transfer_copies_descriptor_fitting_and_bias(make_model):
    source = make_model({"descriptor": dpa1(20), "fitting_net": {"neuron": [8, 8]}}, seed=1)
    target = make_model({"descriptor": dpa1(20), "fitting_net": {"neuron": [8, 8]}}, seed=2)
    target.tree["descriptor"]["trainable"] = False
    out = transfer(target, source, random_fitting=False)
    _same_arrays(out.tree["descriptor"], source.tree["descriptor"])
    _same_arrays(out.tree["fitting"], source.tree["fitting"])
    _same_arrays(out.tree["@variables"], source.tree["@variables"], top=True)
    assert out.tree["descriptor"]["trainable"] is False  # the target's flag
    assert (
        out.tree["descriptor"]["@variables"]["davg"]
        is not (source.tree["descriptor"]["@variables"]["davg"])
    )  # copies: the pretrained model stays as it was
    random = transfer(target, source, random_fitting=True)
    _same_arrays(random.tree["descriptor"], source.tree["descriptor"])
    _same_arrays(random.tree["fitting"], target.tree["fitting"])
    _same_arrays(random.tree["@variables"], target.tree["@variables"], top=True)


def test_single_task_finetune_copies_weights_and_changes_the_bias(
    tmp_path, data, pre_dpa1, capture
):
    pre = dpa.io.load(pre_dpa1)
    systems = [data["water"], data["mol1"], data["mol2"]]
    training = _training(systems, steps=1, data_stat_nbatch=2)
    inp = _write(tmp_path, "ft", _single(_dpa1_model(["O", "H", "C"]), training))
    final = loop.train(inp, TRAIN, tmp_path / "out", finetune=str(pre_dpa1))
    start = capture["start"][None]
    _same_arrays(start.tree["descriptor"], pre.tree["descriptor"])
    _same_arrays(start.tree["fitting"], pre.tree["fitting"])
    # change by statistic on the first 2 batches of each system
    bias, std = _expected_bias(pre, systems, 2, [1, 1, 1], "change")
    _check_bias(start, bias, std)
    assert not np.allclose(bias, pre.tree["@variables"]["out_bias"][0, :, 0])
    # the bias is not trained: the final model keeps it
    _check_bias(dpa.io.load(final), bias, std)


@pytest.mark.parametrize(
    ("wanted", "random"), [(None, False), ("default", False), ("RANDOM", True)]
)
def test_single_task_source_default_or_random(make_model, wanted, random):
    config = {"descriptor": dpa1(20), "fitting_net": {"neuron": [8, 8]}}
    pre = make_model(config, seed=1)
    raw = _single({"type_map": ["O", "H", "C"], **config}, _training([DATA / "water/data_0"]))
    plan, fresh = _plan_and_fresh(raw)
    start = finetune_starts(plan, pre, wanted, fresh, 3, _no_stats)
    assert start.bias_modes[None] == ("set" if random else "change")
    model = start.models[None]
    _same_arrays(model.tree["descriptor"], pre.tree["descriptor"])
    want = fresh[None] if random else pre
    _same_arrays(model.tree["fitting"], want.tree["fitting"])
    _same_arrays(model.tree["@variables"], want.tree["@variables"], top=True)


# ---------------------------------------------------------------------------------------------
# 2. Single-task fine-tune from a multi-task model


def _dpa3_single(data: dict[str, Path], **training) -> dict:
    systems = [data["mol1"], data["mol2"]]
    return _single(_dpa3_model(["O", "H", "C"], dim_case_embd=2), _training(systems, **training))


@pytest.mark.parametrize(
    ("wanted", "branch"), [("mol", "mol"), ("water", "water"), ("w", "water"), ("MOL", "mol")]
)
def test_model_branch_copies_that_branch(data, pre_mt, wanted, branch):
    pre = dpa.io.load_any(pre_mt)
    plan, fresh = _plan_and_fresh(_dpa3_single(data))
    start = finetune_starts(plan, pre, wanted, fresh, 3, _no_stats)
    model, src = start.models[None], pre.branches[branch]
    assert start.bias_modes[None] == "change"
    _same_arrays(model.tree["descriptor"], src.tree["descriptor"])
    _same_arrays(model.tree["fitting"], src.tree["fitting"])
    _same_arrays(model.tree["@variables"], src.tree["@variables"], top=True)
    other = pre.branches["water" if branch == "mol" else "mol"]
    assert _differ(_nets(model.tree["fitting"]), _nets(other.tree["fitting"]))
    case = model.tree["fitting"]["@variables"]["case_embd"]
    np.testing.assert_array_equal(case, src.tree["fitting"]["@variables"]["case_embd"])
    assert not np.array_equal(case, other.tree["fitting"]["@variables"]["case_embd"])


def test_model_branch_through_train_changes_the_bias(tmp_path, data, pre_mt, capture):
    pre = dpa.io.load_any(pre_mt)
    inp = _write(tmp_path, "ft", _dpa3_single(data, steps=1))
    loop.train(inp, TRAIN, tmp_path / "out", finetune=str(pre_mt), model_branch="mol")
    start, src = capture["start"][None], pre.branches["mol"]
    _same_arrays(start.tree["descriptor"], src.tree["descriptor"])
    _same_arrays(start.tree["fitting"], src.tree["fitting"])
    _check_bias(start, *_expected_bias(src, [data["mol1"], data["mol2"]], 10, [1, 1], "change"))


def test_random_branch_gets_a_new_fitting_and_a_set_bias(tmp_path, data, pre_mt, capture):
    pre = dpa.io.load_any(pre_mt)
    raw = _dpa3_single(data, steps=1)
    inp = _write(tmp_path, "ft", raw)
    loop.train(inp, TRAIN, tmp_path / "out", finetune=str(pre_mt), model_branch="RANDOM")
    start = capture["start"][None]
    _same_arrays(start.tree["descriptor"], pre.branches["water"].tree["descriptor"])
    fresh = dpa.build_model(raw["model"], seed=3)
    _same_arrays(_nets(start.tree["fitting"]), _nets(fresh.tree["fitting"]))
    for branch in pre.branches.values():
        assert _differ(_nets(start.tree["fitting"]), _nets(branch.tree["fitting"]))
    np.testing.assert_array_equal(start.tree["fitting"]["@variables"]["case_embd"], [0.0, 0.0])
    _check_bias(start, *_expected_bias(start, [data["mol1"], data["mol2"]], 10, [1, 1], "set"))


def test_no_branch_from_a_multitask_model_takes_the_first_with_a_random_fitting(
    data, pre_mt, caplog
):
    pre = dpa.io.load_any(pre_mt)
    plan, fresh = _plan_and_fresh(_dpa3_single(data))
    with caplog.at_level(logging.WARNING, logger="dpa.train"):
        start = finetune_starts(plan, pre, None, fresh, 3, _no_stats)
    assert start.bias_modes[None] == "set"
    model = start.models[None]
    _same_arrays(model.tree["descriptor"], pre.branches["water"].tree["descriptor"])
    _same_arrays(_nets(model.tree["fitting"]), _nets(fresh[None].tree["fitting"]))
    assert any("first branch 'water'" in r.getMessage() for r in caplog.records)


# ---------------------------------------------------------------------------------------------
# 3. Type-map changes


DESCRIPTORS = {"dpa1": dpa1(40), "dpa3": dpa3(40)}


def _stat_vars(model: dpa.Model) -> list[dict]:
    from builders import env_statistics

    return env_statistics(model.tree["descriptor"])


def _tebd_w(model: dpa.Model) -> np.ndarray:
    return np.asarray(
        model.tree["descriptor"]["type_embedding"]["embedding"]["layers"][0]["@variables"]["w"]
    )


@pytest.mark.parametrize("kind", DESCRIPTORS)
def test_type_map_subset_selects_and_reorders_rows(make_model, kind):
    model = make_model({"descriptor": DESCRIPTORS[kind], "fitting_net": {"neuron": [8, 8]}}, 1)
    fresh = dpa.build_model(
        {"type_map": ["H", "O"], "descriptor": DESCRIPTORS[kind], "fitting_net": {}}, seed=5
    )
    out = change_type_map(model, ["H", "O"], fresh, np.random.default_rng(0))
    rows = [1, 0]
    assert out.type_map == ["H", "O"]
    assert out.tree["descriptor"]["ntypes"] == 2
    for new, old in zip(_stat_vars(out), _stat_vars(model), strict=True):
        np.testing.assert_array_equal(new["davg"], old["davg"][rows])
        np.testing.assert_array_equal(new["dstd"], old["dstd"][rows])
    np.testing.assert_array_equal(_tebd_w(out), _tebd_w(model)[rows])
    for key in ("out_bias", "out_std"):
        np.testing.assert_array_equal(
            out.tree["@variables"][key], model.tree["@variables"][key][:, rows]
        )
    np.testing.assert_array_equal(
        out.tree["fitting"]["@variables"]["bias_atom_e"],
        model.tree["fitting"]["@variables"]["bias_atom_e"][rows],
    )
    # the original is untouched
    assert model.type_map == ["O", "H", "C"] and _tebd_w(model).shape[0] == 3


@pytest.mark.parametrize("kind", DESCRIPTORS)
@pytest.mark.parametrize("with_c", [True, False], ids=["C-in-data", "no-C"])
def test_type_map_new_type(data, kind, with_c):
    from builders import randomize_statistics

    config = {"descriptor": DESCRIPTORS[kind], "fitting_net": {"neuron": [8, 8]}}
    model = randomize_statistics(dpa.build_model({"type_map": ["O", "H"], **config}, 1), 2)
    fresh = dpa.build_model({"type_map": ["H", "O", "C"], **config}, seed=5)
    system = dpa.data.load_system(data["mol1"] if with_c else data["water"])
    fresh = dpa.Model({**fresh.data, "model": compute_env_statistics(fresh.tree, [system])})
    out = change_type_map(model, ["H", "O", "C"], fresh, np.random.default_rng(0))
    assert out.type_map == ["H", "O", "C"]
    for new, old, stat in zip(_stat_vars(out), _stat_vars(model), _stat_vars(fresh), strict=True):
        np.testing.assert_array_equal(new["davg"][:2], old["davg"][[1, 0]])
        np.testing.assert_array_equal(new["dstd"][:2], old["dstd"][[1, 0]])
        np.testing.assert_array_equal(new["davg"][2], stat["davg"][2])
        np.testing.assert_array_equal(new["dstd"][2], stat["dstd"][2])
        if not with_c:  # DeePMD-kit's values for a type without data (DPA-3: fix_stat_std)
            np.testing.assert_array_equal(new["davg"][2], 0.0)
            np.testing.assert_array_equal(new["dstd"][2], 0.3 if kind == "dpa3" else 0.1)
        else:
            assert not np.allclose(new["dstd"][2], 0.1)
    w = _tebd_w(out)
    np.testing.assert_array_equal(w[:2], _tebd_w(model)[[1, 0]])
    assert w.shape[0] == 3 and np.all((w[2] >= 0) & (w[2] < 1))
    variables_ = out.tree["@variables"]
    np.testing.assert_array_equal(variables_["out_bias"][0, :, 0][2], 0.0)
    np.testing.assert_array_equal(variables_["out_std"][0, :, 0][2], 1.0)
    np.testing.assert_array_equal(
        variables_["out_bias"][:, :2], model.tree["@variables"]["out_bias"][:, [1, 0]]
    )
    np.testing.assert_array_equal(out.tree["fitting"]["@variables"]["bias_atom_e"][2], 0.0)


@pytest.mark.parametrize("kind", DESCRIPTORS)
def test_reordered_type_map_keeps_the_physics(make_model, get_system, kind):
    pre = make_model({"descriptor": DESCRIPTORS[kind], "fitting_net": {"neuron": [8, 8]}}, 1)
    new_map = ["C", "H", "O"]
    raw = _single(
        {"type_map": new_map, "descriptor": DESCRIPTORS[kind], "fitting_net": {"neuron": [8, 8]}},
        _training([DATA / "water/data_0"]),
    )
    plan, fresh = _plan_and_fresh(raw)
    start = finetune_starts(plan, pre, None, fresh, 3, _no_stats).models[None]
    assert start.type_map == new_map
    water = get_system("water")  # typed in O, H, C
    atype = np.array([new_map.index(pre.type_map[t]) for t in water.atype])
    want = dpa.load_model(pre, backend="torch").evaluate(water.coord, water.atype, water.box)
    got = dpa.load_model(start, backend="torch").evaluate(water.coord, atype, water.box)
    np.testing.assert_allclose(got["energy"], want["energy"], rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(got["force"], want["force"], rtol=1e-10, atol=1e-10)


def test_type_map_change_through_train(tmp_path, data, capture):
    """Pretrained O, H; fine-tuned as H, O, C on water and a molecule: C's statistics are the
    new data's, O and H keep theirs (reordered), then the bias is changed by statistic."""
    tmp = tmp_path
    model = dpa.build_model(_dpa1_model(["O", "H"]), seed=1)
    water = dpa.data.load_system(data["water"])
    model = dpa.Model({**model.data, "model": compute_env_statistics(model.tree, [water])})
    pre_path = tmp / "pre.dp"
    dpa.io.save(model, pre_path)
    systems = [data["water"], data["mol1"]]
    raw = _single(_dpa1_model(["H", "O", "C"]), _training(systems, steps=1, data_stat_nbatch=2))
    loop.train(_write(tmp, "ft", raw), TRAIN, tmp / "out", finetune=str(pre_path))
    start = capture["start"][None]
    loaded = [dpa.data.load_system(s) for s in systems]
    fresh_tree = compute_env_statistics(dpa.build_model(raw["model"], 3).tree, loaded, 2, [1, 1])
    new, old = start.tree["descriptor"]["@variables"], model.tree["descriptor"]["@variables"]
    for key in ("davg", "dstd"):
        np.testing.assert_array_equal(new[key][:2], old[key][[1, 0]])
        np.testing.assert_array_equal(new[key][2], fresh_tree["descriptor"]["@variables"][key][2])
    np.testing.assert_array_equal(_tebd_w(start)[:2], _tebd_w(model)[[1, 0]])
    # the bias change starts from (bias of H, bias of O, 0) with the reordered model
    moved = change_type_map(
        model, ["H", "O", "C"], dpa.Model({**model.data}), np.random.default_rng()
    )
    moved_tree = {**start.tree, "@variables": moved.tree["@variables"]}
    before = dpa.Model({**start.data, "model": moved_tree})
    _check_bias(start, *_expected_bias(before, systems, 2, [1, 1], "change"))


def test_type_map_subset_through_train(tmp_path, data, pre_dpa1, capture):
    pre = dpa.io.load(pre_dpa1)
    raw = _single(_dpa1_model(["H", "O"]), _training([data["water"]], steps=1))
    loop.train(_write(tmp_path, "ft", raw), TRAIN, tmp_path / "out", finetune=str(pre_dpa1))
    start = capture["start"][None]
    assert start.type_map == ["H", "O"]
    new, old = start.tree["descriptor"]["@variables"], pre.tree["descriptor"]["@variables"]
    np.testing.assert_array_equal(new["davg"], old["davg"][[1, 0]])
    np.testing.assert_array_equal(new["dstd"], old["dstd"][[1, 0]])
    np.testing.assert_array_equal(_tebd_w(start), _tebd_w(pre)[[1, 0]])


# ---------------------------------------------------------------------------------------------
# 4. Multi-task fine-tune target


def _same_objects(a: object, b: object) -> None:
    xs, ys = variables(a), variables(b)
    assert len(xs) == len(ys) > 0
    assert all(x is y for x, y in zip(xs, ys, strict=True))


def test_multitask_target_finetune_head_copies_that_branch(tmp_path, data, pre_mt, capture):
    pre = dpa.io.load_any(pre_mt)
    config = _multitask(
        data,
        {
            "water": {"data": ["water"], "fit_seed": 1},  # same name, no head: resumed
            "mol_ft": {"data": ["mol1"], "fit_seed": 5, "model": {"finetune_head": "mol"}},
        },
        steps=1,
    )
    loop.train(_write(tmp_path, "in", config), TRAIN, tmp_path / "out", finetune=str(pre_mt))
    start = capture["start"]
    water, mol = pre.branches["water"], pre.branches["mol"]
    _same_arrays(start["water"].tree, water.tree)
    # finetune_head: mol's fitting and case embedding, its bias changed on the new data
    _same_arrays(start["mol_ft"].tree["descriptor"], mol.tree["descriptor"])
    _same_arrays(start["mol_ft"].tree["fitting"], mol.tree["fitting"])
    assert _differ(_nets(start["mol_ft"].tree["fitting"]), _nets(water.tree["fitting"]))
    _check_bias(start["mol_ft"], *_expected_bias(mol, [data["mol1"]], 10, [1], "change"))
    _same_objects(start["water"].tree["descriptor"], start["mol_ft"].tree["descriptor"])


def test_single_task_finetune_head_selects_the_branch(data, pre_mt):
    pre = dpa.io.load_any(pre_mt)
    raw = _dpa3_single(data)
    raw["model"]["finetune_head"] = "mol"
    plan, fresh = _plan_and_fresh(raw)
    start = finetune_starts(plan, pre, None, fresh, 3, _no_stats)
    assert start.bias_modes[None] == "change"
    _same_arrays(start.models[None].tree["fitting"], pre.branches["mol"].tree["fitting"])


def test_multitask_target_resumes_a_branch_and_gives_a_new_one_a_random_fitting(
    tmp_path, data, pre_mt, capture
):
    pre = dpa.io.load_any(pre_mt)
    config = _multitask(
        data,
        {
            "mol": {"data": ["mol1", "mol2"], "fit_seed": 2},  # same name, no head: resumed
            "new": {"data": ["mol2"], "fit_seed": 7},  # a new name: random fitting
        },
        steps=1,
    )
    loop.train(_write(tmp_path, "in", config), TRAIN, tmp_path / "out", finetune=str(pre_mt))
    start = capture["start"]
    mol = pre.branches["mol"]
    _same_arrays(start["mol"].tree, mol.tree)  # weights, statistics, bias, case embedding
    new_cfg = _dpa3_model(["O", "H", "C"], 2)
    new_cfg["fitting_net"]["seed"] = 7
    fresh = dpa.build_model(new_cfg, seed=3)
    _same_arrays(_nets(start["new"].tree["fitting"]), _nets(fresh.tree["fitting"]))
    for branch in pre.branches.values():
        assert _differ(_nets(start["new"].tree["fitting"]), _nets(branch.tree["fitting"]))
    _same_arrays(start["new"].tree["descriptor"], pre.branches["water"].tree["descriptor"])
    _check_bias(start["new"], *_expected_bias(start["new"], [data["mol2"]], 10, [1], "set"))
    # the shared descriptor stays one set of arrays
    _same_objects(start["mol"].tree["descriptor"], start["new"].tree["descriptor"])


def test_multitask_target_shared_fitting_stays_shared(tmp_path, data, pre_mt, capture):
    config = _multitask(data, {"water": {"data": ["water"]}, "other": {"data": ["mol1"]}}, steps=1)
    loop.train(_write(tmp_path, "in", config), TRAIN, tmp_path / "out", finetune=str(pre_mt))
    start = capture["start"]
    _same_objects(start["water"].tree["descriptor"], start["other"].tree["descriptor"])
    _same_objects(_nets(start["water"].tree["fitting"]), _nets(start["other"].tree["fitting"]))
    # resumed "water" keeps its own fitting; "other" links to it
    pre = dpa.io.load_any(pre_mt)
    _same_arrays(
        _nets(start["water"].tree["fitting"]), _nets(pre.branches["water"].tree["fitting"])
    )


# ---------------------------------------------------------------------------------------------
# 5. trainable: false


@pytest.mark.parametrize(
    "kind",
    [
        "dpa1",
        "dpa3",
    ],
)
def test_frozen_descriptor_does_not_change(tmp_path, data, kind, capture):
    if kind == "dpa1":
        model = _dpa1_model(["O", "H", "C"])
    else:
        model = _dpa3_model(["O", "H", "C"])
    pre = dpa.build_model(model, seed=1)
    mol = dpa.data.load_system(data["mol1"])
    pre = dpa.Model({**pre.data, "model": compute_env_statistics(pre.tree, [mol])})
    dpa.io.save(pre, tmp_path / "pre.dp")
    model["descriptor"]["trainable"] = False
    raw = _single(model, _training([data["mol1"]], steps=3))
    out = loop.train(
        _write(tmp_path, "ft", raw), TRAIN, tmp_path / "out", finetune=str(tmp_path / "pre.dp")
    )
    final, start = dpa.io.load(out), capture["start"][None]
    _same_arrays(start.tree["descriptor"], pre.tree["descriptor"])
    _same_arrays(final.tree["descriptor"], pre.tree["descriptor"])
    assert _differ(_nets(final.tree["fitting"]), _nets(start.tree["fitting"]))


def test_frozen_fitting_does_not_change(tmp_path, data, pre_mt, capture):
    raw = _dpa3_single(data, steps=2)
    raw["model"]["fitting_net"]["trainable"] = False
    inp = _write(tmp_path, "ft", raw)
    out = loop.train(inp, TRAIN, tmp_path / "out", finetune=str(pre_mt), model_branch="mol")
    final, start = dpa.io.load(out), capture["start"][None]
    _same_arrays(final.tree["fitting"], start.tree["fitting"])
    assert _differ(final.tree["descriptor"], start.tree["descriptor"])


# ---------------------------------------------------------------------------------------------
# 6. --use-pretrain-script


def test_use_pretrain_script_takes_the_pretrained_architecture(tmp_path, data, pre_dpa1, capture):
    pre = dpa.io.load(pre_dpa1)
    model = _dpa1_model(["O", "H", "C"], neuron=[4, 4], attn=4)
    model["fitting_net"]["neuron"] = [4]
    raw = _single(model, _training([data["mol1"]], steps=1))
    inp = _write(tmp_path, "ft", raw)
    with pytest.raises(ConfigError, match="--use-pretrain-script"):
        loop.train(inp, TRAIN, tmp_path / "no", finetune=str(pre_dpa1))
    _nothing_written(tmp_path / "no")
    final = loop.train(
        inp, TRAIN, tmp_path / "out", finetune=str(pre_dpa1), use_pretrain_script=True
    )
    start = capture["start"][None]
    _same_arrays(start.tree["descriptor"], pre.tree["descriptor"])
    _same_arrays(start.tree["fitting"], pre.tree["fitting"])
    script = dpa.io.load(final).data["model_def_script"]
    assert script["descriptor"]["neuron"] == [4, 8] and script["descriptor"]["attn"] == 8
    assert script["fitting_net"]["neuron"] == [8, 8]


# ---------------------------------------------------------------------------------------------
# 7. Errors before anything is written


def test_unknown_finetune_head_names_the_branches(tmp_path, data, pre_mt):
    config = _multitask(
        data,
        {
            "water": {"data": ["water"], "fit_seed": 1},
            "mol": {"data": ["mol1"], "fit_seed": 2, "model": {"finetune_head": "nope"}},
        },
        steps=1,
    )
    _fails(
        tmp_path / "out", ConfigError, r"finetune_head 'nope'.*water.*mol",
        _write(tmp_path, "mt", config), finetune=str(pre_mt),
    )  # fmt: skip


def _fails(out: Path, error: type, match: str, inp: Path, **kwargs) -> None:
    assert issubclass(error, DPAError)
    with pytest.raises(error, match=match):
        loop.train(inp, TRAIN, out, **kwargs)
    _nothing_written(out)


def test_errors_before_anything_is_written(tmp_path, data, pre_dpa1, pre_mt):
    single = _write(tmp_path, "single", _dpa3_single(data, steps=1))
    _fails(
        tmp_path / "o1", ConfigError, r"'nope'.*water.*mol", single,
        finetune=str(pre_mt), model_branch="nope",
    )  # fmt: skip
    dpa1_input = _write(
        tmp_path, "dpa1", _single(_dpa1_model(["O", "H", "C"]), _training([data["mol1"]], steps=1))
    )
    _fails(
        tmp_path / "o2", ConfigError, "single-task", dpa1_input,
        finetune=str(pre_dpa1), model_branch="water",
    )  # fmt: skip
    # se_e2_a cannot change its type map
    se = {"type_map": ["O", "H"], "descriptor": se_e2_a([20, 40]), "fitting_net": {"neuron": [8]}}
    se_path = tmp_path / "se.dp"
    dpa.io.save(dpa.build_model(se, seed=1), se_path)
    swapped = _write(
        tmp_path, "se", _single({**se, "type_map": ["H", "O"]}, _training([data["water"]], steps=1))
    )
    _fails(tmp_path / "o3", ConfigError, r"(?s)se_e2_a.*type.map", swapped, finetune=str(se_path))
    mt_input = _write(
        tmp_path,
        "mt",
        _multitask(data, {"water": {"data": ["water"]}, "mol": {"data": ["mol1"]}}, steps=1),
    )
    # --model-branch with a multi-task input
    _fails(
        tmp_path / "o5", ConfigError, "model-branch", mt_input,
        finetune=str(pre_mt), model_branch="water",
    )  # fmt: skip
    # --finetune with --restart
    _fails(
        tmp_path / "o6", ConfigError, "restart", single,
        finetune=str(pre_mt), restart=str(pre_mt),
    )  # fmt: skip


# ---------------------------------------------------------------------------------------------
# 8. Both backends


def test_finetune_on_each_backend(tmp_path, data, pre_dpa1, train_backend, capture):
    """One small fine-tune per backend; jax's learning curve is torch's."""
    raw = _single(_dpa1_model(["O", "H", "C"]), _training([data["mol1"]], steps=2))
    inp = _write(tmp_path, "ft", raw)
    with xla_optimizations_off():
        loop.train(inp, train_backend, tmp_path / "out", finetune=str(pre_dpa1))
    pre, start = dpa.io.load(pre_dpa1), capture["start"][None]
    _same_arrays(start.tree["descriptor"], pre.tree["descriptor"])
    _check_bias(start, *_expected_bias(pre, [data["mol1"]], 10, [1], "change"))
    curve = read_lcurve(tmp_path / "out" / "lcurve.out")
    assert curve[:, 0].tolist() == [1, 2] and np.isfinite(curve).all()
    if train_backend != "torch":
        loop.train(inp, "torch", tmp_path / "torch", finetune=str(pre_dpa1))
        reference = read_lcurve(tmp_path / "torch" / "lcurve.out")
        np.testing.assert_allclose(curve, reference, rtol=1e-8, atol=0)
