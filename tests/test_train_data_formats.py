"""Training data beyond plain deepmd/npy: the deepmd/npy/mixed reader (split by composition,
padding dropped, types remapped, errors), dpdata formats chosen with `fmt` (vasp/outcar, extxyz
with several compositions), and one `dpa train` run over systems of different sizes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from builders import DATA, WATER, needs_data, read_lcurve, write_small_input

import dpa
from dpa.data import System, load_path, load_system, load_systems
from dpa.data.batching import unit_sampling
from dpa.data.system import system_units
from dpa.errors import ConfigError, DataError

OUTCAR = DATA / "vasp_OUTCAR"
MOLECULES = DATA / "molecules_nopbc"


# ---------------------------------------------------------------- writing test data


def _write_mixed(
    folder: Path,
    type_map: list[str],
    parts: list[tuple[System, list[int], int | None]],
    nslot: int,
    sets: list[list[int]] | None = None,
) -> Path:
    """A deepmd/npy/mixed folder from frames of Systems (in this order), each row padded to
    `nslot` slots with -1; a part's padding goes at slot `pad_at` (None: at the end). Padding
    slots hold junk coordinates and forces, so a reader that keeps them gives wrong numbers."""
    rows, coords, forces, energies, boxes = [], [], [], [], []
    for system, frames, pad_at in parts:
        types = np.array([type_map.index(e) for e in system.elements])
        npad = nslot - system.natoms
        at = system.natoms if pad_at is None else pad_at
        for f in frames:
            rows.append(np.insert(types, at, [-1] * npad))
            coords.append(np.insert(system.coord[f], at, np.full((npad, 3), 99.0), axis=0))
            forces.append(np.insert(system.force[f], at, np.full((npad, 3), 7.0), axis=0))
            energies.append(system.energy[f])
            boxes.append(None if system.box is None else system.box[f])
    folder.mkdir(parents=True)
    (folder / "type.raw").write_text("0\n" * nslot)  # a placeholder, as DeePMD-kit writes it
    (folder / "type_map.raw").write_text("\n".join(type_map) + "\n")
    periodic = boxes[0] is not None
    if not periodic:
        (folder / "nopbc").write_text("")
    nf = len(rows)
    for k, index in enumerate(sets or [list(range(nf))]):
        d = folder / f"set.{k:03d}"
        d.mkdir()
        np.save(d / "real_atom_types.npy", np.array(rows)[index])
        np.save(d / "coord.npy", np.array(coords)[index].reshape(len(index), -1))
        np.save(d / "force.npy", np.array(forces)[index].reshape(len(index), -1))
        np.save(d / "energy.npy", np.array(energies)[index])
        if periodic:
            np.save(d / "box.npy", np.array(boxes)[index].reshape(len(index), 9))
    return folder


def _synthetic(elements: list[str], nframes: int, seed: int, periodic: bool = False) -> System:
    """A labelled System of random numbers (exact float64 round trips through .npy)."""
    rng = np.random.default_rng(seed)
    names = sorted(set(elements))
    nat = len(elements)
    return System(
        path=f"synthetic{seed}",
        type_map=names,
        atype=[names.index(e) for e in elements],
        coord=rng.uniform(0, 5, (nframes, nat, 3)),
        box=np.tile(np.eye(3) * 9.0, (nframes, 1, 1)) if periodic else None,
        energy=rng.normal(-10, 1, nframes),
        force=rng.normal(0, 1, (nframes, nat, 3)),
    )


A_ELEMENTS = ["C", "H", "H", "H", "H", "O", "O"]  # 7 atoms
B_ELEMENTS = ["C", "C", "C", "C", "H", "H", "H", "O"]  # 8 atoms


def _mixed_ab(tmp_path: Path, **kw) -> tuple[Path, System, System]:
    """Frames A0 B0 A1 | B1 A2 over two sets, padded to 8 slots (A's padding mid-row), with
    a type_map.raw order that differs from the source's."""
    a, b = _synthetic(A_ELEMENTS, 3, seed=1, **kw), _synthetic(B_ELEMENTS, 2, seed=2, **kw)
    parts = [(a, [0], 3), (b, [0], None), (a, [1], 3), (b, [1], None), (a, [2], 3)]
    folder = _write_mixed(tmp_path / "mixed", ["H", "O", "C"], parts, 8, [[0, 1, 2], [3, 4]])
    return folder, a, b


# ---------------------------------------------------------------- deepmd/npy/mixed reader


def test_mixed_splits_by_composition_and_drops_padding(tmp_path):
    folder, a, b = _mixed_ab(tmp_path)
    sa, sb = load_systems(folder, fmt="deepmd/npy/mixed")
    assert sa.path == f"{folder}[group 0: H4O2C1]" and sb.path == f"{folder}[group 1: H3O1C4]"
    assert (sa.nframes, sa.natoms, sb.nframes, sb.natoms) == (3, 7, 2, 8)
    assert sa.type_map == sb.type_map == ["H", "O", "C"]
    assert sa.elements == A_ELEMENTS and sb.elements == B_ELEMENTS
    assert not sa.periodic and not sb.periodic
    # frames regrouped across sets in file order; values bitwise those of the source frames
    for got, src in ((sa, a), (sb, b)):
        np.testing.assert_array_equal(got.coord, src.coord)
        np.testing.assert_array_equal(got.force, src.force)
        np.testing.assert_array_equal(got.energy, src.energy)
        assert got.virial is None
    # types follow the model's type_map whatever type_map.raw's order
    model_types = ["O", "H", "C"]
    want = [model_types.index(e) for e in A_ELEMENTS]
    np.testing.assert_array_equal(sa.remap_types(model_types), want)
    assert [s.origin for s in (sa, sb)] == [(str(folder), 0), (str(folder), 1)]
    assert system_units([sa, sb]) == [[0, 1]]


def test_mixed_is_detected_without_fmt_and_in_parent_folders(tmp_path):
    folder, a, _ = _mixed_ab(tmp_path, periodic=True)
    for fmt in (None, "deepmd/npy", "npy"):  # real_atom_types.npy decides, as in DeePMD-kit
        systems = load_systems(folder, fmt=fmt)
        assert [s.natoms for s in systems] == [7, 8]
        np.testing.assert_array_equal(systems[0].box, a.box)
    # a parent folder is searched for systems; one composition alone keeps the plain name
    single = _write_mixed(tmp_path / "parent" / "one", ["C", "H", "O"], [(a, [0, 2], None)], 7)
    parent = load_systems(tmp_path / "parent", fmt="deepmd/npy/mixed")
    assert [s.path for s in parent] == [str(single)] and parent[0].origin is None
    np.testing.assert_array_equal(parent[0].coord, a.coord[[0, 2]])
    assert load_system(single).nframes == 2
    assert [s.natoms for s in load_path(folder)] == [7, 8]  # every system of one path
    with pytest.raises(DataError, match="holds 2 systems of different compositions"):
        load_system(folder)


def test_mixed_matches_dpdata(tmp_path):
    dpdata = pytest.importorskip("dpdata")
    if not DATA.is_dir():
        pytest.skip(f"shared data not found at {DATA}")
    mols = [
        dpdata.LabeledSystem(str(MOLECULES / n), fmt="deepmd/npy").sub_system(range(k))
        for n, k in (("C1H4O2", 3), ("C4H3O1", 2), ("C3H3O4", 2))
    ]
    dpdata.MultiSystems(*mols).to_deepmd_npy_mixed(str(tmp_path / "mix"), atom_numb_pad=8)
    ours = {s.formula: s for s in load_systems(tmp_path / "mix", fmt="deepmd/npy/mixed")}
    theirs = dpdata.MultiSystems().load_systems_from_file(
        str(tmp_path / "mix"), fmt="deepmd/npy/mixed"
    )
    assert sorted(ours) == ["C1H4O2", "C3H3O4", "C4H3O1"]
    assert len(theirs.systems) == 3
    for ref in theirs.systems.values():
        d = ref.data
        got = ours[dpa.data.system.formula(d["atom_types"], d["atom_names"])]
        assert got.elements == [d["atom_names"][t] for t in d["atom_types"]]
        np.testing.assert_allclose(got.coord, d["coords"], rtol=0, atol=1e-12)
        np.testing.assert_allclose(got.force, d["forces"], rtol=0, atol=1e-12)
        np.testing.assert_allclose(got.energy, d["energies"], rtol=0, atol=1e-12)


def _rewrite(file: Path, fn) -> None:
    """Replace the array in a .npy file by fn(array)."""
    np.save(file, fn(np.load(file)))


def test_mixed_errors_name_the_file_and_frame(tmp_path):
    folder, _, _ = _mixed_ab(tmp_path)
    real = folder / "set.001" / "real_atom_types.npy"
    original = np.load(real)

    def expect(match: str) -> None:
        with pytest.raises(DataError, match=match):
            load_systems(folder)
        np.save(real, original)

    _rewrite(real, lambda a: np.where(np.arange(a.size).reshape(a.shape) == 9, 5, a))
    expect(r"set\.001/real_atom_types\.npy: type 5 at frame 1, atom 1; expected 0\.\.2")
    _rewrite(real, lambda a: np.where(a == 0, -2, a))
    expect(r"set\.001/real_atom_types\.npy: type -2 at frame 0, atom 4")
    _rewrite(real, lambda a: a[:, :7])
    expect(r"set\.001/real_atom_types\.npy: rows have 7 types but type\.raw has 8 atom slots")
    _rewrite(real, lambda a: a[:1])
    expect(r"set\.001/real_atom_types\.npy: has 1 frames but set\.001/coord\.npy has 2")
    _rewrite(real, lambda a: np.where(np.arange(a.shape[0])[:, None] == 1, -1, a))
    expect(r"set\.001/real_atom_types\.npy: frame 1 has no real atom")
    _rewrite(real, lambda a: a + 0.5)
    expect(r"real_atom_types\.npy: holds float64 values, expected integer type indices")
    real.unlink()
    expect(r"set\.001: missing real_atom_types\.npy")
    for file in folder.glob("set.*/real_atom_types.npy"):
        file.unlink()
    with pytest.raises(DataError, match=r"no set\.\* folder holds real_atom_types\.npy, so this"):
        load_systems(folder, fmt="deepmd/npy/mixed")
    # without real_atom_types.npy anywhere the folder is plain deepmd/npy again
    assert [s.natoms for s in load_systems(folder)] == [8]


def test_mixed_degenerate_box_names_set_and_frame(tmp_path):
    folder, _, _ = _mixed_ab(tmp_path, periodic=True)
    _rewrite(folder / "set.001" / "box.npy", lambda b: np.vstack([b[:1], np.zeros((1, 9))]))
    with pytest.raises(DataError, match=r"set\.001/box\.npy: the box of frame 1 is degenerate"):
        load_systems(folder)


# ---------------------------------------------------------------- sampling of split paths


def test_options_per_path_are_shared_by_its_parts():
    # units: a plain system (10 frames), a path read as two parts (3 + 1 frames)
    units, nframes, natoms = [[0], [1, 2]], [10, 3, 1], [192, 7, 8]
    sizes, probs = unit_sampling(units, nframes, natoms, [2, 4], "prob_sys_size", [0.25, 0.75])
    assert sizes == [2, 3, 1]  # a part's batch is at most its frames
    np.testing.assert_allclose(probs, [0.25, 0.75 * 3 / 4, 0.75 * 1 / 4])
    # prob_uniform over the two paths, each path's share split by frames
    sizes, probs = unit_sampling(units, nframes, natoms, 1, "prob_uniform", None)
    assert sizes == [1, 1, 1]
    np.testing.assert_allclose(probs, [0.5, 0.375, 0.125])
    # per-System lists are taken as they are; nothing changes without split paths
    assert unit_sampling(units, nframes, natoms, "auto", "prob_uniform", [1, 2, 3])[1] == [1, 2, 3]
    assert unit_sampling([[0], [1]], [4, 5], [3, 3], [1, 2], "prob_sys_size", None) == (
        [1, 2],
        None,
    )
    with pytest.raises(ConfigError, match="sys_probs has 4 entries but there are 2 systems"):
        unit_sampling(units, nframes, natoms, 1, "prob_uniform", [1, 1, 1, 1])
    with pytest.raises(ConfigError, match="batch_size has 4 entries but there are 2 systems"):
        unit_sampling(units, nframes, natoms, [1, 1, 1, 1], "prob_uniform", None)


# ---------------------------------------------------------------- dpdata formats


def _write_extxyz(file: Path, parts: list[tuple[System, list[int]]]) -> None:
    """Frames of Systems, in this order, as one extxyz file written by ASE."""
    ase_io = pytest.importorskip("ase.io")
    from ase import Atoms
    from ase.calculators.singlepoint import SinglePointCalculator

    images = []
    for system, frames in parts:
        for f in frames:
            box = None if system.box is None else system.box[f]
            atoms = Atoms(system.elements, positions=system.coord[f], cell=box, pbc=box is not None)
            atoms.calc = SinglePointCalculator(
                atoms, energy=system.energy[f], forces=system.force[f]
            )
            images.append(atoms)
    ase_io.write(file, images, format="extxyz")


@needs_data
def test_extxyz_gives_every_frame_of_every_composition(tmp_path):
    pytest.importorskip("dpdata")
    water, mol = load_system(WATER), load_system(MOLECULES / "C1H4O2")
    xyz = tmp_path / "mixed.xyz"
    _write_extxyz(xyz, [(water, [0, 1]), (mol, [0, 1, 2]), (water, [5])])
    for fmt in ("extxyz", "quip/gap/xyz", None):  # None: told by the .xyz suffix
        sw, sm = load_systems(xyz, fmt=fmt)
        assert (sw.nframes, sw.natoms, sm.nframes, sm.natoms) == (3, 192, 3, 7)
        assert sw.path == f"{xyz}[H128O64]" and sm.path == f"{xyz}[H4O2C1]"
        assert sw.periodic and not sm.periodic
        for got, src, frames in ((sw, water, [0, 1, 5]), (sm, mol, [0, 1, 2])):
            assert got.elements == src.elements  # atom order kept
            np.testing.assert_allclose(got.coord, src.coord[frames], rtol=0, atol=1e-6)
            np.testing.assert_allclose(got.force, src.force[frames], rtol=0, atol=1e-6)
            np.testing.assert_allclose(got.energy, src.energy[frames], rtol=1e-9)
        np.testing.assert_allclose(sw.box, water.box[[0, 1, 5]], rtol=0, atol=1e-6)
    assert system_units([sw, sm]) == [[0, 1]]


@needs_data
def test_extxyz_stress_comes_back_as_the_virial(tmp_path):
    pytest.importorskip("dpdata")
    ase_io = pytest.importorskip("ase.io")
    from ase import Atoms
    from ase.calculators.singlepoint import SinglePointCalculator

    src = load_system(DATA / "water_virial").frames([0])
    atoms = Atoms(src.elements, positions=src.coord[0], cell=src.box[0], pbc=True)
    stress = -src.virial[0] / atoms.get_volume()  # ASE's sign: stress = -virial / volume
    atoms.calc = SinglePointCalculator(
        atoms, energy=src.energy[0], forces=src.force[0], stress=stress
    )
    ase_io.write(tmp_path / "v.xyz", [atoms], format="extxyz")
    (got,) = load_systems(tmp_path / "v.xyz", fmt="extxyz")
    assert got.path == str(tmp_path / "v.xyz") and got.origin is None
    np.testing.assert_allclose(got.virial, src.virial, rtol=1e-6, atol=1e-6)


# ---------------------------------------------------------------- training


def _input(tmp: Path, type_map: list[str], training_data: dict, steps: int = 4, **extra) -> Path:
    """A small se_e2_a training input, logging every step."""
    training = {"training_data": training_data, **extra}
    return write_small_input(tmp, type_map, training, steps, disp_freq=1, save_freq=steps)


def _curve(out: Path) -> np.ndarray:
    """lcurve.out as numbers, one row per logged step."""
    return read_lcurve(out / "lcurve.out")


def _drawn(inp: Path, type_map: list[str]) -> list[int]:
    """The system index of each training batch, as the run with this input draws them."""
    from dpa.train.batches import DataSource
    from dpa.train.config import DataConfig

    training = json.loads(inp.read_text())["training"]
    section = DataConfig.model_validate(training["training_data"])
    source = DataSource(section, type_map, training["seed"], "training_data")
    return [source.sampler.next()[0] for _ in range(training["numb_steps"])]


def _check_model(final: Path, systems: list[System], backend: str | None = None) -> list[float]:
    """The trained model loads and predicts finite numbers on a frame of each system."""
    pot = dpa.load_model(final, backend=backend)
    energies = []
    for s in systems:
        out = pot.evaluate(
            s.coord[:1], s.remap_types(pot.type_map), None if s.box is None else s.box[:1]
        )
        assert np.isfinite(out["energy"]).all()
        if "force" in out:
            assert out["force"].shape == (1, s.natoms, 3) and np.isfinite(out["force"]).all()
        energies.append(float(out["energy"][0]))
    return energies


@needs_data
def test_train_on_a_vasp_outcar_chosen_with_fmt(tmp_path):
    pytest.importorskip("torch")
    pytest.importorskip("dpdata")
    from dpa.train.loop import train

    data = {"systems": [str(OUTCAR)], "fmt": "vasp/outcar", "batch_size": 1}
    inp = _input(tmp_path, ["O", "H"], data, steps=3, validation_data={**data, "numb_btch": 1})
    final = train(inp, "torch", tmp_path / "o")
    curve = _curve(tmp_path / "o")
    assert curve[:, 0].tolist() == [1, 2, 3]
    assert curve.shape[1] == 8 and np.isfinite(curve).all()  # validation and training columns
    outcar = load_system(OUTCAR, fmt="vasp/outcar")
    _check_model(final, [outcar])


@needs_data
def test_train_on_extxyz_with_two_compositions(tmp_path):
    pytest.importorskip("torch")
    pytest.importorskip("dpdata")
    from dpa.train.loop import train

    water, mol = load_system(WATER), load_system(MOLECULES / "C1H4O2")
    xyz = tmp_path / "train.xyz"
    _write_extxyz(xyz, [(water, [0, 1]), (mol, [0, 1, 2])])
    type_map = ["O", "H", "C"]
    # one sys_probs entry: the file is one DeePMD-kit system, its parts share it by frames
    data = {"systems": [str(xyz)], "fmt": "extxyz", "batch_size": 2, "sys_probs": [1.0]}
    inp = _input(tmp_path, type_map, data)
    drawn = _drawn(inp, type_map)
    assert set(drawn) == {0, 1}  # both compositions are trained on
    final = train(inp, "torch", tmp_path / "o")
    curve = _curve(tmp_path / "o")
    assert curve[:, 0].tolist() == [1, 2, 3, 4] and np.isfinite(curve).all()
    _check_model(final, load_systems(xyz, fmt="extxyz"))


@needs_data
def test_train_systems_of_different_sizes_torch_and_jax(tmp_path):
    pytest.importorskip("torch")
    pytest.importorskip("optax")
    from dpa.train.loop import train

    a, b = load_system(MOLECULES / "C1H4O2"), load_system(MOLECULES / "C4H3O1")
    mixed = _write_mixed(
        tmp_path / "mixed", ["C", "H", "O"], [(a, [0, 1], 2), (b, [0, 1], None)], 8
    )
    type_map = ["O", "H", "C"]
    # 192 atoms periodic, 7 and 8 atoms without box (one mixed folder), 6 atoms periodic
    data = {"systems": [str(WATER), str(mixed), str(OUTCAR)], "batch_size": 1}
    inp = _input(tmp_path, type_map, data, steps=4)
    systems = load_systems(data["systems"])
    assert [s.natoms for s in systems] == [192, 7, 8, 6]
    assert len(set(_drawn(inp, type_map))) >= 2  # batches of different sizes in the run
    final_t = train(inp, "torch", tmp_path / "t")
    final_j = train(inp, "jax", tmp_path / "j")
    curves = [_curve(tmp_path / d) for d in ("t", "j")]
    assert curves[0][:, 0].tolist() == [1, 2, 3, 4] and np.isfinite(curves[0]).all()
    np.testing.assert_allclose(curves[0], curves[1], rtol=1e-6)  # same steps in both backends
    e_t = _check_model(final_t, systems)
    e_j = _check_model(final_j, systems, backend="numpy")
    np.testing.assert_allclose(e_t, e_j, rtol=1e-9)
