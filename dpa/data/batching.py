"""Multi-system batch sampling as in DeePMD-kit 3.2 `dp --pt train`: per-system batch sizes,
system probabilities, and frames drawn in reshuffled epochs, with a restorable state.

Numbers of batches follow the PyTorch loader (a last partial batch counts, unless drop_last).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import numpy as np

from dpa.errors import ConfigError, DataError

__all__ = [
    "BatchSampler",
    "auto_batch_sizes",
    "system_probabilities",
    "unit_sampling",
    "validation_batches",
]


def auto_batch_sizes(batch_size: int | str | Sequence[int], natoms: Sequence[int]) -> list[int]:
    """Per-system batch sizes from DeePMD's `batch_size`: an int, a list, "auto[:N]" or "max:N".

    "auto:N" (N = 32 for "auto") is the smallest b with b * natoms >= N; "max:N" the largest b
    with b * natoms <= N, at least 1.
    """
    nsys = len(natoms)
    if isinstance(batch_size, bool):
        raise ConfigError(
            f"training_data.batch_size must be an int, list or rule, got {batch_size!r}"
        )
    if isinstance(batch_size, (int, np.integer)):
        if batch_size <= 0:
            raise ConfigError(f"training_data.batch_size must be positive, got {batch_size}")
        return [int(batch_size)] * nsys
    if isinstance(batch_size, str):
        words = batch_size.split(":")
        rule_name = words[0]
        if (
            rule_name not in ("auto", "max")
            or len(words) > 2
            or (rule_name == "max" and len(words) != 2)
        ):
            raise ConfigError(
                f"training_data.batch_size rule {batch_size!r} is not supported; use an int, a list, "
                "'auto', 'auto:N' or 'max:N'"
            )
        try:
            rule = int(words[1]) if len(words) == 2 else 32
        except ValueError:
            raise ConfigError(
                f"training_data.batch_size {batch_size!r}: the number after ':' must be an integer"
            ) from None
        if rule <= 0:
            raise ConfigError(f"training_data.batch_size {batch_size!r}: N must be positive")
        sizes = []
        for ni in natoms:
            bsi = rule // int(ni)
            if rule_name == "auto":
                if bsi * int(ni) < rule:
                    bsi += 1
            elif bsi == 0:
                bsi = 1
            sizes.append(bsi)
        return sizes
    sizes = [int(b) for b in batch_size]
    if len(sizes) != nsys:
        raise ConfigError(
            f"training_data.batch_size has {len(sizes)} entries but there are {nsys} systems"
        )
    if any(b <= 0 for b in sizes):
        raise ConfigError(f"training_data.batch_size entries must be positive, got {sizes}")
    return sizes


def _prob_sys_size(style: str, nbatches: Sequence[int]) -> np.ndarray:
    """DeePMD's "prob_sys_size;stt:end:weight;...": blocks share weight in proportion to nbatch."""
    nsys = len(nbatches)
    nb = np.asarray(nbatches, dtype=np.float64)
    blocks = style.split(";")[1:] if ";" in style else [f"0:{nsys}:1.0"]
    starts, ends, weights = [], [], []
    for block in blocks:
        parts = block.split(":")
        try:
            stt, end, weight = int(parts[0]), int(parts[1]), float(parts[2])
            if len(parts) != 3:
                raise ValueError
        except (ValueError, IndexError):
            raise ConfigError(
                f"auto_prob {style!r}: block {block!r} must read 'start:end:weight'"
            ) from None
        if not (0 <= stt < end <= nsys):
            raise ConfigError(
                f"auto_prob {style!r}: block {block!r} must satisfy 0 <= start < end <= {nsys}"
            )
        if weight < 0:
            raise ConfigError(f"auto_prob {style!r}: block {block!r} has a negative weight")
        starts.append(stt)
        ends.append(end)
        weights.append(weight)
    if sum(weights) <= 0:
        raise ConfigError(f"auto_prob {style!r}: the block weights sum to zero")
    block_probs = np.asarray(weights) / np.sum(weights)
    probs = np.zeros(nsys, dtype=np.float64)
    for stt, end, bp in zip(starts, ends, block_probs, strict=True):
        probs[stt:end] = nb[stt:end] / np.sum(nb[stt:end]) * bp
    return probs


def system_probabilities(
    nbatches: Sequence[int],
    auto_prob: str = "prob_sys_size",
    sys_probs: Sequence[float] | None = None,
) -> np.ndarray:
    """The probability of drawing each system: `sys_probs` if given (normalized), else `auto_prob`."""
    nsys = len(nbatches)
    if sys_probs is not None:
        p = np.asarray(sys_probs, dtype=np.float64)
        if p.ndim != 1 or p.shape[0] != nsys:
            raise ConfigError(
                f"training_data.sys_probs has {p.size} entries but there are {nsys} systems"
            )
        if np.any(p < 0) or not np.all(np.isfinite(p)):
            raise ConfigError(
                f"training_data.sys_probs must be finite and non-negative, got {list(p)}"
            )
        if p.sum() <= 0:
            raise ConfigError("training_data.sys_probs must not all be zero")
        return p / p.sum()
    if auto_prob == "prob_uniform":
        return np.full(nsys, 1.0 / nsys)
    if auto_prob.startswith("prob_sys_size") and auto_prob[13:14] in ("", ";"):
        return _prob_sys_size(auto_prob, nbatches)
    raise ConfigError(
        f"training_data.auto_prob {auto_prob!r} is unknown; use 'prob_uniform', 'prob_sys_size' "
        "or 'prob_sys_size;start:end:weight;...'"
    )


def unit_sampling(
    units: Sequence[Sequence[int]],
    nframes: Sequence[int],
    natoms: Sequence[int],
    batch_size: int | str | Sequence[int],
    auto_prob: str,
    sys_probs: Sequence[float] | None,
) -> tuple[int | str | list[int], list[float] | None]:
    """batch_size and sys_probs per System when an input system (a unit: one path) was read as
    several Systems (mixed-type groups, extxyz compositions).

    DeePMD-kit samples such a path as one system, so list options may name units; a unit's
    probability (given, or from auto_prob over units) is shared by its parts in proportion to
    their frames, as drawing frames from the whole would. A part's batch is at most its frames.
    Options pass unchanged when every unit is a single System.
    """
    nsys, nunits = len(nframes), len(units)
    if nunits == nsys:
        return batch_size, None if sys_probs is None else list(sys_probs)
    unit_of = np.empty(nsys, dtype=np.int64)
    for u, members in enumerate(units):
        unit_of[list(members)] = u
    sizes = _unit_batch_sizes(batch_size, unit_of, nunits, natoms)
    split = np.array([len(units[u]) > 1 for u in unit_of])
    if sizes is not None:
        sizes = [
            min(b, int(nf)) if part else b
            for b, nf, part in zip(sizes, nframes, split, strict=True)
        ]
    if sys_probs is not None and len(sys_probs) == nsys:
        return (batch_size if sizes is None else sizes), list(sys_probs)
    if sys_probs is not None and len(sys_probs) != nunits:
        raise ConfigError(
            f"training_data.sys_probs has {len(sys_probs)} entries but there are {nunits} "
            f"systems (read as {nsys}: mixed-type groups and compositions of one file count "
            "once); give one per system"
        )
    per_size = sizes if sizes is not None else auto_batch_sizes(batch_size, natoms)
    nb = np.array([-(-int(nf) // b) for nf, b in zip(nframes, per_size, strict=True)])
    unit_nb = np.bincount(unit_of, weights=nb, minlength=nunits)
    unit_p = system_probabilities(unit_nb, auto_prob, sys_probs)
    frames = np.asarray(nframes, dtype=np.float64)
    unit_frames = np.bincount(unit_of, weights=frames, minlength=nunits)
    probs = unit_p[unit_of] * frames / unit_frames[unit_of]
    return (batch_size if sizes is None else sizes), probs.tolist()


def _unit_batch_sizes(
    batch_size: int | str | Sequence[int], unit_of: np.ndarray, nunits: int, natoms: Sequence[int]
) -> list[int] | None:
    """Explicit per-System batch sizes from an int or a per-unit list; None for a rule."""
    if isinstance(batch_size, str):
        return None  # "auto:N" and "max:N" already follow each System's atom count
    if isinstance(batch_size, (int, np.integer)):
        return auto_batch_sizes(batch_size, natoms)
    sizes = [int(b) for b in batch_size]
    if len(sizes) == len(unit_of):
        return sizes
    if len(sizes) != nunits:
        raise ConfigError(
            f"training_data.batch_size has {len(sizes)} entries but there are {nunits} systems "
            f"(read as {len(unit_of)}: mixed-type groups and compositions of one file count "
            "once); give one per system"
        )
    return [sizes[u] for u in unit_of]


class BatchSampler:
    """Draws (system index, frame indices) batches: a system by probability, then its next frames.

    Each system walks a shuffled permutation of its frames and reshuffles once exhausted; the
    last batch of an epoch is shorter unless drop_last. Deterministic given `rng`.
    """

    def __init__(
        self,
        systems_nframes: Sequence[int],
        natoms: Sequence[int],
        batch_size: int | str | Sequence[int] = "auto",
        auto_prob: str = "prob_sys_size",
        sys_probs: Sequence[float] | None = None,
        rng: np.random.Generator | None = None,
        drop_last: bool = False,
        shuffle: bool = True,
    ) -> None:
        self.nframes = [int(n) for n in systems_nframes]
        self.natoms = [int(n) for n in natoms]
        if not self.nframes:
            raise DataError("no data systems to sample from")
        if len(self.natoms) != len(self.nframes):
            raise DataError(
                f"{len(self.nframes)} systems but {len(self.natoms)} atom counts were given"
            )
        for ii, (nf, na) in enumerate(zip(self.nframes, self.natoms, strict=True)):
            if nf <= 0:
                raise DataError(f"system {ii} has no frames")
            if na <= 0:
                raise DataError(f"system {ii} has no atoms")
        self.batch_sizes = auto_batch_sizes(batch_size, self.natoms)
        is_rule = isinstance(batch_size, str)
        for ii, (bs, nf) in enumerate(zip(self.batch_sizes, self.nframes, strict=True)):
            if bs > nf and (not is_rule or drop_last):
                raise DataError(
                    f"system {ii}: batch size {bs} is larger than its {nf} frames; lower "
                    "training_data.batch_size, use 'auto', or add frames"
                )
        self.drop_last = bool(drop_last)
        self.shuffle = bool(shuffle)
        self.nbatches = [
            nf // bs if self.drop_last else -(-nf // bs)
            for nf, bs in zip(self.nframes, self.batch_sizes, strict=True)
        ]
        self.probs = system_probabilities(self.nbatches, auto_prob, sys_probs)
        self.rng = rng if rng is not None else np.random.default_rng()
        self._perms: list[np.ndarray | None] = [None] * len(self.nframes)
        self._cursors = [0] * len(self.nframes)

    @property
    def nsystems(self) -> int:
        """Number of systems."""
        return len(self.nframes)

    def _epoch(self, sys_idx: int) -> np.ndarray:
        n = self.nframes[sys_idx]
        return self.rng.permutation(n) if self.shuffle else np.arange(n)

    def next_in_system(self, sys_idx: int) -> np.ndarray:
        """The next batch of frame indices of system `sys_idx` (a new shuffled epoch when done)."""
        bs = min(self.batch_sizes[sys_idx], self.nframes[sys_idx])
        perm = self._perms[sys_idx]
        cur = self._cursors[sys_idx]
        n = self.nframes[sys_idx]
        if perm is None or cur >= n or (self.drop_last and cur + bs > n):
            perm = self._epoch(sys_idx)
            cur = 0
            self._perms[sys_idx] = perm
        frames = perm[cur : cur + bs]
        self._cursors[sys_idx] = cur + len(frames)
        return frames.copy()

    def next(self) -> tuple[int, np.ndarray]:
        """A system drawn with `probs`, then its next batch of frame indices."""
        sys_idx = int(self.rng.choice(self.nsystems, p=self.probs))
        return sys_idx, self.next_in_system(sys_idx)

    def __iter__(self) -> BatchSampler:
        return self

    def __next__(self) -> tuple[int, np.ndarray]:
        return self.next()

    def state(self) -> dict[str, Any]:
        """Plain python values (RNG state, permutations, cursors) to resume the same sequence."""
        return {
            "rng": copy.deepcopy(self.rng.bit_generator.state),
            "perms": [None if p is None else [int(i) for i in p] for p in self._perms],
            "cursors": list(self._cursors),
        }

    def set_state(self, state: dict[str, Any]) -> None:
        """Restore what `state()` returned; the following batches repeat the saved run bitwise."""
        perms = state["perms"]
        cursors = state["cursors"]
        if len(perms) != self.nsystems or len(cursors) != self.nsystems:
            raise DataError(
                f"sampler state holds {len(perms)} systems but this sampler has {self.nsystems}"
            )
        for ii, p in enumerate(perms):
            if p is not None and len(p) != self.nframes[ii]:
                raise DataError(
                    f"sampler state: system {ii} had {len(p)} frames, now {self.nframes[ii]}"
                )
        self.rng.bit_generator.state = copy.deepcopy(state["rng"])
        self._perms = [None if p is None else np.asarray(p, dtype=np.int64) for p in perms]
        self._cursors = [int(c) for c in cursors]


def validation_batches(sampler: BatchSampler, numb_btch: int = 1) -> list[tuple[int, np.ndarray]]:
    """The `numb_btch` batches of one validation pass, drawn from the validation data's sampler.

    As in DeePMD-kit, each pass takes the next numb_btch batches of that sampler (random systems).
    """
    if int(numb_btch) <= 0:
        raise ConfigError(f"validation_data.numb_btch must be positive, got {numb_btch}")
    return [sampler.next() for _ in range(int(numb_btch))]
