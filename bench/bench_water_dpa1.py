"""Energy + force + virial of the water DPA-1 example (192 atoms, float64) on dpa's torch and jax
backends, side by side with DeePMD-kit 3.2.0 on the same `.dp` file; prints time ratios.

    python bench/bench_water_dpa1.py [--deepmd-python PATH] [--repeat N] [--threads 2]

DeePMD-kit runs in its own environment (../shared/tools/deepmd_reference_env.sh) in a subprocess;
both sides time the same frame, after a warm-up, as the median of `repeat` evaluations.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_REF = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "dpa/deepmd-ref"

DEEPMD_SCRIPT = r"""
import json, statistics, sys, time
import numpy as np
import torch
torch.set_num_threads(int(sys.argv[3]))
from deepmd.dpmodel.utils.serialization import load_dp_model
from deepmd.pt.model.model import BaseModel
data = load_dp_model(sys.argv[1])
model = BaseModel.deserialize(data["model"]).to(torch.float64)
frame = np.load(sys.argv[2])
coord = torch.tensor(frame["coord"].reshape(1, -1))
atype = torch.tensor(frame["atype"][None])
box = torch.tensor(frame["box"].reshape(1, 9))
def run():
    c = coord.clone()
    out = model(c, atype, box=box)
    return out["energy"].item(), out["force"].detach().numpy(), out["virial"].detach().numpy()
for _ in range(2):
    e, f, v = run()
times = []
for _ in range(int(sys.argv[4])):
    t = time.perf_counter(); run(); times.append(time.perf_counter() - t)
print(json.dumps({"median": statistics.median(times), "energy": e,
                  "force": f.reshape(-1).tolist(), "virial": v.reshape(-1).tolist()}))
"""


def time_dpa(path: Path, backend: str, coord, atype, box, repeat: int) -> tuple[float, dict]:
    """Median seconds of one energy+force+virial evaluation of one frame (after warm-up).

    `backend` "torch-compile" is torch with torch.compile (its compile time is not counted)."""
    import dpa

    name, _, variant = backend.partition("-")
    pot = dpa.load_model(path, backend=name, compile=variant == "compile")
    for _ in range(2):
        out = pot.evaluate(coord, atype, box)
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        out = pot.evaluate(coord, atype, box)
        times.append(time.perf_counter() - start)
    return statistics.median(times), out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--deepmd-python", type=Path, default=DEFAULT_REF / "bin" / "python")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--backends", default="torch,torch-compile,jax")
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))

    import numpy as np
    import torch

    import dpa
    from dpa.data import load_system

    torch.set_num_threads(args.threads)
    config = json.loads((ROOT / "examples/water_dpa1/input.json").read_text())["model"]
    system = load_system(ROOT / "examples/data/water")
    coord, box = system.coord[:1], system.box[:1]
    atype = system.remap_types(config["type_map"])
    model = dpa.build_model(config, seed=1)
    work = Path(tempfile.mkdtemp(prefix="dpa-bench-"))
    path = work / "water_dpa1.dp"
    model.save(path)
    frame = work / "frame.npz"
    np.savez(frame, coord=coord, atype=atype, box=box)

    results = {}
    for backend in args.backends.split(","):
        results[backend] = time_dpa(path, backend, coord, atype, box, args.repeat)

    ref = None
    if args.deepmd_python.exists():
        proc = subprocess.run(
            [
                str(args.deepmd_python),
                "-c",
                DEEPMD_SCRIPT,
                str(path),
                str(frame),
                str(args.threads),
                str(args.repeat),
            ],
            capture_output=True,
            text=True,
            env={**os.environ, "OMP_NUM_THREADS": str(args.threads)},
        )
        if proc.returncode == 0:
            ref = json.loads(proc.stdout.strip().splitlines()[-1])
        else:
            print("DeePMD-kit run failed:\n" + proc.stderr[-2000:], file=sys.stderr)
    else:
        print(f"no DeePMD-kit environment at {args.deepmd_python}; dpa timings only")

    print(f"water DPA-1, 192 atoms, float64, {args.threads} threads, median of {args.repeat}")
    print(
        f"{'implementation':<18} {'s/frame':>9} {'vs DeePMD-kit':>14} {'max|dF|':>10} {'|dE|':>10}"
    )
    if ref is not None:
        print(f"{'deepmd-kit (pt)':<18} {ref['median']:>9.4f} {1.0:>14.2f}")
    for backend, (seconds, out) in results.items():
        if ref is None:
            print(f"{'dpa ' + backend:<18} {seconds:>9.4f}")
            continue
        df = np.max(np.abs(out["force"].reshape(-1) - np.asarray(ref["force"])))
        de = abs(out["energy"][0] - ref["energy"])
        ratio = seconds / ref["median"]
        print(f"{'dpa ' + backend:<18} {seconds:>9.4f} {ratio:>14.2f} {df:>10.1e} {de:>10.1e}")


if __name__ == "__main__":
    main()
