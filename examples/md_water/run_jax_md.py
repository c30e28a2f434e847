"""NVE molecular dynamics of 192-atom water with JAX-MD (`jax_md.simulate.nve`) and a dpa model
(`dpa.jax_md`), printing the total-energy drift per atom.

    python examples/md_water/run_jax_md.py MODEL [--steps 4000] [--dt 0.5] [--skin 1.0]

MODEL is any dpa model file, e.g. the one `make example` trains
(examples/train_water/run/model.pth). Its default 400 steps leave a model that is not stable for
long at 300 K (two O atoms fall onto each other after ~0.2 ps: the short-range repulsion is not
learned yet); `python examples/train_water/run.py --steps 2000` (force RMSE ~0.15 eV/Å) gives
one that runs the 2 ps with a drift of ~0.1 meV/atom.

Same start as run_ase.py (frame 0 of examples/data/water, 300 K Maxwell-Boltzmann velocities
from the same seed), so both runs begin in the same state. The neighbor list is jax_md's dense
list (cutoff rcut + skin), updated after every step inside the compiled loop and reallocated
when it overflows.
"""

from __future__ import annotations

import time

import numpy as np
from common import drift_report, header, parser, progress, water_atoms


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--skin", type=float, default=1.0, help="neighbor-list skin in Å")
    args = p.parse_args()
    from dpa.backends.allocator import reexec_with_huge_pages

    reexec_with_huge_pages()  # huge-page malloc: ~20% faster steps (fewer page faults)

    import jax
    import jax.numpy as jnp
    from jax_md import dataclasses, quantity, simulate, space

    import dpa
    import dpa.jax_md as djm

    atoms = water_atoms(args.data, args.frame, args.temperature, args.seed)
    n = len(atoms)
    model = dpa.io.load(args.model)
    atype = np.array([model.type_map.index(s) for s in atoms.get_chemical_symbols()])
    box = atoms.cell.array.T  # jax_md: cell vectors as columns
    energy = djm.energy_fn(model, atype, box, precision=args.precision)
    displacement, shift = space.periodic_general(box, fractional_coordinates=False)
    neighbor_fn = djm.neighbor_list(energy, displacement, box, skin=args.skin)
    mass = djm.atomic_masses(energy.type_map, atype)
    init, apply = simulate.nve(energy, shift, dt=args.dt * djm.FS)
    chunk = args.log_every

    def energies(state, nbrs):
        e_pot = energy(state.position, neighbor=nbrs)
        e_kin = quantity.kinetic_energy(momentum=state.momentum, mass=state.mass)
        return e_pot, e_kin

    @jax.jit
    def start(position, momentum, nbrs):
        state = init(jax.random.PRNGKey(args.seed), position, kT=0.0, mass=mass, neighbor=nbrs)
        state = dataclasses.replace(state, momentum=momentum)  # the ASE start's momenta
        return state, energies(state, nbrs)

    def advance(state, nbrs, steps):
        state, nbrs = djm.run_steps(apply, state, nbrs, steps)
        return state, nbrs, energies(state, nbrs)

    advance = jax.jit(advance, static_argnums=2)
    position = jnp.asarray(atoms.get_positions())
    nbrs = neighbor_fn.allocate(position)
    state, (e_pot, e_kin) = start(position, jnp.asarray(atoms.get_momenta()), nbrs)
    print(
        f"JAX-MD NVE: {args.model} ({energy.model.precision}), {n} atoms, {args.steps} steps "
        f"of {args.dt} fs, T0 {args.temperature} K, neighbor list {tuple(nbrs.idx.shape)}"
    )
    header()
    kelvin = 2.0 / (3.0 * n) / djm.KB  # T from E_kin with 3N degrees of freedom, as ASE
    progress(0, args.dt, float(e_kin) * kelvin, float(e_pot), float(e_pot + e_kin), n)
    steps, total = [0], [float(e_pot + e_kin)]
    first = min(chunk, args.steps)
    advance(state, nbrs, first)[0].position.block_until_ready()  # compile outside the timing
    seconds, done = 0.0, 0
    while done < args.steps:
        size = min(chunk, args.steps - done)
        tic = time.perf_counter()
        new, new_nbrs, (e_pot, e_kin) = advance(state, nbrs, size)
        new.position.block_until_ready()
        seconds += time.perf_counter() - tic
        if bool(new_nbrs.did_buffer_overflow):  # more neighbors than allocated: redo the chunk
            nbrs = neighbor_fn.allocate(state.position)
            print(f"# neighbor list reallocated: {tuple(nbrs.idx.shape)}")
            continue
        state, nbrs, done = new, new_nbrs, done + size
        steps.append(done)
        total.append(float(e_pot + e_kin))
        progress(done, args.dt, float(e_kin) * kelvin, float(e_pot), total[-1], n)
    print(f"{args.steps / seconds:.1f} steps/s ({seconds:.1f} s, compilation excluded)")
    drift_report(np.array(steps), np.array(total), args.dt, n)


if __name__ == "__main__":
    main()
