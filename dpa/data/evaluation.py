"""Evaluating a potential on a labelled System in frame chunks and comparing with the labels."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from dpa.data.metrics import ErrorStat, error_stat
from dpa.data.system import System
from dpa.errors import DataError, EvaluationError
from dpa.neighbor import NeighborOverflowWarning

__all__ = ["SystemResult", "evaluate_system", "predict"]

#: Frames per call to the potential: bounds memory on big systems.
DEFAULT_CHUNK = 16


@dataclass
class SystemResult:
    """Predictions of a potential on the tested frames of a system, and their errors."""

    system: System
    pred: dict[str, np.ndarray]
    errors: dict[str, ErrorStat] = field(default_factory=dict)

    @property
    def nframes(self) -> int:
        """Number of frames tested."""
        return self.system.nframes


def predict(
    pot: Any,
    system: System,
    chunk_size: int = DEFAULT_CHUNK,
    progress: Callable[[int], None] | None = None,
) -> dict[str, np.ndarray]:
    """Energy (and force, virial when the backend computes them) of every frame of `system`."""
    if chunk_size < 1:
        raise ValueError("chunk_size must be at least 1")
    atype = system.remap_types(pot.type_map)
    inputs = _parameters(pot, system)
    parts: dict[str, list[np.ndarray]] = {}
    keys = ("energy", "force", "virial") if pot.can_compute_forces else ("energy",)
    overflows: list[str] = []
    for start in range(0, system.nframes, chunk_size):
        stop = min(start + chunk_size, system.nframes)
        box = None if system.box is None else system.box[start:stop]
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", NeighborOverflowWarning)
            try:
                params = {key: value[start:stop] for key, value in inputs.items()}
                out = pot.evaluate(system.coord[start:stop], atype, box, atomic=False, **params)
            except EvaluationError as err:
                raise _in_system(err, system, start) from None
        for w in caught:
            if issubclass(w.category, NeighborOverflowWarning):
                overflows.append(f"frames {start}-{stop - 1}: {w.message}")
            else:
                warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
        for key in keys:
            if key in out:
                parts.setdefault(key, []).append(np.asarray(out[key], dtype=np.float64))
        if progress is not None:
            progress(stop - start)
    if overflows:  # one report per system, not one per chunk
        more = f" ({len(overflows) - 1} more chunk(s) likewise)" if len(overflows) > 1 else ""
        warnings.warn(f"{system.name}, {overflows[0]}{more}", NeighborOverflowWarning, stacklevel=2)
    pred = {key: np.concatenate(chunks, axis=0) for key, chunks in parts.items()}
    pred["energy"] = pred["energy"].reshape(system.nframes)
    for key in ("energy", "force", "virial"):
        if key in pred and not np.all(np.isfinite(pred[key])):
            frame = int(np.argwhere(~np.isfinite(pred[key]))[0][0])
            raise EvaluationError(
                f"{system.name}: the model predicts a non-finite {key} at frame {frame}; the "
                "model may be broken (weights that overflow or are corrupt: re-export or retrain "
                "it), or the coordinates and box of that frame are unphysical"
            )
    return pred


def _parameters(pot: Any, system: System) -> dict[str, np.ndarray]:
    """The system's fparam/aparam that the model takes (data may carry ones it does not);
    a DataError naming the system where the model needs one the data lack."""
    out = {}
    for key in ("fparam", "aparam"):
        width = int(getattr(pot, f"dim_{key}", 0))
        value = getattr(system, key)
        if not width:
            continue
        if value is None:
            if key == "fparam" and getattr(pot, "has_default_fparam", False):
                continue
            raise DataError(
                f"{system.name}: the model takes {key} ({width} per "
                f"{'frame' if key == 'fparam' else 'atom'}) but the system has no {key}.npy; "
                "add it to every set.* folder"
            )
        out[key] = value
    return out


def _in_system(err: EvaluationError, system: System, start: int) -> EvaluationError:
    """`err` of a chunk starting at frame `start`, reworded with the system and its frame."""
    if err.frame is None or err.key is None or err.model is None:
        return EvaluationError(f"{system.name}, frames from {start}: {err}")
    return EvaluationError.non_finite(
        err.key, start + err.frame, err.atom, err.model, where=f"{system.name}: "
    )


def compare(system: System, pred: dict[str, np.ndarray]) -> dict[str, ErrorStat]:
    """`dp test` errors of `pred` against the labels that `system` has (virial: periodic only)."""
    nat = system.natoms
    errors: dict[str, ErrorStat] = {}
    if system.energy is not None:
        errors["energy"] = error_stat(pred["energy"], system.energy)
        errors["energy_per_atom"] = error_stat(pred["energy"], system.energy, scale=1.0 / nat)
    if system.force is not None and "force" in pred:
        errors["force"] = error_stat(pred["force"], system.force)
    if system.virial is not None and system.periodic and "virial" in pred:
        errors["virial"] = error_stat(pred["virial"], system.virial)
        errors["virial_per_atom"] = error_stat(pred["virial"], system.virial, scale=1.0 / nat)
    return errors


def evaluate_system(
    pot: Any,
    system: System,
    nframes: int | None = None,
    chunk_size: int = DEFAULT_CHUNK,
    progress: Callable[[int], None] | None = None,
) -> SystemResult:
    """Evaluate the first `nframes` frames (all when None) of `system` and compare to its labels."""
    if nframes is not None and nframes < system.nframes:
        system = system.frames(slice(0, nframes))
    pred = predict(pot, system, chunk_size=chunk_size, progress=progress)
    return SystemResult(system=system, pred=pred, errors=compare(system, pred))
