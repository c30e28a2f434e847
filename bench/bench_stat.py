"""Data statistics on many systems, side by side with DeePMD-kit 3.2.0: the wall time of a
one-step `train` (start-up, neighbor statistics, descriptor statistics and energy bias, one
step, model written) over many small systems, first without a statistics file, then with
`training.stat_file` written by a first run and read by a second.

    python bench/bench_stat.py [--chunk 10] [--backend torch] [--workdir DIR]

The systems: ../shared/data/water/data_0..3 and molecules_nopbc/* cut into `chunk`-frame
systems (about 300), a DPA-2 model (its descriptor statistics are computed; DPA-3's default
`fix_stat_std` skips them), data_stat_nbatch 10, batch size 1. The difference between a run
with the file and one without is the time the statistics take.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
DEFAULT_REF = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "dpa/deepmd-ref"
TYPE_MAP = ["O", "H", "C"]


def cut_systems(out: Path, chunk: int) -> list[str]:
    """Every shared water and molecule system cut into systems of `chunk` frames."""
    sources = sorted((DATA / "water").glob("data_*")) + sorted((DATA / "molecules_nopbc").iterdir())
    paths = []
    for source in sources:
        sets = sorted(source.glob("set.*"))
        arrays = {
            npy.name: np.concatenate([np.load(s / npy.name) for s in sets])
            for npy in sets[0].glob("*.npy")
        }
        nframes = len(arrays["coord.npy"])
        for start in range(0, nframes - chunk + 1, chunk):
            target = out / f"{source.name}_{start:05d}"
            (target / "set.000").mkdir(parents=True, exist_ok=True)
            for raw in ("type.raw", "type_map.raw", "nopbc"):
                if (source / raw).exists():
                    (target / raw).write_text((source / raw).read_text())
            for name, array in arrays.items():
                np.save(target / "set.000" / name, array[start : start + chunk])
            paths.append(str(target))
    return paths


def train_input(systems: list[str], stat_file: str | None) -> dict:
    """A small DPA-2 input over `systems`, one step."""
    training = {
        "training_data": {"systems": systems, "batch_size": 1},
        "numb_steps": 1,
        "seed": 1,
        "disp_freq": 1,
        "save_freq": 1,
    }
    if stat_file is not None:
        training["stat_file"] = stat_file
    return {
        "model": {
            "type_map": TYPE_MAP,
            "descriptor": {
                "type": "dpa2",
                "repinit": {"rcut": 6.0, "rcut_smth": 0.5, "nsel": 120, "neuron": [16, 32],
                            "axis_neuron": 8, "set_davg_zero": False},
                "repformer": {"rcut": 4.0, "rcut_smth": 3.5, "nsel": 40, "nlayers": 2,
                              "g1_dim": 32, "g2_dim": 16, "axis_neuron": 4},
                "seed": 1,
            },
            "fitting_net": {"neuron": [32, 32], "seed": 1},
            "data_stat_nbatch": 10,
        },
        "learning_rate": {"start_lr": 1e-3, "stop_lr": 1e-4, "decay_steps": 100},
        "loss": {"start_pref_e": 0.02, "limit_pref_e": 1, "start_pref_f": 1000, "limit_pref_f": 1},
        "training": training,
    }  # fmt: skip


def timed(cmd: list[str], cwd: Path) -> float:
    cwd.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with open(cwd / "run.log", "w") as log:
        proc = subprocess.run(cmd, cwd=cwd, stdout=log, stderr=subprocess.STDOUT)
    if proc.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed in {cwd} (see {cwd / 'run.log'})")
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chunk", type=int, default=10)
    parser.add_argument("--backend", default="torch")
    parser.add_argument("--workdir", type=Path, default=Path("bench_stat_run"))
    parser.add_argument("--deepmd", type=Path, default=DEFAULT_REF / "bin" / "dp")
    args = parser.parse_args()
    work = args.workdir.resolve()
    systems = cut_systems(work / "systems", args.chunk)
    dpa = str(Path(sys.executable).parent / "dpa")
    sides = {
        "DeePMD-kit": ([str(args.deepmd), "--pt", "train", "input.json"], "deepmd_stat.hdf5"),
        f"dpa {args.backend}": ([dpa, "--backend", args.backend, "train", "input.json"],
                                "dpa_stat.hdf5"),
    }  # fmt: skip
    rows = []
    for label, (cmd, stat_name) in sides.items():
        times = []
        for run, stat_file in (("plain", None), ("write", stat_name), ("read", stat_name)):
            folder = work / label.replace(" ", "_").replace("-", "") / run
            folder.mkdir(parents=True, exist_ok=True)
            stat = None if stat_file is None else str(work / stat_file)
            (folder / "input.json").write_text(json.dumps(train_input(systems, stat)))
            times.append(timed(cmd, folder))
        rows.append((label, *times))
    print(f"\n{len(systems)} systems of {args.chunk} frames, DPA-2, data_stat_nbatch 10")
    print("| run | no stat file (s) | writing it (s) | reading it (s) | read vs plain |")
    print("|---|---|---|---|---|")
    for label, plain, write, read in rows:
        print(f"| {label} | {plain:.0f} | {write:.0f} | {read:.0f} | {read / plain:.2f}x |")
    print(f"dpa / DeePMD-kit, no stat file: {rows[1][1] / rows[0][1]:.2f}x; "
          f"reading it: {rows[1][3] / rows[0][3]:.2f}x")  # fmt: skip


if __name__ == "__main__":
    main()
