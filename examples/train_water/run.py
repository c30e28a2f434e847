"""The main example: train a small DeepPot-SE water model on the bundled frames, test it on
held-out frames, convert it to the other backend's format and check that both give the same
numbers. Every step is a `dpa` command, printed before it runs; this script only chains them and
reads their output.

    python examples/train_water/run.py [--steps N] [--backend torch|jax]

Outputs go to examples/train_water/run/ (lcurve.out, checkpoints, model files, test details).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
RUN = "run"  # output folder, relative to HERE (the commands run from HERE, like a user would)
VALID = "../data/water_valid"
SUFFIX = {"torch": ".pth", "jax": ".jax"}


def dpa_command() -> list[str]:
    """The `dpa` program of this Python environment (the venv's script), else the one on PATH."""
    script = Path(sys.executable).parent / "dpa"
    return [str(script)] if script.is_file() else ["dpa"]


def run(*args: str) -> str:
    """Print `dpa ARGS`, run it from the example folder, echo and return its standard output."""
    print(f"\n$ dpa {' '.join(args)}", flush=True)
    start = time.perf_counter()
    proc = subprocess.run(
        [*dpa_command(), *args], cwd=HERE, stdout=subprocess.PIPE, text=True, check=False
    )
    print(proc.stdout, end="", flush=True)
    if proc.returncode != 0:
        sys.exit(f"example: `dpa {' '.join(args)}` failed (exit {proc.returncode})")
    print(f"  ({time.perf_counter() - start:.0f} s)", flush=True)
    return proc.stdout


def test_errors(output: str) -> dict[str, float]:
    """RMSEs of the weighted-average block of `dpa test` output: energy/atom (eV), force (eV/Å)."""
    block = output.split("weighted average of errors")[-1]
    found = {}
    for line in block.splitlines():
        label, _, value = line.partition(":")
        if label.strip() in ("Energy RMSE/Natoms", "Force  RMSE"):
            found[label.strip()] = float(value.split()[0])
    return {"energy": found["Energy RMSE/Natoms"], "force": found["Force  RMSE"]}


def lcurve(path: Path) -> tuple[list[str], np.ndarray]:
    """Column names and rows of a learning-curve file."""
    names = path.read_text().splitlines()[0].lstrip("#").split()
    return names, np.loadtxt(path, ndmin=2)


def predictions(prefix: Path, kind: str) -> np.ndarray:
    """The predicted columns of a `dpa test -d` detail file (.e.out: 1 column, .f.out: 3)."""
    rows = np.loadtxt(prefix.with_suffix(kind), ndmin=2)
    return rows[:, rows.shape[1] // 2 :]


def available(backend: str) -> bool:
    """Whether `backend`'s framework is installed (for the cross-backend check)."""
    from importlib.util import find_spec

    return find_spec("torch" if backend == "torch" else "jax") is not None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=None, help="training steps (default: input)")
    parser.add_argument("--backend", choices=("torch", "jax"), default="torch")
    args = parser.parse_args()

    config = json.loads((HERE / "input.json").read_text())
    out = HERE / RUN
    if out.exists():  # a fresh run each time (this folder is the example's own output)
        shutil.rmtree(out)
    source = "input.json"
    if args.steps is not None:  # a copy of the input with another run length
        config["training"]["numb_steps"] = args.steps
        out.mkdir()
        source = f"{RUN}/input.json"
        (HERE / source).write_text(json.dumps(config, indent=2))
    steps = config["training"]["numb_steps"]
    other = "jax" if args.backend == "torch" else "torch"
    model = f"{RUN}/model{SUFFIX[args.backend]}"
    converted = f"{RUN}/model{SUFFIX[other]}"

    print(f"example folder: {HERE}")
    start = time.perf_counter()
    run("--backend", args.backend, "train", source, "-o", RUN)
    train_seconds = time.perf_counter() - start
    names, rows = lcurve(out / "lcurve.out")
    f_val = rows[:, names.index("rmse_f_val")]
    print(f"  learning curve ({RUN}/lcurve.out): validation force RMSE (eV/Å)")
    for step, value in zip(rows[:, 0].astype(int), f_val, strict=True):
        print(f"    step {step:>5}  {value:.3f}")

    test_out = run(
        "--backend", args.backend, "test", "-m", model, "-s", VALID, "-d", f"{RUN}/test/water"
    )
    errors = test_errors(test_out)

    same = None
    if available(other):
        run("convert", model, converted)
        run(
            "--backend",
            other,
            "test",
            "-m",
            converted,
            "-s",
            VALID,
            "-d",
            f"{RUN}/test_{other}/water",
        )
        same = {
            kind: np.max(
                np.abs(
                    predictions(out / "test/water", kind)
                    - predictions(out / f"test_{other}/water", kind)
                )
            )
            for kind in (".e.out", ".f.out")
        }
    total = time.perf_counter() - start

    print("\nsummary")
    print(f"  trained {steps} steps on {args.backend} in {train_seconds:.0f} s ({model})")
    print(
        f"  validation force RMSE: {f_val[0]:.3f} eV/Å at step 1 -> {f_val[-1]:.3f} eV/Å at "
        f"step {steps} (lcurve, a few random frames)"
    )
    print(
        f"  dpa test on {VALID} (all frames): energy RMSE/atom {errors['energy']:.2e} eV, "
        f"force RMSE {errors['force']:.3f} eV/Å"
    )
    if same is None:
        print(f"  {other} is not installed: conversion check skipped")
    else:
        print(
            f"  {args.backend} vs {other} ({converted}): max |dE| {same['.e.out']:.1e} eV, "
            f"max |dF| {same['.f.out']:.1e} eV/Å"
        )
        if max(same.values()) > 1e-6:
            sys.exit("example: the converted model does not give the same numbers")
    print(f"  total {total:.0f} s; outputs in {out}")


if __name__ == "__main__":
    main()
