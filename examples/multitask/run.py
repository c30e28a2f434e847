"""The large-atomic-model workflow in small: pre-train one DPA-3 on two datasets at once
(multi-task, shared descriptor and fitting), look at it, fine-tune its `water` branch on a third,
small dataset, and compare with the same training from scratch. Every step is a `dpa` command,
printed before it runs; this script only prepares the downstream data split and chains them.

    python examples/multitask/run.py [--backend torch|jax] [--pretrain-steps N] [--steps N]

Outputs go to examples/multitask/run/ (the data split, pretrain/, finetune/, scratch/).
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
RUN = "run"
DOWNSTREAM = HERE / ".." / ".." / ".." / "shared" / "data" / "water_virial"
NTRAIN = 24  # of its 30 frames; the last 6 are the validation set
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


def split_downstream(out: Path) -> None:
    """water_virial as two deepmd/npy systems: run/data/train (24 frames), run/data/valid (6)."""
    for name, frames in (("train", slice(0, NTRAIN)), ("valid", slice(NTRAIN, None))):
        target = out / "data" / name / "set.000"
        target.mkdir(parents=True)
        for raw in ("type.raw", "type_map.raw"):
            shutil.copy(DOWNSTREAM / raw, target.parent / raw)
        for npy in sorted((DOWNSTREAM / "set.000").glob("*.npy")):
            np.save(target / npy.name, np.load(npy)[frames])


def errors(output: str) -> tuple[float, float]:
    """(energy RMSE per atom in eV, force RMSE in eV/Å) of the weighted-average block of
    `dpa test` output."""
    found = {}
    for line in output.split("weighted average of errors")[-1].splitlines():
        label, _, value = line.partition(":")
        found[label.strip()] = value.split()[0] if value.split() else ""
    try:
        return float(found["Energy RMSE/Natoms"]), float(found["Force  RMSE"])
    except (KeyError, ValueError):
        raise SystemExit("example: no energy/force RMSE in the dpa test output") from None


def with_steps(name: str, steps: int | None) -> str:
    """The input `name`, or a copy in run/ with `steps` training steps."""
    if steps is None:
        return name
    config = json.loads((HERE / name).read_text())
    config["training"]["numb_steps"] = steps
    config["training"]["save_freq"] = steps
    copy = f"{RUN}/{name}"
    (HERE / copy).write_text(json.dumps(config, indent=2))
    return copy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=("torch", "jax"), default="torch")
    parser.add_argument("--pretrain-steps", type=int, default=None, help="default: the input's")
    parser.add_argument("--steps", type=int, default=None, help="fine-tune steps (default: input)")
    args = parser.parse_args()
    out = HERE / RUN
    if out.exists():  # a fresh run each time (this folder is the example's own output)
        shutil.rmtree(out)
    out.mkdir()
    split_downstream(out)
    model = f"model{SUFFIX[args.backend]}"
    backend = ("--backend", args.backend)
    start = time.perf_counter()

    # 1. multi-task pre-training: water and molecules, one shared DPA-3 and fitting
    pretrain = with_steps("pretrain.json", args.pretrain_steps)
    run(*backend, "train", pretrain, "-o", f"{RUN}/pretrain")
    pretrained = f"{RUN}/pretrain/{model}"
    run("show", pretrained)
    before = errors(
        run(*backend, "test", "-m", pretrained, "--head", "water", "-s", f"{RUN}/data/valid")
    )

    # 2. fine-tune the water branch on the small downstream set; 3. the same from scratch
    finetune = with_steps("finetune.json", args.steps)
    run(*backend, "train", finetune, "--finetune", pretrained, "--model-branch", "water",
        "-o", f"{RUN}/finetune")  # fmt: skip
    run(*backend, "train", finetune, "-o", f"{RUN}/scratch")
    tuned = errors(
        run(*backend, "test", "-m", f"{RUN}/finetune/{model}", "-s", f"{RUN}/data/valid")
    )
    scratch = errors(
        run(*backend, "test", "-m", f"{RUN}/scratch/{model}", "-s", f"{RUN}/data/valid")
    )

    # 4. one branch as a deployable single-task model, and its bias moved to new data
    run("convert", pretrained, f"{RUN}/molecules.dp", "--head", "molecules")
    run("change-bias", f"{RUN}/molecules.dp", "-s", "../../../shared/data/molecules_nopbc/C4H3O1",
        "-o", f"{RUN}/molecules_c4h3o1.dp")  # fmt: skip

    print("\nsummary")
    print(f"  on {RUN}/data/valid (6 frames of 128 H2O): energy RMSE/atom, force RMSE")
    for label, (e, f) in (
        ("pre-trained water branch, as it is", before),
        ("fine-tuned from it (bias refitted)", tuned),
        ("trained from scratch, same input", scratch),
    ):
        print(f"    {label:<36} {e:9.2e} eV  {f:.3f} eV/Å")
    print(
        "  (the downstream data has another energy zero than the pre-training water: the bias\n"
        "   refit of the fine-tune, or dpa change-bias, moves the model onto it)"
    )
    print(f"  total {time.perf_counter() - start:.0f} s; outputs in {out}")


if __name__ == "__main__":
    main()
