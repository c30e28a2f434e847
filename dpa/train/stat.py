"""Data statistics taken once at training start: descriptor davg/dstd (spec §2.6) and the energy
bias out_bias (spec §8.3), both computed from frames of the training systems with NumPy.

Which frames: DeePMD-kit packs ``data_stat_nbatch`` batches per system from a *shuffled* data
loader, so its choice depends on torch's global RNG. For a reproducible result this module takes,
from every system, its **first** ``nbatch * batch_size`` frames (all frames if it has fewer), see
:func:`stat_frames`. Given the same frames the numbers agree with DeePMD-kit 3.2.0 to round-off
(checked against the oracle fixture in ``tests/fixtures/stat``).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import numpy as np

from dpa.data.system import System
from dpa.dpmodel.descriptor.protocol import EnvBlock
from dpa.dpmodel.descriptor.registry import kind_of
from dpa.dpmodel.env_mat import environment_matrix
from dpa.dpmodel.model import edge_vectors
from dpa.errors import ConfigError, DataError
from dpa.neighbor import build_neighbor_list, fold_pair_exclusion

__all__ = [
    "EnvBlock",
    "compute_env_statistics",
    "compute_parameter_statistics",
    "pooled_parameter_statistics",
    "env_blocks",
    "fit_energy_bias",
    "fit_energy_bias_and_std",
    "set_energy_bias",
    "stat_frames",
]

STD_PROTECTION = 1e-2  # a std below this is replaced by it (DeePMD-kit `compute_std`)
STD_NO_DATA = 1e-1  # std of a center type with no atoms in the sampled frames
# frames are processed in chunks of at most this many (frame, atom, slot) entries
_CHUNK_ENTRIES = 4_000_000


def env_blocks(desc: dict) -> list[EnvBlock]:
    """Every env-mat block of a serialized descriptor with its own rcut/rcut_smth/sel (spec §2.6)."""
    return kind_of(desc).stat_blocks(desc)


def stat_frames(
    systems: Sequence[System], nbatch: int | None, batch_size: int | Sequence[int] = 1
) -> list[System]:
    """The frames used for statistics: the first `nbatch * batch_size` of each system (all if None).

    `batch_size` is one number or one per system; this replaces DeePMD-kit's shuffled batches by a
    deterministic choice of the same size.
    """
    sizes = (
        [int(batch_size)] * len(systems)
        if isinstance(batch_size, int | np.integer)
        else [int(b) for b in batch_size]
    )
    if len(sizes) != len(systems):
        raise ConfigError(f"got {len(sizes)} batch sizes for {len(systems)} systems")
    if nbatch is None:
        return list(systems)
    if nbatch < 1 or min(sizes, default=1) < 1:
        raise ConfigError(f"nbatch and batch_size must be positive, got {nbatch}, {sizes}")
    return [s.frames(slice(0, nbatch * b)) for s, b in zip(systems, sizes, strict=True)]


def _exclusion_pairs(model_tree: dict) -> list[list[int]]:
    """Descriptor `exclude_types` and model `pair_exclude_types`: both make a slot count as 0."""
    pairs = list(model_tree["descriptor"].get("exclude_types") or [])
    pairs += list(model_tree.get("pair_exclude_types") or [])
    return [[int(a), int(b)] for a, b in pairs]


def _block_moments(
    block: EnvBlock,
    systems: Sequence[System],
    type_map: list[str],
    pairs: list[list[int]],
    cache: Any = None,
) -> np.ndarray:
    """(ntypes, 2, 3) sums [count, Σx, Σx²] per center type of the radial (0) and angular (1)
    R̃: each system's own sums (from `cache`, a `StatCache`, where it has them), added up."""
    ntypes = len(type_map)
    moments = np.zeros((ntypes, 2, 3))
    for system in systems:
        if cache is None:
            moments += _system_moments(block, system, type_map, pairs)
            continue
        from .stat_cache import entry_key

        key = entry_key(block, system, type_map, pairs)
        moments += cache.moments(key, lambda s=system: _system_moments(block, s, type_map, pairs))
    return moments


def _system_moments(
    block: EnvBlock, system: System, type_map: list[str], pairs: list[list[int]]
) -> np.ndarray:
    """The sums of `_block_moments` over one system's frames."""
    ntypes = len(type_map)
    moments = np.zeros((ntypes, 2, 3))
    atype = system.remap_types(type_map)
    nat = atype.shape[0]
    onehot = (atype[:, None] == np.arange(ntypes)[None, :]).astype(np.float64)  # (nat, nt)
    step = max(1, _CHUNK_ENTRIES // max(1, nat * block.nsel))
    for start in range(0, system.nframes, step):
        coord = system.coord[start : start + step]
        box = None if system.box is None else system.box[start : start + step]
        nl = build_neighbor_list(coord, atype, box, block.rcut, block.sel, block.mixed_types)
        nlist, shift = fold_pair_exclusion(nl.nlist, nl.shift, atype, pairs, ntypes, False)
        rij = edge_vectors(coord, box, nlist, shift)
        # DeePMD-kit's statistics always use the polynomial switch (even with use_exp_switch)
        env, _ = environment_matrix(rij, nlist >= 0, block.rcut, block.rcut_smth, block.protection)
        nf = coord.shape[0]
        radial = env[..., 0]  # (nf, nat, nsel)
        angular = env[..., 1:]  # (nf, nat, nsel, 3)
        per_atom = np.stack(
            [
                radial.sum(axis=2),
                np.square(radial).sum(axis=2),
                angular.sum(axis=(2, 3)),
                np.square(angular).sum(axis=(2, 3)),
            ],
            axis=-1,
        ).sum(axis=0)  # (nat, 4): summed over frames
        sums = onehot.T @ per_atom  # (ntypes, 4)
        count = onehot.sum(axis=0) * nf * block.nsel  # slots per type, empty ones included
        moments[:, 0, 0] += count
        moments[:, 0, 1:] += sums[:, 0:2]
        moments[:, 1, 0] += 3.0 * count
        moments[:, 1, 1:] += sums[:, 2:4]
    return moments


def _std(count: np.ndarray, total: np.ndarray, squares: np.ndarray) -> np.ndarray:
    """sqrt(max(E[x²] − E[x]², 0)), floored at 0.01; 0.1 where there is no data."""
    n = np.where(count > 0, count, 1.0)
    mean = total / n
    std = np.sqrt(np.clip(squares / n - mean * mean, 0.0, None))
    std = np.where(np.abs(std) < STD_PROTECTION, STD_PROTECTION, std)
    return np.where(count > 0, std, STD_NO_DATA)


def _davg_dstd(block: EnvBlock, moments: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """davg = (μ_r, 0, 0, 0) and dstd = (σ_r, σ_a, σ_a, σ_a) for every slot, per center type."""
    ntypes = moments.shape[0]
    radial, angular = moments[:, 0], moments[:, 1]
    mu = np.where(radial[:, 0] > 0, radial[:, 1] / np.where(radial[:, 0] > 0, radial[:, 0], 1), 0)
    sigma_r = _std(*radial.T)
    sigma_a = _std(*angular.T)  # about the pooled angular mean, as DeePMD-kit does
    davg = np.zeros((ntypes, block.nsel, 4))
    dstd = np.empty((ntypes, block.nsel, 4))
    davg[:, :, 0] = mu[:, None]
    dstd[:, :, 0] = sigma_r[:, None]
    dstd[:, :, 1:] = sigma_a[:, None, None]
    return davg, dstd


def _node(desc: dict, path: tuple[str, ...]) -> dict:
    """The dict at `path` below the descriptor."""
    node = desc
    for key in path:
        node = node[key]
    return node


def compute_env_statistics(
    model_tree: dict,
    systems: Sequence[System],
    nbatch: int | None = 10,
    batch_size: int | Sequence[int] = 1,
    cache: Any = None,
) -> dict:
    """A copy of `model_tree` with davg/dstd of every descriptor env-mat block set from data.

    Uses the frames of :func:`stat_frames`; per spec §2.6 (set_davg_zero keeps davg, DPA-3 with
    fix_stat_std ≠ 0 gets davg 0 and dstd ≡ fix_stat_std, types absent from the data std 0.1).
    `cache` (a `stat_cache.StatCache`) supplies and keeps each system's sums.
    """
    tree = copy.deepcopy(model_tree)
    desc = tree["descriptor"]
    type_map = list(tree["type_map"])
    frames = stat_frames(systems, nbatch, batch_size)
    pairs = _exclusion_pairs(tree)
    for block in env_blocks(desc):
        var = _node(desc, block.path)
        old_avg, old_std = np.asarray(var["davg"]), np.asarray(var["dstd"])
        if old_avg.shape != (len(type_map), block.nsel, 4):
            raise ConfigError(
                f"descriptor {'.'.join(block.path)}.davg has shape {old_avg.shape}, expected "
                f"{(len(type_map), block.nsel, 4)}"
            )
        if block.fixed_std != 0.0:
            davg = np.zeros(old_avg.shape)
            dstd = np.full(old_std.shape, block.fixed_std)
        else:
            moments = _block_moments(block, frames, type_map, pairs, cache)
            davg, dstd = _davg_dstd(block, moments)
            if block.set_davg_zero:
                davg = old_avg
        var["davg"] = np.asarray(davg, dtype=old_avg.dtype)
        var["dstd"] = np.asarray(dstd, dtype=old_std.dtype)
    return tree


def compute_parameter_statistics(
    model_tree: dict,
    systems: Sequence[System],
    nbatch: int | None = 10,
    batch_size: int | Sequence[int] = 1,
) -> dict:
    """A copy of `model_tree` whose fitting normalizes fparam and aparam by their data
    statistics: avg = mean and inv_std = 1/std (floored at 0.01) per component, over the frames
    of :func:`stat_frames` (aparam over every atom of them), as DeePMD-kit's fitting
    `compute_input_stats`. Systems without the parameter (a default_fparam stands in) are left
    out; a model that takes neither is returned unchanged."""
    return pooled_parameter_statistics(model_tree, [(systems, batch_size, 1.0)], nbatch)


def pooled_parameter_statistics(
    model_tree: dict,
    parts: Sequence[tuple[Sequence[System], int | Sequence[int], float]],
    nbatch: int | None = 10,
) -> dict:
    """`compute_parameter_statistics` over several groups of systems, each group's count, sum
    and sum of squares scaled by its weight before they are added: the merge of a fitting
    shared by multi-task branches, weighted by p_branch / p_base as DeePMD-kit's."""
    fit = model_tree["fitting"]
    widths = {"fparam": int(fit.get("numb_fparam", 0)), "aparam": int(fit.get("numb_aparam", 0))}
    if not any(widths.values()):
        return model_tree
    tree = copy.deepcopy(model_tree)
    variables = tree["fitting"]["@variables"]
    groups = [(stat_frames(systems, nbatch, sizes), w) for systems, sizes, w in parts]
    for key, width in widths.items():
        if width == 0:
            continue
        count, total, squares = np.zeros(width), np.zeros(width), np.zeros(width)
        found = False
        for frames, weight in groups:
            values = [getattr(s, key) for s in frames if getattr(s, key) is not None]
            if not values:
                continue
            found = True
            rows = np.concatenate([v.reshape(-1, width) for v in values])
            count = count + float(rows.shape[0]) * weight
            total = total + rows.sum(axis=0) * weight
            squares = squares + np.square(rows).sum(axis=0) * weight
        if not found:
            continue
        std = _std(count, total, squares)
        old = np.asarray(variables[f"{key}_avg"])
        variables[f"{key}_avg"] = (total / count).astype(old.dtype)
        variables[f"{key}_inv_std"] = (1.0 / std).astype(old.dtype)
    return tree


def _preset_bias(preset: Any, ntypes: int) -> np.ndarray:
    """Preset per-type energies (NaN where not preset) from `{"energy": [v or None, ...]}`."""
    out = np.full(ntypes, np.nan)
    if preset is None:
        return out
    values = preset.get("energy") if isinstance(preset, dict) else preset
    if values is None:
        return out
    if len(values) != ntypes:
        raise ConfigError(f"preset_out_bias has {len(values)} entries for {ntypes} types")
    for t, v in enumerate(values):
        if v is not None:
            out[t] = float(np.asarray(v, dtype=np.float64).reshape(-1)[0])
    return out


_TREE = object()  # "take it from the model tree"


def fit_energy_bias(
    model_tree: dict,
    systems: Sequence[System],
    nbatch: int | None = 10,
    batch_size: int | Sequence[int] = 1,
    predicted: Sequence[np.ndarray | None] | None = None,
    rcond: Any = _TREE,
    preset_out_bias: Any = _TREE,
) -> np.ndarray:
    """Per-type energy bias (ntypes,): least squares of frame energies on type counts (spec §8.3).

    The bias of :func:`fit_energy_bias_and_std`, which documents the arguments.
    """
    return fit_energy_bias_and_std(
        model_tree, systems, nbatch, batch_size, predicted, rcond, preset_out_bias
    )[0]


def fit_energy_bias_and_std(
    model_tree: dict,
    systems: Sequence[System],
    nbatch: int | None = 10,
    batch_size: int | Sequence[int] = 1,
    predicted: Sequence[np.ndarray | None] | None = None,
    rcond: Any = _TREE,
    preset_out_bias: Any = _TREE,
) -> tuple[np.ndarray, float]:
    """Per-type energy bias (ntypes,) fitted by least squares of frame energies on type counts
    (spec §8.3), and the std over frames of what the fit leaves (DeePMD-kit's `out_std`).

    Same frames as :func:`stat_frames`; systems without energy are skipped. `predicted` (one array
    of frame energies per system, aligned with its frames, or None) is subtracted first: the
    result is then the *change* of bias (fine-tuning "change-by-statistic"). `rcond` defaults to
    the tree's `rcond` (None: NumPy's machine-precision cut, as DeePMD-kit passes it).
    Types absent from the sampled frames (or in `atom_exclude_types`) get bias 0; types with a
    preset value (`preset_out_bias`, default the tree's) get exactly that value, as in DeePMD-kit.
    """
    type_map = list(model_tree["type_map"])
    ntypes = len(type_map)
    if rcond is _TREE:
        rcond = model_tree.get("rcond")
    if preset_out_bias is _TREE:
        preset_out_bias = model_tree.get("preset_out_bias")
    if predicted is not None and len(predicted) != len(systems):
        raise DataError(f"got {len(predicted)} predicted-energy arrays for {len(systems)} systems")
    frames = stat_frames(systems, nbatch, batch_size)
    excluded = [int(t) for t in model_tree.get("atom_exclude_types") or []]
    counts, energies = [], []
    for i, system in enumerate(frames):
        if system.energy is None:
            continue
        atype = system.remap_types(type_map)
        nc = np.bincount(atype, minlength=ntypes).astype(np.float64)
        nc[excluded] = 0.0
        energy = system.energy.copy()
        if predicted is not None and predicted[i] is not None:
            pred = np.asarray(predicted[i], dtype=np.float64).reshape(-1)
            if pred.shape[0] < system.nframes:
                raise DataError(
                    f"{system.path}: {pred.shape[0]} predicted energies for {system.nframes} frames"
                )
            energy = energy - pred[: system.nframes]
        counts.append(np.broadcast_to(nc, (system.nframes, ntypes)))
        energies.append(energy)
    if not energies:
        raise DataError("no sampled system has energy labels; cannot fit the energy bias")
    natoms = np.concatenate(counts)
    energy = np.concatenate(energies)
    preset = _preset_bias(preset_out_bias, ntypes)
    fixed = ~np.isnan(preset)
    if fixed.any():
        energy = energy - natoms[:, fixed] @ preset[fixed]
        natoms = natoms.copy()
        natoms[:, fixed] = 0.0
    bias = np.linalg.lstsq(natoms, energy[:, None], rcond=rcond)[0][:, 0]
    bias[~natoms.any(axis=0)] = 0.0  # exactly 0 for absent or excluded types
    # population std (ddof 0) of the residual, as DeePMD-kit's `compute_stats_from_redu`
    std = float(np.std(energy - natoms @ bias))
    bias[fixed] = preset[fixed]
    return bias, std


def set_energy_bias(model_tree: dict, bias: np.ndarray, add: bool = False) -> dict:
    """A copy of `model_tree` whose `@variables.out_bias` (1, ntypes, 1) holds `bias` (or += it)."""
    tree = dict(model_tree)
    variables = dict(tree.get("@variables") or {})
    bias = np.asarray(bias, dtype=np.float64).reshape(-1)
    ntypes = len(tree["type_map"])
    if bias.shape != (ntypes,):
        raise ConfigError(f"energy bias has shape {bias.shape}, expected ({ntypes},)")
    old = np.asarray(variables.get("out_bias", np.zeros((1, ntypes, 1))), dtype=np.float64)
    new = old.copy()
    new[0, :, 0] = old[0, :, 0] + bias if add else bias
    variables["out_bias"] = new
    tree["@variables"] = variables
    return tree
