"""NVE molecular dynamics written in TensorFlow on a dpa SavedModel, without dpa installed.

    python examples/tf_md/run.py MODEL.savedmodel [--data ../data/water] [--steps 4000] [--dt 0.5]

Velocity Verlet in TensorFlow: positions, velocities and forces stay TensorFlow tensors, and each
step calls the SavedModel's `serving_default` signature (neighbor list built inside the graph).
The starting frame is read from a deepmd/npy folder with NumPy; masses come from the element
names in the SavedModel's metadata. Prints the total energy every --log-every steps and, at the
end, its drift per atom. Units: Å, eV, atomic mass units, fs.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import tensorflow as tf

HERE = Path(__file__).resolve().parent
# (eV/Å)/amu in Å/fs²: 1 eV/amu = 9.648533e7 m²/s² = 9.648533e-3 Å²/fs²
ACCEL = 9.648533212e-3
KB_EV = 8.617333262e-5  # Boltzmann constant, eV/K
MASSES = {"H": 1.008, "He": 4.0026, "Li": 6.94, "C": 12.011, "N": 14.007, "O": 15.999}
MASSES.update({"F": 18.998, "Na": 22.99, "Mg": 24.305, "Al": 26.982, "Si": 28.085, "P": 30.974})
MASSES.update({"S": 32.06, "Cl": 35.45, "K": 39.098, "Ca": 40.078, "Cu": 63.546, "Zn": 65.38})


def read_frame(folder: Path, frame: int, type_map: list[str]) -> tuple[np.ndarray, ...]:
    """(coord (nat, 3), atype (nat,) into type_map, box (3, 3)) of one deepmd/npy frame."""
    types = np.loadtxt(folder / "type.raw", dtype=int, ndmin=1)
    names_file = folder / "type_map.raw"
    names = names_file.read_text().split() if names_file.exists() else type_map
    missing = sorted({names[t] for t in types} - set(type_map))
    if missing:
        raise SystemExit(f"{folder}: elements {missing} are not in the model's type_map {type_map}")
    atype = np.array([type_map.index(names[t]) for t in types], dtype=np.int32)
    data = sorted(folder.glob("set.*"))[0]
    coord = np.load(data / "coord.npy")[frame].reshape(-1, 3)
    box = np.load(data / "box.npy")[frame].reshape(3, 3)
    return coord, atype, box


def initial_velocities(masses: np.ndarray, temperature: float, seed: int) -> np.ndarray:
    """Maxwell-Boltzmann velocities (Å/fs) at exactly `temperature`, no center-of-mass motion."""
    rng = np.random.default_rng(seed)
    v = rng.normal(size=(masses.size, 3)) * np.sqrt(KB_EV * temperature * ACCEL / masses)[:, None]
    v -= (masses[:, None] * v).sum(axis=0) / masses.sum()
    kinetic = 0.5 * (masses[:, None] * v * v).sum() / ACCEL
    target = 1.5 * (masses.size - 1) * KB_EV * temperature
    return v * np.sqrt(target / kinetic)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path, help="a SavedModel written by `dpa convert`")
    parser.add_argument("--data", type=Path, default=HERE.parent / "data" / "water")
    parser.add_argument("--frame", type=int, default=0)
    parser.add_argument("--steps", type=int, default=4000, help="NVE steps (4000 = 2 ps)")
    parser.add_argument("--dt", type=float, default=0.5, help="time step, fs")
    parser.add_argument("--temperature", type=float, default=300.0, help="initial T, K")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--log-every", type=int, default=200)
    args = parser.parse_args()

    module = tf.saved_model.load(str(args.model))
    meta = json.loads(module.signatures["get_metadata"]()["json"].numpy().decode())
    type_map = meta["type_map"]
    coord, atype, box = read_frame(args.data, args.frame, type_map)
    masses = np.array([MASSES[type_map[t]] for t in atype])
    serve = module.signatures["serving_default"]
    atype_t = tf.constant(atype[None], tf.int32)
    box_t = tf.constant(box[None], tf.float64)
    inv_mass = tf.constant((ACCEL / masses)[:, None], tf.float64)
    mass = tf.constant(masses[:, None], tf.float64)
    dt = tf.constant(args.dt, tf.float64)

    def forces(x: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        out = serve(coord=x[None], atype=atype_t, box=box_t)
        return out["energy"][0], out["force"][0]

    @tf.function
    def step(x, v, f):
        """One velocity-Verlet step: (x, v, f, potential energy)."""
        v = v + 0.5 * dt * f * inv_mass
        x = x + dt * v
        energy, f = forces(x)
        v = v + 0.5 * dt * f * inv_mass
        return x, v, f, energy

    def total(v: tf.Tensor, potential: tf.Tensor) -> float:
        kinetic = 0.5 * tf.reduce_sum(mass * v * v) / ACCEL
        return float(potential + kinetic)

    x = tf.constant(coord, tf.float64)
    v = tf.constant(initial_velocities(masses, args.temperature, args.seed), tf.float64)
    potential, f = forces(x)
    energies, potentials = [total(v, potential)], [float(potential)]
    nat = len(atype)
    for n in range(1, args.steps + 1):
        x, v, f, potential = step(x, v, f)
        energies.append(total(v, potential))
        potentials.append(float(potential))
        if n % args.log_every == 0 or n == args.steps:
            print(f"step {n:6d}  t {n * args.dt:8.1f} fs  E_total {energies[-1]:.6f} eV")
    energies = np.array(energies)
    drift = (energies[-1] - energies[0]) / nat
    worst = np.max(np.abs(energies - energies[0])) / nat
    print(
        f"NVE {args.steps} steps of {args.dt} fs, {nat} atoms: drift {drift * 1e3:+.4f} meV/atom, "
        f"max |dE| {worst * 1e3:.4f} meV/atom"
    )
    span = np.ptp(potentials) / nat  # how far the potential energy moved meanwhile
    report = {"drift_ev_per_atom": drift, "max_abs_dE_ev_per_atom": worst}
    print(json.dumps({**report, "potential_range_ev_per_atom": span}))


if __name__ == "__main__":
    main()
