"""Tests of the training-input schema (dpa.train.config) and `dpa doc-train-input`."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from dpa.errors import ConfigError, DPAError
from dpa.train.config import (
    IGNORED_KEYS,
    LearningRateConfig,
    LossConfig,
    OptimizerConfig,
    TrainingConfig,
    ValidatingConfig,
    doc_train_input,
    load_train_input,
    parse_train_input,
)
from dpa_cli.main import cli

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"

# The non-model sections of DeePMD-kit's water examples (se_atten / dpa2 / dpa3), as written there.
WATER_SE_ATTEN = {
    "learning_rate": {
        "type": "exp",
        "decay_steps": 5000,
        "start_lr": 0.001,
        "stop_lr": 3.51e-8,
        "_comment": "that's all",
    },
    "loss": {
        "type": "ener",
        "start_pref_e": 0.02,
        "limit_pref_e": 1,
        "start_pref_f": 1000,
        "limit_pref_f": 1,
        "start_pref_v": 0,
        "limit_pref_v": 0,
        "_comment": " that's all",
    },
    "training": {
        "training_data": {
            "systems": ["../data/data_0/", "../data/data_1/", "../data/data_2/"],
            "batch_size": "auto",
            "_comment": "that's all",
        },
        "validation_data": {
            "systems": ["../data/data_3"],
            "batch_size": 1,
            "numb_btch": 3,
            "_comment": "that's all",
        },
        "numb_steps": 1000000,
        "seed": 10,
        "disp_file": "lcurve.out",
        "disp_freq": 100,
        "save_freq": 1000,
        "_comment": "that's all",
    },
}
WATER_DPA3 = {
    "learning_rate": {"type": "exp", "decay_steps": 5000, "start_lr": 0.001, "stop_lr": 3e-5},
    "optimizer": {"type": "AdamW", "adam_beta1": 0.9, "adam_beta2": 0.999, "weight_decay": 0.001},
    "loss": {
        "type": "ener",
        "start_pref_e": 0.2,
        "limit_pref_e": 20,
        "start_pref_f": 100,
        "limit_pref_f": 60,
        "start_pref_v": 0.02,
        "limit_pref_v": 1,
    },
    "training": {
        "stat_file": "./dpa3.hdf5",
        "training_data": {
            "systems": ["../data/data_0", "../data/data_1", "../data/data_2"],
            "batch_size": 1,
        },
        "validation_data": {"systems": ["../data/data_3"], "batch_size": 1},
        "numb_steps": 1000000,
        "gradient_max_norm": 5.0,
        "seed": 10,
        "disp_file": "lcurve.out",
        "disp_freq": 100,
        "save_freq": 2000,
    },
}
MINIMAL = {"training": {"training_data": {"systems": "data"}, "numb_steps": 10}}


def _model(name: str = "water_dpa1") -> dict:
    """The model section of one of this repository's examples."""
    return json.loads((EXAMPLES / name / "input.json").read_text())["model"]


def full_input(rest: dict | None = None, example: str = "water_dpa1") -> dict:
    """A whole training input: an example's model plus the other sections."""
    return {"_comment": "test input", "model": _model(example), **copy.deepcopy(rest or MINIMAL)}


def error_of(config: dict, source: str = "input.json") -> str:
    """The message of the ConfigError that parsing `config` raises."""
    with pytest.raises(ConfigError) as info:
        parse_train_input(config, source=source)
    return str(info.value)


def with_key(section_path: str, key: str, value) -> dict:
    """MINIMAL plus one key set in the dotted section."""
    config = full_input()
    target = config
    for part in section_path.split("."):
        target = target.setdefault(part, {})
    target[key] = value
    return config


# ---------------------------------------------------------------- real inputs


@pytest.mark.parametrize(
    "example, rest",
    [
        ("water_dpa1", WATER_SE_ATTEN),
        ("water_dpa2", WATER_SE_ATTEN),
        ("water_dpa3", WATER_DPA3),
    ],
)
def test_water_examples_parse_unchanged(example, rest):
    config = full_input(rest, example)
    before = copy.deepcopy(config)
    parsed = parse_train_input(config)
    assert config == before  # the input is not modified
    assert parsed.raw == before
    assert parsed.model["type_map"] == ["O", "H"]
    assert parsed.training.numb_steps == 1000000
    assert parsed.training.seed == 10
    assert parsed.training.disp_freq == 100
    assert parsed.training.training_data.systems[0].startswith("../data/data_0")
    assert parsed.loss.type == "ener"
    assert parsed.learning_rate.start_lr == 0.001


def test_water_example_files_load(tmp_path):
    for example, rest in (("water_dpa1", WATER_SE_ATTEN), ("water_dpa3", WATER_DPA3)):
        path = tmp_path / f"{example}.json"
        path.write_text(json.dumps(full_input(rest, example), indent=2))
        parsed = load_train_input(path)
        assert parsed.model["descriptor"]["type"] in ("dpa1", "dpa3")
    parsed = load_train_input(path)
    assert parsed.optimizer.type == "AdamW"
    assert parsed.optimizer.weight_decay == 0.001
    assert parsed.training.gradient_max_norm == 5.0
    assert parsed.training.validation_data.numb_btch == 1
    assert parsed.ignored_keys() == []


def test_yaml_input(tmp_path):
    yaml = pytest.importorskip("yaml")
    path = tmp_path / "input.yaml"
    path.write_text(yaml.safe_dump(full_input(WATER_SE_ATTEN)))
    assert load_train_input(path).training.validation_data.numb_btch == 3


# ---------------------------------------------------------------- defaults and aliases


def test_defaults():
    parsed = parse_train_input(full_input())
    lr, loss, opt, tr = parsed.learning_rate, parsed.loss, parsed.optimizer, parsed.training
    assert (lr.type, lr.start_lr, lr.stop_lr, lr.decay_steps) == ("exp", 1e-3, 5e-8, 5000)
    assert lr.decay_rate is None and lr.warmup_steps == 0 and lr.scale_by_worker == "linear"
    assert (loss.start_pref_e, loss.limit_pref_e) == (0.02, 1.0)
    assert (loss.start_pref_f, loss.limit_pref_f) == (1000, 1.0)
    assert (loss.start_pref_v, loss.limit_pref_v, loss.start_pref_ae, loss.start_pref_pf) == (
        0,
        0,
        0,
        0,
    )
    assert loss.relative_f is None and loss.huber_delta == 0.01 and loss.loss_func == "mse"
    assert (opt.type, opt.adam_beta1, opt.adam_beta2, opt.weight_decay) == ("Adam", 0.9, 0.999, 0)
    data = tr.training_data
    assert (data.systems, data.batch_size, data.auto_prob, data.sys_probs) == (
        "data",
        "auto",
        "prob_sys_size",
        None,
    )
    assert data.fmt is None and tr.validation_data is None
    assert (tr.disp_file, tr.disp_freq, tr.save_freq) == ("lcurve.out", 1000, 1000)
    assert (tr.save_ckpt, tr.max_ckpt_keep, tr.gradient_max_norm) == ("model.ckpt", 5, None)
    assert tr.disp_training and tr.time_training and not tr.tensorboard
    assert tr.seed is None and tr.numb_epoch is None
    assert parsed.validating.validation_freq == 5000
    assert parsed.ignored_keys() == []


def test_adamw_weight_decay_default():
    parsed = parse_train_input(with_key("optimizer", "type", "AdamW"))
    assert parsed.optimizer.weight_decay == 0.001
    config = with_key("optimizer", "type", "AdamW")
    config["optimizer"]["weight_decay"] = 0.01
    assert parse_train_input(config).optimizer.weight_decay == 0.01


@pytest.mark.parametrize("alias", ["stop_batch", "num_step", "num_steps", "numb_step"])
def test_numb_steps_aliases(alias):
    config = full_input()
    del config["training"]["numb_steps"]
    config["training"][alias] = 123
    assert parse_train_input(config).training.numb_steps == 123


def test_data_aliases():
    config = full_input()
    data = config["training"]["training_data"]
    data.update(systems=["a", "b"], auto_prob_style="prob_uniform", sys_weights=[0.3, 0.7])
    config["training"]["validation_data"] = {"systems": "v", "numb_batch": 4}
    parsed = parse_train_input(config).training
    assert parsed.training_data.auto_prob == "prob_uniform"
    assert parsed.training_data.sys_probs == [0.3, 0.7]
    assert parsed.validation_data.numb_btch == 4


def test_two_spellings_of_one_key_are_an_error():
    config = with_key("training", "stop_batch", 5)
    message = error_of(config)
    assert "numb_steps and stop_batch" in message


def test_stop_lr_ratio_and_numb_epoch():
    config = with_key("learning_rate", "stop_lr_ratio", 0.01)
    assert parse_train_input(config).learning_rate.stop_lr is None
    config["learning_rate"]["stop_lr"] = 1e-6
    assert "stop_lr or stop_lr_ratio" in error_of(config)
    config = full_input()
    del config["training"]["numb_steps"]
    config["training"]["num_epochs"] = 2.5
    assert parse_train_input(config).training.numb_epoch == 2.5
    config["training"]["numb_steps"] = 10
    assert "numb_steps or numb_epoch" in error_of(config)


def test_ignored_keys_are_reported():
    config = with_key("training", "tensorboard", True)
    config["training"]["training_data"]["set_prefix"] = "set"
    config["validating"] = {"full_validation": True}
    parsed = parse_train_input(config)
    assert parsed.ignored_keys() == [
        "training.training_data.set_prefix",
        "training.tensorboard",
        "validating.full_validation",
    ]
    assert all(key.count(".") >= 1 for key in IGNORED_KEYS)


# ---------------------------------------------------------------- errors


def test_unknown_key_names_key_and_path():
    message = error_of(with_key("training.training_data", "batchsize", 2))
    assert message.startswith("input.json: ")
    assert "'training.training_data.batchsize'" in message
    assert "batch_size" in message  # the allowed keys are listed
    message = error_of(with_key("loss", "start_pref_x", 1.0))
    assert "'loss.start_pref_x'" in message


def test_unknown_top_level_key():
    config = full_input()
    config["nvnmd"] = {"enable": True}
    config["_note"] = "comments are fine"
    message = error_of(config)
    assert "'nvnmd'" in message and "training" in message


def test_missing_sections():
    assert "missing section 'training'" in error_of({"model": _model()})
    assert "missing section 'model'" in error_of(copy.deepcopy(MINIMAL))


@pytest.mark.parametrize("steps", [0, -5])
def test_numb_steps_must_be_positive(steps):
    message = error_of(with_key("training", "numb_steps", steps))
    assert message.startswith("input.json: training.numb_steps: ")
    assert "greater than 0" in message and f"(got {steps})" in message


def test_numb_steps_required():
    config = full_input()
    del config["training"]["numb_steps"]
    assert "numb_steps" in error_of(config)


@pytest.mark.parametrize("key", ["start_lr", "stop_lr"])
@pytest.mark.parametrize("value", [0.0, -1e-3])
def test_learning_rate_must_be_positive(key, value):
    message = error_of(with_key("learning_rate", key, value))
    assert f"learning_rate.{key}: " in message and "greater than 0" in message


@pytest.mark.parametrize("value", ["auto", "auto:32", 4, [1, 2]])
def test_batch_size_accepted(value):
    config = with_key("training.training_data", "batch_size", value)
    config["training"]["training_data"]["systems"] = ["a", "b"]
    assert parse_train_input(config).training.training_data.batch_size == value


@pytest.mark.parametrize("value", ["auto:x", "auto:0", "big", 0, -1, True, [1], "max:64"])
def test_batch_size_rejected(value):
    config = with_key("training.training_data", "batch_size", value)
    config["training"]["training_data"]["systems"] = ["a", "b"]
    message = error_of(config)
    assert "training.training_data.batch_size" in message


@pytest.mark.parametrize(
    "section, key, value, expect",
    [
        ("learning_rate", "type", "cosine", "learning_rate.type"),
        ("loss", "type", "ener_spin", "loss.type"),
        ("optimizer", "type", "LKF", "optimizer.type"),
        ("loss", "start_pref_h", 1.0, "Hessian"),
        ("loss", "huber_delta", [0.1, 0.2], "huber_delta"),
        ("learning_rate", "decay_rate", 1.5, "learning_rate.decay_rate"),
        ("training", "gradient_max_norm", -1.0, "training.gradient_max_norm"),
        ("training", "stat_file_mode", "read", "stat_file"),
        ("training.training_data", "systems", [], "training.training_data.systems"),
        ("training.training_data", "auto_prob", "nonsense", "auto_prob"),
    ],
)
def test_value_errors(section, key, value, expect):
    message = error_of(with_key(section, key, value))
    assert message.startswith("input.json: ") and expect in message


def test_model_errors_name_the_source():
    config = full_input()
    config["model"]["descriptor"]["rcut"] = -1.0
    message = error_of(config, source="my.json")
    assert message.startswith("my.json: ") and "model.descriptor.rcut" in message


def test_not_a_dict():
    assert "JSON object" in error_of([1, 2])
    assert "training: must be an object" in error_of({"model": _model(), "training": 3})


# ---------------------------------------------------------------- files


def test_missing_file(tmp_path):
    with pytest.raises(DPAError, match="not found"):
        load_train_input(tmp_path / "nope.json")


def test_bad_json_reports_line_and_column(tmp_path):
    path = tmp_path / "input.json"
    path.write_text('{\n  "model": {},\n  "training": {,}\n}\n')
    with pytest.raises(ConfigError, match=r"line 3, column 16"):
        load_train_input(path)


def test_unknown_suffix(tmp_path):
    path = tmp_path / "input.txt"
    path.write_text("{}")
    with pytest.raises(ConfigError, match="use .json, .yaml or .yml"):
        load_train_input(path)


def test_load_error_names_the_file(tmp_path):
    path = tmp_path / "input.json"
    path.write_text(json.dumps(with_key("training", "numb_steps", 0)))
    with pytest.raises(ConfigError, match=r"input\.json: training\.numb_steps: "):
        load_train_input(path)


# ---------------------------------------------------------------- documentation


def test_doc_lists_every_key():
    text = doc_train_input()
    sections = {
        "learning_rate": LearningRateConfig,
        "loss": LossConfig,
        "optimizer": OptimizerConfig,
        "training": TrainingConfig,
        "validating": ValidatingConfig,
    }
    for name, cls in sections.items():
        assert f"\n{name}: " in text
        for key, field in cls.model_fields.items():
            assert f"\n  {key}" in text, key
            assert field.description, f"{name}.{key} has no description"
    for sub in ("training.training_data", "training.validation_data", "training.mixed_precision"):
        assert f"\n{sub}: " in text
    for key in ("systems", "batch_size", "auto_prob", "sys_probs", "numb_btch", "fmt"):
        assert f"\n  {key}" in text
    assert "stop_batch" in text and "auto_prob_style" in text
    assert "[ignored by dpa]" in text


def test_cli_doc_train_input():
    result = CliRunner().invoke(cli, ["doc-train-input"], catch_exceptions=False)
    assert result.exit_code == 0
    assert result.stdout == doc_train_input()
    help_text = CliRunner().invoke(cli, ["--help"]).stdout
    assert "doc-train-input" in help_text


def test_gradient_checkpointing_is_a_jax_option():
    from dpa.train.loop import _trainer

    config = full_input(example="water_dpa3")
    assert parse_train_input(config).training.gradient_checkpointing is False
    config["training"]["gradient_checkpointing"] = True
    parsed = parse_train_input(config)
    assert parsed.training.gradient_checkpointing is True
    with pytest.raises(ConfigError, match="gradient_checkpointing is implemented for the jax"):
        _trainer("torch", {}, parsed)


@pytest.mark.parametrize(("backend", "restarts"), [("jax", True), ("torch", False)])
def test_cli_train_restarts_jax_with_the_retained_heap(monkeypatch, tmp_path, backend, restarts):
    """`dpa --backend jax train` restarts once with the retained heap before jax starts, for
    every input (XLA frees and reallocates the same blocks each step); torch does not."""
    from click.testing import CliRunner

    import dpa.backends.allocator as allocator
    import dpa.train.loop as loop
    from dpa_cli._context import Options
    from dpa_cli.main import cli

    calls = []
    monkeypatch.setattr(Options, "console", True)
    monkeypatch.setattr(allocator, "reexec_with_huge_pages", lambda **kw: calls.append(kw))
    monkeypatch.setattr(loop, "train", lambda *args, **kwargs: tmp_path / "model.jax")
    path = tmp_path / "input.json"
    path.write_text(json.dumps(full_input(example="water_dpa1")))
    result = CliRunner().invoke(cli, ["--backend", backend, "train", str(path)])
    assert result.exit_code == 0, result.output
    assert calls == ([{"retain_heap": True}] if restarts else [])
