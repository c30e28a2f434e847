"""Train the same water input with DeePMD-kit 3.2.0 (`dp --pt train`) and with `dpa train` on
torch and jax, then compare validation errors of the final models on all frames of data_3.

    python bench/accuracy_vs_deepmd.py [--model se_e2_a|dpa1] [--steps 2000] [--seed 1]
                                       [--sides deepmd,torch,jax] [--threads 2] [--out DIR]

Training data: ../shared/data/water/data_{0,1,2}; validation: data_3. Every side gets the same
input file (model, learning rate, loss, seed, steps). DeePMD-kit's final checkpoint is frozen
and converted to `.dp` (`dp convert-backend`), and all final models are evaluated by dpa on the
80 validation frames (its evaluation matches DeePMD-kit's to 1e-10), so the numbers share one
metric. Prints energy-per-atom and force RMSEs and dpa's ratio to DeePMD-kit's.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WATER = ROOT.parent / "shared" / "data" / "water"
DEFAULT_REF = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "dpa/deepmd-ref"

# DeePMD-kit's water examples (se_e2_a, se_atten), in float64
DESCRIPTORS = {
    "se_e2_a": {
        "type": "se_e2_a",
        "sel": [46, 92],
        "rcut_smth": 0.5,
        "rcut": 6.0,
        "neuron": [25, 50, 100],
        "resnet_dt": False,
        "axis_neuron": 16,
        "type_one_side": True,
        "precision": "float64",
        "seed": 1,
    },
    "dpa1": {
        "type": "dpa1",
        "sel": 120,
        "rcut_smth": 0.5,
        "rcut": 6.0,
        "neuron": [25, 50, 100],
        "resnet_dt": False,
        "axis_neuron": 16,
        "attn": 128,
        "attn_layer": 2,
        "attn_dotr": True,
        "attn_mask": False,
        "precision": "float64",
        "seed": 1,
    },
}


def training_input(model: str, steps: int, seed: int) -> dict:
    """One input for every side: the example model, an exp schedule over `steps`, ener loss."""
    return {
        "model": {
            "type_map": ["O", "H"],
            "descriptor": DESCRIPTORS[model],
            "fitting_net": {
                "neuron": [240, 240, 240],
                "resnet_dt": True,
                "precision": "float64",
                "seed": 1,
            },
        },
        "learning_rate": {
            "type": "exp",
            "start_lr": 1e-3,
            "stop_lr": 1e-5,
            "decay_steps": max(1, steps // 20),
        },
        "loss": {
            "type": "ener",
            "start_pref_e": 0.02,
            "limit_pref_e": 1,
            "start_pref_f": 1000,
            "limit_pref_f": 1,
            "start_pref_v": 0,
            "limit_pref_v": 0,
        },
        "optimizer": {"type": "Adam"},
        "training": {
            "training_data": {
                "systems": [str(WATER / f"data_{i}") for i in range(3)],
                "batch_size": 1,
            },
            "validation_data": {"systems": [str(WATER / "data_3")], "batch_size": 1},
            "numb_steps": steps,
            "seed": seed,
            "disp_freq": max(1, steps // 10),
            "save_freq": steps,
        },
    }


def run(cmd: list[str], cwd: Path, threads: int) -> float:
    """Run a command in `cwd` with `threads` threads; its wall time. Fails loudly."""
    env = {
        **os.environ,
        "OMP_NUM_THREADS": str(threads),
        "DP_INTRA_OP_PARALLELISM_THREADS": str(threads),
    }
    env["DP_INTER_OP_PARALLELISM_THREADS"] = "1"
    t0 = time.perf_counter()
    with open(cwd / "log.txt", "a") as log:
        proc = subprocess.run(cmd, cwd=cwd, stdout=log, stderr=subprocess.STDOUT, env=env)
    if proc.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed in {cwd}; see {cwd / 'log.txt'}")
    return time.perf_counter() - t0


def train_deepmd(work: Path, python: Path, threads: int) -> tuple[Path, float]:
    """dp --pt train, freeze, convert to .dp; (model path, training seconds)."""
    dp = str(python.parent / "dp")
    seconds = run([dp, "--pt", "train", "input.json"], work, threads)
    run([dp, "--pt", "freeze", "-o", "frozen.pth"], work, threads)
    run([dp, "convert-backend", "frozen.pth", "model.dp"], work, threads)
    return work / "model.dp", seconds


def train_dpa(work: Path, backend: str, threads: int) -> tuple[Path, float]:
    """dpa --backend B train; (model path, training seconds)."""
    dpa = str(Path(sys.executable).parent / "dpa")
    seconds = run([dpa, "--backend", backend, "train", "input.json"], work, threads)
    return work / ("model.pth" if backend == "torch" else "model.jax"), seconds


def validation_errors(path: Path) -> dict[str, float]:
    """Energy-per-atom and force RMSE of a model on all frames of data_3 (torch evaluation)."""
    import dpa
    from dpa.data import load_system
    from dpa.data.evaluation import evaluate_system

    pot = dpa.load_model(path, backend="torch")
    result = evaluate_system(pot, load_system(WATER / "data_3"))
    return {
        "rmse_e_per_atom": result.errors["energy_per_atom"].rmse,
        "rmse_f": result.errors["force"].rmse,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=sorted(DESCRIPTORS), default="se_e2_a")
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--sides", default="deepmd,torch,jax")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--deepmd-python", type=Path, default=DEFAULT_REF / "bin" / "python")
    parser.add_argument("--out", type=Path, default=Path("accuracy-runs"))
    args = parser.parse_args()

    config = training_input(args.model, args.steps, args.seed)
    results = {}
    for side in args.sides.split(","):
        work = args.out / f"{args.model}-{args.steps}-seed{args.seed}" / side
        work.mkdir(parents=True, exist_ok=True)
        (work / "input.json").write_text(json.dumps(config, indent=2))
        if side == "deepmd":
            path, seconds = train_deepmd(work, args.deepmd_python, args.threads)
        else:
            path, seconds = train_dpa(work, side, args.threads)
        results[side] = {**validation_errors(path), "train_s": seconds}
        print(side, json.dumps(results[side]), flush=True)

    print(
        f"\nwater {args.model}, {args.steps} steps, seed {args.seed}, batch 1, float64; "
        "validation on all 80 frames of data_3"
    )
    print(f"{'side':<8} {'RMSE E/atom':>12} {'RMSE F':>10} {'F ratio':>8} {'train s':>8}")
    ref = results.get("deepmd")
    for side, r in results.items():
        ratio = f"{r['rmse_f'] / ref['rmse_f']:.3f}" if ref else ""
        print(
            f"{side:<8} {r['rmse_e_per_atom']:>12.3e} {r['rmse_f']:>10.4f} {ratio:>8} "
            f"{r['train_s']:>8.0f}"
        )
    (args.out / f"{args.model}-{args.steps}-seed{args.seed}" / "results.json").write_text(
        json.dumps(results, indent=2)
    )


if __name__ == "__main__":
    main()
