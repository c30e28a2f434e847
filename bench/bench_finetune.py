"""Fine-tuning side by side with DeePMD-kit 3.2.0: the same multi-task checkpoint (made by
`dp --pt train`), the same fine-tune input and steps, `dp --pt train --finetune` against
`dpa --backend torch|jax train --finetune`; reports each run's wall time (the whole command:
start-up, statistics, bias change, steps, model written) and the validation force/energy RMSE
of its final model, all evaluated by dpa on the same held-out frames.

    python bench/bench_finetune.py [--pretrain-steps 300] [--steps 200] [--threads 2]
                                   [--backends torch,jax] [--workdir DIR]

The pretraining input is examples/multitask/pretrain.json (DPA-3 shared by water and small
molecules, shared fitting with a case embedding); the downstream data is ../shared/data/
water_virial (128 H2O, energy, force and virial), its first 24 frames for training and the last
6 for validation; the fine-tune keeps the pretrained `water` branch and drops carbon from the
type map. The pretrained checkpoint is kept in the work folder and reused.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DATA = ROOT.parent / "shared" / "data"
DEFAULT_REF = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "dpa/deepmd-ref"
PRETRAIN = ROOT / "examples" / "multitask" / "pretrain.json"
NTRAIN = 24


def split_downstream(folder: Path) -> tuple[Path, Path]:
    """water_virial's frames as two deepmd/npy systems: training (first 24) and validation."""
    src = DATA / "water_virial"
    out = []
    for name, frames in (("train", slice(0, NTRAIN)), ("valid", slice(NTRAIN, None))):
        target = folder / "data" / name
        (target / "set.000").mkdir(parents=True, exist_ok=True)
        for raw in ("type.raw", "type_map.raw"):
            (target / raw).write_text((src / raw).read_text())
        for npy in sorted((src / "set.000").glob("*.npy")):
            np.save(target / "set.000" / npy.name, np.load(npy)[frames])
        out.append(target)
    return out[0], out[1]


def pretrain_input(steps: int) -> dict:
    """examples/multitask/pretrain.json with absolute data paths and `steps` steps."""
    config = json.loads(PRETRAIN.read_text())
    for entry in config["training"]["data_dict"].values():
        for key in ("training_data", "validation_data"):
            if key in entry:
                entry[key]["systems"] = [
                    str((PRETRAIN.parent / s).resolve()) for s in entry[key]["systems"]
                ]
    config["training"].update(numb_steps=steps, save_freq=steps, disp_freq=max(1, steps // 10))
    return config


def finetune_input(pretrain: dict, train: Path, valid: Path, steps: int) -> dict:
    """A single-task input with the pretrained architecture, the type map without carbon, the
    water loss with virials, on the downstream frames."""
    shared = pretrain["model"]["shared_dict"]
    return {
        "model": {
            "type_map": ["O", "H"],
            "descriptor": copy.deepcopy(shared["dpa3_descriptor"]),
            "fitting_net": copy.deepcopy(shared["shared_fitting"]),
        },
        "learning_rate": {"type": "exp", "start_lr": 1e-3, "stop_lr": 1e-4, "decay_steps": 20},
        "loss": {
            "type": "ener",
            "start_pref_e": 0.2,
            "limit_pref_e": 20,
            "start_pref_f": 100,
            "limit_pref_f": 20,
            "start_pref_v": 0.02,
            "limit_pref_v": 1,
        },
        "training": {
            "training_data": {"systems": [str(train)], "batch_size": 1},
            "validation_data": {"systems": [str(valid)], "batch_size": 1, "numb_btch": 1},
            "numb_steps": steps,
            "seed": 7,
            "disp_freq": max(1, steps // 10),
            "save_freq": steps,
        },
    }


def timed(cmd: list[str], cwd: Path, threads: int) -> float:
    """Run a command to completion in `cwd`; its wall time (it must succeed)."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    cwd.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with open(cwd / "run.log", "w") as log:
        proc = subprocess.run(cmd, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed in {cwd} (see {cwd / 'run.log'})")
    return wall


def errors(model: Path, valid: Path) -> tuple[float, float]:
    """(energy RMSE per atom, force RMSE) of a final model on the validation frames (dpa)."""
    import dpa
    from dpa.data import load_system

    system = load_system(valid)
    pot = dpa.load_model(model, backend="torch")
    atype = system.remap_types(pot.type_map)
    out = pot.evaluate(system.coord, atype, system.box)
    nat = len(atype)
    e = np.sqrt(np.mean(((out["energy"] - system.energy) / nat) ** 2))
    f = np.sqrt(np.mean((out["force"] - system.force) ** 2))
    return float(e), float(f)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pretrain-steps", type=int, default=300)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--backends", default="torch,jax")
    parser.add_argument("--workdir", type=Path, default=Path("bench_finetune_run"))
    parser.add_argument("--deepmd", type=Path, default=DEFAULT_REF / "bin" / "dp")
    args = parser.parse_args()
    work = args.workdir.resolve()
    train, valid = split_downstream(work)
    pre_cfg = pretrain_input(args.pretrain_steps)
    pre_dir = work / f"pretrain_{args.pretrain_steps}"
    checkpoint = pre_dir / f"model.ckpt-{args.pretrain_steps}.pt"
    if not checkpoint.is_file():
        pre_dir.mkdir(parents=True, exist_ok=True)
        (pre_dir / "input.json").write_text(json.dumps(pre_cfg, indent=1))
        wall = timed([str(args.deepmd), "--pt", "train", "input.json"], pre_dir, args.threads)
        print(f"pretraining with DeePMD-kit: {args.pretrain_steps} steps, {wall:.0f} s")
    ft_cfg = finetune_input(pre_cfg, train, valid, args.steps)
    dpa_cmd = str(Path(sys.executable).parent / "dpa")
    runs = {"DeePMD-kit": ([str(args.deepmd), "--pt", "train"], "model.ckpt.pt")}
    for backend in args.backends.split(","):
        suffix = {"torch": ".pth", "jax": ".jax"}[backend]
        runs[f"dpa {backend}"] = ([dpa_cmd, "--backend", backend, "train"], f"model{suffix}")
    rows = []
    for label, (cmd, final) in runs.items():
        folder = work / ("ft_" + label.replace(" ", "_").replace("-", ""))
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "input.json").write_text(json.dumps(ft_cfg, indent=1))
        extra = ["input.json", "--finetune", str(checkpoint), "--model-branch", "water"]
        wall = timed([*cmd, *extra], folder, args.threads)
        rows.append((label, wall, *errors(folder / final, valid)))
    ref = rows[0]
    print(f"\nfine-tune: {args.steps} steps from a {args.pretrain_steps}-step multi-task DPA-3")
    print(
        "| run | wall s | time vs DeePMD-kit | E RMSE/atom (eV) | F RMSE (eV/Å) | F RMSE vs DeePMD-kit |"
    )
    print("|---|---|---|---|---|---|")
    for label, wall, e, f in rows:
        print(
            f"| {label} | {wall:.0f} | {wall / ref[1]:.2f}x | {e:.2e} | {f:.3f} | {f / ref[3]:.2f}x |"
        )


if __name__ == "__main__":
    main()
