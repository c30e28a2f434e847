"""Tests of dpa.data: loading real deepmd/npy and dpdata systems, remapping types, error messages."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from builders import DATA, needs_data, writable_copy

from dpa.data import System, load_system, load_systems
from dpa.errors import DataError, DPAError

pytestmark = needs_data


def _raw(folder: Path, key: str) -> np.ndarray:
    """The rows of key.npy of every set.* folder, concatenated, straight from numpy."""
    sets = sorted(folder.glob("set.*"))
    return np.concatenate([np.load(s / f"{key}.npy") for s in sets]).astype(np.float64)


def test_water_folder_expands_into_its_systems():
    systems = load_systems(DATA / "water")
    assert [Path(s.path).name for s in systems] == ["data_0", "data_1", "data_2", "data_3"]
    assert [s.nframes for s in systems] == [80, 160, 80, 80]
    for s in systems:
        assert s.natoms == 192
        assert s.type_map == ["O", "H"]
        assert s.atype.dtype == np.int64 and s.coord.dtype == np.float64
        assert s.coord.shape == (s.nframes, 192, 3)
        assert s.box.shape == (s.nframes, 3, 3)
        assert s.energy.shape == (s.nframes,)
        assert s.force.shape == (s.nframes, 192, 3)
        assert s.virial is None
        assert s.periodic
    assert (systems[0].atype == 0).sum() == 64 and (systems[0].atype == 1).sum() == 128


def test_water_two_sets_are_concatenated_in_order():
    folder = DATA / "water" / "data_1"
    s = load_system(folder)
    np.testing.assert_array_equal(s.coord.reshape(160, -1), _raw(folder, "coord"))
    np.testing.assert_array_equal(s.box.reshape(160, 9), _raw(folder, "box"))
    np.testing.assert_array_equal(s.energy, _raw(folder, "energy").reshape(-1))
    np.testing.assert_array_equal(s.force.reshape(160, -1), _raw(folder, "force"))
    first = np.load(folder / "set.000" / "coord.npy").shape[0]
    np.testing.assert_array_equal(
        s.coord[first].reshape(-1), np.load(folder / "set.001" / "coord.npy")[0]
    )
    # cell vectors are rows: box[f, 0] is the first cell vector
    np.testing.assert_array_equal(s.box[0, 0], np.load(folder / "set.000" / "box.npy")[0, :3])


def test_water_virial_labels():
    folder = DATA / "water_virial"
    s = load_system(folder)
    assert (s.nframes, s.natoms) == (30, 384)
    assert s.virial.shape == (30, 3, 3)
    v = np.load(folder / "set.000" / "virial.npy").astype(np.float64)
    np.testing.assert_array_equal(s.virial[:, 0, 1], v[:, 1])  # row-major: xy is column 1
    np.testing.assert_array_equal(s.virial[:, 2, 0], v[:, 6])
    np.testing.assert_array_equal(s.virial.reshape(30, 9), v)


def test_molecules_without_box():
    systems = load_systems(DATA / "molecules_nopbc")
    assert [(Path(s.path).name, s.nframes, s.natoms) for s in systems] == [
        ("C1H4O2", 1562, 7),
        ("C3H3O4", 485, 10),
        ("C4H3O1", 15, 8),
    ]
    for s in systems:
        assert s.box is None and not s.periodic
        assert s.type_map == ["C", "H", "O"]
        assert s.energy is not None and s.force is not None
    assert systems[0].elements.count("H") == 4


def test_vasp_outcar_through_dpdata():
    s = load_system(DATA / "vasp_OUTCAR", fmt="vasp/outcar")
    assert (s.nframes, s.natoms) == (1, 6)
    assert s.type_map == ["O", "H"]
    assert s.elements == ["O", "O", "H", "H", "H", "H"]
    assert s.energy[0] == pytest.approx(-28.34083468)  # free energy TOTEN in the OUTCAR
    assert s.force.shape == (1, 6, 3) and s.virial.shape == (1, 3, 3)
    assert s.box.shape == (1, 3, 3) and abs(np.linalg.det(s.box[0])) > 1.0
    # the file name tells the format when --fmt is not given
    auto = load_systems(str(DATA / "vasp_OUTCAR"))[0]
    np.testing.assert_array_equal(auto.coord, s.coord)


def test_deepmd_raw_through_dpdata_matches_native(tmp_path):
    dpdata = pytest.importorskip("dpdata")
    folder = DATA / "water_virial"
    dpdata.LabeledSystem(str(folder), fmt="deepmd/npy").to("deepmd/raw", str(tmp_path / "raw"))
    raw = load_system(tmp_path / "raw", fmt="deepmd/raw")
    native = load_system(folder)
    assert raw.type_map == native.type_map
    np.testing.assert_array_equal(raw.atype, native.atype)
    for key in ("coord", "box", "energy", "force", "virial"):
        np.testing.assert_allclose(getattr(raw, key), getattr(native, key), rtol=1e-6, atol=1e-6)


def test_remap_types_into_model_order():
    s = load_system(DATA / "water" / "data_0")
    np.testing.assert_array_equal(s.remap_types(["H", "O"]), 1 - s.atype)
    np.testing.assert_array_equal(s.remap_types(["C", "O", "N", "H"]), np.where(s.atype == 0, 1, 3))
    with pytest.raises(DataError, match=r"data_0: element 'H' is not in the model's type_map"):
        s.remap_types(["O", "C"])


def test_remap_without_type_map_raw_uses_indices(tmp_path):
    folder = writable_copy(DATA / "water" / "data_0", tmp_path)
    (folder / "type_map.raw").unlink()
    s = load_system(folder)
    assert not s.has_type_map
    np.testing.assert_array_equal(s.remap_types(["A", "B"]), s.atype)
    with pytest.raises(DataError, match="no type_map.raw"):
        s.remap_types(["A"])


def test_frames_subset():
    s = load_system(DATA / "water_virial")
    sub = s.frames(slice(3, 7))
    assert sub.nframes == 4 and sub.natoms == 384
    np.testing.assert_array_equal(sub.virial, s.virial[3:7])
    np.testing.assert_array_equal(sub.coord, s.coord[3:7])


def test_system_constructor_checks_shapes():
    with pytest.raises(DataError, match="force has shape"):
        System("mem", ["H"], np.zeros(2), np.zeros((1, 2, 3)), force=np.zeros((1, 3, 3)))
    with pytest.raises(DataError, match="atom type 2 is outside the type map"):
        System("mem", ["H", "O"], [0, 2], np.zeros((1, 2, 3)))
    with pytest.raises(DataError, match="box of frame 0 is degenerate"):
        System("mem", ["H"], [0], np.zeros((1, 1, 3)), box=np.zeros((1, 3, 3)))


# ---------------------------------------------------------------- broken folders -> DataError


def test_missing_type_raw(tmp_path):
    folder = writable_copy(DATA / "water" / "data_0", tmp_path)
    (folder / "type.raw").unlink()
    with pytest.raises(DataError, match=r"sys: missing type.raw"):
        load_system(folder)


def test_folder_without_any_system(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"empty: not a deepmd/npy system \(missing type.raw\)"):
        load_systems(tmp_path / "empty")


def test_coord_rows_do_not_match_type_raw(tmp_path):
    folder = writable_copy(DATA / "water" / "data_1", tmp_path)
    (folder / "type.raw").write_text("0\n" * 190)
    with pytest.raises(DataError) as info:
        load_system(folder)
    msg = str(info.value)
    assert "set.000/coord.npy" in msg
    assert "576 values but 570 are expected" in msg and "190 atoms" in msg


def test_shape_mismatch_in_second_set_is_named(tmp_path):
    folder = writable_copy(DATA / "water" / "data_1", tmp_path)
    coord = np.load(folder / "set.001" / "coord.npy")
    np.save(folder / "set.001" / "coord.npy", coord[:, :-3])
    with pytest.raises(DataError, match=r"set\.001/coord\.npy: rows have 573 values"):
        load_system(folder)


def test_nan_in_coord(tmp_path):
    folder = writable_copy(DATA / "water" / "data_0", tmp_path)
    coord = np.load(folder / "set.000" / "coord.npy")
    coord[5, 3 * 17 + 1] = np.nan
    np.save(folder / "set.000" / "coord.npy", coord)
    with pytest.raises(DataError, match=r"coord\.npy: non-finite value .* at frame 5, atom 17"):
        load_system(folder)


def test_frame_count_mismatch(tmp_path):
    folder = writable_copy(DATA / "water" / "data_0", tmp_path)
    energy = np.load(folder / "set.000" / "energy.npy")
    np.save(folder / "set.000" / "energy.npy", energy[:-1])
    with pytest.raises(
        DataError, match=r"energy\.npy: has 79 frames but set\.000/coord\.npy has 80"
    ):
        load_system(folder)


def test_missing_box_suggests_nopbc(tmp_path):
    folder = writable_copy(DATA / "water" / "data_0", tmp_path)
    (folder / "set.000" / "box.npy").unlink()
    with pytest.raises(DataError, match=r"set\.000: missing box\.npy .*nopbc"):
        load_system(folder)


def test_no_set_folder(tmp_path):
    folder = writable_copy(DATA / "water" / "data_0", tmp_path)
    shutil.rmtree(folder / "set.000")
    with pytest.raises(DataError, match=r"sys: no set\.\* folder"):
        load_system(folder)


def test_label_missing_from_one_set(tmp_path):
    folder = writable_copy(DATA / "water" / "data_1", tmp_path)
    (folder / "set.001" / "force.npy").unlink()
    with pytest.raises(
        DataError, match=r"force\.npy is in some set folders but missing from set\.001"
    ):
        load_system(folder)


def test_type_map_too_short(tmp_path):
    folder = writable_copy(DATA / "water" / "data_0", tmp_path)
    (folder / "type_map.raw").write_text("O\n")
    with pytest.raises(
        DataError, match=r"type_map\.raw: lists 1 elements but type\.raw uses type 1"
    ):
        load_system(folder)


def test_bad_type_raw(tmp_path):
    folder = writable_copy(DATA / "water" / "data_0", tmp_path)
    (folder / "type.raw").write_text("0 1 x\n")
    with pytest.raises(DataError, match=r"type\.raw: not a list of integer type indices"):
        load_system(folder)


def test_corrupt_npy(tmp_path):
    folder = writable_copy(DATA / "water" / "data_0", tmp_path)
    (folder / "set.000" / "force.npy").write_bytes(b"not an npy file")
    with pytest.raises(DataError, match=r"force\.npy: cannot read it as a \.npy array"):
        load_system(folder)


def test_unknown_format_and_missing_path(tmp_path):
    with pytest.raises(DataError, match="dpdata knows no format 'nonsense'"):
        load_system(DATA / "vasp_OUTCAR", fmt="nonsense")
    with pytest.raises(DataError, match="no such file or folder"):
        load_system(tmp_path / "nope")
    (tmp_path / "frames.dat").write_text("1 2 3\n")
    with pytest.raises(DataError, match="cannot tell the format of this file; pass it with --fmt"):
        load_system(tmp_path / "frames.dat")


def test_wrong_format_for_file_is_a_data_error():
    with pytest.raises(DataError, match=r"vasp_OUTCAR: cannot read it as qe/pw/scf"):
        load_system(DATA / "vasp_OUTCAR", fmt="qe/pw/scf")


# ---------------------------------------------------------------- metrics and detail files


def test_merged_stats_equal_stats_of_the_whole():
    from dpa.data.metrics import error_stat, merge_stats

    rng = np.random.default_rng(0)
    pred, ref = rng.normal(size=(10, 4, 3)), rng.normal(size=(10, 4, 3))
    whole = error_stat(pred, ref)
    parts = merge_stats([error_stat(pred[a:b], ref[a:b]) for a, b in ((0, 3), (3, 4), (4, 10))])
    diff = pred - ref
    assert whole.mae == pytest.approx(np.abs(diff).mean(), rel=1e-14)
    assert whole.rmse == pytest.approx(np.sqrt((diff**2).mean()), rel=1e-14)
    assert (parts.mae, parts.rmse, parts.weight) == pytest.approx((whole.mae, whole.rmse, 120))


def test_detail_file_names_follow_dp_test():
    from dpa.data.detail import detail_paths

    assert detail_paths("out/res")[".e.out"] == "out/res.e.out"
    assert detail_paths("out/res.txt")[".v_peratom.out"] == "out/res.v_peratom.out"


def test_detail_files_are_replaced_whole(tmp_path):
    from dpa.data.detail import write_details
    from dpa.data.evaluation import SystemResult

    s = load_system(DATA / "water_virial").frames(slice(0, 2))
    pred = {"energy": s.energy + 1.0, "force": s.force * 2.0, "virial": s.virial - 1.0}
    (tmp_path / "d.e.out").write_text("stale\n" * 1000)
    written = write_details(tmp_path / "d", [SystemResult(s, pred)])
    assert sorted(Path(p).name for p in written) == sorted(p.name for p in tmp_path.iterdir())
    lines = (tmp_path / "d.e.out").read_text().splitlines()
    assert lines[0] == f"# {s.name}: data_e pred_e" and len(lines) == 3
    np.testing.assert_array_equal(np.loadtxt(tmp_path / "d.e.out"), np.c_[s.energy, s.energy + 1])
    f = np.loadtxt(tmp_path / "d.f.out")
    np.testing.assert_array_equal(f, np.c_[s.force.reshape(-1, 3), 2 * s.force.reshape(-1, 3)])
    v = np.loadtxt(tmp_path / "d.v_peratom.out")
    np.testing.assert_allclose(v, np.c_[s.virial.reshape(2, 9), s.virial.reshape(2, 9) - 1] / 384)
    umask = os.umask(0)
    os.umask(umask)
    assert (tmp_path / "d.e.out").stat().st_mode & 0o777 == 0o666 & ~umask  # not mkstemp's 0600
    with pytest.raises(DPAError, match="does not exist"):
        write_details(tmp_path / "missing" / "d", [SystemResult(s, pred)])
