"""ASE calculator: energies, forces and stress of a dpa model for ASE's MD, optimizers and tools.

    from dpa.calculator import DPACalculator
    atoms.calc = DPACalculator("model.dp", backend="torch")             # as trained
    atoms.calc = DPACalculator("model.dp", backend="jax", precision="float32")  # faster MD

Energies in eV, forces in eV/Å, stress = -virial/volume in eV/Å³, Voigt order
(xx, yy, zz, yz, xz, xy), as ASE expects (periodic cells only). Works with ASE's optimizers
(also on the cell, through `ase.filters.FrechetCellFilter`) and its MD integrators.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
from ase.calculators.calculator import Calculator, all_changes
from ase.stress import full_3x3_to_voigt_6_stress

from .errors import ConfigError, DataError
from .model import Model
from .multitask import MultiTaskModel
from .potential import Potential


class DPACalculator(Calculator):
    """A dpa model as an ASE calculator (forces need the torch or jax backend).

    model: a model file, a `dpa.Model`, a `dpa.MultiTaskModel` or a loaded `dpa.Potential`;
    backend: as in `dpa.load_model`; precision: None (as trained), "float64" or "float32"
    (evaluate in that precision without retraining); compile: torch only, `torch.compile` the
    model; head: the branch of a multi-task model (name or alias, any case).
    """

    implemented_properties = ["energy", "free_energy", "energies", "forces", "stress"]

    def __init__(
        self,
        model: str | os.PathLike | Model | MultiTaskModel | Potential,
        backend: str | None = None,
        precision: str | None = None,
        compile: bool = False,
        head: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if isinstance(model, Potential):
            if head is not None:
                raise ConfigError(
                    f"head {head!r}: a loaded Potential is one model already; pass the model "
                    "file or the MultiTaskModel to choose a branch"
                )
            self.potential = model.with_precision(precision)
        else:
            from . import load_model

            self.potential = load_model(
                model, backend=backend, compile=compile, precision=precision, head=head
            )

    def _types(self, symbols: list[str]) -> np.ndarray:
        """Atom types as indices into the model's type_map; unknown elements are named."""
        index = {name: i for i, name in enumerate(self.potential.type_map)}
        unknown = sorted({s for s in symbols if s not in index})
        if unknown:
            raise DataError(
                f"element(s) {unknown} are not in the model's type_map {self.potential.type_map}"
            )
        return np.array([index[s] for s in symbols], dtype=np.int64)

    def calculate(
        self,
        atoms: Any = None,
        properties: tuple[str, ...] = ("energy",),
        system_changes: list[str] = all_changes,
    ) -> None:
        super().calculate(atoms, properties, system_changes)
        atoms = self.atoms
        pbc = atoms.pbc
        if pbc.any() and not pbc.all():
            raise DataError(
                f"partially periodic systems (pbc={pbc.tolist()}) are not supported; use a box "
                "periodic in all three directions with enough vacuum, or no periodicity"
            )
        box = np.asarray(atoms.cell.array, dtype=np.float64) if pbc.all() else None
        types = self._types(atoms.get_chemical_symbols())
        out = self.potential.evaluate(atoms.positions, types, box)
        self.results["energy"] = self.results["free_energy"] = float(out["energy"][0])
        self.results["energies"] = out["atom_energy"][0]
        if self.potential.can_compute_forces:
            self.results["forces"] = out["force"][0]
            if box is not None:
                stress = -out["virial"][0] / atoms.get_volume()
                self.results["stress"] = full_3x3_to_voigt_6_stress(stress)
