"""The "exp" learning rate, the "ener" loss and the lcurve.out layout against DeePMD-kit 3.2.0.

Every expected number below is an oracle fixture printed by DeePMD-kit 3.2.0 itself (installed in
~/.cache/dpa/deepmd-ref), by small scripts run with ~/.cache/dpa/deepmd-ref/bin/python:
  * lr: `deepmd.dpmodel.utils.learning_rate.LearningRateExp(**cfg).value(step)` (the schedule
    `dp --pt train` uses), printed with repr();
  * loss: `deepmd.pt.loss.ener.EnergyStdLoss(starter_learning_rate=start_lr, **prefs)` called as
    `loss_fn(input_dict, lambda **kw: pred, label, natoms, lr)` on `make_inputs()` below (float64
    torch tensors, energy reshaped to (nf, 1), find_* flags as python floats); `input_dict` holds an
    `atype` (zeros, or -1 at [2, 3] and [1, 0] for the padded case) only for the masked cases;
  * lcurve: `Trainer.print_header` / `Trainer.print_on_training` called on a namespace with
    multi_task=False, writing to a StringIO.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from dpa.errors import ConfigError
from dpa.train.loss import (
    EnerLossConfig,
    display_metrics,
    ener_loss,
    lcurve_header,
    lcurve_line,
    weighted_average,
)
from dpa.train.schedule import ExpDecay

# ---------------------------------------------------------------------------------------------
# learning rate

STEPS = [0, 1, 99, 100, 499, 500, 1999, 2000, 4999, 5000, 19999, 20000, 123456, 999999, 1000000]

# (ExpDecay kwargs, DeePMD's effective decay_steps, decay_rate, lr at STEPS)
LR_CASES = [
    (
        dict(start_lr=1e-3, stop_lr=3.51e-8, decay_steps=5000, numb_steps=1000000),
        5000,
        0.9500064099092085,
        [0.001] * 9
        + [0.0009500064099092084, 0.00085739235494628, 0.0008145282330061172]
        + [0.0002920363111186241, 3.6947119128759015e-08, 3.5100000000000195e-08],
    ),
    (
        dict(start_lr=2e-3, stop_lr=1e-8, decay_steps=500, numb_steps=20000),
        500,
        0.737011475661742,
        [0.002] * 5
        + [0.001474022951323484, 0.0008006685059246162, 0.0005901018770673834]
        + [0.00012832115105860733, 9.45741609003175e-05, 1.3568309762098678e-08]
        + [1e-08] * 4,
    ),
    (  # decay_steps >= numb_steps: DeePMD resets decay_steps to 100 here
        dict(start_lr=1e-3, stop_lr=1e-5, decay_steps=5000, numb_steps=2000),
        100,
        0.7943282347242815,
        [0.001] * 3
        + [0.0007943282347242815, 0.0003981071705534972, 0.0003162277660168379]
        + [1.2589254117941668e-05]
        + [1e-05] * 8,
    ),
    (  # explicit decay_rate: stop_lr is only the floor
        dict(start_lr=1e-3, stop_lr=1e-6, decay_steps=200, numb_steps=1000, decay_rate=0.5),
        200,
        0.5,
        [0.001] * 4 + [0.00025, 0.00025, 1.953125e-06] + [1e-06] * 8,
    ),
    (  # stop_lr = 0: the rate is computed from 1e-10
        dict(start_lr=1e-3, stop_lr=0.0, decay_steps=100, numb_steps=5000),
        100,
        0.7244359600749901,
        [0.001] * 3
        + [0.0007244359600749902, 0.00027542287033381673, 0.00019952623149688804]
        + [2.1877616239495555e-06, 1.5848931924611158e-06, 1.3803842646028897e-10]
        + [1.0000000000000035e-10, 1.3803842646029043e-31, 1.0000000000000143e-31]
        + [1.737800828749528e-176, 0.0, 0.0],
    ),
    (
        dict(start_lr=1e-3, stop_lr=1e-6, decay_steps=100, numb_steps=3000, smooth=True),
        100,
        0.7943282347242815,
        [0.001, 0.0009977000638225534, 0.0007961593504173187, 0.0007943282347242815]
        + [0.00031695674630434907, 0.0003162277660168379, 1.0023052380778999e-05]
        + [9.999999999999997e-06]
        + [1e-06] * 7,
    ),
    (  # linear warmup from 0.1 start_lr over 500 steps, then the decay over the other 19500
        dict(
            start_lr=1e-3,
            stop_lr=1e-6,
            decay_steps=500,
            numb_steps=20000,
            warmup_steps=500,
            warmup_start_factor=0.1,
        ),
        500,
        0.8376776400682919,
        [0.0001, 0.00010180000000000001, 0.0002782, 0.00028000000000000003]
        + [0.0009981999999999999, 0.001, 0.0007017038286703829, 0.0005878016072274914]
        + [0.0002424462017082329, 0.00020309176209047365, 1.1937766417144382e-06]
        + [1.0000000000000014e-06]
        + [1e-06] * 3,
    ),
    (
        dict(
            start_lr=2e-3,
            stop_lr=1e-7,
            decay_steps=100,
            numb_steps=5000,
            warmup_steps=100,
            smooth=True,
        ),
        100,
        0.8170034258957416,
        [0.0, 2e-05, 0.00198, 0.002, 0.0008929009138436652, 0.0008910980765191256]
        + [4.306866717171458e-05, 4.2981708137972395e-05, 1.0020231637482388e-07]
        + [1e-07] * 6,
    ),
]


@pytest.mark.parametrize("kwargs,decay_steps,decay_rate,expected", LR_CASES)
def test_exp_decay_matches_deepmd(kwargs, decay_steps, decay_rate, expected):
    sched = ExpDecay(**kwargs)
    assert sched.decay_steps == decay_steps
    assert sched.decay_rate == pytest.approx(decay_rate, rel=1e-15)
    got = [sched.value(s) for s in STEPS]
    assert all(isinstance(v, float) for v in got)
    np.testing.assert_allclose(got, expected, rtol=1e-14, atol=0)
    # vectorized over an array of steps, same numbers
    np.testing.assert_allclose(sched.value(np.asarray(STEPS)), expected, rtol=1e-14, atol=0)


def test_exp_decay_bad_input():
    with pytest.raises(ConfigError, match="start_lr"):
        ExpDecay(start_lr=0.0, stop_lr=1e-8, decay_steps=10, numb_steps=100)
    with pytest.raises(ConfigError, match="decay_steps"):
        ExpDecay(start_lr=1e-3, stop_lr=1e-8, decay_steps=0, numb_steps=100)
    with pytest.raises(ConfigError, match="warmup_steps"):
        ExpDecay(start_lr=1e-3, stop_lr=1e-8, decay_steps=10, numb_steps=100, warmup_steps=100)


# ---------------------------------------------------------------------------------------------
# loss


def make_inputs(seed: int = 20240611, nf: int = 3, nat: int = 4):
    rng = np.random.default_rng(seed)
    pred = {
        "energy": rng.standard_normal(nf) * 3.0,
        "force": rng.standard_normal((nf, nat, 3)),
        "virial": rng.standard_normal((nf, 9)) * 2.0,
        "atom_energy": rng.standard_normal((nf, nat)),
    }
    label = {
        "energy": rng.standard_normal(nf) * 3.0,
        "force": rng.standard_normal((nf, nat, 3)),
        "virial": rng.standard_normal((nf, 9)) * 2.0,
        "atom_ener": rng.standard_normal((nf, nat)),
    }
    return pred, label


NAN = math.nan
_ALL = dict(start_pref_v=1.0, limit_pref_v=0.5, start_pref_ae=0.3, limit_pref_ae=2.0)
_E_F = {
    "l2_ener_loss": 6.114195790534783,
    "rmse_e": 0.6181724976965766,
    "l2_force_loss": 1.7911789431911487,
    "rmse_f": 1.338349335260099,
}
_V_AE = {
    "l2_virial_loss": 4.694183096131167,
    "rmse_v": 0.5416515886695044,
    "l2_atom_ener_loss": 2.022369443010541,
    "rmse_ae": 1.4221003631989344,
}
# name: (cfg overrides, lr, start_lr, mask kind, find flags, DeePMD loss and more_loss)
LOSS_CASES = {
    "default": (
        {},
        3.3e-4,
        1e-3,
        None,
        {},
        {"loss": 593.3233573629861, **_E_F, "rmse": 24.358229766610425},
    ),
    "all_terms": (
        _ALL,
        2e-4,
        1e-3,
        None,
        {},
        {"loss": 364.95894588649736, **_E_F, **_V_AE, "rmse": 19.10389870907238},
    ),
    "all_terms_masked": (
        _ALL,
        2e-4,
        1e-3,
        "full",
        {},
        {"loss": 364.95894588649736, **_E_F, **_V_AE, "rmse": 19.10389870907238},
    ),
    "no_virial_label_intensive": (
        {**_ALL, "intensive_ener_virial": True},
        7e-4,
        1e-3,
        None,
        {"virial": 0.0},
        {
            "loss": 1256.1207242579892,
            **_E_F,
            **_V_AE,
            "l2_virial_loss": NAN,
            "rmse_v": NAN,
            "rmse": 35.44179346841789,
        },
    ),
    "padded_masked": (
        _ALL,
        2e-4,
        1e-3,
        "padded",
        {},
        {
            "loss": 394.3552295250091,
            **_E_F,
            **_V_AE,
            "rmse_e": 0.7195489217791607,
            "rmse_f": 1.3911541395439515,
            "rmse_v": 0.6632515402747075,
            "rmse_ae": 1.446707202487846,
            "rmse": 19.85837932775505,
        },
    ),
    "v_start_zero_inactive": (
        {"start_pref_v": 0.0, "limit_pref_v": 1.0},
        5e-4,
        1e-3,
        None,
        {},
        {"loss": 897.2646210304631, **_E_F, "rmse": 29.954375657497238},
    ),
}


def _numpy_inputs(mask_kind, find):
    pred, label = make_inputs()
    nf, nat = pred["atom_energy"].shape
    if mask_kind is not None:
        mask = np.ones((nf, nat))
        if mask_kind == "padded":
            mask[2, 3] = 0.0
            mask[1, 0] = 0.0
        pred["mask"] = mask
    for key in ("energy", "force", "virial", "atom_ener"):
        label[f"find_{key}"] = find.get(key, 1.0)
    return pred, label, nat


def _to_torch(d):
    torch = pytest.importorskip("torch")
    return {k: torch.as_tensor(v) if isinstance(v, np.ndarray) else v for k, v in d.items()}


def _to_jax(d):
    pytest.importorskip("jax")
    import jax

    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp

    return {k: jnp.asarray(v) if isinstance(v, np.ndarray) else v for k, v in d.items()}


CONVERT = {"numpy": lambda d: d, "torch": _to_torch, "jax": _to_jax}


@pytest.mark.parametrize("lib", sorted(CONVERT))
@pytest.mark.parametrize("name", sorted(LOSS_CASES))
def test_ener_loss_matches_deepmd(name, lib):
    overrides, lr, start_lr, mask_kind, find, expected = LOSS_CASES[name]
    cfg = EnerLossConfig(start_lr=start_lr, **overrides)
    pred, label, nat = _numpy_inputs(mask_kind, find)
    pred, label = CONVERT[lib](pred), CONVERT[lib](label)
    loss, metrics = ener_loss(pred, label, nat, lr, cfg)
    assert type(loss).__module__.split(".")[0] == type(pred["energy"]).__module__.split(".")[0]
    assert float(loss) == pytest.approx(expected["loss"], rel=1e-13)
    assert set(metrics) == set(expected) - {"loss"}
    for key, want in expected.items():
        if key == "loss":
            continue
        got = float(metrics[key])
        if math.isnan(want):
            assert math.isnan(got), key
        else:
            assert got == pytest.approx(want, rel=1e-13), key


def test_ener_loss_torch_autograd():
    torch = pytest.importorskip("torch")
    pred, label, nat = _numpy_inputs(None, {})
    tp = {k: torch.tensor(v, requires_grad=True) for k, v in pred.items()}
    loss, metrics = ener_loss(
        tp, _to_torch(label), nat, 2e-4, EnerLossConfig(start_lr=1e-3, **_ALL)
    )
    loss.backward()
    assert tp["force"].grad is not None and torch.all(torch.isfinite(tp["force"].grad))
    # d loss / d F_pred of pref_f * mean((F0 - F)^2)
    pref_f = 1.0 + (1000.0 - 1.0) * 0.2
    want = -2.0 * pref_f * (label["force"] - pred["force"]) / pred["force"].size
    np.testing.assert_allclose(tp["force"].grad.numpy(), want, rtol=1e-12)


def test_ener_loss_jax_grad_and_jit():
    pytest.importorskip("jax")
    import jax

    jax.config.update("jax_enable_x64", True)
    pred, label, nat = _numpy_inputs(None, {})
    jp, jl = _to_jax(pred), _to_jax(label)
    cfg = EnerLossConfig(start_lr=1e-3, **_ALL)

    def f(p):
        return ener_loss(p, jl, nat, 2e-4, cfg)[0]

    assert float(jax.jit(f)(jp)) == pytest.approx(364.95894588649736, rel=1e-13)
    grad = jax.grad(f)(jp)
    pref_e = 1.0 + (0.02 - 1.0) * 0.2
    want = 2.0 * pref_e / nat * (pred["energy"] - label["energy"]) / pred["energy"].size
    np.testing.assert_allclose(np.asarray(grad["energy"]), want, rtol=1e-12)


def test_loss_config_from_params():
    cfg = EnerLossConfig.from_params({"type": "ener", "start_pref_v": 0.5, "limit_pref_v": 1}, 1e-3)
    assert cfg.start_lr == 1e-3 and cfg.start_pref_f == 1000.0 and cfg.active("v")
    assert cfg.prefactor("e", 1e-3) == pytest.approx(0.02)
    assert cfg.prefactor("e", 0.0) == pytest.approx(1.0)
    with pytest.raises(ConfigError, match="loss.bogus"):
        EnerLossConfig.from_params({"bogus": 1}, 1e-3)
    # an option dpa does not implement is refused, by the schema, naming the key
    with pytest.raises(ConfigError, match="loss.start_pref_gf"):
        EnerLossConfig.from_params({"start_pref_gf": 1.0}, 1e-3)
    # Huber is implemented now (tests/test_loss_variants.py checks it against DeePMD-kit)
    assert EnerLossConfig.from_params({"use_huber": True}, 1e-3).huber


# ---------------------------------------------------------------------------------------------
# lcurve.out

LCURVE_WITH_VAL = (
    "# step       rmse_val    rmse_trn    rmse_e_val  rmse_e_trn    rmse_f_val  rmse_f_trn"
    "    rmse_v_val  rmse_v_trn   lr      \n"
    "# If there is no available reference data, rmse_*_{val,trn} will print nan\n"
    "      1      1.91e+01    2.44e+01      1.23e-04    6.18e-01      1.39e+00    1.34e+00"
    "           nan         nan    1.0e-03\n"
    "1000000      1.91e+01    2.44e+01      1.23e-04    6.18e-01      1.39e+00    1.34e+00"
    "           nan         nan    3.5e-08\n"
)
LCURVE_TRN_ONLY = (
    "# step       rmse_trn    rmse_e_trn    rmse_f_trn    rmse_v_trn   lr      \n"
    "# If there is no available reference data, rmse_*_{val,trn} will print nan\n"
    "   2000      2.44e+01      6.18e-01      1.34e+00           nan    7.9e-04\n"
)


def test_lcurve_layout_matches_deepmd():
    trn = {
        "rmse": 24.358229766610425,
        "rmse_e": 0.6181724976965766,
        "rmse_f": 1.338349335260099,
        "rmse_v": NAN,
        "l2_ener_loss": 1.0,  # never shown
    }
    val = {"rmse": 19.1038987, "rmse_e": 0.000123456, "rmse_f": 1.3911541395439515, "rmse_v": NAN}
    text = lcurve_header(trn) + lcurve_line(1, val, trn, 1e-3)
    text += lcurve_line(1000000, val, trn, 3.5100000000000195e-08)
    assert text == LCURVE_WITH_VAL
    text = lcurve_header(trn, with_validation=False) + lcurve_line(2000, None, trn, 7.943e-4)
    assert text == LCURVE_TRN_ONLY


def test_display_and_weighted_average():
    shown = display_metrics({"rmse_f": np.float64(2.0), "l2_force_loss": 4.0, "rmse": 1.0})
    assert shown == {"rmse": 1.0, "rmse_f": 2.0}
    avg = weighted_average([({"rmse_f": 1.0}, 10), ({"rmse_f": 4.0, "l2_x": 9.0}, 30)])
    assert avg == {"rmse_f": pytest.approx(3.25)}
    assert weighted_average([]) == {}
