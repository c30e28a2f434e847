"""Learning curves side by side: the same water inputs and seeds through DeePMD-kit 3.2.0
(`dp --pt train`) and `dpa train` (torch, jax); final validation errors and wall times.

    python bench/learning_curves.py [--models se_e2_a,dpa1,dpa2,dpa3] [--seeds 1,2,3]
                                    [--steps 400] [--sides deepmd,torch,jax] [--threads 1]
                                    [--jobs 2] [--out DIR]

Training data: ../shared/data/water/data_{0,1,2}; validation: data_3 (its lcurve column is one
frame per display step). Every side gets the same input file (model, learning rate, loss, seed,
steps), so dpa starts from DeePMD-kit's weights and draws its batches (its default batch order,
with the loader worker count both codes read from the machine); DeePMD-kit's final checkpoint
is frozen and converted to `.dp`, and every final model is evaluated by dpa on all 80 frames
of data_3 (dpa's evaluation equals DeePMD-kit's to 1e-10), so all numbers share one metric. "wall s" is the whole `train` command (start-up, neighbor and data
statistics, compilation, steps, final model), each run alone on `--threads` threads per job and
`--jobs` jobs at a time (use `--jobs 1` for timings without neighbours). The table reports the
median over seeds, the spread (min-max) and dpa's ratio to DeePMD-kit's median.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WATER = ROOT.parent / "shared" / "data" / "water"
DEFAULT_REF = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "dpa/deepmd-ref"

DESCRIPTORS = {
    # DeePMD-kit's water se_e2_a example, float64
    "se_e2_a": {
        "type": "se_e2_a",
        "sel": [46, 92],
        "rcut_smth": 0.5,
        "rcut": 6.0,
        "neuron": [25, 50, 100],
        "axis_neuron": 16,
        "type_one_side": True,
    },
    # the DPA-1 input of issue 16 (non-smooth attention, davg from data)
    "dpa1": {
        "type": "se_atten",
        "sel": 120,
        "rcut_smth": 0.5,
        "rcut": 6.0,
        "neuron": [16, 32, 64],
        "axis_neuron": 16,
        "attn": 32,
        "attn_layer": 1,
        "attn_dotr": True,
        "attn_mask": False,
        "set_davg_zero": False,
    },
    # a small DPA-2 (repinit + 2 repformer layers)
    "dpa2": {
        "type": "dpa2",
        "repinit": {
            "tebd_dim": 8,
            "rcut": 6.0,
            "rcut_smth": 0.5,
            "nsel": 120,
            "neuron": [16, 32, 64],
            "axis_neuron": 8,
            "activation_function": "tanh",
        },
        "repformer": {
            "rcut": 4.0,
            "rcut_smth": 3.5,
            "nsel": 40,
            "nlayers": 2,
            "g1_dim": 64,
            "g2_dim": 16,
            "attn2_hidden": 16,
            "attn2_nhead": 2,
            "attn1_hidden": 32,
            "attn1_nhead": 2,
            "axis_neuron": 4,
            "update_h2": False,
            "update_g1_has_conv": True,
            "update_g1_has_grrg": True,
            "update_g1_has_drrd": True,
            "update_g1_has_attn": False,
            "update_g2_has_g1g1": False,
            "update_g2_has_attn": True,
            "update_style": "res_residual",
            "update_residual": 0.01,
            "update_residual_init": "norm",
            "attn2_has_gate": True,
        },
        "add_tebd_to_repinit_out": False,
    },
    # a small DPA-3 (2 repflow layers; DeePMD-kit takes ~0.5 s per step on one thread, 12x that
    # with 3 layers of 64/32/16 channels and e_sel 120 / a_sel 30)
    "dpa3": {
        "type": "dpa3",
        "repflow": {
            "n_dim": 32,
            "e_dim": 16,
            "a_dim": 8,
            "nlayers": 2,
            "e_rcut": 5.0,
            "e_rcut_smth": 0.5,
            "e_sel": 80,
            "a_rcut": 3.5,
            "a_rcut_smth": 3.0,
            "a_sel": 16,
            "axis_neuron": 4,
            "update_angle": True,
            "update_style": "res_residual",
            "update_residual": 0.1,
            "update_residual_init": "const",
            "smooth_edge_update": True,
        },
        "activation_function": "silut:10.0",
        "use_tebd_bias": False,
        "concat_output_tebd": False,
    },
}
FITTING = {"neuron": [240, 240, 240], "resnet_dt": True}


def training_input(model: str, steps: int, seed: int) -> dict:
    """One input for every side: float64, exp decay 1e-3 -> 1e-4 over `steps`, ener loss with
    DeePMD-kit's usual prefactors, batch size 1."""
    desc = {**DESCRIPTORS[model], "precision": "float64", "seed": seed}
    return {
        "model": {
            "type_map": ["O", "H"],
            "descriptor": desc,
            "fitting_net": {**FITTING, "precision": "float64", "seed": seed},
        },
        "learning_rate": {
            "type": "exp",
            "start_lr": 1e-3,
            "stop_lr": 1e-4,
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
            "disp_freq": max(1, steps // 20),
            "save_freq": steps,
        },
    }


def run(cmd: list[str], cwd: Path, threads: int) -> float:
    """Run a command in `cwd` with `threads` threads; its wall time. Fails loudly."""
    env = {
        **os.environ,
        "OMP_NUM_THREADS": str(threads),
        "DP_INTRA_OP_PARALLELISM_THREADS": str(threads),
        "DP_INTER_OP_PARALLELISM_THREADS": "1",
    }
    t0 = time.perf_counter()
    with open(cwd / "log.txt", "a") as log:
        proc = subprocess.run(cmd, cwd=cwd, stdout=log, stderr=subprocess.STDOUT, env=env)
    if proc.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed in {cwd}; see {cwd / 'log.txt'}")
    return time.perf_counter() - t0


def train(side: str, work: Path, threads: int, deepmd_python: Path) -> tuple[Path, float]:
    """Train one side in `work`; (final model as a file dpa reads, seconds of `train`)."""
    if side == "deepmd":
        dp = str(deepmd_python.parent / "dp")
        seconds = run([dp, "--pt", "train", "input.json"], work, threads)
        run([dp, "--pt", "freeze", "-o", "frozen.pth"], work, threads)
        run([dp, "convert-backend", "frozen.pth", "model.dp"], work, threads)
        return work / "model.dp", seconds
    dpa = str(Path(sys.executable).parent / "dpa")
    seconds = run([dpa, "--backend", side, "train", "input.json"], work, threads)
    return work / ("model.pth" if side == "torch" else "model.jax"), seconds


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


def one_run(model: str, side: str, seed: int, args: argparse.Namespace) -> dict:
    """Train and evaluate one (model, side, seed); cached in its folder's result.json."""
    work = args.out / f"{model}-{args.steps}" / f"seed{seed}" / side
    done = work / "result.json"
    if done.is_file():
        return json.loads(done.read_text())
    work.mkdir(parents=True, exist_ok=True)
    (work / "input.json").write_text(json.dumps(training_input(model, args.steps, seed), indent=2))
    path, seconds = train(side, work, args.threads, args.deepmd_python)
    result = {**validation_errors(path), "wall_s": seconds}
    done.write_text(json.dumps(result, indent=2))
    print(model, side, seed, json.dumps(result), flush=True)
    return result


def summary(model: str, results: dict, sides: list[str]) -> list[str]:
    """Table rows: median (min-max) of force and energy RMSE and wall time, ratios to deepmd."""
    rows = []
    ref = results.get("deepmd")
    for side in sides:
        runs = results[side]

        def stat(key: str, fmt: str, runs=runs) -> tuple[float, str]:
            values = [r[key] for r in runs]
            med = statistics.median(values)
            return med, f"{med:{fmt}} ({min(values):{fmt}}-{max(values):{fmt}})"

        f_med, f_txt = stat("rmse_f", ".3f")
        _, e_txt = stat("rmse_e_per_atom", ".4f")
        t_med, t_txt = stat("wall_s", ".0f")
        ratio = ""
        if ref and side != "deepmd":
            ref_f = statistics.median(r["rmse_f"] for r in ref)
            ref_t = statistics.median(r["wall_s"] for r in ref)
            ratio = f"{f_med / ref_f:.2f}x | {t_med / ref_t:.2f}x"
        rows.append(f"| {model} | {side} | {f_txt} | {e_txt} | {t_txt} | {ratio} |")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="se_e2_a,dpa1,dpa2,dpa3")
    parser.add_argument("--seeds", default="1,2,3")
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--sides", default="deepmd,torch,jax")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--deepmd-python", type=Path, default=DEFAULT_REF / "bin" / "python")
    parser.add_argument("--out", type=Path, default=Path("learning-curves"))
    args = parser.parse_args()
    models = args.models.split(",")
    sides = args.sides.split(",")
    seeds = [int(s) for s in args.seeds.split(",")]
    for model in models:
        if model not in DESCRIPTORS:
            parser.error(f"unknown model {model!r}; choose from {', '.join(DESCRIPTORS)}")
    jobs = [(m, side, seed) for m in models for seed in seeds for side in sides]
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        done = list(pool.map(lambda job: one_run(*job, args), jobs))
    results: dict = {}
    for (model, side, _), result in zip(jobs, done, strict=True):
        results.setdefault(model, {}).setdefault(side, []).append(result)
    print(
        f"\nwater, {args.steps} steps, batch 1, float64, seeds {seeds}, {args.threads} thread(s) "
        f"per run, {args.jobs} run(s) at a time; validation on all 80 frames of data_3\n"
    )
    print(
        "| model | side | force RMSE eV/Å | energy RMSE eV/atom | wall s | F, time vs DeePMD-kit |"
    )
    print("|---|---|---|---|---|---|")
    for model in models:
        print("\n".join(summary(model, results[model], sides)))
    (args.out / "results.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
