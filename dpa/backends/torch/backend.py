"""PyTorch: autograd forces and virials; runs on a CUDA GPU when one is present.

With `compile=True` the energy function goes through `torch.compile` (one graph per atom types
and shapes): the first call of a new shape takes tens of seconds, later calls are ~1.5x faster
on CPU, which pays off in MD and long test runs.
"""

from __future__ import annotations

import threading
import warnings

import numpy as np
import torch

from dpa.backends.base import Backend
from dpa.backends.torch.core import EDGE_AUTODIFF
from dpa.dpmodel.batch import Batch
from dpa.dpmodel.derivatives import model_outputs
from dpa.dpmodel.descriptor.common import Edges
from dpa.dpmodel.model import atomic_energy, edge_vectors, neighbor_spec, parse_model
from dpa.errors import ConfigError, DPAError
from dpa.neighbor import wrapped_positions
from dpa.tree import map_variables


class _Prepared:
    """The model tree as tensors plus, when compiling, one compiled energy function per types."""

    def __init__(self, tree: dict, compile: bool) -> None:
        self.tree = tree
        self.compile = compile
        self.compiled: dict = {}
        # torch.compile's tracer is not thread-safe: threads tracing one function at once make
        # its guards fail and recompile up to the limit (dozens of warnings); compiled calls of
        # one model run one at a time
        self.lock = threading.Lock()
        self.settings = parse_model(tree)
        self.message_passing = neighbor_spec(tree["descriptor"]).message_passing

    def energy_function(self, atype_host: np.ndarray, slot_counts: tuple = ()):
        """fn(rij, nlist, atype, fparam, aparam) -> atomic energies (nf, nat)."""
        key = (atype_host.tobytes(), slot_counts)
        if key not in self.compiled:
            settings, tree, types = self.settings, self.tree, atype_host.copy()

            def energy(rij, nlist, atype, fparam, aparam):
                edges = Edges(rij, nlist, atype, types, slot_counts)
                return atomic_energy(settings, tree, edges, fparam, aparam)

            self.compiled[key] = torch.compile(energy, dynamic=False) if self.compile else energy
        return self.compiled[key]


class TorchBackend(Backend):
    """The reference model on torch tensors; F and W from one backward pass over edge vectors."""

    name = "torch"
    can_compute_forces = True

    def __init__(self, compile: bool = False) -> None:
        self._device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self._compile = compile
        self.slot_rounding = 8 if compile else 1  # compiled graphs are specialized per shape

    @property
    def device(self) -> str:
        return str(self._device)

    def trainer(self, tree: dict, *, checkpointing: bool = False, **options):
        """A `TorchTrainer` (eager; no checkpointed phases)."""
        if checkpointing:
            raise ConfigError(
                "training.gradient_checkpointing is implemented for the jax backend; use "
                "--backend jax or remove the key"
            )
        from dpa.backends.torch.train import TorchTrainer  # imports this module

        return TorchTrainer(tree, device=str(self._device), **options)

    def tensor(self, array: np.ndarray | None, dtype: torch.dtype | None = None):
        """A NumPy array as a tensor on this backend's device."""
        if array is None:
            return None
        a = np.asarray(array)
        if not a.flags.writeable:  # torch wants writable memory (broadcast views are not)
            a = a.copy()
        return torch.as_tensor(a, dtype=dtype, device=self._device)

    def prepare(self, tree: dict) -> _Prepared:
        return _Prepared(map_variables(tree, self.tensor), self._compile)

    def evaluate(self, prepared, batch: Batch, atomic: bool):
        b = batch
        args = (b.coord, b.box, b.nlist, b.shift, b.atype, b.fparam, b.aparam, atomic)
        args = (*args, b.slot_counts)
        if not prepared.compile:
            return self._evaluate(prepared, *args)
        try:
            with prepared.lock:
                return self._evaluate(prepared, *args)
        except DPAError:
            raise
        except Exception as err:  # an inductor failure must not cost the user the run
            warnings.warn(
                f"torch.compile failed for this model ({type(err).__name__}: {err}); "
                "continuing without compilation",
                RuntimeWarning,
                stacklevel=3,
            )
            prepared.compile = False
            prepared.compiled.clear()
            return self._evaluate(prepared, *args)

    def _evaluate(
        self, prepared, coord, box, nlist, shift, atype, fparam, aparam, atomic, slot_counts
    ):
        f64 = torch.float64
        x = self.tensor(coord, f64)
        cell = self.tensor(box, f64)
        nl = self.tensor(nlist, torch.int64)
        types = self.tensor(atype, torch.int64)
        with torch.no_grad():
            rij = edge_vectors(x, cell, nl, self.tensor(shift, torch.int64))
        energy_fn = prepared.energy_function(np.asarray(atype), slot_counts)
        fp, ap = self.tensor(fparam, f64), self.tensor(aparam, f64)
        positions = None
        if atomic and prepared.message_passing:  # spec §9: d(Σ_i E_i p_i)/dr too
            positions = self.tensor(wrapped_positions(coord, box), f64)
        out = model_outputs(
            EDGE_AUTODIFF,
            lambda r: energy_fn(r, nl, types, fp, ap),
            rij,
            nl,
            atomic=atomic,
            positions=positions,
        )
        return {k: v.detach().cpu().numpy() for k, v in out.items()}


def make_backend(compile: bool = False) -> TorchBackend:
    return TorchBackend(compile=compile)
