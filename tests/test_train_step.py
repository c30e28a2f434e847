"""The torch training step: differentiable forces equal inference, the force loss's parameter
gradient (double backward) equals finite differences, and Adam steps lower the loss."""

from __future__ import annotations

import numpy as np
import pytest
from array_api_compat import array_namespace
from builders import (
    TRAIN_BACKENDS,
    WATER,
    dpa1,
    dpa2,
    dpa3,
    make_trainer,
    model_config,
    se_e2_a,
    xla_optimizations_off,
)

import dpa
from dpa.data import load_system
from dpa.dpmodel.trainable import trainable_flags
from dpa.train.batches import batch_inputs
from dpa.tree import split_variables

torch = pytest.importorskip("torch")
from dpa.backends.torch.train import TorchTrainer  # noqa: E402

SMALL = {
    "se_e2_a": se_e2_a([16, 32]),
    "dpa2": dpa2(40),
    "dpa1": dpa1(40, tebd_dim=4),
    # silut: the fused torch activation must be differentiable twice
    "dpa3": dpa3(40, activation_function="silut:1.0"),
}


def _setup(kind: str, frames: slice = slice(0, 1)):
    model = dpa.build_model(model_config(SMALL[kind]), seed=5)
    pot = dpa.load_model(model, backend="torch")
    system = load_system(WATER)
    atype = system.remap_types(pot.type_map)
    coord, box = system.coord[frames], system.box[frames]
    return model, pot, system, batch_inputs(model, coord, atype, box, rounding=1)


def _force_loss(pred, labels, lr):
    """Mean squared force error (array API, so one function serves both backends)."""
    xp = array_namespace(pred["force"])
    diff = pred["force"] - labels["force"]
    loss = xp.mean(diff**2)
    return loss, {"rmse_f": xp.sqrt(loss)}


@pytest.mark.parametrize("kind", sorted(SMALL))
def test_differentiable_prediction_equals_inference(kind, train_backend):
    backend = train_backend
    model, pot, _, batch = _setup(kind)
    pred = make_trainer(backend, model.tree).predict(batch)
    ref = pot.evaluate(batch.coord, batch.atype, batch.box)
    for key in ("energy", "force", "virial", "atom_energy"):
        got = np.asarray(pred[key].detach() if backend == "torch" else pred[key])
        np.testing.assert_allclose(got, ref[key].reshape(got.shape), rtol=0, atol=1e-12)


@pytest.mark.parametrize("optimizer", ["Adam", "AdamW"])
def test_torch_and_jax_take_the_same_steps(optimizer):
    """Same tree, batch, loss and learning rates: the same variables after three updates."""
    model, _, system, batch = _setup("dpa2")
    labels = {"force": system.force[:1]}
    options = {"optimizer": optimizer, "weight_decay": 0.01, "max_norm": 0.5}
    trees = []
    for backend in TRAIN_BACKENDS:
        trainer = make_trainer(backend, model.tree, **options)
        for lr in (1e-3, 5e-4, 2e-4):
            trainer.step(batch, labels, lr, _force_loss)
        trees.append(split_variables(trainer.tree())[1])
    assert any(
        not np.array_equal(a, b)
        for a, b in zip(split_variables(model.tree)[1], trees[0], strict=True)
    )
    for a, b in zip(*trees, strict=True):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-10)


@pytest.mark.parametrize("kind", sorted(SMALL))
def test_force_loss_gradient_equals_finite_differences(kind):
    model, _, system, batch = _setup(kind)
    target = system.force[:1]
    trainer = TorchTrainer(model.tree)

    def force_loss(create_graph: bool):
        f = trainer.predict(batch, create_graph=create_graph)["force"]
        return torch.sum((f - torch.as_tensor(target)) ** 2)

    loss = force_loss(True)
    grads = torch.autograd.grad(loss, trainer.trainable, allow_unused=True)
    rng = np.random.default_rng(0)
    checked = 0
    for leaf, grad in zip(trainer.trainable, grads, strict=True):
        if grad is None or leaf.numel() < 2 or checked >= 6:
            continue  # (the output bias does not move forces)
        i = int(rng.integers(leaf.numel()))
        h = 1e-6
        old = float(leaf.detach().view(-1)[i])
        values = []
        for x in (old + h, old - h, old):
            with torch.no_grad():
                leaf.view(-1)[i] = x
            values.append(float(force_loss(False)))
        fd = (values[0] - values[1]) / (2 * h)
        assert abs(float(grad.view(-1)[i]) - fd) <= 1e-6 * max(1.0, abs(fd)), (leaf.shape, i)
        checked += 1
    assert checked == 6


def test_adam_steps_lower_the_loss():
    model, _, system, batch = _setup("se_e2_a", slice(0, 2))
    labels = {
        "energy": torch.as_tensor(system.energy[:2]),
        "force": torch.as_tensor(system.force[:2]),
    }
    trainer = TorchTrainer(model.tree)
    first = trainer.step(batch, labels, 1e-2, _force_loss)
    for _ in range(80):
        last = trainer.step(batch, labels, 1e-2, _force_loss)
    assert last["loss"] < 0.8 * first["loss"]
    before, after = split_variables(model.tree)[1], split_variables(trainer.tree())[1]
    flags = trainable_flags(model.tree)
    moved = [not np.array_equal(old, new) for old, new in zip(before, after, strict=True)]
    assert not any(m for m, f in zip(moved, flags, strict=True) if not f)  # buffers stay
    # every trainable variable moved but the fitting nets' output biases (no effect on forces)
    still = [old.shape for old, m, f in zip(before, moved, flags, strict=True) if f and not m]
    assert still == [(1,), (1,)]


def _energy_force_virial_loss(pred, labels, lr):
    """Energy, force and virial terms (the virial makes the loss use every output of a step)."""
    xp = array_namespace(pred["force"])
    loss = xp.mean((pred["energy"] - labels["energy"]) ** 2) * 0.1
    loss = loss + xp.mean((pred["force"] - labels["force"]) ** 2)
    loss = loss + xp.mean(xp.reshape(pred["virial"], (-1,)) ** 2) * 1e-3
    loss = loss + xp.mean(pred["atom_energy"] ** 2) * 1e-4
    return loss, {"rmse_f": xp.sqrt(xp.mean((pred["force"] - labels["force"]) ** 2))}


@pytest.mark.parametrize(
    ("concat_output_tebd", "update_angle"), [(False, True), (True, True), (False, False)]
)
def test_checkpointed_dpa3_step_equals_the_one_call_step(concat_output_tebd, update_angle):
    """The three-phase gradient (head/tail cut of the repflow layers) is the same chain rule as
    one jitted double backward: same losses and variables after three AdamW updates (both
    compiled with XLA's optimizations off: compile time; round-off only)."""
    pytest.importorskip("optax")
    from dpa.backends.jax.train import JaxTrainer

    repflow = {**SMALL["dpa3"]["repflow"], "nlayers": 3, "update_angle": update_angle}
    desc = {**SMALL["dpa3"], "repflow": repflow}
    desc["concat_output_tebd"] = concat_output_tebd
    model = dpa.build_model(model_config(desc), seed=5)
    system = load_system(WATER)
    atype = system.remap_types(["O", "H"])
    batch = batch_inputs(model, system.coord[:2], atype, system.box[:2], rounding=1)
    labels = {"energy": system.energy[:2], "force": system.force[:2]}
    runs = []
    for checkpointing in (False, True):
        trainer = JaxTrainer(
            model.tree, optimizer="AdamW", weight_decay=0.01, checkpointing=checkpointing
        )
        assert trainer.split == (1 if checkpointing else None)
        with xla_optimizations_off():
            losses = [
                trainer.step(batch, labels, lr, _energy_force_virial_loss)["loss"]
                for lr in (1e-2, 5e-3, 2e-3)
            ]
        runs.append((losses, split_variables(trainer.tree())[1]))
    (loss_a, tree_a), (loss_b, tree_b) = runs
    np.testing.assert_allclose(loss_b, loss_a, rtol=1e-12, atol=0)
    assert loss_a[2] != loss_a[0]
    for a, b in zip(tree_a, tree_b, strict=True):
        np.testing.assert_allclose(b, a, rtol=0, atol=1e-10)
    moved = sum(
        not np.array_equal(a, old)
        for a, old in zip(tree_b, split_variables(model.tree)[1], strict=True)
    )
    assert moved > 10


def test_checkpointing_needs_a_model_with_a_cut():
    pytest.importorskip("optax")
    from dpa.backends.jax.train import JaxTrainer
    from dpa.errors import ConfigError

    model, *_ = _setup("se_e2_a")
    assert JaxTrainer(model.tree).split is None
    with pytest.raises(ConfigError, match="gradient_checkpointing needs a DPA-3"):
        JaxTrainer(model.tree, checkpointing=True)
