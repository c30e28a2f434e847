"""Energy + force + virial of a water example model (192 atoms) on dpa's backends, side by side
with DeePMD-kit 3.2.0 on the same `.dp` file; prints time and peak-memory ratios.

    python bench/bench_water.py [--model dpa1|dpa2|dpa3] [--precision float64] [--repeat N]
                                [--threads 2] [--backends torch,torch-compile,jax]

Every implementation runs in its own fresh process, so its peak resident memory is its own:
"peak MB" is the whole run's peak (ru_maxrss; for jax and torch.compile it includes compiling),
"eval MB" the peak during the timed evaluations only (VmHWM, reset after two warm-up calls).
Times are medians of `repeat` evaluations after the warm-up.
DeePMD-kit runs in its own environment (../shared/tools/deepmd_reference_env.sh).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEEPMD_LABEL = "deepmd-kit (pt)"  # the label of DeePMD-kit's side
DEFAULT_REF = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "dpa/deepmd-ref"
EXAMPLES = {
    "dpa1": ROOT / "examples/water_dpa1/input.json",
    "dpa2": ROOT / "examples/water_dpa2/input.json",
    "dpa3": ROOT / "examples/water_dpa3/input.json",
}

# Shared by both sides: time `run()` and report peak memory; `run` returns (E, F, W) as NumPy.
TIMER = r"""
import json, resource, statistics, time
def status_mb(key):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024
def report(run, repeat):
    base = status_mb("VmRSS")
    for _ in range(2):
        e, f, v = run()
    with open("/proc/self/clear_refs", "w") as refs:  # restart the peak (VmHWM) after warm-up
        refs.write("5")
    times = []
    for _ in range(repeat):
        t = time.perf_counter(); run(); times.append(time.perf_counter() - t)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"median": statistics.median(times), "peak_mb": peak, "model_mb": peak - base,
                      "eval_peak_mb": status_mb("VmHWM"),
                      "energy": float(e), "force": f.reshape(-1).tolist(),
                      "virial": v.reshape(-1).tolist()}))
"""

DEEPMD_SCRIPT = (
    TIMER
    + r"""
import sys
import numpy as np
import torch
torch.set_num_threads(int(sys.argv[3]))
from deepmd.dpmodel.utils.serialization import load_dp_model
from deepmd.pt.model.model import BaseModel
model = BaseModel.deserialize(load_dp_model(sys.argv[1])["model"])
frame = np.load(sys.argv[2])
coord = torch.tensor(frame["coord"].reshape(1, -1))
atype = torch.tensor(frame["atype"][None])
box = torch.tensor(frame["box"].reshape(1, 9))
def run():
    out = model(coord.clone(), atype, box=box)
    return (out["energy"].item(), out["force"].detach().numpy(),
            out["virial"].detach().numpy())
report(run, int(sys.argv[4]))
"""
)

DPA_SCRIPT = (
    TIMER
    + r"""
import sys
import numpy as np
import torch
torch.set_num_threads(int(sys.argv[3]))
import dpa
name, _, variant = sys.argv[5].partition("-")
pot = dpa.load_model(sys.argv[1], backend=name, compile=variant == "compile")
frame = np.load(sys.argv[2])
def run():
    out = pot.evaluate(frame["coord"], frame["atype"], frame["box"])
    return out["energy"][0], out["force"], out["virial"]
report(run, int(sys.argv[4]))
"""
)


def run_side(
    python: str, script: str, path: Path, frame: Path, args, *extra: str, env: dict | None = None
) -> dict | None:
    """Run one implementation in a fresh process (environment `env`, default ours); its JSON
    report, or None on failure."""
    env = {**(os.environ if env is None else env), "OMP_NUM_THREADS": str(args.threads)}
    cmd = [python, "-c", script, str(path), str(frame), str(args.threads), str(args.repeat)]
    proc = subprocess.run([*cmd, *extra], capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        print(f"{extra or 'DeePMD-kit'} failed:\n{proc.stderr[-3000:]}", file=sys.stderr)
        return None
    return json.loads(proc.stdout.strip().splitlines()[-1])


def add_huge_pages_option(parser) -> None:
    """--deepmd-huge-pages: DeePMD-kit's process gets the huge-page malloc dpa's sides run with."""
    parser.add_argument(
        "--deepmd-huge-pages",
        action="store_true",
        help="run DeePMD-kit with glibc's huge-page malloc too (dpa's sides always have it)",
    )


def huge_pages_envs(dpa_sides: dict, args) -> dict:
    """Process environments for `run_rounds`: dpa's sides with glibc's huge-page malloc (as the
    dpa CLI and MD scripts restart themselves), DeePMD-kit's too with --deepmd-huge-pages."""
    from dpa.backends.allocator import huge_pages_environment

    labels = [*dpa_sides, DEEPMD_LABEL] if args.deepmd_huge_pages else list(dpa_sides)
    return {label: huge_pages_environment() for label in labels}


def run_rounds(
    dpa_sides: dict,
    deepmd_side: tuple,
    path: Path,
    frame: Path,
    args,
    envs: dict | None = None,
) -> tuple[list[str], list[dict]]:
    """Every side once per round (DeePMD-kit's when its environment exists), rounds alternating
    the sides so a drift of the machine's speed hits all of them; (labels, per-round reports).
    `envs`: a process environment per side label, where it differs from ours."""
    envs = envs or {}
    sides = dict(dpa_sides)
    if args.deepmd_python.exists():
        sides[DEEPMD_LABEL] = (str(args.deepmd_python), *deepmd_side)
    else:
        print(f"no DeePMD-kit environment at {args.deepmd_python}; dpa numbers only")
    rounds = [
        {
            label: run_side(py, script, path, frame, args, *extra, env=envs.get(label))
            for label, (py, script, *extra) in sides.items()
        }
        for _ in range(args.rounds)
    ]
    return list(sides), rounds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=sorted(EXAMPLES), default="dpa1")
    parser.add_argument("--precision", default="float64", help="descriptor and fitting precision")
    parser.add_argument("--deepmd-python", type=Path, default=DEFAULT_REF / "bin" / "python")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--backends", default="torch,torch-compile,jax")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds of all sides")
    args = parser.parse_args()

    import numpy as np

    import dpa
    from dpa.data import load_system

    config = json.loads(EXAMPLES[args.model].read_text())["model"]
    for section in ("descriptor", "fitting_net"):
        config[section]["precision"] = args.precision
    system = load_system(ROOT / "examples/data/water")
    atype = system.remap_types(config["type_map"])
    work = Path(tempfile.mkdtemp(prefix="dpa-bench-"))
    path = work / f"water_{args.model}.dp"
    dpa.build_model(config, seed=1).save(path)
    frame = work / "frame.npz"
    np.savez(frame, coord=system.coord[:1], atype=atype, box=system.box[:1])

    dpa_sides = {f"dpa {b}": (sys.executable, DPA_SCRIPT, b) for b in args.backends.split(",")}
    sides, rounds = run_rounds(dpa_sides, (DEEPMD_SCRIPT,), path, frame, args)

    print(
        f"water {args.model}, 192 atoms, {args.precision}, {args.threads} threads, "
        f"energy+force+virial; per process the median of {args.repeat} evaluations; "
        f"{args.rounds} round(s), ratios to DeePMD-kit per round (median [min-max])"
    )
    head = f"{'implementation':<20} {'s/frame':>8} {'time ratio':>17} {'eval MB':>8}"
    print(head + f" {'memory ratio':>17} {'peak MB':>8} {'max|dF|':>9}")
    for label in sides:
        runs, pairs = side_results(rounds, label)
        if not runs:
            print(f"{label:<20} failed")
            continue
        seconds = statistics.median(r["median"] for r in runs)
        eval_mb = statistics.median(r["eval_peak_mb"] for r in runs)
        peak_mb = max(r["peak_mb"] for r in runs)
        line = f"{label:<20} {seconds:>8.3f}"
        if pairs:
            t = [a["median"] / b["median"] for a, b in pairs]
            m = [a["eval_peak_mb"] / b["eval_peak_mb"] for a, b in pairs]
            df = max(
                float(np.max(np.abs(np.asarray(a["force"]) - np.asarray(b["force"]))))
                for a, b in pairs
            )
            line += f" {spread(t):>17} {eval_mb:>8.0f} {spread(m):>17} {peak_mb:>8.0f}"
            line += f" {df:>9.1e}"
        else:
            line += f" {'':>17} {eval_mb:>8.0f} {'':>17} {peak_mb:>8.0f}"
        print(line)


def side_results(rounds: list[dict], label: str) -> tuple[list[dict], list[tuple[dict, dict]]]:
    """The runs of side `label` that finished, and its (run, DeePMD-kit run) pairs per round."""
    runs = [r[label] for r in rounds if r[label] is not None]
    pairs = [
        (r[label], r[DEEPMD_LABEL]) for r in rounds if r[label] is not None and r.get(DEEPMD_LABEL)
    ]
    return runs, pairs


def spread(values: list[float]) -> str:
    """median [min-max] of ratios."""
    return f"{statistics.median(values):.2f} [{min(values):.2f}-{max(values):.2f}]"


if __name__ == "__main__":
    main()
