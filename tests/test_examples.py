"""The training inputs shipped in examples/: each validates, its data paths exist, and each model
trains a step or two on torch and on jax with its model section exactly as shipped."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import pytest
from builders import EXAMPLES, WATER, read_lcurve

import dpa
from dpa.train.config import load_train_input, parse_train_input

FULL_INPUTS = ["water_dpa1", "water_dpa2", "water_dpa3"]
MAIN = EXAMPLES / "train_water"


def _systems(section: dict) -> list[str]:
    systems = section["systems"]
    return [systems] if isinstance(systems, str) else list(systems)


def _fast(config: dict, steps: int) -> dict:
    """The input with only its run made short: a few steps on the bundled 8 water frames,
    statistics from one batch, a line and a checkpoint at every step. `model` is untouched."""
    training = config["training"]
    training["training_data"]["systems"] = [str(WATER)]
    if "validation_data" in training:
        training["validation_data"]["systems"] = [str(WATER)]
        training["validation_data"]["numb_btch"] = 1
    training.update(numb_steps=steps, data_stat_nbatch=1, disp_freq=1, save_freq=steps)
    return config


def _check_run(out: Path, final: Path, steps: int, columns: list[str]) -> None:
    """lcurve has one line per step with finite numbers in the given columns; the final model
    loads and gives finite energies on a water frame."""
    lcurve = out / "lcurve.out"
    header = lcurve.read_text().splitlines()[0].split()[1:]
    rows = read_lcurve(lcurve)
    assert [int(r[0]) for r in rows] == list(range(1, steps + 1))
    for row in rows:
        values = dict(zip(header, row, strict=True))
        for name in columns:
            assert math.isfinite(values[name]), (name, row)
    system = dpa.data.load_system(WATER)
    pot = dpa.load_model(final)
    pred = pot.evaluate(system.coord[:1], system.remap_types(pot.type_map), system.box[:1])
    assert np.isfinite(pred["energy"]).all()
    assert np.isfinite(pred["force"]).all()


@pytest.mark.parametrize("name", FULL_INPUTS)
def test_full_input_validates_and_its_data_exists(name):
    folder = EXAMPLES / name
    config = load_train_input(folder / "input.json")
    assert config.training.numb_steps == 1000000
    assert config.ignored_keys() == []
    data = [config.training.training_data, config.training.validation_data]
    for section in data:
        for system in _systems(section.model_dump()):
            assert not os.path.isabs(system)
            path = folder / system  # `cd examples/<name>` first, as the _comment says
            if not path.is_dir():
                pytest.skip(f"shared water data not found at {path}")
            assert (path / "type.raw").is_file(), path


@pytest.mark.parametrize("name", FULL_INPUTS)
def test_full_input_trains(name, train_backend, tmp_path):
    from dpa.train.loop import train

    backend = train_backend
    raw = json.loads((EXAMPLES / name / "input.json").read_text())
    model = json.loads(json.dumps(raw["model"]))
    steps = 2
    config = _fast(raw, steps)
    assert config["model"] == model
    inp = tmp_path / "input.json"
    inp.write_text(json.dumps(config))
    out = tmp_path / "out"
    final = train(inp, backend, out)
    assert final == out / f"model{'.pth' if backend == 'torch' else '.jax'}"
    columns = ["rmse_val", "rmse_trn", "rmse_e_val", "rmse_e_trn", "rmse_f_val", "rmse_f_trn"]
    _check_run(out, final, steps, columns)


def test_main_example_input_validates_and_trains(tmp_path):
    """examples/train_water/input.json (what `make example` trains) on its own bundled data."""
    pytest.importorskip("torch")
    from dpa.train.loop import train

    raw = json.loads((MAIN / "input.json").read_text())
    config = parse_train_input(raw, source="examples/train_water/input.json")
    assert config.ignored_keys() == []
    training = raw["training"]
    for key in ("training_data", "validation_data"):
        systems = [str(MAIN / system) for system in _systems(training[key])]
        assert all((Path(s) / "type.raw").is_file() for s in systems), systems
        training[key]["systems"] = systems  # as seen from the example folder
    steps = 2
    training.update(numb_steps=steps, data_stat_nbatch=1, disp_freq=1, save_freq=steps)
    inp = tmp_path / "input.json"
    inp.write_text(json.dumps(raw))
    final = train(inp, "torch", tmp_path / "out")
    _check_run(tmp_path / "out", final, steps, ["rmse_trn", "rmse_val", "rmse_f_trn"])


def test_multitask_example_inputs_validate_and_pretrain_a_step(tmp_path):
    """examples/multitask: pretrain.json is a valid multi-task input whose data exist and which
    trains two steps (data cut to the bundled water frames); finetune.json is a valid input."""
    from dpa.train.loop import train
    from dpa.train.multitask_input import parse_multitask_input

    folder = EXAMPLES / "multitask"
    config = json.loads((folder / "pretrain.json").read_text())
    plan = parse_multitask_input(config, source="pretrain.json")
    assert list(plan.tasks) == ["water", "molecules"]
    for entry in config["training"]["data_dict"].values():
        for path in _systems(entry["training_data"]):
            if not (folder / path).is_dir():
                pytest.skip(f"{path}: ../shared/data is not available")
    parse_train_input(json.loads((folder / "finetune.json").read_text()), source="finetune.json")
    for entry in config["training"]["data_dict"].values():
        entry["training_data"]["systems"] = [str(WATER)]
        entry.pop("validation_data", None)
    config["training"].update(numb_steps=2, disp_freq=1, save_freq=2)
    config["model"]["data_stat_nbatch"] = 1
    path = tmp_path / "pretrain.json"
    path.write_text(json.dumps(config))
    final = train(path, "torch", tmp_path / "out")
    model = dpa.io.load_any(final)
    assert isinstance(model, dpa.MultiTaskModel) and model.names == ["water", "molecules"]
    assert model.num_params < sum(b.num_params for b in model.branches.values())
