"""Shared by run_ase.py and run_jax_md.py: the starting water frame, the command line and the
energy-drift report of an NVE run."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
WATER = HERE.parent / "data" / "water"  # 192-atom water frames (deepmd/npy), see ../data/NOTICE.md


def parser(description: str) -> argparse.ArgumentParser:
    """The options both scripts take."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("model", help="model file (.dp, .pth, .jax), e.g. a trained water model")
    p.add_argument("--steps", type=int, default=4000, help="NVE steps (default 4000 = 2 ps)")
    p.add_argument("--dt", type=float, default=0.5, help="time step in fs (default 0.5)")
    p.add_argument("--temperature", type=float, default=300.0, help="initial T in K")
    p.add_argument("--data", type=Path, default=WATER, help="deepmd/npy system to start from")
    p.add_argument("--frame", type=int, default=0, help="frame of --data to start from")
    p.add_argument("--seed", type=int, default=0, help="seed of the initial velocities")
    p.add_argument(
        "--precision", choices=("float64", "float32"), default=None, help="override precision"
    )
    p.add_argument("--log-every", type=int, default=200, help="steps between progress lines")
    return p


def water_atoms(data: Path, frame: int, temperature: float, seed: int):
    """The frame as periodic ASE Atoms with Maxwell-Boltzmann momenta at `temperature` (exactly),
    without center-of-mass motion."""
    from ase import Atoms
    from ase.md.velocitydistribution import MaxwellBoltzmannDistribution, Stationary

    from dpa.data import load_system

    system = load_system(data)
    if system.box is None:
        raise SystemExit(f"{data} has no box: this example runs periodic water")
    symbols = [system.type_map[t] for t in system.atype]
    atoms = Atoms(symbols, positions=system.coord[frame], cell=system.box[frame], pbc=True)
    rng = np.random.default_rng(seed)
    MaxwellBoltzmannDistribution(atoms, temperature_K=temperature, rng=rng, force_temp=True)
    Stationary(atoms)
    return atoms


def progress(step: int, dt_fs: float, temperature: float, e_pot: float, e_tot: float, n: int):
    print(
        f"{step:>7} {step * dt_fs / 1000:>8.3f} {temperature:>8.1f} "
        f"{e_pot / n:>14.6f} {e_tot / n:>14.6f}",
        flush=True,
    )


def header() -> None:
    print(f"{'step':>7} {'t (ps)':>8} {'T (K)':>8} {'Epot/atom (eV)':>14} {'Etot/atom (eV)':>14}")


def drift_report(steps: np.ndarray, total: np.ndarray, dt_fs: float, natoms: int) -> None:
    """Total-energy drift per atom: end minus start, the largest excursion, and the slope of a
    least-squares line (the usual 'drift' figure, per ps)."""
    t_ps = steps * dt_fs / 1000.0
    per_atom = (total - total[0]) / natoms * 1000.0  # meV/atom
    slope = np.polyfit(t_ps, per_atom, 1)[0] if len(t_ps) > 1 else float("nan")
    print(
        f"energy drift over {t_ps[-1]:.3f} ps ({natoms} atoms): "
        f"end - start {per_atom[-1]:+.4f} meV/atom, max |E - E0| {np.abs(per_atom).max():.4f} "
        f"meV/atom, linear fit {slope:+.4f} meV/atom/ps"
    )
