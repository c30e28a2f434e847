"""The backend interface and registry: a backend turns a model tree + a neighbor graph into
energies (and, where it has autograd, forces and virials). Frameworks are imported lazily."""

from __future__ import annotations

import importlib
import os
from abc import ABC, abstractmethod
from typing import Any, Protocol

import numpy as np

from dpa.dpmodel.batch import Batch

from .._version import pip_install
from ..errors import BackendError

# backend name -> the framework it imports
BACKENDS = {"numpy": "numpy", "torch": "torch", "jax": "jax", "tensorflow": "tensorflow"}
_INSTALL_HINT = {
    "torch": pip_install("torch"),
    "jax": pip_install("jax"),
    "tensorflow": pip_install("tf"),
}
# backends that evaluate any model file; tensorflow runs exported SavedModels (`.savedmodel`)
GENERAL_BACKENDS = ("numpy", "torch", "jax")


class Trainer(Protocol):
    """What the training loop asks of a backend's trainer (see `backends/torch/train.py`).

    A step takes the model's input `Batch` (as evaluation does) and labels;
    `loss_fn(pred, labels, lr)` gives (loss, metrics) on the framework's arrays.
    """

    slot_rounding: int

    def step(
        self, batch: Batch, labels: dict, lr: float, loss_fn: Any, task: str | None = None
    ) -> dict[str, float]:
        """One optimizer update (on branch `task` of a multi-task model); the loss and its
        metrics as floats."""

    def metrics(
        self, batch: Batch, labels: dict, lr: float, loss_fn: Any, task: str | None = None
    ) -> dict[str, float]:
        """The loss's metrics without updating (validation)."""

    def tree(self) -> dict:
        """The current model tree (or {branch: tree}) as NumPy arrays."""

    def optimizer_state(self) -> dict:
        """The optimizer's state in the layout every trainer reads (count, mu, nu)."""

    def load_optimizer_state(self, state: dict) -> None:
        """Restore what `optimizer_state` of any trainer returned."""


class Backend(ABC):
    """One array framework behind one small interface: evaluation, and training where the
    framework has autograd."""

    name: str
    can_compute_forces: bool
    # neighbor-list widths are trimmed to multiples of this (`dpa.potential.slot_plan`): 1 for
    # eager backends (no padded work), more where every new shape is a new compilation
    slot_rounding: int = 1
    # whether `evaluate` takes lists cut by `slot_plan` (with its hints) or only full-width ones
    takes_trimmed_lists: bool = True

    @abstractmethod
    def prepare(self, tree: dict) -> Any:
        """The model tree with variables converted to this backend's arrays (on its device)."""

    @abstractmethod
    def evaluate(self, prepared: Any, batch: Batch, atomic: bool) -> dict[str, np.ndarray]:
        """energy (nf,), atom_energy (nf, nat) [, force, virial, atom_virial] as float64 NumPy
        for a batch of NumPy arrays (atom_virial when `atomic`)."""

    @property
    def device(self) -> str:
        return "cpu"

    def trainer(
        self,
        tree: dict,
        *,
        optimizer: str = "Adam",
        weight_decay: float = 0.0,
        betas: tuple[float, float] = (0.9, 0.999),
        max_norm: float | None = None,
        checkpointing: bool = False,
    ) -> Trainer:
        """A trainer of `tree`'s variables with this optimizer (Adam or AdamW); `checkpointing`
        computes each step's gradient in phases, for descriptors that declare them."""
        raise BackendError(
            f"backend {self.name!r} cannot train (no autograd); use --backend torch or jax"
        )


def default_backend_name() -> str | None:
    """`DPA_BACKEND` from the environment, if set."""
    return os.environ.get("DPA_BACKEND") or None


def get_backend(name: str, compile: bool = False) -> Backend:
    """The backend called `name`; a clear error if unknown or its framework is not installed.

    `compile`: torch only, run the energy function through torch.compile.
    """
    key = str(name).lower()
    if key not in BACKENDS:
        raise BackendError(f"unknown backend {name!r}; choose one of {', '.join(BACKENDS)}")
    framework = BACKENDS[key]
    try:
        importlib.import_module(framework)
    except ImportError as err:
        raise BackendError(
            f"backend {key!r} needs {framework}, which is not installed: {_INSTALL_HINT[key]}"
        ) from err
    module = importlib.import_module(f"dpa.backends.{key}.backend")
    if compile and key != "torch":
        raise BackendError(
            f"compile=True is for the torch backend (jax always compiles); got {key!r}"
        )
    return module.make_backend(compile=True) if compile else module.make_backend()


def available_backends() -> list[str]:
    """General backends (GENERAL_BACKENDS) whose framework can be imported here."""
    found = []
    for key in GENERAL_BACKENDS:
        try:
            importlib.import_module(key)
        except ImportError:
            continue
        found.append(key)
    return found
