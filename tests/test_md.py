"""Molecular dynamics with dpa models: the JAX-MD energy function against `Potential`, NVE energy
conservation of 192-atom water with the ASE calculator and with JAX-MD, and an ASE cell
relaxation.

The water model is built, not trained (training takes minutes): `smooth_water_model` of
builders.py. It keeps atoms apart, so 150 fs of 300 K dynamics stay physical (no collapsing
pairs).
"""

from __future__ import annotations

import numpy as np
import pytest
from builders import DEEPMD_FIXTURES, WATER, smooth_water_model

import dpa
from dpa.data import load_system

jax = pytest.importorskip("jax")
djm = pytest.importorskip("dpa.jax_md")
jnp = jax.numpy

DT_FS = 0.5
STEPS = 300  # 150 fs
TEMPERATURE = 300.0
TOLERANCE = 1e-3  # eV/atom: the largest |E_total(t) - E_total(0)| allowed


@pytest.fixture(scope="module")
def water():
    return load_system(WATER)


@pytest.fixture(scope="module")
def water_model(water) -> dpa.Model:
    """The smooth water model of the module docstring."""
    return smooth_water_model(water)


@pytest.fixture(scope="module")
def calc(water_model):
    """One ASE calculator (jax backend) for the module: it compiles once."""
    pytest.importorskip("ase")
    from dpa.calculator import DPACalculator

    return DPACalculator(water_model, backend="jax")


def water_atoms(water):
    """Frame 0 as ASE Atoms with 300 K Maxwell-Boltzmann momenta (fixed seed, no net drift)."""
    from ase import Atoms
    from ase.md.velocitydistribution import MaxwellBoltzmannDistribution, Stationary

    symbols = [water.type_map[t] for t in water.atype]
    atoms = Atoms(symbols, positions=water.coord[0], cell=water.box[0], pbc=True)
    MaxwellBoltzmannDistribution(
        atoms, temperature_K=TEMPERATURE, rng=np.random.default_rng(0), force_temp=True
    )
    Stationary(atoms)
    return atoms


def report(label: str, total: np.ndarray, potential: np.ndarray, natoms: int) -> float:
    """Print the drift numbers (seen with pytest -s) and return max |E(t) - E(0)| per atom."""
    worst = float(np.max(np.abs(total - total[0]))) / natoms
    print(
        f"\n{label}: {STEPS} steps of {DT_FS} fs, 192-atom water: "
        f"drift {(total[-1] - total[0]) / natoms * 1e3:+.4f} meV/atom, "
        f"max |dE| {worst * 1e3:.4f} meV/atom, potential energy range "
        f"{np.ptp(potential) / natoms * 1e3:.1f} meV/atom"
    )
    return worst


# --------------------------------------------------------------- the JAX-MD energy function


@pytest.mark.parametrize(
    "name, modes",
    [
        ("se_e2_a_modelexcl_f64", ("candidates", "fractional")),  # per type, pair exclusion
        ("dpa1_concat_f64", ("candidates",)),  # mixed types, attention
    ],
)
def test_energy_fn_matches_potential(name, modes, water):
    """Energy and forces equal the jax backend's with candidate indices (jax_md's dense format);
    with fractional coordinates and the in-graph list, the box gradient gives the virial."""
    model = dpa.io.load(DEEPMD_FIXTURES / f"{name}.dp")
    atype = water.remap_types(model.type_map)
    coord, cell = water.coord[0], water.box[0]
    ref = dpa.load_model(model, backend="jax").evaluate(coord, atype, cell)
    energy = djm.energy_fn(model, atype, cell.T)
    nat = len(atype)
    candidates = np.tile(np.arange(nat + 1), (nat, 1))  # every atom, plus one padding column
    e, grad = jax.value_and_grad(energy)(coord, neighbor=candidates)
    assert float(e) == pytest.approx(ref["energy"][0], abs=1e-9)
    np.testing.assert_allclose(-grad, ref["force"][0], atol=1e-10)
    if "fractional" in modes:
        frac = djm.energy_fn(model, atype, cell.T, fractional_coordinates=True)
        s = coord @ np.linalg.inv(cell)
        # W = -dE/dε: the box strained with fractional coordinates held fixed (box = cell^T)
        e, d_box = jax.value_and_grad(lambda b: frac(s, box=b))(cell.T)
        assert float(e) == pytest.approx(ref["energy"][0], abs=1e-9)
        np.testing.assert_allclose(-(d_box @ cell), ref["virial"][0], atol=1e-9)


def test_energy_fn_small_skewed_cell(make_model, get_system):
    """Every periodic image counts in the in-graph list; a minimum-image list is refused."""
    system = get_system("skewed")
    config = {
        "descriptor": {"type": "se_e2_a", "sel": [30, 30, 30], "rcut": 4.0, "rcut_smth": 0.5},
        "fitting_net": {"neuron": [8]},
    }
    model = make_model({**config, "descriptor": {**config["descriptor"], "neuron": [4, 8]}})
    coord, box = system.coord[1], system.box[1]
    ref = dpa.load_model(model, backend="jax").evaluate(coord, system.atype, box)
    energy = djm.energy_fn(model, system.atype, box.T)
    e, grad = jax.value_and_grad(energy)(coord)
    assert float(e) == pytest.approx(ref["energy"][0], abs=1e-9)
    np.testing.assert_allclose(-grad, ref["force"][0], atol=1e-10)
    with pytest.raises(dpa.ConfigError, match="face distance"):
        energy(coord, neighbor=np.zeros((6, 4), dtype=np.int64))


def test_energy_fn_errors():
    model = dpa.io.load(DEEPMD_FIXTURES / "se_e2_a_modelexcl_f64.dp")  # type_map O, H, C
    with pytest.raises(dpa.DataError, match="outside 0..2"):
        djm.energy_fn(model, np.array([0, 3]), None)
    with pytest.raises(dpa.DataError, match="box must be"):
        djm.energy_fn(model, np.array([0, 1]), np.ones((2, 2)))
    assert djm.atomic_masses(["O", "H"], [1, 0]) == pytest.approx([1.008, 15.999], abs=1e-3)


# --------------------------------------------------------------- NVE and relaxation


def test_ase_nve_conserves_energy(water, calc):
    from ase import units
    from ase.md.verlet import VelocityVerlet

    atoms = water_atoms(water)
    atoms.calc = calc
    total, potential = [], []

    def record() -> None:  # called at step 0 and after every step
        total.append(atoms.get_total_energy())
        potential.append(atoms.get_potential_energy())

    dyn = VelocityVerlet(atoms, timestep=DT_FS * units.fs)
    dyn.attach(record, interval=1)
    dyn.run(STEPS)
    assert len(total) == STEPS + 1
    worst = report("ASE VelocityVerlet", np.array(total), np.array(potential), len(atoms))
    assert worst < TOLERANCE
    assert np.ptp(potential) / len(atoms) > 10 * TOLERANCE  # the atoms really moved
    distances = atoms.get_all_distances(mic=True) + 10.0 * np.eye(len(atoms))
    assert distances.min() > 0.7  # no collapsed pairs: the run stayed physical


def test_jax_md_nve_conserves_energy(water, water_model, calc):
    """jax_md.simulate.nve with jax_md's dense neighbor list: the first steps follow ASE's
    VelocityVerlet trajectory from the same state, and the total energy is conserved."""
    jax_md = pytest.importorskip("jax_md")
    from ase import units
    from ase.md.verlet import VelocityVerlet

    atoms = water_atoms(water)
    positions, momenta = atoms.get_positions(), atoms.get_momenta()
    atype = water.remap_types(water_model.type_map)
    box = water.box[0].T  # jax_md's box: cell vectors as columns
    displacement, shift = jax_md.space.periodic_general(box, fractional_coordinates=False)
    energy = djm.energy_fn(water_model, atype, box)
    neighbor_fn = djm.neighbor_list(energy, displacement, box, skin=1.0)
    nbrs = neighbor_fn.allocate(jnp.asarray(positions))
    init, apply = jax_md.simulate.nve(energy, shift, dt=DT_FS * djm.FS)
    mass = djm.atomic_masses(energy.type_map, atype)
    chunk = 10

    def energies(state, nbrs):
        """(total, potential) energy of a state."""
        pe = energy(state.position, neighbor=nbrs)
        return pe + jax_md.quantity.kinetic_energy(momentum=state.momentum, mass=state.mass), pe

    @jax.jit
    def start(position, momentum, nbrs):
        key = jax.random.PRNGKey(0)
        state = init(key, position, kT=TEMPERATURE * djm.KB, mass=mass, neighbor=nbrs)
        state = jax_md.dataclasses.replace(state, momentum=momentum)  # ASE's momenta
        return state, energies(state, nbrs)

    @jax.jit
    def advance(state, nbrs):
        """`chunk` NVE steps, updating the neighbor list after each; energies at the end."""
        state, nbrs = djm.run_steps(apply, state, nbrs, chunk)
        return state, nbrs, energies(state, nbrs)

    state, first = start(jnp.asarray(positions), jnp.asarray(momenta), nbrs)
    total, potential = [float(first[0])], [float(first[1])]
    for step in range(chunk, STEPS + 1, chunk):
        state, nbrs, (e_total, e_pot) = advance(state, nbrs)
        assert not bool(nbrs.did_buffer_overflow)
        total.append(float(e_total))
        potential.append(float(e_pot))
        if step == 2 * chunk:  # the same 20 steps with the ASE calculator
            atoms.calc = calc
            VelocityVerlet(atoms, timestep=DT_FS * units.fs).run(step)
            delta = np.asarray(state.position) - atoms.get_positions()
            frac = delta @ np.linalg.inv(water.box[0])
            delta = (frac - np.round(frac)) @ water.box[0]  # jax_md wraps positions
            assert np.abs(delta).max() < 1e-6
            assert total[-1] == pytest.approx(atoms.get_total_energy(), abs=1e-6)
    worst = report("JAX-MD simulate.nve", np.array(total), np.array(potential), len(atype))
    assert worst < TOLERANCE
    assert np.ptp(potential) / len(atype) > 10 * TOLERANCE


def test_ase_relaxes_cell_and_positions(water, calc):
    """FrechetCellFilter + FIRE from a perturbed, strained water cell reaches fmax on the
    atoms and the cell (stress, eV/Å³, = -virial/V, as ASE's optimizers expect)."""
    from ase.filters import FrechetCellFilter
    from ase.optimize import FIRE

    atoms = water_atoms(water)
    rng = np.random.default_rng(1)
    atoms.positions += rng.normal(scale=0.05, size=atoms.positions.shape)
    strain = np.array([[0.02, 0.01, 0.0], [0.0, -0.01, 0.005], [0.0, 0.0, 0.01]])
    atoms.set_cell(atoms.cell.array @ (np.eye(3) + strain), scale_atoms=True)
    atoms.calc = calc
    fmax = 0.05
    start = np.abs(atoms.get_stress()).max()
    cell_filter = FrechetCellFilter(atoms)
    assert FIRE(cell_filter, logfile=None).run(fmax=fmax, steps=500)
    assert np.linalg.norm(cell_filter.get_forces(), axis=1).max() < fmax
    assert np.linalg.norm(atoms.get_forces(), axis=1).max() < fmax
    # the cell rows of the filter are the stress times volume / natoms (exp_cell_factor)
    assert np.abs(atoms.get_stress()).max() * atoms.get_volume() / len(atoms) < fmax
    assert np.abs(atoms.get_stress()).max() < start
