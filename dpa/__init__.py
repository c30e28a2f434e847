"""dpa: DPA-family machine-learning interatomic potentials on NumPy, PyTorch and JAX.

    import dpa
    model = dpa.build_model(config, seed=0)
    model.save("m.dp")
    pot = dpa.load_model("m.dp", backend="torch")
    out = pot.evaluate(coord, atype, box)

Importing dpa imports no array framework; backends load theirs on first use.
"""

from __future__ import annotations

import os
from pathlib import Path

from . import io
from ._version import __version__
from .errors import (
    BackendError,
    ConfigError,
    DataError,
    DPAError,
    EvaluationError,
    ModelFileError,
    OutputError,
)
from .model import Model, build_model
from .multitask import MultiTaskModel, select_branch
from .potential import Potential

# a .savedmodel is not here: its graph is a program, run only on request (backend="tensorflow")
# a .pt (DeePMD-kit checkpoint) is read with torch, so it evaluates there too, like a .pth
_SUFFIX_BACKEND = {".pth": "torch", ".pt": "torch", ".jax": "jax"}


def load_model(
    path: str | os.PathLike | Model | MultiTaskModel,
    backend: str | None = None,
    compile: bool = False,
    precision: str | None = None,
    head: str | None = None,
) -> Potential:
    """Load a model file (.dp, .pth, .jax, .savedmodel, or a DeePMD-kit .pt checkpoint), a
    `Model` or a `MultiTaskModel` onto a backend.

    backend: "numpy", "torch", "jax", "tensorflow", or None (DPA_BACKEND, else by suffix:
    .pth and .pt -> torch, .jax -> jax, .dp and .savedmodel -> torch if installed, else jax, else
    numpy). A .savedmodel is evaluated through the full model embedded in it (assets/
    dpa_model.dp), never through its TensorFlow graph, unless backend="tensorflow" (or
    DPA_BACKEND=tensorflow) asks for the graph: a SavedModel is a program, so that trusts the
    file; dpa then refuses graphs holding ops its exporter never writes, or variables that
    differ from the embedded model, and logs a warning.
    compile: torch only; torch.compile the model (slow first call per shape, faster after).
    precision: None (as trained), "float64" or "float32": evaluate in that precision without
    retraining (`Model.with_precision`); outputs stay float64 NumPy arrays.
    head: the branch of a multi-task model (name or alias, any case; see `MultiTaskModel`).
    """
    from .backends.base import available_backends, default_backend_name, get_backend
    from .io import load

    if isinstance(path, Model | MultiTaskModel):
        model = select_branch(path, head)
    else:
        model = load(path, head)
    if precision is not None:
        model = model.with_precision(precision)  # a copy: a given Model stays as it is
    name = backend or default_backend_name()
    if name is None:
        suffix = "" if isinstance(path, Model | MultiTaskModel) else Path(path).suffix
        name = _SUFFIX_BACKEND.get(suffix)
        if name is None:
            found = available_backends()
            name = next((b for b in ("torch", "jax") if b in found), "numpy")
    runner = get_backend(name, compile=compile)
    if (
        runner.name == "tensorflow"
        and not isinstance(path, Model | MultiTaskModel)
        and precision is None
    ):
        from .backends.tensorflow.backend import TensorFlowBackend  # loaded: runner is one

        if isinstance(runner, TensorFlowBackend):  # run the SavedModel file, not a fresh export
            runner = runner.bound_to(path)
    return Potential(model, runner)


__all__ = [
    "BackendError",
    "ConfigError",
    "DPAError",
    "DataError",
    "EvaluationError",
    "Model",
    "ModelFileError",
    "MultiTaskModel",
    "OutputError",
    "Potential",
    "__version__",
    "build_model",
    "io",
    "load_model",
]
