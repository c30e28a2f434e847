"""Shared test systems and model helpers (fixtures only; nothing here is a test).

Systems (all typed against TYPE_MAP = ["O", "H", "C"], the DeePMD-kit fixtures' type map):

* ``water``: frame 0 of ../shared/data/water/data_0 (192 atoms, cubic box);
* ``skewed``: 6 atoms in a small triclinic cell (2 frames); the shortest face distance is below
  4 Å, so with rcut = 4 an atom sees several images of the same atom and images of itself;
* ``molecule``: frames 0 and 1 of ../shared/data/molecules_nopbc/C1H4O2, no box.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

import dpa

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
TYPE_MAP = ["O", "H", "C"]
SKEWED_RCUT = 4.0


@dataclass(frozen=True)
class System:
    """Inputs of one evaluation: coord (nf, nat, 3), atype (nat,), box (nf, 3, 3) or None."""

    name: str
    coord: np.ndarray
    atype: np.ndarray
    box: np.ndarray | None


def _remap(folder: Path) -> np.ndarray:
    """The system's type.raw as indices into TYPE_MAP (through its own type_map.raw)."""
    names = (folder / "type_map.raw").read_text().split()
    local = np.loadtxt(folder / "type.raw", dtype=np.int64, ndmin=1)
    return np.array([TYPE_MAP.index(names[t]) for t in local], dtype=np.int64)


def _shared_system(name: str, subfolder: str, nframes: int, periodic: bool) -> System:
    """The first `nframes` frames of a deepmd/npy system in ../shared/data (skip if absent)."""
    folder = DATA / subfolder
    if not folder.is_dir():
        pytest.skip(f"shared data not found at {folder}")
    coord = np.load(folder / "set.000" / "coord.npy")[:nframes]
    coord = coord.reshape(nframes, -1, 3).astype(np.float64)
    box = None
    if periodic:
        box = np.load(folder / "set.000" / "box.npy")[:nframes]
        box = box.reshape(nframes, 3, 3).astype(np.float64)
    return System(name, coord, _remap(folder), box)


def water_system() -> System:
    return _shared_system("water", "water/data_0", 1, periodic=True)


def molecule_system() -> System:
    return _shared_system("molecule", "molecules_nopbc/C1H4O2", 2, periodic=False)


def _face_distances(box: np.ndarray) -> np.ndarray:
    vol = abs(np.linalg.det(box))
    return np.array([vol / np.linalg.norm(np.cross(box[k - 2], box[k - 1])) for k in range(3)])


def _min_image_distance(coord: np.ndarray, box: np.ndarray) -> float:
    """Shortest distance between two distinct sites, periodic images included."""
    shifts = np.array([[i, j, k] for i in (-1, 0, 1) for j in (-1, 0, 1) for k in (-1, 0, 1)])
    images = shifts @ box
    d = coord[None, :, None, :] + images[None, None] - coord[:, None, None, :]
    r = np.linalg.norm(d, axis=-1)
    nat = coord.shape[0]
    r[np.arange(nat), np.arange(nat), 13] = np.inf  # shift (0, 0, 0) of an atom with itself
    return float(r.min())


def skewed_system() -> System:
    """6 atoms (O O H H H C) in a triclinic cell; 2 frames (the second one strained)."""
    rng = np.random.default_rng(20240611)
    box0 = np.array([[3.4, 0.0, 0.0], [1.3, 3.2, 0.0], [-0.7, 0.9, 3.1]])
    atype = np.array([0, 0, 1, 1, 1, 2], dtype=np.int64)
    frames, boxes = [], []
    for strain in (np.zeros((3, 3)), rng.uniform(-0.04, 0.04, (3, 3))):
        box = box0 @ (np.eye(3) + strain).T
        while True:
            frac = rng.uniform(-0.2, 1.2, (6, 3))  # some atoms outside the cell
            coord = frac @ box
            if _min_image_distance(coord, box) > 1.0:
                break
        frames.append(coord)
        boxes.append(box)
    box = np.stack(boxes)
    assert all(_face_distances(b).min() < SKEWED_RCUT for b in box)
    return System("skewed", np.stack(frames), atype, box)


_MAKERS = {"water": water_system, "skewed": skewed_system, "molecule": molecule_system}
SYSTEM_NAMES = tuple(_MAKERS)


@pytest.fixture(scope="session")
def get_system():
    """get_system(name) -> System, cached per session (skips if the shared data is missing)."""
    cache: dict[str, System] = {}

    def get(name: str) -> System:
        if name not in cache:
            cache[name] = _MAKERS[name]()
        return cache[name]

    return get


def env_statistics(node: object) -> list[dict]:
    """Every `@variables` dict holding davg/dstd in a descriptor tree (one per env-mat block)."""
    found = []
    if isinstance(node, dict):
        var = node.get("@variables")
        if isinstance(var, dict) and "davg" in var:
            found.append(var)
        for key, value in node.items():
            if key != "@variables":
                found += env_statistics(value)
    elif isinstance(node, list):
        for value in node:
            found += env_statistics(value)
    return found


def residual_vectors(node: object) -> list[list[np.ndarray]]:
    """The `*_residual` vector lists of res_residual layers (DPA-2 repformer, DPA-3 repflow)."""
    found = []
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "@variables" and isinstance(value, dict):
                found += [v for k, v in value.items() if k.endswith("_residual") and v]
            else:
                found += residual_vectors(value)
    elif isinstance(node, list):
        for value in node:
            found += residual_vectors(value)
    return found


def randomize_statistics(model: dpa.Model, seed: int, physical: bool = True) -> dpa.Model:
    """Give the statistics that a fresh model leaves trivial random values, in place.

    physical=True keeps the structure real statistics have (davg/dstd per type and component,
    the same for every slot; angular davg 0 and one dstd for x, y, z), which rotation invariance
    and smoothness need. physical=False draws every (type, slot, component) independently.
    """
    rng = np.random.default_rng(seed)
    tree = model.tree
    for stats in env_statistics(tree["descriptor"]):
        davg, dstd = stats["davg"], stats["dstd"]
        ntypes = davg.shape[0]
        if physical:
            radial = rng.uniform(0.05, 0.4, (ntypes, 1))
            scale = rng.uniform(0.5, 1.5, (ntypes, 2))
            davg[...] = 0.0
            davg[..., 0] = radial
            dstd[..., 0] = scale[:, :1]
            dstd[..., 1:] = scale[:, 1:, None]
        else:
            davg[...] = rng.normal(0.0, 0.3, davg.shape)
            dstd[...] = rng.uniform(0.5, 1.5, dstd.shape)
    for residuals in residual_vectors(tree["descriptor"]):
        for vector in residuals:
            vector[...] = rng.normal(0.0, 0.3, vector.shape)
    out_bias = tree["@variables"]["out_bias"]
    out_bias[...] = rng.normal(0.0, 1.0, out_bias.shape)
    fit = tree["fitting"]["@variables"]
    for key, value in fit.items():
        if value is None:
            continue
        if key.endswith("inv_std"):
            value[...] = rng.uniform(0.5, 2.0, value.shape)
        elif key.endswith("avg") or key == "bias_atom_e":
            value[...] = rng.normal(0.0, 0.5, value.shape)
    return model


@pytest.fixture(name="env_statistics", scope="session")
def env_statistics_fixture():
    """env_statistics(descriptor_tree) -> the davg/dstd `@variables` dicts of every block."""
    return env_statistics


@pytest.fixture(scope="session")
def make_model():
    """make_model(config_without_type_map, seed, physical) -> Model with random statistics."""

    def make(config: dict, seed: int = 0, physical: bool = True) -> dpa.Model:
        model = dpa.build_model({"type_map": list(TYPE_MAP), **config}, seed=seed)
        return randomize_statistics(model, seed + 1000, physical)

    return make
