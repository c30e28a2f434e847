"""Time and peak memory of one training step (192-atom water, batch 1) on dpa's torch and jax
trainers, side by side with DeePMD-kit 3.2.0's PyTorch model, loss and Adam on the same `.dp`.

    python bench/bench_train.py [--model dpa1|dpa2|dpa3] [--precision float64] [--steps N]
                                [--threads 2] [--backends torch,jax] [--rounds 3]

A step is what the training loop does per batch: energy, forces and virial with the graph kept,
the energy+force+virial loss (prefactors of DeePMD-kit's water examples), its gradient through
the force term (double backward), gradient clipping off, an Adam update. dpa's step includes
building its neighbor list (serially here; `dpa train` does it in a worker thread), DeePMD-kit's
builds it inside the model. dpa's processes run with glibc's huge-page malloc, as `dpa train`
restarts itself with it (dpa/backends/allocator.py); --deepmd-huge-pages gives DeePMD-kit's
process the same setting. Each implementation runs in a fresh process; "step MB" is the peak
resident memory during the timed steps (VmHWM, reset after two warm-up steps), "peak MB" the whole
run's (for jax it includes compiling). Times are medians of `steps` steps after the warm-up.
"""

from __future__ import annotations

import argparse
import json
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

LOSS = {
    "start_pref_e": 0.2,
    "limit_pref_e": 20.0,
    "start_pref_f": 100.0,
    "limit_pref_f": 60.0,
    "start_pref_v": 0.02,
    "limit_pref_v": 1.0,
}
START_LR = 1e-3

# Shared by both sides: time `step()` and report peak memory; `step` returns the loss.
TIMER = r"""
import json, resource, statistics, time
def status_mb(key):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024
def report(step, repeat):
    losses = [step() for _ in range(2)]
    with open("/proc/self/clear_refs", "w") as refs:  # restart the peak (VmHWM) after warm-up
        refs.write("5")
    times = []
    for _ in range(repeat):
        t = time.perf_counter(); losses.append(step()); times.append(time.perf_counter() - t)
    print(json.dumps({"median": statistics.median(times),
                      "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                      "eval_peak_mb": status_mb("VmHWM"), "losses": losses}))
"""

DEEPMD_SCRIPT = (
    TIMER
    + r"""
import sys
import numpy as np
import torch
torch.set_num_threads(int(sys.argv[3]))
from deepmd.dpmodel.utils.serialization import load_dp_model
from deepmd.pt.loss import EnergyStdLoss
from deepmd.pt.model.model import BaseModel
loss_cfg, start_lr = json.loads(sys.argv[5]), float(sys.argv[6])
model = BaseModel.deserialize(load_dp_model(sys.argv[1])["model"])
model.train()
loss_fn = EnergyStdLoss(starter_learning_rate=start_lr, **loss_cfg)
opt = torch.optim.Adam(model.parameters(), lr=start_lr)
frame = np.load(sys.argv[2])
nat = frame["atype"].shape[0]
inputs = {"coord": torch.tensor(frame["coord"].reshape(1, nat, 3)),
          "atype": torch.tensor(frame["atype"][None]), "box": torch.tensor(frame["box"].reshape(1, 9))}
label = {"energy": torch.tensor(frame["energy"].reshape(1, 1)),
         "force": torch.tensor(frame["force"].reshape(1, nat, 3)),
         "virial": torch.tensor(frame["virial"].reshape(1, 9)),
         "find_energy": 1.0, "find_force": 1.0, "find_virial": float(frame["find_virial"])}
def step():
    opt.zero_grad(set_to_none=True)
    _, loss, _ = loss_fn(dict(inputs), model, label, nat, start_lr)
    loss.backward()
    opt.step()
    return float(loss.detach())
report(step, int(sys.argv[4]))
"""
)

DPA_SCRIPT = (
    TIMER
    + r"""
import sys
import numpy as np
from dpa import io
from dpa.train.batches import batch_inputs
from dpa.train.loss import EnerLossConfig, ener_loss
loss_cfg, start_lr, backend = json.loads(sys.argv[5]), float(sys.argv[6]), sys.argv[7]
model = io.load(sys.argv[1])
if backend == "torch":  # only this side loads torch (its import alone is ~190 MB resident)
    import torch
    torch.set_num_threads(int(sys.argv[3]))
    from dpa.backends.torch.train import TorchTrainer as Trainer
    array = torch.as_tensor
    trainer = Trainer(model.tree)
else:  # "jax": training's default; "jax-checkpointed": training.gradient_checkpointing true
    import jax.numpy as jnp
    from dpa.backends.jax.train import JaxTrainer as Trainer
    array = jnp.asarray
    trainer = Trainer(model.tree, checkpointing=backend == "jax-checkpointed")
cfg = EnerLossConfig.from_params(loss_cfg, start_lr)
frame = np.load(sys.argv[2])
nat = frame["atype"].shape[0]
coord, box, atype = frame["coord"].reshape(1, nat, 3), frame["box"].reshape(1, 3, 3), frame["atype"]
labels = {"energy": frame["energy"].reshape(1), "force": frame["force"].reshape(1, nat, 3),
          "virial": frame["virial"].reshape(1, 3, 3)}
finds = {"find_energy": 1.0, "find_force": 1.0, "find_virial": float(frame["find_virial"])}
def loss_fn(pred, label, lr):
    return ener_loss(pred, {**label, **finds}, nat, lr, cfg)
def step():
    batch = batch_inputs(model, coord, atype, box, trainer.slot_rounding)
    return trainer.step(batch, labels, start_lr, loss_fn)["loss"]
report(step, int(sys.argv[4]))
"""
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=sorted(EXAMPLES), default="dpa1")
    parser.add_argument("--precision", default="float64", help="descriptor and fitting precision")
    parser.add_argument("--deepmd-python", type=Path, default=DEFAULT_REF / "bin" / "python")
    parser.add_argument("--steps", type=int, default=5, help="timed steps per process")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--backends",
        default="torch,jax",
        help="comma-separated dpa sides: torch, jax and jax-checkpointed (DPA-3 with "
        "training.gradient_checkpointing true)",
    )
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds of all sides")
    add_huge_pages_option(parser)
    args = parser.parse_args()
    args.repeat = args.steps

    import numpy as np

    import dpa
    from dpa.data import load_system

    config = json.loads(EXAMPLES[args.model].read_text())["model"]
    for section in ("descriptor", "fitting_net"):
        config[section]["precision"] = args.precision
    system = load_system(ROOT / "examples/data/water")
    atype = system.remap_types(config["type_map"])
    work = Path(tempfile.mkdtemp(prefix="dpa-bench-train-"))
    path = work / f"water_{args.model}.dp"
    model = dpa.build_model(config, seed=1)
    counts = np.bincount(atype, minlength=len(model.type_map)).astype(float)  # energy scale
    bias = np.linalg.lstsq(counts[None, :], system.energy[:1], rcond=None)[0]
    model.tree["@variables"]["out_bias"][0, :, 0] = bias
    model.save(path)
    frame = work / "frame.npz"
    virial = system.virial[:1] if system.virial is not None else np.zeros((1, 3, 3))
    np.savez(
        frame,
        coord=system.coord[:1],
        atype=atype,
        box=system.box[:1],
        energy=system.energy[:1],
        force=system.force[:1],
        virial=virial,
        find_virial=float(system.virial is not None),
    )

    extra = (json.dumps(LOSS), str(START_LR))
    dpa_sides = {
        f"dpa {b}": (sys.executable, DPA_SCRIPT, *extra, b) for b in args.backends.split(",")
    }
    envs = huge_pages_envs(dpa_sides, args)
    if "dpa jax-checkpointed" in envs:  # as `dpa train` sets up glibc for the checkpointed step
        from dpa.backends.allocator import huge_pages_environment

        envs["dpa jax-checkpointed"] = huge_pages_environment(retain_heap=True)
    sides, rounds = run_rounds(dpa_sides, (DEEPMD_SCRIPT, *extra), path, frame, args, envs)

    print(
        f"water {args.model} training step, 192 atoms, batch 1, {args.precision}, "
        f"{args.threads} threads; per process the median of {args.steps} steps; "
        f"{args.rounds} round(s), ratios to DeePMD-kit per round (median [min-max])"
    )
    print(
        f"{'implementation':<18} {'s/step':>8} {'time ratio':>17} {'step MB':>8} "
        f"{'memory ratio':>17} {'peak MB':>8} {'loss at step 1':>15}"
    )
    for label in sides:
        runs, pairs = side_results(rounds, label)
        if not runs:
            print(f"{label:<18} failed")
            continue
        line = f"{label:<18} {np.median([r['median'] for r in runs]):>8.3f}"
        time_ratio = spread([a["median"] / b["median"] for a, b in pairs]) if pairs else ""
        mem_ratio = (
            spread([a["eval_peak_mb"] / b["eval_peak_mb"] for a, b in pairs]) if pairs else ""
        )
        line += f" {time_ratio:>17} {np.median([r['eval_peak_mb'] for r in runs]):>8.0f}"
        line += f" {mem_ratio:>17} {max(r['peak_mb'] for r in runs):>8.0f}"
        line += f" {runs[0]['losses'][0]:>15.6g}"
        print(line)


if __name__ == "__main__":
    main()
