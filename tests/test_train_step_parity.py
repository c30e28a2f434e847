"""Step-for-step training parity with DeePMD-kit 3.2.0: from the same `.dp` (made by DeePMD-kit)
and the same batches, three Adam steps of dpa's torch and jax trainers give DeePMD-kit's loss,
metrics, parameter gradients and updated parameters to 1e-10 (float64), for se_e2_a, DPA-1 with
and without attention, DPA-2 and DPA-3 (fixtures: tests/fixtures/train_step, made by
make_train_step_fixtures.py)."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
from builders import FIXTURES, make_trainer

import dpa
from dpa.train.batches import batch_inputs
from dpa.train.loss import EnerLossConfig, ener_loss

HERE = FIXTURES / "train_step"
META = json.loads((HERE / "cases.json").read_text())
TOL = 1e-10


def _flatten(node: Any, prefix: str = "") -> dict[str, np.ndarray]:
    """Float arrays of a model tree keyed like the fixture: keys and list indices joined by /."""
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


def _stored(ref: Any, prefix: str) -> dict[str, np.ndarray]:
    return {k[len(prefix) :]: ref[k] for k in ref.files if k.startswith(prefix)}


def _assert_trees_close(got: dict, want: dict, what: str) -> None:
    assert set(got) == set(want), f"{what}: variables differ: {sorted(set(got) ^ set(want))[:5]}"
    for path, ref in want.items():
        scale = max(1.0, float(np.max(np.abs(ref))))
        err = float(np.max(np.abs(got[path] - ref)))
        assert err <= TOL * scale, f"{what} {path}: |dpa - DeePMD-kit| = {err:.3g}"


@pytest.mark.parametrize("system", sorted(META["systems"]))
@pytest.mark.parametrize("case", sorted(META["cases"]))
def test_three_adam_steps_equal_deepmd(case: str, train_backend: str, system: str) -> None:
    backend = train_backend
    ref = np.load(HERE / f"{case}.npz")
    info = META["systems"][system]
    model = dpa.io.load(HERE / f"{case}.dp")
    assert model.type_map == META["type_map"]
    trainer = make_trainer(backend, model.tree, torch_device="cpu")
    trainable = {k.split("/", 1)[1] for k in ref.files if k.startswith(f"{system}_step0_grad/")}
    assert len(trainable) > 5  # every trainable variable of the model is in the fixture
    cfg = EnerLossConfig.from_params(info["loss"], META["start_lr"])
    atype = ref[f"{system}_atype"]
    natoms = int(atype.shape[0])

    def loss_fn(pred, labels, lr):
        return ener_loss(pred, labels, natoms, lr, cfg)

    for k, lr in enumerate(ref["lr"].tolist()):
        box = ref[f"{system}_box"][k] if f"{system}_box" in ref.files else None
        inputs = batch_inputs(model, ref[f"{system}_coord"][k], atype, box, trainer.slot_rounding)
        nf = inputs.nframes
        labels = {
            "energy": ref[f"{system}_energy"][k],
            "force": ref[f"{system}_force"][k],
            "virial": np.zeros((nf, 3, 3)),
            "find_energy": 1.0,
            "find_force": 1.0,
            "find_virial": 0.0,
        }
        if f"{system}_virial" in ref.files:
            labels.update(virial=ref[f"{system}_virial"][k], find_virial=1.0)
        pre = f"{system}_step{k}"
        if backend == "torch" or k == 0:  # (a jax gradient call is one more compilation)
            _, grads = trainer.gradients(inputs, labels, lr, loss_fn)
            _assert_trees_close(_flatten(grads), _stored(ref, f"{pre}_grad/"), f"step {k} grad")
        values = trainer.step(inputs, labels, lr, loss_fn)
        assert values["loss"] == pytest.approx(float(ref[f"{pre}_loss"]), rel=TOL)
        for key in ("rmse_e", "rmse_f", "rmse_v"):
            if f"{pre}_{key}" in ref.files:
                assert values[key] == pytest.approx(float(ref[f"{pre}_{key}"]), rel=TOL), key
        params = {p: v for p, v in _flatten(trainer.tree()).items() if p in trainable}
        _assert_trees_close(params, _stored(ref, f"{pre}_param/"), f"step {k} parameters")
