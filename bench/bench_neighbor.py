"""Time dpa.neighbor.build_neighbor_list on a 24,576-atom water box (not a test).

The box is frame 0 of shared/data/water/data_0 (192 atoms) replicated 4 x 4 x 8; rcut 6.0 with
sel [120] (mixed types) and [46, 92] (per-type split). Prints the median of 5 runs after a warm-up.

    python bench/bench_neighbor.py [--data PATH] [--repeat 5]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np

from dpa.neighbor import build_neighbor_list

DEFAULT_DATA = Path(__file__).resolve().parents[1] / "examples" / "data" / "water"


def water_box(data: Path, reps: tuple[int, int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Frame 0 of a deepmd/npy water system replicated reps times: (coord, atype, box)."""
    atype = np.loadtxt(data / "type.raw", dtype=np.int64)
    coord = np.load(data / "set.000" / "coord.npy")[0].astype(np.float64).reshape(-1, 3)
    box = np.load(data / "set.000" / "box.npy")[0].astype(np.float64).reshape(3, 3)
    grid = np.stack(np.meshgrid(*[np.arange(r) for r in reps], indexing="ij"), -1).reshape(-1, 3)
    big = (coord[None] + (grid @ box)[:, None]).reshape(-1, 3)
    return big[None], np.tile(atype, len(grid)), (box * np.array(reps)[:, None])[None]


def time_build(coord, atype, box, sel, mixed, repeat) -> tuple[list[float], list[float]]:
    """Wall and CPU seconds of `repeat` builds (after one warm-up build)."""
    build_neighbor_list(coord, atype, box, 6.0, sel, mixed)
    wall, cpu = [], []
    for _ in range(repeat):
        w0, c0 = time.perf_counter(), time.process_time()
        build_neighbor_list(coord, atype, box, 6.0, sel, mixed)
        wall.append(time.perf_counter() - w0)
        cpu.append(time.process_time() - c0)
    return wall, cpu


def main() -> None:
    """Parse arguments, build the system, print timings."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    coord, atype, box = water_box(args.data, (4, 4, 8))
    print(f"{coord.shape[1]} atoms, box diagonal {np.diag(box[0]).round(2).tolist()}, rcut 6.0")
    for sel, mixed in [([120], True), ([46, 92], False)]:
        wall, cpu = time_build(coord, atype, box, sel, mixed, args.repeat)
        print(
            f"sel={sel!s:9} mixed_types={mixed!s:5}  median wall {statistics.median(wall):.3f} s"
            f"  (min {min(wall):.3f})  median cpu {statistics.median(cpu):.3f} s"
        )


if __name__ == "__main__":
    main()
