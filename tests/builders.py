"""Builders shared by the test files: paths, backends, small model configs, systems and data
folders (plain functions and constants; the fixtures that hand some of them out are in
conftest.py).

Systems typed against TYPE_MAP = ["O", "H", "C"], the DeePMD-kit fixtures' type map:

* ``water``: frame 0 of ../shared/data/water/data_0 (192 atoms, cubic box);
* ``skewed``: 6 atoms in a small triclinic cell (2 frames); the shortest face distance is below
  4 Å, so with rcut = 4 an atom sees several images of the same atom and images of itself;
* ``molecule``: frames 0 and 1 of ../shared/data/molecules_nopbc/C1H4O2, no box.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import pathlib
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

import dpa

# ---------------------------------------------------------------------------------------------
# Paths

ROOT = Path(__file__).resolve().parents[1]  # the repository
EXAMPLES = ROOT / "examples"
WATER = EXAMPLES / "data" / "water"  # bundled: 8 frames of 192-atom water, type_map O H
FIXTURES = ROOT / "tests" / "fixtures"
DEEPMD_FIXTURES = FIXTURES / "deepmd"  # DeePMD-kit written models (se_e2_a, DPA-1)
LAM_FIXTURES = FIXTURES / "deepmd_lam"  # DeePMD-kit written models (DPA-2, DPA-3)
DATA = ROOT.parent / "shared" / "data"  # real DFT data shared by the projects
needs_data = pytest.mark.skipif(not DATA.is_dir(), reason=f"shared data not found at {DATA}")
TYPE_MAP = ["O", "H", "C"]

# ---------------------------------------------------------------------------------------------
# Backends

EVAL_BACKENDS = ("numpy", "torch", "jax")  # every backend that evaluates any model file
FORCE_BACKENDS = ("torch", "jax")  # the evaluation backends that compute forces
TRAIN_BACKENDS = ("torch", "jax")  # the backends that train
_EVAL_NEEDS = {"numpy": "numpy", "torch": "torch", "jax": "jax"}
_TRAIN_NEEDS = {"torch": "torch", "jax": "optax"}  # jax training needs optax too


def installed(backend: str) -> bool:
    """Whether the framework an evaluation backend runs on can be imported."""
    return importlib.util.find_spec(_EVAL_NEEDS.get(backend, backend)) is not None


def skip_unless_installed(backend: str, training: bool = False) -> None:
    """Skip the calling test when the backend (for training: its optimizer too) is missing."""
    pytest.importorskip(_EVAL_NEEDS.get(backend, backend))
    if training:
        pytest.importorskip(_TRAIN_NEEDS[backend])


@contextlib.contextmanager
def xla_optimizations_off():
    """Compile jax functions with most of XLA's optimization passes off, within the block.

    A tiny model's jax compilation costs 2-5 s with XLA's optimizations, about half without;
    fusion changes round-off only (far below the tests' tolerances). Not for large models,
    whose unoptimized programs run slower than they compile faster, nor (jaxlib 0.10.2) for
    float32 DPA-2 gradients, which then come out NaN on XLA:CPU. Nothing changes where jax is
    not installed or no longer has the option.
    """
    if importlib.util.find_spec("jax") is None:
        yield
        return
    import jax

    try:
        previous = jax.config.read("jax_disable_most_optimizations")
    except (AttributeError, KeyError):  # option gone in this jax: compile with the defaults
        yield
        return
    jax.config.update("jax_disable_most_optimizations", True)
    try:
        yield
    finally:
        jax.config.update("jax_disable_most_optimizations", previous)


def make_trainer(backend: str, tree: dict, torch_device: str | None = None, **options):
    """A TorchTrainer or JaxTrainer of `tree` (skips when the backend is missing)."""
    skip_unless_installed(backend, training=True)
    if backend == "torch":
        from dpa.backends.torch.train import TorchTrainer

        return TorchTrainer(tree, device=torch_device, **options)
    from dpa.backends.jax.train import JaxTrainer

    return JaxTrainer(tree, **options)


# ---------------------------------------------------------------------------------------------
# Small model sections (the sizes the tests use; everything else at its default)


def se_e2_a(sel: list[int] | str, rcut: float = 4.0, **options: object) -> dict:
    """A small se_e2_a descriptor: embedding [4, 8], axis_neuron 4, rcut_smth 0.5."""
    base = {"rcut_smth": 0.5, "neuron": [4, 8], "axis_neuron": 4}
    return {"type": "se_e2_a", "sel": sel, "rcut": rcut, **base, **options}


def dpa1(sel: int, rcut: float = 4.0, **options: object) -> dict:
    """A small DPA-1 descriptor: embedding [4, 8], axis_neuron 4, one attention layer of 8."""
    base = {"rcut_smth": 0.5, "neuron": [4, 8], "axis_neuron": 4, "attn": 8, "attn_layer": 1}
    return {"type": "dpa1", "sel": sel, "rcut": rcut, **base, **options}


def dpa2(nsel: int, rcut: float = 4.0, **options: object) -> dict:
    """A small DPA-2 descriptor: repinit (rcut, nsel) and one repformer layer within 3 Å."""
    return {
        "type": "dpa2",
        "repinit": {
            "rcut": rcut,
            "rcut_smth": 0.5,
            "nsel": nsel,
            "neuron": [4, 8],
            "axis_neuron": 4,
            "tebd_dim": 4,
        },
        "repformer": {
            "rcut": 3.0,
            "rcut_smth": 2.5,
            "nsel": 24,
            "nlayers": 1,
            "g1_dim": 8,
            "g2_dim": 4,
            "attn2_hidden": 4,
            "attn2_nhead": 1,
            "axis_neuron": 2,
        },
        **options,
    }


def dpa3(e_sel: int, rcut: float = 4.0, **options: object) -> dict:
    """A small DPA-3 descriptor: one repflow layer (edges within rcut, angles within 3 Å)."""
    return {
        "type": "dpa3",
        "repflow": {
            "n_dim": 8,
            "e_dim": 4,
            "a_dim": 4,
            "nlayers": 1,
            "e_rcut": rcut,
            "e_rcut_smth": 3.5,
            "e_sel": e_sel,
            "a_rcut": 3.0,
            "a_rcut_smth": 2.5,
            "a_sel": 12,
            "axis_neuron": 2,
            "update_angle": True,
        },
        **options,
    }


def model_config(
    descriptor: dict, type_map: list[str] | None = None, neuron: list[int] | None = None
) -> dict:
    """A model section: `descriptor`, a fitting net of `neuron` (default [8, 8]) and the type
    map (default O, H: the water data's)."""
    return {
        "type_map": list(type_map or ["O", "H"]),
        "descriptor": descriptor,
        "fitting_net": {"neuron": list(neuron or [8, 8])},
    }


# ---------------------------------------------------------------------------------------------
# Systems


@dataclass(frozen=True)
class System:
    """Inputs of one evaluation: coord (nf, nat, 3), atype (nat,), box (nf, 3, 3) or None."""

    name: str
    coord: np.ndarray
    atype: np.ndarray
    box: np.ndarray | None


def npy_frames(
    subfolder: str, nframes: int, type_map: list[str] | None = TYPE_MAP
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """(coord (nf, nat, 3), atype, box (nf, 3, 3) or None) of the first `nframes` frames of a
    deepmd/npy system in ../shared/data, read straight from its files (skip if absent); atype
    as indices into `type_map` (through the system's type_map.raw), or as in type.raw for None.
    The box is read unless the folder has a `nopbc` file."""
    folder = DATA / subfolder
    if not folder.is_dir():
        pytest.skip(f"shared data not found at {folder}")
    atype = np.loadtxt(folder / "type.raw", dtype=np.int64, ndmin=1)
    if type_map is not None:
        names = (folder / "type_map.raw").read_text().split()
        atype = np.array([type_map.index(names[t]) for t in atype], dtype=np.int64)
    coord = np.load(folder / "set.000" / "coord.npy")[:nframes].astype(np.float64)
    coord = coord.reshape(-1, len(atype), 3)
    box = None
    if not (folder / "nopbc").exists():
        box = np.load(folder / "set.000" / "box.npy")[:nframes].astype(np.float64)
        box = box.reshape(-1, 3, 3)
    return coord, atype, box


def water_system() -> System:
    return System("water", *npy_frames("water/data_0", 1))


def molecule_system() -> System:
    return System("molecule", *npy_frames("molecules_nopbc/C1H4O2", 2))


SKEWED_RCUT = 4.0


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


SYSTEM_MAKERS = {"water": water_system, "skewed": skewed_system, "molecule": molecule_system}
SYSTEM_NAMES = tuple(SYSTEM_MAKERS)

# five atoms (O H H C O) in a 5 Å cubic box: the smallest input of the error and check tests
CLUSTER_COORD = np.array(
    [[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 1.1, 0.0], [0.0, 0.0, 1.2], [1.3, 1.0, 0.2]]
)
CLUSTER_ATYPE = np.array([0, 1, 1, 2, 0])
CLUSTER_BOX = np.eye(3) * 5.0


def water_frames(
    nframes: int = 1, type_map: list[str] | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(coord, atype, box) of the first frames of the bundled water data; atype as the data
    types it (O 0, H 1), or as indices into `type_map`."""
    from dpa.data import load_system

    system = load_system(WATER)
    atype = system.atype if type_map is None else system.remap_types(type_map)
    return system.coord[:nframes], atype, system.box[:nframes]


def neighbor_edges(coord, atype, box, rcut: float, sel: list[int], mixed: bool = True):
    """(Edges of the full-width neighbor list, the NeighborList) of frames (nf, nat, 3)."""
    from dpa.dpmodel.descriptor.common import Edges
    from dpa.dpmodel.model import edge_vectors
    from dpa.neighbor import build_neighbor_list

    nl = build_neighbor_list(coord, atype, box, rcut, sel, mixed)
    rij = edge_vectors(coord, box, nl.nlist, nl.shift)
    return Edges(rij, nl.nlist, atype, atype), nl


# ---------------------------------------------------------------------------------------------
# Data folders


def write_npy_system(
    folder: Path,
    type_raw: str,
    arrays: dict[str, np.ndarray],
    type_map: list[str] | str | None = None,
) -> Path:
    """A deepmd/npy system in `folder`: type.raw holding `type_raw`, type_map.raw (if given; a
    string is written as it is) and set.000/<key>.npy for each of `arrays`, as given."""
    (folder / "set.000").mkdir(parents=True)
    (folder / "type.raw").write_text(type_raw)
    if type_map is not None:
        text = type_map if isinstance(type_map, str) else "".join(f"{t}\n" for t in type_map)
        (folder / "type_map.raw").write_text(text)
    for key, value in arrays.items():
        np.save(folder / "set.000" / f"{key}.npy", value)
    return folder


def writable_copy(src: Path, tmp_path: Path, name: str = "sys") -> Path:
    """A writable copy of the system folder `src` as tmp_path / name (to damage or extend)."""
    dst = tmp_path / name
    shutil.copytree(src, dst)
    for f in dst.rglob("*"):
        f.chmod(0o755 if f.is_dir() else 0o644)
    dst.chmod(0o755)
    return dst


def water_section(**options: object) -> dict:
    """A training/validation data section over the bundled water frames, batch size 1."""
    return {"systems": [str(WATER)], "batch_size": 1, **options}


def write_small_input(
    tmp: Path, type_map: list[str], training: dict, steps: int, disp_freq: int, save_freq: int
) -> Path:
    """Write input.json in `tmp`: a small se_e2_a (fast: rcut 4, tiny nets) with auto sel, exp
    lr 1e-3 -> 1e-5, energy+force loss, seed 3; `training` adds to (or overrides) the training
    section."""
    config = {
        "model": {
            "type_map": type_map,
            "descriptor": {
                "type": "se_e2_a",
                "sel": "auto",
                "rcut": 4.0,
                "rcut_smth": 0.5,
                "neuron": [4, 8],
                "axis_neuron": 4,
                "seed": 1,
            },
            "fitting_net": {"neuron": [8, 8], "seed": 1},
        },
        "learning_rate": {"start_lr": 1e-3, "stop_lr": 1e-5, "decay_steps": 4},
        "loss": {"start_pref_e": 0.02, "limit_pref_e": 1, "start_pref_f": 1000, "limit_pref_f": 1},
        "training": {
            "numb_steps": steps,
            "seed": 3,
            "disp_freq": disp_freq,
            "save_freq": save_freq,
            **training,
        },
    }
    path = tmp / "input.json"
    path.write_text(json.dumps(config))
    return path


def read_lcurve(path: Path) -> np.ndarray:
    """A learning curve as numbers, one row per logged step (the # header skipped)."""
    return np.loadtxt(path, comments="#", ndmin=2)


# ---------------------------------------------------------------------------------------------
# Model trees


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


def random_model(config: dict, seed: int = 0, physical: bool = True) -> dpa.Model:
    """dpa.build_model over TYPE_MAP (config without type_map), then randomize_statistics."""
    model = dpa.build_model({"type_map": list(TYPE_MAP), **config}, seed=seed)
    return randomize_statistics(model, seed + 1000, physical)


# The smooth water model of the MD tests (test_md.py, test_tf_md.py).
#
# A float64 se_e2_a model with the water data's env-matrix statistics, constant embedding nets
# and a linear fitting: each atomic energy is a positive quadratic form of the atom's summed,
# normalized environment matrix (a smooth many-body repulsion around the data's density, bounded
# below), scaled to an RMS force of 0.3 eV/Å on the data, with the energy bias fitted to the
# data. Energy conservation needs a smooth model whose forces are exactly -dE/dx, not an
# accurate one; it is built, not trained (training takes minutes).
SMOOTH_WATER = {
    "type_map": ["O", "H"],
    "descriptor": {
        "type": "se_e2_a",
        "sel": [46, 92],
        "rcut": 6.0,
        "rcut_smth": 0.5,
        "neuron": [2, 4],
        "axis_neuron": 2,
        "precision": "float64",
    },
    "fitting_net": {"neuron": [], "precision": "float64"},
}


def smooth_water_model(water) -> dpa.Model:
    """The model described above, its statistics taken from `water` (a dpa.data.System)."""
    from dpa.train.stat import compute_env_statistics, fit_energy_bias, set_energy_bias

    model = dpa.build_model(SMOOTH_WATER, seed=0)
    tree = compute_env_statistics(model.tree, [water], nbatch=None)
    for net in tree["descriptor"]["embeddings"]["networks"]:  # G(s) = tanh(1): constant
        for k, layer in enumerate(net["layers"]):
            layer["@variables"]["w"][:] = 0.0
            layer["@variables"]["b"][:] = 1.0 if k == 0 else 0.0
    for net in tree["fitting"]["nets"]["networks"]:  # E_i = sum of the descriptor's entries
        layer = net["layers"][-1]["@variables"]
        layer["w"][:] = 1.0
        layer["b"][:] = 0.0
    tree["fitting"]["@variables"]["bias_atom_e"][:] = 0.0
    model = dpa.Model({**model.data, "model": tree})
    atype = water.remap_types(model.type_map)
    pot = dpa.load_model(model, backend="jax")
    force = pot.evaluate(water.coord[:1], atype, water.box[:1])["force"]
    for net in tree["fitting"]["nets"]["networks"]:  # energy is linear in w: scale the forces
        net["layers"][-1]["@variables"]["w"] *= 0.3 / np.sqrt(np.mean(force**2))
    predicted = dpa.load_model(model, backend="numpy").evaluate(water.coord, atype, water.box)
    bias = fit_energy_bias(tree, [water], nbatch=None, predicted=[predicted["energy"]])
    return dpa.Model({**model.data, "model": set_energy_bias(tree, bias)})


# ---------------------------------------------------------------------------------------------
# Hostile files


class Payload:
    """Unpickling this object creates the file `marker` (it runs Path.touch): proof that code
    from a file ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (pathlib.Path.touch, (self.marker,))
