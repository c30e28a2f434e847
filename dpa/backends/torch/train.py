"""PyTorch training step: differentiable energy, forces and virials (double backward through the
force term), a loss from `dpa.train`, and a torch.optim update of the trainable variables."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from dpa.backends.allocator import keep_large_buffers
from dpa.backends.torch.core import EDGE_AUTODIFF
from dpa.dpmodel.batch import Batch
from dpa.dpmodel.derivatives import model_outputs
from dpa.dpmodel.model import atomic_energy, edge_vectors, parse_model
from dpa.dpmodel.trainable import gradient_tree, layout
from dpa.errors import ConfigError
from dpa.tree import merge_variables

LossFn = Callable[[dict, dict, float], tuple[Any, dict]]


class TorchTrainer:
    """The model's variables as torch leaves, its optimizer, and one training step.

    `tree` is one model tree, or {branch: tree} for a multi-task model (shared arrays are one
    leaf); a step then names its `task`, and only that branch's parameters get a gradient, so
    the optimizer leaves the others as they are (each parameter keeps its own Adam step count).
    """

    slot_rounding = 1  # eager: batches trimmed to their exact neighbor-list width

    def __init__(
        self,
        tree: dict,
        optimizer: str = "Adam",
        weight_decay: float = 0.0,
        betas: tuple[float, float] = (0.9, 0.999),
        max_norm: float | None = None,
        device: str | None = None,
    ) -> None:
        self.max_norm = max_norm
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        if self.device.type == "cpu":
            keep_large_buffers()  # eager torch frees and reallocates activations every step
        self.layout = layout(tree)
        trees = self.layout.tree(self.layout.leaves)
        self.settings = {
            name: parse_model(trees if name is None else trees[name])
            for name in self.layout.skeletons
        }
        self.skeleton = self.layout.skeleton(None) if self.layout.single else None
        self.flags = flags = self.layout.flags
        self.leaves = [torch.tensor(np.asarray(a), device=self.device) for a in self.layout.leaves]
        self.trainable = [t for t, f in zip(self.leaves, flags, strict=True) if f]
        for t in self.trainable:
            t.requires_grad_(True)
        if optimizer == "Adam":  # weight decay as an L2 term on the gradient
            self.optimizer = torch.optim.Adam(
                self.trainable, lr=1.0, betas=betas, weight_decay=weight_decay
            )
        elif optimizer == "AdamW":
            self.optimizer = torch.optim.AdamW(
                self.trainable, lr=1.0, betas=betas, weight_decay=weight_decay
            )
        else:
            raise ConfigError(f"optimizer.type {optimizer!r} is not supported; use Adam or AdamW")

    def tree(self) -> dict:
        """The current model tree (or {branch: tree}) as NumPy arrays."""
        return self.layout.tree([t.detach().cpu().numpy() for t in self.leaves])

    def optimizer_state(self) -> dict:
        """Adam's step count and moments as NumPy (the layout JaxTrainer shares): one count
        for a single model, one per trainable leaf for a multi-task one."""
        state = self.optimizer.state_dict()["state"]
        counts, mu, nu = [], [], []
        for i, t in enumerate(self.trainable):
            own = state.get(i)
            counts.append(int(own["step"]) if own else 0)
            mu.append(own["exp_avg"].cpu().numpy() if own else np.zeros(tuple(t.shape)))
            nu.append(own["exp_avg_sq"].cpu().numpy() if own else np.zeros(tuple(t.shape)))
        count = np.asarray(counts) if not self.layout.single else np.asarray(max(counts, default=0))
        return {"count": count, "mu": mu, "nu": nu}

    def load_optimizer_state(self, state: dict) -> None:
        """Restore what `optimizer_state` (of either backend) returned."""
        counts = np.broadcast_to(np.asarray(state["count"]), (len(self.trainable),))
        full = self.optimizer.state_dict()
        full["state"] = {
            i: {
                "step": torch.tensor(float(count)),
                "exp_avg": torch.as_tensor(np.asarray(m), device=self.device),
                "exp_avg_sq": torch.as_tensor(np.asarray(v), device=self.device),
            }
            for i, (count, m, v) in enumerate(zip(counts, state["mu"], state["nu"], strict=True))
            if count
        }
        self.optimizer.load_state_dict(full)

    def predict(
        self, batch: Batch, create_graph: bool = True, task: str | None = None
    ) -> dict[str, torch.Tensor]:
        """energy (nf,), force (nf, nat, 3), virial (nf, 3, 3), atom_energy (nf, nat) of a batch
        (by branch `task` of a multi-task model); differentiable in the variables."""
        atype_host = np.asarray(batch.atype)
        ints = ("atype", "nlist", "shift")
        tensors = batch.map(
            lambda name, a: torch.as_tensor(
                a, dtype=torch.int64 if name in ints else torch.float64, device=self.device
            )
        )
        with torch.no_grad():
            rij = edge_vectors(tensors.coord, tensors.box, tensors.nlist, tensors.shift)
        tree = merge_variables(self.layout.skeleton(task), self.leaves)
        settings = self.settings[task]

        def atoms(r: torch.Tensor) -> torch.Tensor:
            edges = tensors.edges(r, atype_host)
            return atomic_energy(settings, tree, edges, tensors.fparam, tensors.aparam)

        return model_outputs(EDGE_AUTODIFF, atoms, rij, tensors.nlist, keep_graph=create_graph)

    def metrics(
        self, batch: Batch, labels: dict, lr: float, loss_fn: LossFn, task: str | None = None
    ) -> dict[str, float]:
        """The loss's metrics on a batch without updating (validation)."""
        pred = self.predict(batch, create_graph=False, task=task)
        pred = {k: v.detach() for k, v in pred.items()}
        labels = {k: torch.as_tensor(v, device=self.device) for k, v in labels.items()}
        return {k: float(v) for k, v in loss_fn(pred, labels, lr)[1].items()}

    def gradients(
        self, batch: Batch, labels: dict, lr: float, loss_fn: LossFn
    ) -> tuple[dict[str, float], dict]:
        """The loss's metrics (with "loss") and its gradient as a model tree (trainable leaves;
        None at statistics and buffers), without updating: what `step` would apply (a single
        model only)."""
        loss, metrics = self._loss(batch, labels, lr, loss_fn, None)
        grads = torch.autograd.grad(loss, self.trainable, allow_unused=True)
        arrays = [g.detach().cpu().numpy() if g is not None else np.zeros(tuple(t.shape))
                  for g, t in zip(grads, self.trainable, strict=True)]  # fmt: skip
        return _floats(loss, metrics), gradient_tree(self.skeleton, self.flags, arrays)

    def _loss(
        self, batch: Batch, labels: dict, lr: float, loss_fn: LossFn, task: str | None
    ) -> tuple[Any, dict]:
        """(loss, metrics) of a batch with the graph kept for a gradient."""
        labels = {k: torch.as_tensor(v, device=self.device) for k, v in labels.items()}
        return loss_fn(self.predict(batch, task=task), labels, lr)

    def step(
        self, batch: Batch, labels: dict, lr: float, loss_fn: LossFn, task: str | None = None
    ) -> dict[str, float]:
        """One optimizer update at learning rate `lr` (on branch `task` of a multi-task
        model); the loss's metrics as floats."""
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.optimizer.zero_grad(set_to_none=True)
        loss, metrics = self._loss(batch, labels, lr, loss_fn, task)
        loss.backward()
        for i in self.layout.members[task]:  # in the branch but unused by this loss: a zero
            t = self.trainable[i]  # gradient (AdamW still decays it)
            if t.grad is None:
                t.grad = torch.zeros_like(t)
        if self.max_norm is not None:
            torch.nn.utils.clip_grad_norm_(self.trainable, self.max_norm)
        self.optimizer.step()
        return _floats(loss, metrics)


def _floats(loss: torch.Tensor, metrics: dict) -> dict[str, float]:
    """The loss and its metrics as Python floats."""
    return {k: float(v.detach()) for k, v in {"loss": loss, **metrics}.items()}
