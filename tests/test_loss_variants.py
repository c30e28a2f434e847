"""The "ener" loss variants (mse, mae, Huber, f_use_norm, relative_f) against DeePMD-kit 3.2.0,
on NumPy, PyTorch and JAX; the loss schema's refusals; `dpa train` with loss_func "mae".

The expected numbers are DeePMD-kit's own (tests/fixtures/loss/make_loss_fixture.py, run in the
reference environment): its loss, every metric it returns and the gradient of its loss with
respect to each prediction (torch autograd), for every case of loss_cases.json.
"""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from train_inputs import write_small_input

from dpa.errors import ConfigError
from dpa.train.config import LossConfig, doc_train_input, parse_train_input
from dpa.train.loss import EnerLossConfig, ener_loss, lcurve_header

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "loss"
META = json.loads((FIXTURE / "loss_cases.json").read_text())
CASES = META["cases"]
REF = np.load(FIXTURE / "loss_reference.npz")
PRED_KEYS = ("energy", "force", "virial", "atom_energy")
WATER = str(Path(__file__).resolve().parents[1] / "examples" / "data" / "water")


def _close(got: float, want: float | str, what: str) -> None:
    """Equal to 1e-10 relative (absolute below 1), NaN where DeePMD-kit shows NaN."""
    if want == "nan":
        assert math.isnan(got), what
        return
    assert abs(got - want) <= 1e-10 * max(1.0, abs(want)), f"{what}: {got!r} != {want!r}"


def _inputs(case: dict) -> tuple[dict, dict]:
    """The case's predictions (with its mask) and labels (with its find flags), as numpy."""
    name = case["inputs"]
    pred = {k: REF[f"{name}/pred_{k}"] for k in PRED_KEYS}
    label = {k: REF[f"{name}/label_{k}"] for k in ("energy", "force", "virial", "atom_ener")}
    if case["mask"] is not None:
        mask = np.ones(pred["atom_energy"].shape)
        if case["mask"] == "padded":
            for frame, atom in META["padded_atoms"]:
                mask[frame, atom] = 0.0
        pred["mask"] = mask
    for key in ("energy", "force", "virial", "atom_ener"):
        label[f"find_{key}"] = float(case["find"].get(key, 1.0))
    return pred, label


def _config(case: dict) -> EnerLossConfig:
    """The loss built from the case's input section, through the schema."""
    return EnerLossConfig.from_params(case["loss_section"], case["start_lr"])


def _torch(d: dict, grad: bool = False) -> dict:
    torch = pytest.importorskip("torch")
    return {
        k: torch.tensor(v, requires_grad=grad and k in PRED_KEYS)
        if isinstance(v, np.ndarray)
        else v
        for k, v in d.items()
    }


def _jax(d: dict) -> dict:
    pytest.importorskip("jax")
    import jax

    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp

    return {k: jnp.asarray(v) if isinstance(v, np.ndarray) else v for k, v in d.items()}


CONVERT = {"numpy": lambda d: d, "torch": _torch, "jax": _jax}


def _check_values(name: str, loss, metrics: dict) -> None:
    case = CASES[name]
    _close(float(loss), case["loss"], f"{name} loss")
    assert set(metrics) == set(case["metrics"]), name
    for key, want in case["metrics"].items():
        _close(float(metrics[key]), want, f"{name} {key}")


def _check_grads(name: str, grads: dict) -> None:
    for key in PRED_KEYS:
        want = REF[f"{name}/grad_{key}"]
        got = np.zeros(want.shape) if grads.get(key) is None else np.asarray(grads[key])
        scale = max(1.0, float(np.max(np.abs(want))))
        np.testing.assert_allclose(got.reshape(want.shape), want, rtol=0, atol=1e-10 * scale)


@pytest.mark.parametrize("lib", sorted(CONVERT))
@pytest.mark.parametrize("name", sorted(CASES))
def test_loss_and_metrics_match_deepmd(name, lib):
    case = CASES[name]
    pred, label = _inputs(case)
    pred, label = CONVERT[lib](pred), CONVERT[lib](label)
    loss, metrics = ener_loss(pred, label, case["natoms"], case["lr"], _config(case))
    assert type(loss).__module__.split(".")[0] == type(pred["energy"]).__module__.split(".")[0]
    _check_values(name, loss, metrics)


@pytest.mark.parametrize("name", sorted(CASES))
def test_torch_gradients_match_deepmd(name):
    case = CASES[name]
    pred, label = _inputs(case)
    tp = _torch(pred, grad=True)
    loss, _ = ener_loss(tp, _torch(label), case["natoms"], case["lr"], _config(case))
    loss.backward()
    _check_grads(name, {k: None if tp[k].grad is None else tp[k].grad.numpy() for k in PRED_KEYS})


@pytest.mark.parametrize("name", sorted(CASES))
def test_jax_gradients_match_deepmd(name):
    import jax

    case = CASES[name]
    pred, label = _inputs(case)
    jp, jl = _jax(pred), _jax(label)
    cfg = _config(case)

    def loss_of(p):
        return ener_loss({**jp, **p}, jl, case["natoms"], case["lr"], cfg)[0]

    _check_grads(name, jax.grad(loss_of)({k: jp[k] for k in PRED_KEYS}))


@pytest.mark.parametrize("name", ["mae_norm_kinks_padded", "huber_norm_kinks"])
def test_jax_jit_with_traced_lr_and_flags(name):
    """Under jit, with lr and the find flags as traced arrays (as in the jax trainer)."""
    import jax

    case = CASES[name]
    pred, label = _inputs(case)
    jp, jl = _jax(pred), _jax(label)
    cfg = _config(case)

    def loss_of(p, lr, flags):
        return ener_loss({**jp, **p}, {**jl, **flags}, case["natoms"], lr, cfg)

    flags = {k: v for k, v in jl.items() if k.startswith("find_")}
    grad = jax.jit(jax.grad(lambda *a: loss_of(*a)[0]))
    _check_grads(name, grad({k: jp[k] for k in PRED_KEYS}, case["lr"], flags))
    loss, metrics = jax.jit(loss_of)({k: jp[k] for k in PRED_KEYS}, case["lr"], flags)
    _check_values(name, loss, metrics)


@pytest.mark.parametrize("name", sorted(CASES))
def test_lcurve_columns_are_deepmds(name):
    """The columns dpa's lcurve.out shows are the metrics DeePMD-kit returns for that input."""
    case = CASES[name]
    shown = sorted(k for k in case["metrics"] if "l2_" not in k)
    assert sorted(_config(case).metric_keys()) == shown


def test_mae_lcurve_header():
    header = lcurve_header(EnerLossConfig(loss_func="mae").metric_keys())
    assert header.split("\n")[0].split()[1:] == [
        "step",
        "mae_e_val",
        "mae_e_trn",
        "mae_f_val",
        "mae_f_trn",
        "rmse_val",
        "rmse_trn",
        "lr",
    ]


# ---------------------------------------------------------------------------------------------
# the schema


def test_config_defaults_are_the_schemas():
    cfg = EnerLossConfig.from_config(LossConfig(), 1e-3)
    assert cfg == EnerLossConfig(start_lr=1e-3)
    assert (cfg.start_pref_e, cfg.start_pref_f, cfg.huber_delta) == (0.02, 1000.0, 0.01)
    assert cfg.deltas() == (0.01, 0.01, 0.01) and not cfg.huber
    listed = EnerLossConfig.from_params({"use_huber": True, "huber_delta": [1, 2, 3]}, 1.0)
    assert listed.huber and listed.deltas() == (1.0, 2.0, 3.0)
    assert not EnerLossConfig.from_params({"use_huber": True, "loss_func": "mae"}, 1.0).huber


UNSUPPORTED = {
    "start_pref_pf": 1.0,
    "limit_pref_pf": 1.0,
    "use_default_pf": True,
    "start_pref_gf": 1.0,
    "limit_pref_gf": 1.0,
    "numb_generalized_coord": 2,
    "start_pref_h": 1.0,
    "limit_pref_h": 1.0,
    "enable_atom_ener_coeff": True,
}


def _input_with_loss(loss: dict) -> dict:
    return {
        "model": {
            "type_map": ["O", "H"],
            "descriptor": {"type": "se_e2_a", "sel": [4, 8], "rcut": 4.0, "rcut_smth": 0.5},
            "fitting_net": {"neuron": [8]},
        },
        "loss": loss,
        "training": {"training_data": {"systems": ["x"]}, "numb_steps": 1},
    }


@pytest.mark.parametrize("key", sorted(UNSUPPORTED))
def test_unsupported_keys_are_refused_by_the_schema(key):
    with pytest.raises(ConfigError) as err:
        parse_train_input(_input_with_loss({key: UNSUPPORTED[key]}), source="in.json")
    message = str(err.value)
    assert message.startswith(f"in.json: loss.{key}: ") and "not supported by dpa" in message
    assert f"remove loss.{key} from the input or set it to" in message
    with pytest.raises(ConfigError, match=f"loss.{key}: "):
        EnerLossConfig.from_params({key: UNSUPPORTED[key]}, 1e-3)
    default = LossConfig.model_fields[key].default
    assert getattr(parse_train_input(_input_with_loss({key: default})).loss, key) == default


@pytest.mark.parametrize(
    "loss, key, words",
    [
        ({"f_use_norm": True}, "f_use_norm", "loss.loss_func = 'mae' or loss.use_huber = true"),
        ({"f_use_norm": True, "loss_func": "mse"}, "f_use_norm", "remove loss.f_use_norm"),
        ({"use_huber": True, "relative_f": 0.1}, "use_huber", "remove loss.use_huber or"),
        ({"loss_func": "mape"}, "loss_func", "'mse' or 'mae'"),
        ({"huber_delta": [0.1, 0.2]}, "huber_delta", "three"),
        ({"huber_delta": -0.1}, "huber_delta", "> 0"),
    ],
)
def test_cross_field_rules(loss, key, words):
    with pytest.raises(ConfigError) as err:
        parse_train_input(_input_with_loss(loss))
    assert f"loss.{key}: " in str(err.value) and words in str(err.value)


@pytest.mark.parametrize(
    "loss",
    [
        {"loss_func": "mae", "f_use_norm": True},
        {"use_huber": True, "f_use_norm": True, "huber_delta": [0.1, 0.2, 0.3]},
        {"loss_func": "mae", "use_huber": True, "relative_f": None},
        {"loss_func": "mae", "relative_f": 0.5},
    ],
)
def test_accepted_variants(loss):
    assert parse_train_input(_input_with_loss(loss)).loss.model_dump(exclude_unset=True) == loss


def test_doc_marks_the_unsupported_keys():
    lines = doc_train_input().splitlines()
    for key in UNSUPPORTED:
        at = next(i for i, line in enumerate(lines) if line.startswith(f"  {key}:"))
        assert "not supported by dpa" in lines[at + 1], key
    text = doc_train_input()
    assert '"mse" | "mae"' in text and "mae_*" in text and "Huber" in text


# ---------------------------------------------------------------------------------------------
# training through the CLI


@pytest.mark.parametrize("backend", ["torch", "jax"])
def test_cli_trains_with_mae(tmp_path, backend):
    pytest.importorskip("torch" if backend == "torch" else "optax")
    from dpa_cli.main import cli

    data = {"training_data": {"systems": [WATER], "batch_size": 1}}
    path = write_small_input(tmp_path, ["O", "H"], data, steps=3, disp_freq=1, save_freq=3)
    config = json.loads(path.read_text())
    config["loss"] = {**copy.deepcopy(config["loss"]), "loss_func": "mae"}
    path.write_text(json.dumps(config))
    out = tmp_path / "out"
    args = ["--backend", backend, "train", str(path), "-o", str(out)]
    result = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    lines = (out / "lcurve.out").read_text().splitlines()
    assert lines[0].split()[1:] == ["step", "mae_e_trn", "mae_f_trn", "rmse_trn", "lr"]
    rows = np.loadtxt(out / "lcurve.out", comments="#", ndmin=2)
    assert rows.shape == (3, 5) and np.all(np.isfinite(rows))
    assert np.all(rows[:, 1:4] > 0)
