"""Bad input raises the right dpa.DPAError subclass, with a message that names the culprit."""

from __future__ import annotations

import numpy as np
import pytest
from builders import CLUSTER_ATYPE as ATYPE
from builders import CLUSTER_BOX as BOX
from builders import CLUSTER_COORD as COORD

import dpa
import dpa.io
from dpa import BackendError, ConfigError, DataError, DPAError, ModelFileError

DESCRIPTOR = {"type": "se_e2_a", "sel": [8, 8, 8], "rcut": 3.0, "neuron": [4], "axis_neuron": 2}
CONFIG = {"type_map": ["O", "H", "C"], "descriptor": DESCRIPTOR, "fitting_net": {"neuron": [4]}}


def config(**changes) -> dict:
    """CONFIG with top-level keys replaced; a dict value for 'descriptor'/'fitting_net' merges."""
    out = {**CONFIG}
    for key, value in changes.items():
        out[key] = {**CONFIG[key], **value} if key in ("descriptor", "fitting_net") else value
    return out


@pytest.fixture(scope="module")
def pot() -> dpa.Potential:
    return dpa.load_model(dpa.build_model(CONFIG), backend="numpy")


def two_frames() -> np.ndarray:
    return np.stack([COORD, COORD + 0.05])


def test_all_errors_share_one_root():
    for cls in (BackendError, ConfigError, DataError, ModelFileError):
        assert issubclass(cls, DPAError)


# ---------------------------------------------------------------------------------------------
# Input data


def test_valid_input_works(pot):
    out = pot.evaluate(two_frames(), ATYPE, np.stack([BOX, BOX]))
    assert out["energy"].shape == (2,)
    assert np.all(np.isfinite(out["energy"]))


@pytest.mark.parametrize("shape", [(2, 5, 2), (5,), (2, 5, 3, 1)])
def test_coord_of_wrong_shape(pot, shape):
    with pytest.raises(DataError, match=r"coord.*" + ", ".join(map(str, shape))):
        pot.evaluate(np.zeros(shape), ATYPE, None)


def test_atype_length_mismatch(pot):
    with pytest.raises(DataError, match=r"atype.*\(5,\).*5 atoms.*\(4,\)"):
        pot.evaluate(COORD, ATYPE[:4], None)


def test_type_outside_type_map_names_the_atom(pot):
    atype = ATYPE.copy()
    atype[3] = 7
    with pytest.raises(DataError, match=r"atom 3 .*type 7.*type_map"):
        pot.evaluate(COORD, atype, None)


def test_negative_type_names_the_atom(pot):
    atype = ATYPE.copy()
    atype[2] = -4
    with pytest.raises(DataError, match=r"atom 2 "):
        pot.evaluate(COORD, atype, None)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_coord_names_frame_and_atom(pot, bad):
    coord = two_frames()
    coord[1, 4, 2] = bad
    with pytest.raises(DataError, match=r"atom 4 in frame 1|frame 1.*atom 4"):
        pot.evaluate(coord, ATYPE, None)


def test_singular_box_names_the_frame(pot):
    flat = np.diag([5.0, 5.0, 0.0])
    with pytest.raises(DataError, match=r"frame 1 .*singular"):
        pot.evaluate(two_frames(), ATYPE, np.stack([BOX, flat]))


def test_box_of_wrong_shape(pot):
    with pytest.raises(DataError, match=r"box"):
        pot.evaluate(two_frames(), ATYPE, np.ones((3, 3, 3)))


def test_numpy_backend_gives_no_forces(pot):
    assert not pot.can_compute_forces
    out = pot.evaluate(COORD, ATYPE, BOX, atomic=True)
    assert set(out) == {"energy", "atom_energy"}
    assert out["atom_energy"].shape == (1, 5)
    for key in ("force", "virial", "atom_virial"):
        with pytest.raises(BackendError, match=rf"numpy backend.*no {key}.*torch.*jax"):
            out[key]
    with pytest.raises(KeyError):
        out["stress"]


# ---------------------------------------------------------------------------------------------
# fparam / aparam


@pytest.fixture(scope="module")
def pot_params() -> dpa.Potential:
    model = dpa.build_model(config(fitting_net={"numb_fparam": 2, "numb_aparam": 1}))
    return dpa.load_model(model, backend="numpy")


def test_params_given_work(pot_params):
    out = pot_params.evaluate(COORD, ATYPE, None, fparam=[0.1, 0.2], aparam=np.ones((5, 1)))
    assert np.isfinite(out["energy"][0])


def test_missing_fparam(pot_params):
    with pytest.raises(DataError, match="fparam"):
        pot_params.evaluate(COORD, ATYPE, None, aparam=np.ones((5, 1)))


def test_missing_aparam(pot_params):
    with pytest.raises(DataError, match="aparam"):
        pot_params.evaluate(COORD, ATYPE, None, fparam=[0.1, 0.2])


def test_fparam_of_wrong_size(pot_params):
    with pytest.raises(DataError, match=r"fparam.*\(1, 2\)"):
        pot_params.evaluate(COORD, ATYPE, None, fparam=[0.1, 0.2, 0.3], aparam=np.ones((5, 1)))


# ---------------------------------------------------------------------------------------------
# Model files


def test_missing_model_file(tmp_path):
    path = tmp_path / "absent.dp"
    with pytest.raises(ModelFileError, match="absent.dp"):
        dpa.load_model(path)
    with pytest.raises(ModelFileError, match="absent.dp"):
        dpa.io.load(path)


@pytest.mark.parametrize("suffix", [".dp", ".jax", ".pth"])
def test_corrupt_model_file(tmp_path, suffix):
    if suffix == ".pth":
        pytest.importorskip("torch")
    path = tmp_path / f"corrupt{suffix}"
    path.write_bytes(np.random.default_rng(0).bytes(2048))
    with pytest.raises(ModelFileError, match=f"corrupt\\{suffix}"):
        dpa.io.load(path)


def test_unknown_suffix(tmp_path):
    path = tmp_path / "model.xyz"
    path.write_bytes(b"whatever")
    with pytest.raises(ModelFileError, match=r"model\.xyz.*'\.xyz'.*\.dp"):
        dpa.io.load(path)
    with pytest.raises(ModelFileError, match=r"\.xyz"):
        dpa.build_model(CONFIG).save(tmp_path / "out.xyz")
    assert not (tmp_path / "out.xyz").exists()


def test_not_a_model_tree(tmp_path):
    with pytest.raises(ModelFileError, match="model"):
        dpa.Model({"something": "else"})


# ---------------------------------------------------------------------------------------------
# Configs and backends


def test_unknown_descriptor_type():
    with pytest.raises(ConfigError, match=r"'dpa9'.*se_e2_a.*dpa1"):
        dpa.build_model(config(descriptor={"type": "dpa9"}))


@pytest.mark.parametrize(
    ("changes", "key", "allowed"),
    [
        ({"descriptor": {"rcutt": 5.0}}, "rcutt", "rcut_smth"),
        ({"descriptor": {"type": "dpa1", "atn": 8}}, "atn", "attn_layer"),
        ({"fitting_net": {"neurons": [4]}}, "neurons", "numb_fparam"),
        ({"typemap": ["O"]}, "typemap", "type_map"),
    ],
)
def test_unknown_config_key_names_it_and_lists_allowed(changes, key, allowed):
    with pytest.raises(ConfigError) as info:
        dpa.build_model(config(**changes))
    message = str(info.value)
    assert repr(key)[1:-1] in message
    assert "allowed keys" in message
    assert allowed in message.split("allowed keys", 1)[1]


def test_bad_config_value_names_the_key():
    with pytest.raises(ConfigError, match=r"rcut"):
        dpa.build_model(config(descriptor={"rcut": -1.0}))


def test_unknown_backend():
    model = dpa.build_model(CONFIG)
    with pytest.raises(BackendError, match=r"'tensorflo'.*numpy.*torch.*jax"):
        dpa.load_model(model, backend="tensorflo")


# ---------------------------------------------------------------------------------------------
# inputs and configs that would otherwise give meaningless numbers


def test_overlapping_atoms_are_named(pot):
    coord = COORD.copy()
    coord[2] = coord[1]
    with pytest.raises(DataError, match=r"atoms 1 and 2 of frame 0 overlap"):
        pot.evaluate(coord, ATYPE, BOX)


def test_atom_on_its_own_periodic_image_overlaps(pot):
    coord = COORD.copy()
    coord[4] = coord[0] + BOX[0]  # atom 4 sits on an image of atom 0
    with pytest.raises(DataError, match=r"overlap .*periodic images"):
        pot.evaluate(coord, ATYPE, BOX)


@pytest.mark.parametrize("coord", [np.zeros((0, 5, 3)), np.zeros((1, 0, 3))])
def test_empty_input(pot, coord):
    with pytest.raises(DataError, match="no frames or no atoms"):
        pot.evaluate(coord, ATYPE[: coord.shape[1]], None)


def test_fparam_for_a_model_without_it(pot):
    with pytest.raises(DataError, match="fparam was given but this model takes none"):
        pot.evaluate(COORD, ATYPE, BOX, fparam=[1.0])


def test_non_finite_fparam():
    model = dpa.build_model(config(fitting_net={"numb_fparam": 1}))
    pot = dpa.load_model(model, backend="numpy")
    with pytest.raises(DataError, match="fparam holds NaN"):
        pot.evaluate(COORD, ATYPE, BOX, fparam=[np.nan])


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"descriptor": {"sel": [0, 0, 0]}}, r"sel .*positive total"),
        ({"descriptor": {"activation_function": "tanhh"}}, r"activation_function.*'tanhh'"),
        ({"type_map": ["O", "O", "C"]}, r"type_map lists \['O'\] more than once"),
        (
            {"fitting_net": {"numb_fparam": 2, "default_fparam": [1.0]}},
            r"default_fparam has 1 values but numb_fparam is 2",
        ),
    ],
)
def test_inconsistent_config(changes, message):
    with pytest.raises(ConfigError, match=message):
        dpa.build_model(config(**changes))


def test_incomplete_model_file_is_named(tmp_path):
    model = dpa.build_model(CONFIG)
    del model.tree["descriptor"]["@variables"]["davg"]
    path = tmp_path / "broken.dp"
    model.save(path)
    with pytest.raises(ModelFileError, match=r"broken\.dp.*davg"):
        dpa.io.load(path)


REPINIT = {"rcut": 6.0, "rcut_smth": 0.5, "nsel": 120}
REPFORMER = {"rcut": 4.0, "rcut_smth": 3.5, "nsel": 48}
REPFLOW = {
    "e_rcut": 6.0,
    "e_rcut_smth": 5.3,
    "e_sel": 120,
    "a_rcut": 4.0,
    "a_rcut_smth": 3.5,
    "a_sel": 30,
}


def dpa2(repinit: dict | None = None, repformer: dict | None = None) -> dict:
    return {
        "type_map": ["O", "H"],
        "descriptor": {
            "type": "dpa2",
            "repinit": {**REPINIT, **(repinit or {})},
            "repformer": {**REPFORMER, **(repformer or {})},
        },
    }


def dpa3(**repflow) -> dict:
    return {
        "type_map": ["O", "H"],
        "descriptor": {"type": "dpa3", "repflow": {**REPFLOW, **repflow}},
    }


@pytest.mark.parametrize(
    ("config", "message"),
    [
        (
            dpa3(e_rcut=3.5, e_rcut_smth=3.0),
            r"repflow.a_rcut \(4.0\) must be at most .*repflow.e_rcut \(3.5\)",
        ),
        (dpa3(a_sel=200), r"repflow.a_sel \(200\) must be at most .*repflow.e_sel \(120\)"),
        (
            dpa3(a_dim=32, a_compress_rate=3),
            r"a_dim \* a_compress_e_rate \(32 \* 1\) must be divisible by 2 \* a_compress_rate",
        ),
        (  # a_dim / rate = 3 is odd: DeePMD-kit's angle layers would not fit their input
            dpa3(a_dim=6, a_compress_rate=2, a_compress_e_rate=2),
            r"repflow.a_dim \(6\) must be divisible by 2 \* a_compress_rate \(2 \* 2\)",
        ),
        (
            dpa3(sequential_update=True, update_style="res_avg"),
            r"sequential_update = true needs update_style 'res_residual'.*res_avg",
        ),
        (dpa3(use_dynamic_sel=True), r"use_dynamic_sel = true needs smooth_edge_update"),
        (dpa3(e_sel="auto"), r"repflow.e_sel = 'auto' needs training data"),
        (
            dpa2(repformer={"rcut": 6.5}),
            r"repformer.rcut \(6.5\) must be smaller than .*repinit.rcut \(6.0\)",
        ),
        (
            dpa2(repformer={"nsel": 130}),
            r"repformer.nsel \(130\) must be smaller than .*repinit.nsel \(120\)",
        ),
        (
            dpa2(repinit={"use_three_body": True, "three_body_rcut": 7.0}),
            r"three_body_rcut \(7.0\) must be at most .*repinit.rcut \(6.0\)",
        ),
        (dpa2(repformer={"update_style": "res_sum"}), r"repformer.update_style"),
        (dpa2(repinit={"activation_function": "tanhh"}), r"repinit.activation_function"),
    ],
)
def test_inconsistent_dpa2_dpa3_config_names_both_keys(config, message):
    with pytest.raises(ConfigError, match=message):
        dpa.build_model(config)


def test_unknown_repflow_key_lists_the_repflow_keys():
    with pytest.raises(ConfigError, match=r"unknown key 'model.descriptor.repflow.e_cut'.*e_rcut"):
        dpa.build_model(dpa3(e_cut=6.0))
