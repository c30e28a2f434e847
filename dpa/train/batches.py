"""Training data as model-ready batches: systems with types remapped onto the model's type_map,
labels with presence flags, and neighbor lists built by a background worker (off the hot path)."""

from __future__ import annotations

import json
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..data.batching import BatchSampler, unit_sampling
from ..data.deepmd_order import DeepmdOrder, LoaderLayout, deepmd_workers
from ..data.load import load_systems
from ..data.system import System, system_units
from ..dpmodel.batch import Batch
from ..dpmodel.deepmd_init import skip_seedless_network_draws
from ..errors import DataError
from ..model import Model
from ..potential import model_neighbor_list, slot_plan

LABELS = ("energy", "force", "virial", "atom_ener")


@dataclass
class LabelledBatch:
    """One training batch: the model's input, labels with find_* flags, and the atom count."""

    system: int
    frames: np.ndarray
    inputs: Batch
    labels: dict[str, np.ndarray]
    finds: dict[str, float]
    natoms: int


class DataSource:
    """The systems of one data section and a sampler over them."""

    def __init__(
        self,
        section: Any,
        type_map: list[str],
        seed: int | None,
        what: str,
        systems: list[System] | None = None,
    ) -> None:
        if systems is None:
            systems = load_systems(section.systems, section.fmt)
        self.what = what
        self.systems: list[System] = systems
        self.atypes = [s.remap_types(type_map) for s in systems]
        for system in systems:
            if all(getattr(system, key) is None for key in LABELS):
                raise DataError(
                    f"{system.path} ({what}): no energy, force, virial or atom_ener labels to train on"
                )
        nframes, natoms = [s.nframes for s in systems], [s.natoms for s in systems]
        batch_size, sys_probs = unit_sampling(
            system_units(systems),
            nframes,
            natoms,
            section.batch_size,
            section.auto_prob,
            section.sys_probs,
        )
        self.sampler: BatchSampler | DeepmdOrder = BatchSampler(
            nframes,
            natoms,
            batch_size,
            section.auto_prob,
            sys_probs,
            rng=np.random.default_rng(seed),
        )

    def layout(self) -> LoaderLayout | None:
        """The systems as DeePMD-kit's loader sees them; None when an input path was read as
        several systems (mixed-type groups, extxyz compositions), which it samples as one."""
        if len(system_units(self.systems)) != len(self.systems):
            return None
        nframes = [s.nframes for s in self.systems]
        return LoaderLayout(nframes, self.sampler.batch_sizes, list(self.sampler.probs))

    def state(self) -> str:
        """The sampler state as JSON (checkpoints restore it, so a restart draws the same)."""
        return json.dumps(self.sampler.state(), default=_plain)

    def set_state(self, text: str) -> None:
        self.sampler.set_state(json.loads(text))


def check_model_inputs(source: DataSource, model: Model) -> None:
    """Every system of `source` carries the frame and atomic parameters the model takes
    (`numb_fparam`, `numb_aparam`) with the model's widths; fparam may be missing where the
    model has a default_fparam. Raised before training starts, naming the system."""
    fit = model.tree["fitting"]
    needs = {"fparam": int(fit.get("numb_fparam", 0)), "aparam": int(fit.get("numb_aparam", 0))}
    for system in source.systems:
        for key, width in needs.items():
            value = getattr(system, key)
            if width == 0 or (value is None and key == "fparam" and _has_default_fparam(fit)):
                continue
            if value is None:
                raise DataError(
                    f"{system.path} ({source.what}): the model takes {key} ({width} per "
                    f"{'frame' if key == 'fparam' else 'atom'}) but the system has no {key}.npy; "
                    f"add {key}.npy to every set.* folder"
                    + (" or give the model a default_fparam" if key == "fparam" else "")
                )
            if value.shape[-1] != width:
                raise DataError(
                    f"{system.path} ({source.what}): {key}.npy holds {value.shape[-1]} values per "
                    f"{'frame' if key == 'fparam' else 'atom'} but the model's numb_{key} is "
                    f"{width}; make them agree"
                )


def _has_default_fparam(fit: dict) -> bool:
    return fit.get("default_fparam") is not None


def follow_deepmd_order(
    train: DataSource,
    valid: DataSource | None,
    seed: int,
    model_tree: dict,
    stat_nbatch: int | None,
    disp_freq: int,
    numb_btch: int,
) -> int | None:
    """Make `train` draw the batches `dp --pt train` draws for this input (see
    `dpa.data.deepmd_order`); its loader worker count, or None (order unchanged) when a data
    section has a path read as several systems. `stat_nbatch` is None when no statistics are
    computed; `model_tree` only needs the run's architecture."""
    train_layout = train.layout()
    valid_layout = None if valid is None else valid.layout()
    if train_layout is None or (valid is not None and valid_layout is None):
        return None
    workers = deepmd_workers()
    train.sampler = DeepmdOrder(
        train_layout,
        valid_layout,
        seed,
        workers,
        lambda gen: skip_seedless_network_draws(model_tree, gen),
        stat_nbatch,
        disp_freq,
        numb_btch,
    )
    return workers


def _plain(value: Any) -> Any:
    """NumPy scalars and arrays as JSON values."""
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"cannot store {type(value).__name__} in a checkpoint")


def batch_inputs(
    model: Model,
    coord: np.ndarray,
    atype: np.ndarray,
    box: np.ndarray | None,
    rounding: int,
    fparam: np.ndarray | None = None,
    aparam: np.ndarray | None = None,
) -> Batch:
    """What a trainer's step takes: the frames with the model's trimmed neighbor list
    (`rounding` is the trainer's `slot_rounding`) and the frame and atomic parameters the model
    takes (None where it takes none, or uses its default_fparam)."""
    nlist, shift = model_neighbor_list(model, coord, atype, box)
    nlist, shift, counts = slot_plan(model.neighbor_spec, coord, box, nlist, shift, rounding)
    fit = model.tree["fitting"]
    return Batch(
        coord=coord,
        atype=atype,
        nlist=nlist,
        shift=shift,
        box=box,
        fparam=fparam if fit.get("numb_fparam", 0) else None,
        aparam=aparam if fit.get("numb_aparam", 0) else None,
        slot_counts=counts,
    )


def make_batch(
    source: DataSource, index: int, frames: np.ndarray, model: Model, rounding: int
) -> LabelledBatch:
    """Inputs (see `batch_inputs`) and labels of `frames` of a system."""
    system = source.systems[index]
    atype = source.atypes[index]
    coord = system.coord[frames]
    box = None if system.box is None else system.box[frames]
    fparam = None if system.fparam is None else system.fparam[frames]
    aparam = None if system.aparam is None else system.aparam[frames]
    inputs = batch_inputs(model, coord, atype, box, rounding, fparam, aparam)
    nf, nat = coord.shape[:2]
    shapes = {"energy": (nf,), "force": (nf, nat, 3), "virial": (nf, 3, 3), "atom_ener": (nf, nat)}
    labels, finds = {}, {}
    for key in LABELS:
        value = getattr(system, key)
        finds[f"find_{key}"] = 0.0 if value is None else 1.0
        labels[key] = np.zeros(shapes[key]) if value is None else value[frames].reshape(shapes[key])
    return LabelledBatch(index, frames, inputs, labels, finds, nat)


class Prefetcher:
    """Draws batches in sampler order and builds them `depth` steps ahead in a worker thread."""

    def __init__(self, source: DataSource, model: Model, rounding: int, depth: int = 2) -> None:
        self.source, self.model, self.rounding = source, model, rounding
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="dpa-batches")
        self.queue: deque[tuple[dict, Future]] = deque()
        self.depth = depth

    def _submit(self) -> None:
        state = self.source.state()  # the sampler state before this draw, for checkpoints
        index, frames = self.source.sampler.next()
        job = self.pool.submit(make_batch, self.source, index, frames, self.model, self.rounding)
        self.queue.append((state, job))

    def next(self) -> LabelledBatch:
        """The next batch in sampler order."""
        while len(self.queue) < self.depth + 1:
            self._submit()
        return self.queue.popleft()[1].result()

    def resume_state(self) -> str:
        """The sampler state that draws the next batch `next` returns (for checkpoints)."""
        return self.queue[0][0] if self.queue else self.source.state()

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)
