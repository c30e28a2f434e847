"""NVE molecular dynamics of 192-atom water with dpa's ASE calculator (velocity Verlet), printing
the total-energy drift per atom.

    python examples/md_water/run_ase.py MODEL [--backend torch|jax] [--steps 4000] [--dt 0.5]

MODEL is any dpa model file, e.g. the one `make example` trains
(examples/train_water/run/model.pth). Its default 400 steps leave a model that is not stable for
long at 300 K (two O atoms fall onto each other after ~0.2 ps: the short-range repulsion is not
learned yet); `python examples/train_water/run.py --steps 2000` (force RMSE ~0.15 eV/Å) gives
one that runs the 2 ps with a drift of ~0.1 meV/atom.

The default run is 2 ps (4000 steps of 0.5 fs) from frame 0 of examples/data/water with 300 K
Maxwell-Boltzmann velocities.
"""

from __future__ import annotations

import time

import numpy as np
from common import drift_report, header, parser, progress, water_atoms


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--backend", choices=("torch", "jax"), default=None, help="default: by suffix")
    p.add_argument("--compile", action="store_true", help="torch: torch.compile the model")
    args = p.parse_args()
    from dpa.backends.allocator import reexec_with_huge_pages

    reexec_with_huge_pages()  # huge-page malloc: ~20% faster steps (fewer page faults)

    from ase import units
    from ase.md.verlet import VelocityVerlet

    from dpa.calculator import DPACalculator

    atoms = water_atoms(args.data, args.frame, args.temperature, args.seed)
    atoms.calc = DPACalculator(
        args.model, backend=args.backend, precision=args.precision, compile=args.compile
    )
    pot = atoms.calc.potential
    n = len(atoms)
    print(
        f"ASE NVE: {args.model} on {pot.backend} ({pot.precision}), {n} atoms, "
        f"{args.steps} steps of {args.dt} fs, T0 {args.temperature} K"
    )
    header()
    steps, total = [], []

    def record() -> None:
        step = dyn.nsteps
        steps.append(step)
        total.append(atoms.get_total_energy())
        if step % args.log_every == 0:
            e_pot = atoms.get_potential_energy()
            progress(step, args.dt, atoms.get_temperature(), e_pot, total[-1], n)

    dyn = VelocityVerlet(atoms, timestep=args.dt * units.fs)
    dyn.attach(record, interval=1)
    atoms.get_forces()  # the first (compiling) evaluation is not timed
    start = time.perf_counter()
    dyn.run(args.steps)
    seconds = time.perf_counter() - start
    print(f"{args.steps / seconds:.1f} steps/s ({seconds:.1f} s)")
    drift_report(np.array(steps), np.array(total), args.dt, n)


if __name__ == "__main__":
    main()
