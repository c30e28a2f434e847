"""DeePMD-kit 3.2's training batch order (`dp --pt train`), walked without torch, so that the same
input and seed train on the same batches, in the same order, in both codes.

What `dp --pt train` does, in the order its global torch generator sees it:

1. Each data section (training, then validation) reseeds the global generator with
   `mix_entropy([0, seed])` and opens one iterator per system, each drawing a base seed.
2. Building the model draws every hidden layer of its embedding and fitting networks once more
   from the global generator (`deepmd_init.skip_seedless_network_draws`).
3. Statistics open each training system afresh: a base seed, then a sampler seed whose
   permutation gives the frames of its first `data_stat_nbatch` batches.
4. Each pass of the training loader draws a base seed B and `multinomial(probs, total_batch * W)`
   systems (W loader workers, `NUM_WORKERS` or min(4, CPUs)). Sample i goes to worker i mod W,
   which reseeds its own generator with B + w and walks each system through permutations of its
   frames, one sampler seed per pass over the system (plus a base seed for every pass after its
   first). The validation loader does the same in its own workers; the main generator only sees
   its base seed and systems, at the display steps (the first one and every `disp_freq`-th),
   where it serves `numb_btch` batches.
   With W = 0 everything runs on the main generator, interleaved in step order.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from ..dpmodel.torch_rng import TorchCpuGenerator, mix_seed

__all__ = ["DeepmdOrder", "LoaderLayout", "deepmd_workers"]


def deepmd_workers() -> int:
    """DeePMD-kit's loader worker count: $NUM_WORKERS, else min(4, CPUs this process may use)."""
    if "NUM_WORKERS" in os.environ:
        return max(0, int(os.environ["NUM_WORKERS"]))
    try:
        ncpus = len(os.sched_getaffinity(0))
    except AttributeError:
        ncpus = os.cpu_count() or 1
    return min(4, ncpus)


@dataclass(frozen=True)
class LoaderLayout:
    """One data section as DeePMD-kit's loader sees it: frames, batch size and probability of
    each system."""

    nframes: Sequence[int]
    batch_sizes: Sequence[int]
    probs: Sequence[float]

    @property
    def nbatches(self) -> list[int]:
        """Batches per pass over each system (a last short batch counts)."""
        return [-(-int(n) // int(b)) for n, b in zip(self.nframes, self.batch_sizes, strict=True)]

    @property
    def total_batch(self) -> int:
        return sum(self.nbatches)


class _SystemStreams:
    """One process's copy of the per-system frame iterators: each pass over a system is a fresh
    permutation from a sampler seed drawn from `gen` (after a base seed for a reopened one)."""

    def __init__(self, layout: LoaderLayout, gen: TorchCpuGenerator) -> None:
        self.layout, self.gen = layout, gen
        n = len(layout.nframes)
        self.perms: list[np.ndarray | None] = [None] * n
        self.cursors = [0] * n

    def next(self, system: int) -> np.ndarray:
        nframes = int(self.layout.nframes[system])
        perm, cursor = self.perms[system], self.cursors[system]
        if perm is None or cursor >= nframes:
            if perm is not None:
                self.gen.random_int64()  # the reopened iterator's base seed
            perm = TorchCpuGenerator(self.gen.random_int64()).randperm(nframes)
            self.perms[system], cursor = perm, 0
        frames = perm[cursor : cursor + int(self.layout.batch_sizes[system])]
        self.cursors[system] = cursor + len(frames)
        return frames


class _Loader:
    """The outer loader of one data section, cycled: passes of `total_batch * W` systems drawn
    on the main generator, served by W workers (or by the main process when W = 0)."""

    def __init__(self, layout: LoaderLayout, workers: int, main: TorchCpuGenerator) -> None:
        self.layout, self.workers, self.main = layout, workers, main
        self.pass_len = layout.total_batch * max(workers, 1)
        self.probs = np.asarray(layout.probs, dtype=np.float64)
        self.order: np.ndarray | None = None
        self.count = 0
        self.streams: list[_SystemStreams] = []
        self.main_streams = _SystemStreams(layout, main) if workers == 0 else None

    def next(self) -> tuple[int, np.ndarray]:
        if self.order is None or self.count == self.pass_len:
            base = self.main.random_int64()
            self.order = self.main.multinomial(self.probs, self.pass_len)
            self.count = 0
            if self.main_streams is not None:
                self.streams = [self.main_streams]
            else:
                self.streams = [
                    _SystemStreams(self.layout, TorchCpuGenerator(base + w))
                    for w in range(self.workers)
                ]
        i = self.count
        self.count += 1
        system = int(self.order[i])
        return system, self.streams[i % len(self.streams)].next(system)


class DeepmdOrder:
    """(system, frame indices) batches in `dp --pt train`'s order for the same input and seed.

    `model_draws` advances a generator as building the model does in DeePMD-kit; `stat_nbatch`
    is None when no statistics are computed (a restart or an initial model). Same interface as
    `BatchSampler` (next, state, set_state); the state is the number of batches drawn.
    """

    def __init__(
        self,
        train: LoaderLayout,
        valid: LoaderLayout | None,
        seed: int,
        workers: int,
        model_draws: Callable[[TorchCpuGenerator], None],
        stat_nbatch: int | None,
        disp_freq: int,
        numb_btch: int,
    ) -> None:
        self.train_layout, self.valid_layout = train, valid
        self.seed, self.workers = int(seed), int(workers)
        self.model_draws = model_draws
        self.stat_nbatch = stat_nbatch
        self.disp_freq, self.numb_btch = int(disp_freq), int(numb_btch)
        self.batch_sizes = [int(b) for b in train.batch_sizes]
        self.nbatches = train.nbatches
        self.probs = np.asarray(train.probs, dtype=np.float64)
        self._start()

    @property
    def nsystems(self) -> int:
        return len(self.batch_sizes)

    def _start(self) -> None:
        main = TorchCpuGenerator(mix_seed([0, self.seed % 2**32]))
        last = self.valid_layout if self.valid_layout is not None else self.train_layout
        for _ in last.nframes:
            main.random_int64()  # the per-system iterators opened by the last data section
        self.model_draws(main)
        self.stat_frames: list[np.ndarray] | None = None
        if self.stat_nbatch is not None:
            self.stat_frames = []
            for nframes, bs, nb in zip(
                self.train_layout.nframes, self.batch_sizes, self.nbatches, strict=True
            ):
                main.random_int64()  # base seed of the statistics iterator
                perm = TorchCpuGenerator(main.random_int64()).randperm(int(nframes))
                self.stat_frames.append(perm[: min(self.stat_nbatch, nb) * bs])
        self.train = _Loader(self.train_layout, self.workers, main)
        self.valid = None
        if self.valid_layout is not None:
            self.valid = _Loader(self.valid_layout, self.workers, main)
        self.drawn = 0
        self._validation: dict[int, list[tuple[int, np.ndarray]]] = {}

    def next(self) -> tuple[int, np.ndarray]:
        """The batch of the next training step."""
        system, frames = self.train.next()
        self.drawn += 1
        step = self.drawn
        if self.valid is not None and (step % self.disp_freq == 0 or step == 1):
            self._validation[step] = [self.valid.next() for _ in range(self.numb_btch)]
        return system, frames.copy()

    def validation_batches(self, step: int) -> list[tuple[int, np.ndarray]] | None:
        """The validation batches DeePMD-kit shows at display step `step` (1-based), once that
        step's training batch was drawn; None where it shows none."""
        return self._validation.pop(step, None)

    def __iter__(self) -> DeepmdOrder:
        return self

    def __next__(self) -> tuple[int, np.ndarray]:
        return self.next()

    def state(self) -> dict:
        """What fixed the order (seed, workers, statistics, display schedule) and the number of
        batches drawn: a restart replays them."""
        return {
            "order": "deepmd",
            "seed": self.seed,
            "workers": self.workers,
            "stat_nbatch": self.stat_nbatch,
            "disp_freq": self.disp_freq,
            "numb_btch": self.numb_btch,
            "drawn": self.drawn,
        }

    def set_state(self, state: dict) -> None:
        """Continue the saved run's order after its `drawn` batches."""
        self.seed, self.workers = int(state["seed"]), int(state["workers"])
        nbatch = state["stat_nbatch"]
        self.stat_nbatch = None if nbatch is None else int(nbatch)
        self.disp_freq, self.numb_btch = int(state["disp_freq"]), int(state["numb_btch"])
        self._start()
        for _ in range(int(state["drawn"])):
            self.next()
        self._validation.clear()  # those steps were shown before the checkpoint
