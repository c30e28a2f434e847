"""Evaluation example: an untrained DPA-1 water model on every installed backend.

Builds the model of input.json, evaluates the bundled water frames on every installed backend,
converts the model between formats and prints a table. (The main example, `make example`,
trains a model: examples/train_water/run.py.)

    python examples/water_dpa1/run.py [--frames N] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

import dpa
from dpa.backends.base import available_backends
from dpa.data import load_system

HERE = Path(__file__).resolve().parent
DATA = HERE.parent / "data" / "water"
SUFFIX = {"numpy": ".dp", "torch": ".pth", "jax": ".jax"}


def fit_energy_bias(model: dpa.Model, atype: np.ndarray, energies: np.ndarray) -> None:
    """Set the per-type energy shift by least squares of frame energies on type counts, so a
    freshly built model predicts energies on the right scale (what training does first)."""
    counts = np.bincount(atype, minlength=len(model.type_map)).astype(float)
    per_type = np.linalg.lstsq(counts[None, :], [energies.mean()], rcond=None)[0]
    model.tree["@variables"]["out_bias"][0, :, 0] = per_type


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=4, help="frames to evaluate")
    parser.add_argument("--out", type=Path, default=None, help="folder for the model files")
    args = parser.parse_args()

    config = json.loads((HERE / "input.json").read_text())["model"]
    system = load_system(DATA)
    nf = min(args.frames, system.nframes)
    coord, box = system.coord[:nf], system.box[:nf]
    atype = system.remap_types(config["type_map"])
    model = dpa.build_model(config, seed=1)
    fit_energy_bias(model, atype, system.energy)
    print(f"model: {model}")
    print(f"data:  {DATA.relative_to(HERE.parent.parent)}: {nf} frames x {system.natoms} atoms")

    out_dir = args.out or Path(tempfile.mkdtemp(prefix="dpa-example-"))
    out_dir.mkdir(parents=True, exist_ok=True)
    source = out_dir / "water_dpa1.dp"
    model.save(source)

    rows, reference = [], None
    for backend in available_backends():
        path = out_dir / f"water_dpa1{SUFFIX[backend]}"
        if path != source:
            dpa.io.convert(source, path)
        pot = dpa.load_model(path, backend=backend)
        pot.evaluate(coord, atype, box)  # warm-up: jit compile for this shape, allocations
        start = time.perf_counter()
        out = pot.evaluate(coord, atype, box)
        seconds = (time.perf_counter() - start) / nf
        if reference is None:
            reference = out
        de = np.max(np.abs(out["energy"] - reference["energy"]))
        e_rmse = np.sqrt(np.mean((out["energy"] - system.energy[:nf]) ** 2)) / system.natoms
        f_rmse = (
            np.sqrt(np.mean((out["force"] - system.force[:nf]) ** 2)) if "force" in out else None
        )
        rows.append((backend, path.name, pot.device, out["energy"][0], de, e_rmse, f_rmse, seconds))

    header = (
        "backend",
        "file",
        "device",
        "E[0] (eV)",
        "|dE| vs first",
        "E rmse/atom",
        "F rmse",
        "s/frame",
    )
    print()
    print("{:<7} {:<16} {:<7} {:>16} {:>14} {:>12} {:>10} {:>9}".format(*header))
    for b, f, dev, e0, de, er, fr, sec in rows:
        frms = "n/a" if fr is None else f"{fr:.3f}"
        print(f"{b:<7} {f:<16} {dev:<7} {e0:>16.8f} {de:>14.2e} {er:>12.4f} {frms:>10} {sec:>9.4f}")
    print(f"\nmodel files in {out_dir}")
    print("(an untrained model: errors against DFT are large until you train it)")


if __name__ == "__main__":
    main()
