"""The hyperparameters of a stored se_e2_a tree, parsed once (spec §4)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SeE2ASettings:
    """What the forward pass reads besides arrays; defaults of optional stored keys live here."""

    rcut: float
    rcut_smth: float
    protection: float
    sel: tuple[int, ...]  # one width per neighbor type
    axis_neuron: int
    precision: str
    type_one_side: bool
    exclude_types: tuple[tuple[int, int], ...]

    @property
    def ntypes(self) -> int:
        return len(self.sel)

    @classmethod
    def from_tree(cls, desc: dict) -> SeE2ASettings:
        return cls(
            rcut=float(desc["rcut"]),
            rcut_smth=float(desc["rcut_smth"]),
            protection=float(desc["env_mat"].get("protection", 0.0)),
            sel=tuple(int(n) for n in desc["sel"]),
            axis_neuron=int(desc["axis_neuron"]),
            precision=str(desc.get("precision", "float64")),
            type_one_side=bool(desc.get("type_one_side", False)),
            exclude_types=tuple((int(a), int(b)) for a, b in desc.get("exclude_types") or ()),
        )
