"""dpa reproduces DeePMD-kit 3.2.0: every fixture case x system x installed backend.

The fixtures (tests/fixtures/deepmd and tests/fixtures/deepmd_lam for DPA-2/DPA-3, made by
tests/fixtures/make_fixtures*.py with the real DeePMD-kit) are random models saved as .dp plus
DeePMD-kit's outputs on three systems. numpy is
checked on energy and atom energy; torch and jax on all five outputs. float64 cases: |diff| <=
1e-10; float32 cases: |diff| <= 1e-5 * max(1, max|ref|).
"""

from __future__ import annotations

import functools
import json

import numpy as np
import pytest
from builders import DEEPMD_FIXTURES, LAM_FIXTURES

import dpa
import dpa.io

FOLDERS = (DEEPMD_FIXTURES, LAM_FIXTURES)
CASES = {
    c["name"]: {**c, "folder": folder}
    for folder in FOLDERS
    for c in json.loads((folder / "cases.json").read_text())["cases"]
}
OUTPUTS = {
    "numpy": ("energy", "atom_energy"),
    "torch": ("energy", "force", "virial", "atom_energy", "atom_virial"),
    "jax": ("energy", "force", "virial", "atom_energy", "atom_virial"),
}
GRID = [
    pytest.param(name, system, id=f"{name}-{system}")
    for name, case in CASES.items()
    for system in case["systems"]
]


@functools.cache
def reference(name: str) -> dict[str, np.ndarray]:
    with np.load(CASES[name]["folder"] / f"{name}.npz") as z:
        return {k: z[k] for k in z.files}


@functools.cache
def potential(name: str, backend: str) -> dpa.Potential:
    return dpa.load_model(dpa.io.load(CASES[name]["folder"] / f"{name}.dp"), backend=backend)


def inputs(ref: dict[str, np.ndarray], system: str) -> dict:
    """Keyword arguments of Potential.evaluate for one system of a fixture."""
    kwargs = {
        "coord": ref[f"{system}_coord"],
        "atype": ref[f"{system}_atype"],
        "box": ref.get(f"{system}_box"),
    }
    for key in ("fparam", "aparam"):
        if f"{system}_{key}" in ref:
            kwargs[key] = ref[f"{system}_{key}"]
    return kwargs


def tolerance(name: str, ref: np.ndarray, scale: float = 1.0) -> float:
    """float64: 1e-10 absolute; float32: 1e-5 relative to max(1, max|ref|, scale)."""
    if CASES[name]["precision"] == "float32":
        return 1e-5 * max(1.0, float(np.max(np.abs(ref))), scale)
    return 1e-10


def atom_virial_scale(ref: dict[str, np.ndarray], system: str, name: str) -> float:
    """Round-off scale of a message-passing atom virial: max|x| * max|F|.

    For DPA-2/DPA-3 the atom virial is Σ_i dE_i/dr ⊗ (x_i - x_c) over many atoms i; both
    DeePMD-kit and dpa form it from absolute positions (d(Σ_i E_i x_i)/dr - g ⊗ x_c), so in
    float32 its absolute error is about eps32 * |x| * |F|, not eps32 * |atom virial|."""
    if CASES[name]["descriptor_type"] not in ("dpa2", "dpa3"):
        return 1.0
    coord, force = ref[f"{system}_coord"], ref[f"{system}_force"]
    return float(np.max(np.abs(coord)) * np.max(np.abs(force)))


def test_every_case_has_its_files():
    assert len(CASES) >= 30
    assert {c["descriptor_type"] for c in CASES.values()} >= {"dpa2", "dpa3"}
    for name, case in CASES.items():
        assert (case["folder"] / f"{name}.dp").is_file(), name
        ref = reference(name)
        assert list(ref["type_map"]) == ["O", "H", "C"], name
        for system in case["systems"]:
            assert f"{system}_energy" in ref, (name, system)


@pytest.mark.parametrize(("name", "system"), GRID)
def test_matches_deepmd_kit(name, system, backend):
    ref = reference(name)
    pot = potential(name, backend)
    assert pot.type_map == list(ref["type_map"])
    out = pot.evaluate(**inputs(ref, system), atomic=True)
    problems = []
    for key in OUTPUTS[backend]:
        want = ref[f"{system}_{key}"]
        got = out[key]
        if got.shape != want.shape:
            problems.append(f"{key}: shape {got.shape} != {want.shape}")
            continue
        diff = float(np.max(np.abs(got - want)))
        scale = atom_virial_scale(ref, system, name) if key == "atom_virial" else 1.0
        tol = tolerance(name, want, scale)
        if not diff <= tol:
            problems.append(f"{key}: max |diff| {diff:.3e} > {tol:.1e}")
    assert not problems, f"{name} on {system} ({backend}):\n" + "\n".join(problems)
