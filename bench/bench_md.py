"""MD steps per second on 192-atom water: dpa's ASE calculator (torch, jax) against DeePMD-kit
3.2.0's own ASE calculator (`deepmd.calculator.DP`) on the same model, plus JAX-MD with
`dpa.jax_md`; prints steps/s and ratios to DeePMD-kit.

    python bench/bench_md.py [--model se_e2_a|dpa1|dpa2|dpa3] [--model-file M.dp] [--steps 200]
                             [--rounds 3] [--threads 2] [--backends torch,jax,jax-md]

Every side is NVE velocity Verlet (0.5 fs, energy + forces + stress per step for the ASE sides)
from the same frame and the same 300 K velocities, in its own fresh process, in alternating
rounds (`bench_water.run_rounds`). The timed steps follow a few warm-up steps (compilation).
DeePMD-kit gets the model as a TorchScript `.pth` made from the same `.dp` by its
`convert-backend` (its PyTorch backend; the conversion is not timed). "dE" is the difference of
the final total energy per atom to DeePMD-kit's: all sides integrate the same trajectory.
The model is the example's architecture with random weights (seed 1), or --model-file.
DeePMD-kit runs in its own environment (../shared/tools/deepmd_reference_env.sh). dpa's sides
run with glibc's huge-page malloc, as examples/md_water and `dpa test` restart themselves with it
(`dpa.backends.allocator.reexec_with_huge_pages`); --deepmd-huge-pages gives DeePMD-kit the same.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_water import (  # noqa: E402
    DEFAULT_REF,
    EXAMPLES,
    ROOT,
    add_huge_pages_option,
    huge_pages_envs,
    run_rounds,
    side_results,
    spread,
)

MODELS = {"se_e2_a": ROOT / "examples/train_water/input.json", **EXAMPLES}

# Shared by every side: an ASE water frame with fixed 300 K velocities; a timing + JSON report.
SETUP = r"""
import json, resource, sys, time
import numpy as np
from ase import Atoms, units
from ase.md.velocitydistribution import MaxwellBoltzmannDistribution, Stationary
from ase.md.verlet import VelocityVerlet
frame = np.load(sys.argv[2])
atoms = Atoms([str(s) for s in frame["symbols"]], positions=frame["coord"], cell=frame["box"],
              pbc=True)
MaxwellBoltzmannDistribution(atoms, temperature_K=300.0, rng=np.random.default_rng(0),
                             force_temp=True)
Stationary(atoms)
STEPS, WARMUP, DT = int(sys.argv[4]), 5, 0.5
def report(seconds, total_energy):
    print(json.dumps({"steps_per_s": STEPS / seconds, "seconds": seconds,
                      "energy_per_atom": float(total_energy) / len(atoms),
                      "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
def run_ase(calc):
    atoms.calc = calc
    dyn = VelocityVerlet(atoms, timestep=DT * units.fs)
    dyn.run(WARMUP)
    start = time.perf_counter()
    dyn.run(STEPS)
    report(time.perf_counter() - start, atoms.get_total_energy())
"""

DEEPMD_SCRIPT = (
    SETUP
    + r"""
import os, tempfile
import torch
torch.set_num_threads(int(sys.argv[3]))
from deepmd.calculator import DP
from deepmd.entrypoints.convert_backend import convert_backend
pth = os.path.join(tempfile.mkdtemp(), "model.pth")
convert_backend(INPUT=sys.argv[1], OUTPUT=pth)
run_ase(DP(pth))
"""
)

DPA_ASE_SCRIPT = (
    SETUP
    + r"""
if sys.argv[5] == "torch":  # only the torch side loads torch
    import torch
    torch.set_num_threads(int(sys.argv[3]))
from dpa.calculator import DPACalculator
run_ase(DPACalculator(sys.argv[1], backend=sys.argv[5]))
"""
)

JAX_MD_SCRIPT = (
    SETUP
    + r"""
import jax, jax.numpy as jnp
from jax_md import dataclasses, quantity, simulate, space
import dpa, dpa.jax_md as djm
model = dpa.io.load(sys.argv[1])
atype = np.array([model.type_map.index(s) for s in atoms.get_chemical_symbols()])
box = atoms.cell.array.T
energy = djm.energy_fn(model, atype, box)
displacement, shift = space.periodic_general(box, fractional_coordinates=False)
neighbor_fn = djm.neighbor_list(energy, displacement, box, skin=1.0)
init, apply = simulate.nve(energy, shift, dt=DT * djm.FS)
mass = djm.atomic_masses(model.type_map, atype)
position = jnp.asarray(atoms.get_positions())
nbrs = neighbor_fn.allocate(position)
state = init(jax.random.PRNGKey(0), position, kT=0.0, mass=mass, neighbor=nbrs)
state = dataclasses.replace(state, momentum=jnp.asarray(atoms.get_momenta()))
def advance(state, nbrs, steps):
    return djm.run_steps(apply, state, nbrs, steps)
warm = jax.jit(advance, static_argnums=2)
state, nbrs = warm(state, nbrs, WARMUP)
timed = jax.jit(advance, static_argnums=2).lower(state, nbrs, STEPS).compile()
start = time.perf_counter()
state, nbrs = timed(state, nbrs)
state.position.block_until_ready()
seconds = time.perf_counter() - start
assert not bool(nbrs.did_buffer_overflow), "neighbor list overflow: raise the skin"
e_kin = quantity.kinetic_energy(momentum=state.momentum, mass=state.mass)
report(seconds, float(energy(state.position, neighbor=nbrs) + e_kin))
"""
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=sorted(MODELS), default="se_e2_a")
    parser.add_argument("--model-file", type=Path, default=None, help="use this model instead")
    parser.add_argument("--deepmd-python", type=Path, default=DEFAULT_REF / "bin" / "python")
    parser.add_argument("--steps", type=int, default=200, help="timed MD steps per process")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--backends", default="torch,jax,jax-md")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds of all sides")
    add_huge_pages_option(parser)
    args = parser.parse_args()
    args.repeat = args.steps  # run_rounds passes `repeat` to every side: here, the step count

    import numpy as np

    import dpa
    from dpa.data import load_system

    work = Path(tempfile.mkdtemp(prefix="dpa-bench-md-"))
    if args.model_file is not None:
        model = dpa.io.load(args.model_file)
        label = args.model_file.name
    else:
        config = json.loads(MODELS[args.model].read_text())["model"]
        model = dpa.build_model(config, seed=1)
        label = f"{args.model} (random weights)"
    path = work / "water.dp"  # DeePMD-kit reads .dp; every side gets this same file
    model.save(path)
    system = load_system(ROOT / "examples/data/water")
    frame = work / "frame.npz"
    symbols = np.array([system.type_map[t] for t in system.atype])
    np.savez(frame, coord=system.coord[0], box=system.box[0], symbols=symbols)

    scripts = {"torch": DPA_ASE_SCRIPT, "jax": DPA_ASE_SCRIPT, "jax-md": JAX_MD_SCRIPT}
    dpa_sides = {}
    for name in args.backends.split(","):
        if name not in scripts:
            sys.exit(f"unknown backend {name!r}; choose from {', '.join(scripts)}")
        title = "dpa jax-md" if name == "jax-md" else f"dpa ase {name}"
        dpa_sides[title] = (sys.executable, scripts[name], name)
    envs = huge_pages_envs(dpa_sides, args)
    sides, rounds = run_rounds(dpa_sides, (DEEPMD_SCRIPT,), path, frame, args, envs)

    print(
        f"water MD, 192 atoms, {label}, {model.precision}, NVE 0.5 fs, {args.steps} timed steps "
        f"per process, {args.threads} threads, {args.rounds} round(s); ratios to DeePMD-kit's "
        "ASE calculator per round (median [min-max]; > 1 is faster)"
    )
    print(
        f"{'implementation':<20} {'steps/s':>8} {'speed ratio':>17} {'peak MB':>8} {'dE meV/at':>10}"
    )
    for label_ in sides:
        runs, pairs = side_results(rounds, label_)
        if not runs:
            print(f"{label_:<20} failed")
            continue
        rate = statistics.median(r["steps_per_s"] for r in runs)
        peak = max(r["peak_mb"] for r in runs)
        ratio, de = "", ""
        if pairs:
            ratio = spread([a["steps_per_s"] / b["steps_per_s"] for a, b in pairs])
            diff = max(abs(a["energy_per_atom"] - b["energy_per_atom"]) * 1e3 for a, b in pairs)
            de = f"{diff:.1e}"
        print(f"{label_:<20} {rate:>8.1f} {ratio:>17} {peak:>8.0f} {de:>10}")


if __name__ == "__main__":
    main()
