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
from .errors import BackendError, ConfigError, DataError, DPAError, ModelFileError
from .model import Model, build_model
from .potential import Potential

_SUFFIX_BACKEND = {".pth": "torch", ".jax": "jax"}


def load_model(
    path: str | os.PathLike | Model,
    backend: str | None = None,
    compile: bool = False,
) -> Potential:
    """Load a model file (.dp, .pth, .jax) or a `Model` onto a backend.

    backend: "numpy", "torch", "jax", or None (DPA_BACKEND, else by suffix: .pth -> torch,
    .jax -> jax, .dp -> torch if installed, else jax, else numpy).
    compile: torch only; torch.compile the model (slow first call per shape, faster after).
    """
    from .backends.base import available_backends, default_backend_name, get_backend
    from .io import load

    model = path if isinstance(path, Model) else load(path)
    name = backend or default_backend_name()
    if name is None:
        suffix = "" if isinstance(path, Model) else Path(path).suffix
        name = _SUFFIX_BACKEND.get(suffix)
        if name is None:
            found = available_backends()
            name = next((b for b in ("torch", "jax") if b in found), "numpy")
    return Potential(model, get_backend(name, compile=compile))


__all__ = [
    "BackendError",
    "ConfigError",
    "DPAError",
    "DataError",
    "Model",
    "ModelFileError",
    "Potential",
    "__version__",
    "build_model",
    "io",
    "load_model",
]
