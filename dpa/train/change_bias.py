"""Changing the energy bias (`out_bias`) of a trained model, as DeePMD-kit's `dp change-bias`.

Three ways, on a single-task model or one branch of a multi-task model:

* ``mode="change"`` with data: evaluate the model on the frames, fit the per-type shift
  δ = lstsq(N, E_label − E_pred) (N: per-frame atom counts of each type) and add it to
  out_bias;
* ``mode="set"`` with data: out_bias = lstsq(N, E_label), the model's own prediction unused;
  the fitting's fparam/aparam normalisation is also recomputed from the frames (DeePMD-kit does
  this for set only);
* ``bias_values``: out_bias = the given per-type values (the mode plays no part).

With data, out_std becomes the std over frames of the fit's residual, one value for every type;
with ``bias_values`` it is kept. The fit itself is :func:`dpa.train.stat.fit_energy_bias_and_std`.

Frames: DeePMD-kit's ``-n K`` takes K frames per system (batches of one frame), drawn at random
from a shuffled loader (measured with 3.2.0, ``tests/fixtures/make_change_bias_fixture.py``);
here ``nbatch=K`` takes the **first** K frames of each system, so the result is reproducible.
With all frames (the default, DeePMD-kit's ``-n 0``) both pick the same frames.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np

from ..data.system import System
from ..errors import ConfigError, DataError
from ..model import Model
from ..multitask import MultiTaskModel, select_branch
from ..tree import map_variables
from .stat import compute_parameter_statistics, fit_energy_bias_and_std, stat_frames

__all__ = ["MODES", "change_bias", "read_datafile"]

#: The modes of `change_bias` (DeePMD-kit's `-m`).
MODES = ("change", "set")

SystemsArg = Sequence[System | str | os.PathLike] | str | os.PathLike


def change_bias(
    model: Model | MultiTaskModel,
    systems: SystemsArg | None = None,
    bias_values: Sequence[float] | None = None,
    nbatch: int | None = None,
    mode: Literal["change", "set"] = "change",
    head: str | None = None,
    backend: str | None = None,
) -> Model | MultiTaskModel:
    """A copy of `model` with a new energy bias (the input is not changed).

    systems: Systems or paths (folders are searched for systems) with energy labels; or
    bias_values: one energy per type, in the type_map's order. Exactly one of them.
    nbatch: frames per system, the first ones (None or 0: all). mode: "change" or "set".
    head: the branch of a multi-task model (name or alias); the result is the whole multi-task
    model with only that branch's bias changed. backend: evaluates the model in "change" mode
    (default as `dpa.load_model`).
    """
    if mode not in MODES:
        raise ConfigError(f"unknown change-bias mode {mode!r}; choose one of {', '.join(MODES)}")
    if nbatch is not None and nbatch < 0:
        raise ConfigError(f"the number of frames per system must be >= 0 (0: all), got {nbatch}")
    branch = select_branch(model, head, "model branch")
    tree = branch.tree
    _check_energy_model(tree)
    replaced: dict[int, Any] = {}  # id(old array) -> new array, for arrays branches may share
    if bias_values is not None and systems is None:
        new_bias = _bias_values(bias_values, branch.type_map).reshape(1, -1, 1)
        new_std = _out_stat(tree, "out_std", 1.0)
    elif systems is not None and bias_values is None:
        new_bias, new_std, replaced = _fit(branch, systems, nbatch, mode, backend)
    else:
        raise ConfigError(
            "change-bias needs either data systems (to fit the bias) or bias values (to set "
            "it), and not both"
        )
    return with_bias(model, branch, new_bias, new_std, replaced)


def _check_energy_model(tree: dict) -> None:
    """An energy model (out_bias of one energy per type) is the only kind supported."""
    kind = tree.get("fitting", {}).get("type", "ener")
    if kind != "ener":
        raise ConfigError(
            f"change-bias supports energy models only; this model's fitting is {kind!r}"
        )


def _bias_values(values: Sequence[float], type_map: list[str]) -> np.ndarray:
    """The given per-type energies as float64, checked against the type_map."""
    try:
        bias = np.asarray([float(v) for v in values], dtype=np.float64)
    except (TypeError, ValueError):
        raise ConfigError(f"bias values must be numbers, got {list(values)!r}") from None
    if bias.shape != (len(type_map),):
        raise ConfigError(
            f"got {bias.size} bias values for the {len(type_map)} types of the model's "
            f"type_map {type_map}; give one value per type, in that order"
        )
    if not np.all(np.isfinite(bias)):
        raise ConfigError(f"bias values must be finite numbers, got {bias.tolist()}")
    return bias


def _load(systems: SystemsArg) -> list[System]:
    """Systems as given, or read from paths (folders searched for systems)."""
    from ..data.load import load_systems

    if isinstance(systems, str | os.PathLike):
        return load_systems(systems)
    out: list[System] = []
    for item in systems:
        out.extend([item] if isinstance(item, System) else load_systems(item))
    if not out:
        raise DataError("change-bias: no data system given")
    return out


def _out_stat(tree: dict, key: str, default: float) -> np.ndarray:
    """`@variables[key]` of a model tree as float64 (1, ntypes, 1); `default` where absent."""
    value = (tree.get("@variables") or {}).get(key)
    shape = (1, len(tree["type_map"]), 1)
    if value is None:
        return np.full(shape, default)
    return np.asarray(value, dtype=np.float64).reshape(shape)


def _fit(
    branch: Model,
    systems: SystemsArg,
    nbatch: int | None,
    mode: str,
    backend: str | None,
) -> tuple[np.ndarray, np.ndarray, dict[int, Any]]:
    """(new out_bias, new out_std, fparam/aparam stats replaced) fitted on the systems."""
    return bias_from_frames(branch, stat_frames(_load(systems), nbatch or None, 1), mode, backend)


def bias_from_frames(
    branch: Model, frames: list[System], mode: str, backend: str | None
) -> tuple[np.ndarray, np.ndarray, dict[int, Any]]:
    """(new out_bias, new out_std, fparam/aparam stats replaced) fitted on exactly `frames`
    (one System per data system): DeePMD-kit's change- or set-by-statistic."""
    tree = branch.tree
    for system in frames:  # every problem before any evaluation
        system.remap_types(branch.type_map)
        if system.energy is None:
            raise DataError(
                f"{system.path}: no energy labels (energy.npy); change-bias fits the bias to "
                "labelled energies: drop this system or add its energies"
            )
    old = _out_stat(tree, "out_bias", 0.0)
    predicted = _predict(branch, frames, backend) if mode == "change" else None
    bias, std = fit_energy_bias_and_std(tree, frames, None, 1, predicted=predicted)
    new_bias = old.copy()
    new_bias[0, :, 0] = old[0, :, 0] + bias if mode == "change" else bias
    new_std = np.full(old.shape, std)
    replaced: dict[int, Any] = {}
    if mode == "set":  # DeePMD-kit also renormalises fparam/aparam from the frames
        stats = compute_parameter_statistics(tree, frames, None, 1)
        if stats is not tree:
            before, after = tree["fitting"]["@variables"], stats["fitting"]["@variables"]
            for key in ("fparam_avg", "fparam_inv_std", "aparam_avg", "aparam_inv_std"):
                if before.get(key) is not None and after.get(key) is not before.get(key):
                    replaced[id(before[key])] = after[key]
    return new_bias, new_std, replaced


def _predict(branch: Model, frames: list[System], backend: str | None) -> list[np.ndarray]:
    """The model's energy of every frame (out_bias included), one array per system."""
    from .. import load_model
    from ..data.evaluation import predict

    pot = load_model(branch, backend=backend)
    return [predict(pot, system)["energy"] for system in frames]


def with_bias(
    model: Model | MultiTaskModel,
    branch: Model,
    out_bias: np.ndarray,
    out_std: np.ndarray,
    replaced: dict[int, Any],
) -> Model | MultiTaskModel:
    """A copy of `model` whose `branch` holds out_bias/out_std, and every array listed in
    `replaced` swapped wherever it appears (in each branch that shares it)."""
    data = map_variables(model.data, lambda a: replaced.get(id(a), a))
    if isinstance(model, MultiTaskModel):
        name = next(n for n, b in model.branches.items() if b is branch)
        target = data["model"]["branches"][name]["model"]
    else:
        target = data["model"]
    variables = target.setdefault("@variables", {})
    shape = (1, len(branch.type_map), 1)
    variables["out_bias"] = np.asarray(out_bias, dtype=np.float64).reshape(shape)
    variables["out_std"] = np.asarray(out_std, dtype=np.float64).reshape(shape)
    return MultiTaskModel(data) if isinstance(model, MultiTaskModel) else Model(data)


def read_datafile(path: str | os.PathLike) -> list[str]:
    """The system paths listed in a text file, one per line (blank lines skipped), as
    DeePMD-kit's `-f DATAFILE`; relative paths are taken as they are (from the working folder)."""
    try:
        with open(path, encoding="utf-8") as f:
            lines = [line.strip() for line in f.read().splitlines()]
    except OSError as err:
        raise DataError(f"{os.fspath(path)}: cannot read the data file ({err.strerror})") from None
    systems = [line for line in lines if line]
    if not systems:
        raise DataError(f"{os.fspath(path)}: the data file lists no system; put one path a line")
    return systems
