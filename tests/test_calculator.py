"""The ASE calculator: same numbers as Potential.evaluate, forces and stress as ASE derives them
numerically, stress = -virial/V (Voigt) and equal to the strain derivative of the energy, and a
short NVE run that conserves energy (192-atom water NVE and cell relaxation: test_md.py)."""

from __future__ import annotations

import numpy as np
import pytest

ase = pytest.importorskip("ase")
pytest.importorskip("torch")

from ase import Atoms  # noqa: E402
from ase.calculators.fd import calculate_numerical_forces, calculate_numerical_stress  # noqa: E402
from ase.md.verlet import VelocityVerlet  # noqa: E402
from builders import dpa1, model_config  # noqa: E402

import dpa  # noqa: E402
from dpa.calculator import DPACalculator  # noqa: E402

CONFIG = model_config(dpa1(64, rcut=3.5))


@pytest.fixture(scope="module")
def calc() -> DPACalculator:
    model = dpa.build_model(CONFIG, seed=3)
    # a stiffer output layer so that forces and stress are well above finite-difference noise
    model.tree["fitting"]["nets"]["networks"][0]["layers"][-1]["@variables"]["w"] *= 50.0
    return DPACalculator(model, backend="torch")


def water_cluster(periodic: bool) -> Atoms:
    rng = np.random.default_rng(7)
    grid = np.stack(np.meshgrid(*[np.arange(2)] * 3, indexing="ij"), -1).reshape(-1, 3) * 2.4
    positions = np.concatenate([grid, grid + [0.96, 0.0, 0.0], grid + [-0.24, 0.93, 0.0]])
    positions = positions + rng.normal(scale=0.05, size=positions.shape)
    atoms = Atoms("O8H8H8", positions=positions)
    if periodic:
        atoms.set_cell([[4.8, 0.0, 0.0], [0.3, 4.8, 0.0], [0.2, -0.4, 4.8]])
        atoms.pbc = True
    return atoms


@pytest.mark.parametrize("periodic", [True, False])
def test_matches_potential(calc, periodic):
    atoms = water_cluster(periodic)
    atoms.calc = calc
    types = np.array([0] * 8 + [1] * 16)
    ref = calc.potential.evaluate(atoms.positions, types, atoms.cell.array if periodic else None)
    assert atoms.get_potential_energy() == pytest.approx(ref["energy"][0], abs=1e-12)
    np.testing.assert_allclose(atoms.get_forces(), ref["force"][0], atol=1e-12)
    np.testing.assert_allclose(atoms.get_potential_energies(), ref["atom_energy"][0], atol=1e-12)


def test_forces_and_stress_match_finite_differences(calc):
    atoms = water_cluster(periodic=True)
    atoms.calc = calc
    forces = atoms.get_forces()
    assert np.abs(forces).max() > 1e-3
    np.testing.assert_allclose(forces, calculate_numerical_forces(atoms, eps=1e-5), atol=1e-7)
    stress = atoms.get_stress()
    np.testing.assert_allclose(stress, calculate_numerical_stress(atoms, eps=1e-5), atol=1e-8)


def test_unknown_element_and_partial_pbc_are_clear_errors(calc):
    atoms = Atoms("OHC", positions=[[0, 0, 0], [1, 0, 0], [0, 1.2, 0]])
    atoms.calc = calc
    with pytest.raises(dpa.DataError, match=r"\['C'\] are not in the model's type_map"):
        atoms.get_potential_energy()
    atoms = water_cluster(periodic=True)
    atoms.pbc = [True, True, False]
    atoms.calc = calc
    with pytest.raises(dpa.DataError, match="partially periodic"):
        atoms.get_potential_energy()


def test_nve_conserves_energy(calc):
    atoms = water_cluster(periodic=True)
    atoms.calc = calc
    rng = np.random.default_rng(0)
    atoms.set_momenta(rng.normal(scale=0.02, size=(len(atoms), 3)) * atoms.get_masses()[:, None])
    start = atoms.get_total_energy()
    VelocityVerlet(atoms, timestep=0.2 * ase.units.fs).run(20)
    assert abs(atoms.get_total_energy() - start) < 1e-4 * max(1.0, atoms.get_kinetic_energy())


def test_stress_is_minus_virial_over_volume_in_voigt_order(calc):
    atoms = water_cluster(periodic=True)
    atoms.calc = calc
    types = np.array([0] * 8 + [1] * 16)
    virial = calc.potential.evaluate(atoms.positions, types, atoms.cell.array)["virial"][0]
    full = -virial / atoms.get_volume()
    voigt = [full[0, 0], full[1, 1], full[2, 2], full[1, 2], full[0, 2], full[0, 1]]
    np.testing.assert_allclose(atoms.get_stress(), voigt, atol=1e-14)
    np.testing.assert_allclose(atoms.get_stress(voigt=False), full, atol=1e-14)
    assert atoms.get_potential_energy(force_consistent=True) == atoms.get_potential_energy()
    assert atoms.get_potential_energies().sum() == pytest.approx(atoms.get_potential_energy())


def test_stress_matches_strain_derivative_of_energy(calc):
    """σ_ab = (1/V) dE/dε_ab under x -> x (1 + ε), cell -> cell (1 + ε), by central differences
    on the triclinic cell, for all six components (independent of ASE's own helper)."""
    atoms = water_cluster(periodic=True)
    atoms.calc = calc
    stress = atoms.get_stress(voigt=False)
    positions, cell, volume = atoms.positions.copy(), atoms.cell.array.copy(), atoms.get_volume()
    h = 1e-6
    numeric = np.zeros((3, 3))
    for a, b in [(0, 0), (1, 1), (2, 2), (1, 2), (0, 2), (0, 1)]:
        energies = []
        for sign in (1.0, -1.0):
            strain = np.eye(3)
            strain[a, b] += sign * h / (1 if a == b else 2)
            strain[b, a] = strain[a, b]
            probe = atoms.copy()
            probe.calc = calc
            probe.set_cell(cell @ strain, scale_atoms=False)
            probe.positions = positions @ strain
            energies.append(probe.get_potential_energy())
        numeric[a, b] = numeric[b, a] = (energies[0] - energies[1]) / (2 * h) / volume
    assert np.abs(stress).max() > 1e-4
    np.testing.assert_allclose(stress, numeric, atol=1e-8)


@pytest.mark.filterwarnings("ignore::dpa.neighbor.NeighborOverflowWarning")  # dense cluster
def test_head_of_a_multitask_model():
    """`head=` picks a branch (name or alias, any case); a loaded Potential takes none."""
    from pathlib import Path

    path = Path(__file__).resolve().parent / "fixtures" / "deepmd_pt" / "mt_dpa3_sharefit.pt"
    atoms = water_cluster(periodic=True)
    energies = {}
    for head in ("water_a", "ALIAS_A", "water_b"):
        atoms.calc = DPACalculator(path, backend="torch", head=head)
        energies[head] = atoms.get_potential_energy()
    assert energies["water_a"] == energies["ALIAS_A"] != energies["water_b"]
    pot = dpa.load_model(path, backend="torch", head="water_a")
    with pytest.raises(dpa.ConfigError, match="head"):
        DPACalculator(pot, head="water_b")
    with pytest.raises(dpa.ConfigError, match="water_b"):
        DPACalculator(path, backend="torch")
