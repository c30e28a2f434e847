"""Training models that take frame and atomic parameters (`numb_fparam`, `numb_aparam`): data with
fparam.npy/aparam.npy, their statistics, DeePMD-kit's first steps (fixture
tests/fixtures/train_step/se_e2_a_fparam.*, made by make_fparam_fixture.py) and `dpa train`
end to end on torch and jax."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import dpa
from dpa.data import load_system
from dpa.data.evaluation import evaluate_system
from dpa.errors import DataError
from dpa.train.batches import batch_inputs
from dpa.train.loss import EnerLossConfig, ener_loss
from dpa.train.stat import compute_parameter_statistics

HERE = Path(__file__).resolve().parent
FIXTURE = HERE / "fixtures" / "train_step"
CASES = json.loads((FIXTURE / "cases.json").read_text())
MOLECULE = HERE.parents[1] / "shared" / CASES["systems"]["molecule"]["path"]
TOL = 1e-10


def _trainer(backend: str, tree: dict) -> Any:
    if backend == "torch":
        pytest.importorskip("torch")
        from dpa.backends.torch.train import TorchTrainer

        return TorchTrainer(tree, device="cpu")
    pytest.importorskip("jax")
    from dpa.backends.jax.train import JaxTrainer

    return JaxTrainer(tree)


def _flatten(node: Any, prefix: str = "") -> dict[str, np.ndarray]:
    """Float arrays of a model tree keyed by their path (keys and list indices joined by /)."""
    out: dict[str, np.ndarray] = {}
    if isinstance(node, dict):
        for key, value in node.items():
            out.update(_flatten(value, f"{prefix}{key}/"))
    elif isinstance(node, list | tuple):
        for i, value in enumerate(node):
            out.update(_flatten(value, f"{prefix}{i}/"))
    elif isinstance(node, np.ndarray) and node.dtype.kind == "f":
        out[prefix[:-1]] = np.asarray(node)
    return out


def _assert_close(got: dict, ref: Any, prefix: str, what: str) -> None:
    want = {k[len(prefix) :]: ref[k] for k in ref.files if k.startswith(prefix)}
    assert want and set(want) <= set(got), f"{what}: {sorted(set(want) - set(got))[:3]}"
    for path, value in want.items():
        err = float(np.max(np.abs(got[path] - value)))
        assert err <= TOL * max(1.0, float(np.max(np.abs(value)))), f"{what} {path}: {err:.3g}"


@pytest.mark.parametrize("backend", ["torch", "jax"])
def test_steps_with_fparam_and_aparam_equal_deepmd(backend: str) -> None:
    """From DeePMD-kit's `.dp` and batches, dpa's loss, gradients and Adam updates equal
    DeePMD-kit's for a model fed fparam and aparam (the first loss included)."""
    ref = np.load(FIXTURE / "se_e2_a_fparam.npz")
    model = dpa.io.load(FIXTURE / "se_e2_a_fparam.dp")
    assert model.tree["fitting"]["numb_fparam"] == 1 and model.tree["fitting"]["numb_aparam"] == 1
    trainer = _trainer(backend, model.tree)
    cfg = EnerLossConfig.from_params(CASES["systems"]["molecule"]["loss"], CASES["start_lr"])
    atype = ref["molecule_atype"]

    def loss_fn(pred, labels, lr):
        return ener_loss(pred, labels, int(atype.shape[0]), lr, cfg)

    trainable = {k.split("/", 1)[1] for k in ref.files if k.startswith("molecule_step0_grad/")}
    for k, lr in enumerate(ref["lr"].tolist()):
        frames = ref["molecule_frames"][k]
        inputs = batch_inputs(
            model,
            ref["molecule_coord"][k],
            atype,
            None,
            trainer.slot_rounding,
            ref["fparam"][frames],
            ref["aparam"][frames],
        )
        labels = {
            "energy": ref["molecule_energy"][k],
            "force": ref["molecule_force"][k],
            "virial": ref["molecule_virial"][k],
            "find_energy": 1.0,
            "find_force": 1.0,
            "find_virial": 1.0,
        }
        if k == 0:
            values, grads = trainer.gradients(inputs, labels, lr, loss_fn)
            assert values["loss"] == pytest.approx(float(ref["molecule_step0_loss"]), rel=TOL)
            _assert_close(_flatten(grads), ref, "molecule_step0_grad/", "gradient")
        values = trainer.step(inputs, labels, lr, loss_fn)
        assert values["loss"] == pytest.approx(float(ref[f"molecule_step{k}_loss"]), rel=TOL)
        for key in ("rmse_e", "rmse_f", "rmse_v"):
            assert values[key] == pytest.approx(float(ref[f"molecule_step{k}_{key}"]), rel=TOL)
        params = {p: v for p, v in _flatten(trainer.tree()).items() if p in trainable}
        _assert_close(params, ref, f"molecule_step{k}_param/", f"step {k} parameters")


def test_parameter_statistics_equal_deepmd() -> None:
    """fparam/aparam avg and inv_std from the sampled frames are DeePMD-kit's."""
    ref = np.load(FIXTURE / "se_e2_a_fparam.npz")
    model = dpa.io.load(FIXTURE / "se_e2_a_fparam.dp")
    fit = model.tree["fitting"]["@variables"]
    zeroed = {**model.tree["fitting"], "@variables": {**fit}}
    for key in ("fparam", "aparam"):  # forget the stored statistics
        zeroed["@variables"][f"{key}_avg"] = np.zeros_like(fit[f"{key}_avg"])
        zeroed["@variables"][f"{key}_inv_std"] = np.ones_like(fit[f"{key}_inv_std"])
    system = load_system(str(MOLECULE))
    nframes = ref["fparam"].shape[0]
    system = system.frames(slice(0, nframes))
    system.fparam, system.aparam = ref["fparam"], ref["aparam"]
    picked = system.frames(ref["stat_frames"])
    tree = compute_parameter_statistics({**model.tree, "fitting": zeroed}, [picked], None)
    got = tree["fitting"]["@variables"]
    for key in ("fparam_avg", "fparam_inv_std", "aparam_avg", "aparam_inv_std"):
        np.testing.assert_allclose(got[key], ref[f"stat_{key}"], rtol=1e-12, atol=0)


def _data_with_parameters(root: Path, aparam: bool = True) -> Path:
    """A copy of the molecule system whose set folders also hold fparam.npy (and aparam.npy)."""
    folder = root / "C4H3O1"
    shutil.copytree(MOLECULE, folder)
    nat = len((folder / "type.raw").read_text().split())
    for set_dir in sorted(folder.glob("set.*")):
        nf = np.load(set_dir / "coord.npy").shape[0]
        f = np.arange(nf, dtype=np.float64)
        np.save(set_dir / "fparam.npy", (1.0 + 0.2 * np.sin(f))[:, None])
        if aparam:
            np.save(set_dir / "aparam.npy", 0.1 * np.add.outer(np.cos(f), np.arange(nat)))
    return folder


def test_reader_loads_parameters(tmp_path: Path) -> None:
    folder = _data_with_parameters(tmp_path)
    system = load_system(str(folder))
    nf = system.nframes
    assert system.fparam.shape == (nf, 1) and system.aparam.shape == (nf, system.natoms, 1)
    f = np.arange(np.load(folder / "set.000" / "coord.npy").shape[0], dtype=np.float64)
    np.testing.assert_array_equal(system.fparam[: f.size, 0], 1.0 + 0.2 * np.sin(f))
    np.testing.assert_array_equal(system.aparam[: f.size, 3, 0], 0.1 * (np.cos(f) + 3))
    sub = system.frames([2, 0])
    np.testing.assert_array_equal(sub.aparam, system.aparam[[2, 0]])


def _input(data: Path, steps: int, **fitting: Any) -> dict:
    return {
        "model": {
            "type_map": ["O", "H", "C"],
            "descriptor": {
                "type": "se_e2_a",
                "sel": [6, 6, 6],
                "rcut": 4.0,
                "rcut_smth": 0.5,
                "neuron": [4, 8],
                "axis_neuron": 2,
                "seed": 1,
            },
            "fitting_net": {"neuron": [8], "seed": 1, **fitting},
        },
        "learning_rate": {"start_lr": 1e-3, "stop_lr": 1e-4, "decay_steps": 2},
        "loss": {"start_pref_e": 0.02, "limit_pref_e": 1, "start_pref_f": 1000, "limit_pref_f": 1},
        "training": {
            "training_data": {"systems": [str(data)], "batch_size": 2},
            "validation_data": {"systems": [str(data)], "batch_size": 1},
            "numb_steps": steps,
            "disp_freq": 2,
            "save_freq": steps,
            "seed": 3,
        },
    }


@pytest.mark.parametrize("backend", ["torch", "jax"])
def test_dpa_train_with_fparam(tmp_path: Path, backend: str) -> None:
    """`dpa train` on data with fparam.npy and aparam.npy: statistics from the data, finite
    losses, and a final model that evaluates with the data's parameters (and differs with
    other ones)."""
    pytest.importorskip(backend)
    from dpa.train.loop import train

    data = _data_with_parameters(tmp_path)
    work = tmp_path / "run"
    work.mkdir()
    (work / "input.json").write_text(json.dumps(_input(data, 4, numb_fparam=1, numb_aparam=1)))
    final = train(work / "input.json", backend=backend, outdir=work)
    text = (work / "lcurve.out").read_text().splitlines()
    lines = [ln.split() for ln in text if not ln.startswith("#")]
    assert [int(ln[0]) for ln in lines] == [1, 2, 4]
    assert all(np.isfinite(float(v)) for ln in lines for v in ln[1:])
    model = dpa.io.load(final)
    system = load_system(str(data))
    fit = model.tree["fitting"]["@variables"]
    stat = system.frames(slice(0, 20))  # data_stat_nbatch (10) batches of 2 frames
    np.testing.assert_allclose(fit["fparam_avg"], stat.fparam.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(fit["fparam_inv_std"], 1 / stat.fparam.std(axis=0), rtol=1e-10)
    np.testing.assert_allclose(
        fit["aparam_avg"], stat.aparam.reshape(-1, 1).mean(axis=0), rtol=1e-12
    )
    pot = dpa.load_model(final, backend="numpy")
    frame = system.frames([0])
    atype = frame.remap_types(pot.type_map)
    with pytest.raises(DataError, match="fparam"):
        pot.evaluate(frame.coord, atype, None)
    e = pot.evaluate(frame.coord, atype, None, fparam=frame.fparam, aparam=frame.aparam)
    other = pot.evaluate(frame.coord, atype, None, fparam=frame.fparam + 1, aparam=frame.aparam)
    assert np.isfinite(e["energy"]).all() and abs(float(e["energy"][0] - other["energy"][0])) > 0
    # `dpa test` feeds each frame its own parameters from the data
    result = evaluate_system(pot, system.frames(slice(0, 3)))
    assert result.pred["energy"][0] == pytest.approx(float(e["energy"][0]), rel=1e-12)
    without = system.frames(slice(0, 3))
    without.fparam = None
    with pytest.raises(DataError, match=r"C4H3O1.*no fparam\.npy"):
        evaluate_system(pot, without)


def test_training_data_without_fparam_is_refused(tmp_path: Path) -> None:
    """A model taking fparam trained on data without fparam.npy: a DataError naming the system
    before any step; a default_fparam lets it train."""
    from dpa.train.loop import train

    data = tmp_path / "C4H3O1"
    shutil.copytree(MOLECULE, data)
    work = tmp_path / "run"
    work.mkdir()
    (work / "input.json").write_text(json.dumps(_input(data, 1, numb_fparam=1)))
    with pytest.raises(DataError, match=r"C4H3O1.*no fparam\.npy.*default_fparam"):
        train(work / "input.json", backend="torch", outdir=work)
    (work / "input.json").write_text(
        json.dumps(_input(data, 1, numb_fparam=1, default_fparam=[0.5]))
    )
    final = train(work / "input.json", backend="torch", outdir=work)
    assert dpa.io.load(final).tree["fitting"]["default_fparam"] == [0.5]


def test_parameter_width_mismatch_is_refused(tmp_path: Path) -> None:
    data = _data_with_parameters(tmp_path, aparam=False)
    work = tmp_path / "run"
    work.mkdir()
    (work / "input.json").write_text(json.dumps(_input(data, 1, numb_fparam=2)))
    from dpa.train.loop import train

    with pytest.raises(DataError, match="fparam.npy holds 1 values per frame.*numb_fparam is 2"):
        train(work / "input.json", backend="torch", outdir=work)


def test_atom_energy_labels_train(tmp_path: Path) -> None:
    """atom_ener.npy is read as a label and drives the loss's atomic-energy term (its rmse_ae
    columns in lcurve.out are finite numbers, not NaN)."""
    from dpa.train.loop import train

    data = tmp_path / "C4H3O1"
    shutil.copytree(MOLECULE, data)
    for set_dir in sorted(data.glob("set.*")):
        energy = np.load(set_dir / "energy.npy").reshape(-1)
        nat = len((data / "type.raw").read_text().split())
        np.save(set_dir / "atom_ener.npy", np.repeat(energy[:, None] / nat, nat, axis=1))
    system = load_system(str(data))
    assert system.atom_ener.shape == (system.nframes, system.natoms)
    np.testing.assert_allclose(system.atom_ener.sum(axis=1), system.energy, rtol=1e-12)
    work = tmp_path / "run"
    work.mkdir()
    cfg = _input(data, 2)
    cfg["loss"].update(start_pref_ae=1.0, limit_pref_ae=1.0)
    (work / "input.json").write_text(json.dumps(cfg))
    train(work / "input.json", backend="torch", outdir=work)
    lines = (work / "lcurve.out").read_text().splitlines()
    header = next(ln for ln in lines if ln.startswith("#")).lstrip("# ").split()
    rows = [ln.split() for ln in lines if not ln.startswith("#")]
    column = [i for i, name in enumerate(header) if name.startswith("rmse_ae")]
    assert column and all(np.isfinite(float(r[i])) for r in rows for i in column)
