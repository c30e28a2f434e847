"""Load-time model checks (dpa.dpmodel.check) and the finiteness check of evaluation outputs.

Broken or edited model files must fail when they are read, with a ModelFileError naming the
JSON path of the culprit, and never evaluate to NaN or to silently different energies; a
model whose finite weights overflow must give an EvaluationError, not NaN energies.
"""

from __future__ import annotations

import copy
import json
import re
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
from builders import CLUSTER_ATYPE as ATYPE
from builders import CLUSTER_BOX as BOX
from builders import CLUSTER_COORD as COORD
from builders import LAM_FIXTURES as LAM
from click.testing import CliRunner

import dpa
import dpa.io
from dpa import ConfigError, EvaluationError, ModelFileError
from dpa.data.evaluation import predict
from dpa.data.system import System
from dpa.potential import check_outputs
from dpa_cli.main import cli

TYPE_MAP = ["O", "H", "C"]
SE_E2_A = {"type": "se_e2_a", "sel": [8, 8, 8], "rcut": 3.0, "neuron": [4, 8], "axis_neuron": 2}
CONFIG = {"type_map": TYPE_MAP, "descriptor": SE_E2_A, "fitting_net": {"neuron": [4, 4]}}
W2 = "model.descriptor.embeddings.networks[2].layers[0].@variables.w"


def build(descriptor: dict | None = None, **fitting) -> dpa.Model:
    """A small model: se_e2_a unless `descriptor` is given; `fitting` updates fitting_net."""
    return dpa.build_model(
        {
            "type_map": TYPE_MAP,
            "descriptor": descriptor or SE_E2_A,
            "fitting_net": {"neuron": [4, 4], **fitting},
        }
    )


def saved(model: dpa.Model, path: Path) -> Path:
    """`model` written to `path` (no checks on the way out: the file is what is tested)."""
    model.save(path)
    return path


def reload_error(model: dpa.Model, path: Path) -> str:
    """The ModelFileError message of reading `model` back from `path`."""
    with pytest.raises(ModelFileError) as info:
        dpa.io.load(saved(model, path))
    return str(info.value)


# ---------------------------------------------------------------------------------------------
# non-finite weights and zero statistics


@pytest.mark.parametrize("suffix", [".dp", ".pth", ".jax"])
def test_nan_weight_is_named_through_every_format(tmp_path, suffix):
    pytest.importorskip({".pth": "torch", ".jax": "jax"}.get(suffix, "numpy"))
    model = build()
    model.tree["descriptor"]["embeddings"]["networks"][2]["layers"][0]["@variables"]["w"][0, 1] = (
        np.nan
    )
    message = reload_error(model, tmp_path / f"nan{suffix}")
    assert f"nan{suffix}" in message
    assert W2 in message
    assert "nan at index (0, 1)" in message
    assert "re-export" in message


def test_inf_in_statistics_is_named(tmp_path):
    model = build()
    model.tree["fitting"]["@variables"]["bias_atom_e"][1, 0] = np.inf
    assert "model.fitting.@variables.bias_atom_e holds inf" in reload_error(
        model, tmp_path / "m.dp"
    )


def test_zero_dstd_is_named(tmp_path):
    model = build()
    model.tree["descriptor"]["@variables"]["dstd"][1, 3, 2] = 0.0
    message = reload_error(model, tmp_path / "m.dp")
    assert "model.descriptor.@variables.dstd holds 0.0 at index (1, 3, 2)" in message
    assert "statistics" in message


def test_model_constructor_checks_too():
    model = build()
    data = copy.deepcopy(model.data)
    data["model"]["@variables"]["out_bias"][0, 0, 0] = np.nan
    with pytest.raises(ModelFileError, match=r"model\.@variables\.out_bias holds nan"):
        dpa.Model(data)


# ---------------------------------------------------------------------------------------------
# arrays that disagree with the config or with each other


def test_sel_disagreeing_with_statistics_is_named(tmp_path):
    model = build()
    model.tree["descriptor"]["sel"] = [8, 8, 9]
    message = reload_error(model, tmp_path / "m.dp")
    assert "model.descriptor.@variables.davg has shape (3, 24, 4); expected (3, 25, 4)" in message
    assert "model.descriptor.sel" in message


def test_dpa1_sel_disagreeing_with_statistics_is_named(tmp_path):
    model = build({"type": "dpa1", "sel": 20, "rcut": 3.0, "neuron": [4], "attn": 4})
    model.tree["descriptor"]["sel"] = [16]
    message = reload_error(model, tmp_path / "m.dp")
    assert "model.descriptor.@variables.davg has shape (3, 20, 4); expected (3, 16, 4)" in message


def test_out_bias_of_wrong_length_is_named(tmp_path):
    model = build()
    model.tree["@variables"]["out_bias"] = np.zeros((1, 2, 1))
    message = reload_error(model, tmp_path / "m.dp")
    assert "model.@variables.out_bias has shape (1, 2, 1); expected (1, 3, 1)" in message
    assert "type_map" in message


def test_layer_of_wrong_shape_is_named(tmp_path):
    model = build()
    model.tree["fitting"]["nets"]["networks"][1]["layers"][1]["@variables"]["w"] = np.zeros((3, 4))
    message = reload_error(model, tmp_path / "m.dp")
    path = "model.fitting.nets.networks[1].layers[1].@variables.w"
    assert f"{path} has shape (3, 4); expected (4, 4)" in message


def test_fitting_input_width_must_match_the_descriptor(tmp_path):
    model = build()
    model.tree["descriptor"]["axis_neuron"] = 4  # descriptor width 32, the fitting expects 16
    message = reload_error(model, tmp_path / "m.dp")
    assert "model.fitting" in message
    assert "32" in message


def test_string_array_is_named(tmp_path):
    model = build()
    model.tree["fitting"]["@variables"]["bias_atom_e"] = np.array([[b"a"], [b"b"], [b"c"]])
    message = reload_error(model, tmp_path / "m.dp")
    assert "model.fitting.@variables.bias_atom_e has dtype |S1; expected float32 or float64" in (
        message
    )


def test_object_array_is_named():
    data = copy.deepcopy(build().data)
    data["model"]["fitting"]["@variables"]["bias_atom_e"] = np.array([[1.0], ["x"], [None]], object)
    with pytest.raises(ModelFileError, match=r"bias_atom_e has dtype object"):
        dpa.Model(data)


def test_absurd_sel_is_a_quick_clear_error(tmp_path):
    model = build()
    model.tree["descriptor"]["sel"] = [10**12, 8, 8]
    path = saved(model, tmp_path / "huge.dp")
    start = time.perf_counter()
    with pytest.raises(ModelFileError, match=r"huge\.dp: model\.descriptor\.sel\[0\] is 10+"):
        dpa.load_model(path, backend="numpy")
    assert time.perf_counter() - start < 5.0


def test_absurd_sizes_in_a_config_are_config_errors():
    with pytest.raises(ConfigError, match=r"model\.descriptor\.sel = \[1000000000000, 8, 8\]"):
        build({**SE_E2_A, "sel": [10**12, 8, 8]})
    with pytest.raises(ConfigError, match=r"model\.fitting_net\.neuron = \[1000000000\]"):
        build(neuron=[10**9])


def edit(path: str, value) -> callable:
    """A function setting the tree entry at dotted `path` (ints index lists) to `value`."""

    def apply(tree: dict) -> None:
        keys = [int(k) if k.isdigit() else k for k in path.split(".")]
        node = tree
        for key in keys[:-1]:
            node = node[key]
        node[keys[-1]] = value

    return apply


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (edit("descriptor.rcut", float("nan")), r"model\.descriptor\.rcut is nan"),
        (edit("descriptor.rcut", 1e6), r"model\.descriptor\.rcut is 1000000\.0"),
        (
            edit("descriptor.rcut", 2.5),
            r"env_mat\.rcut is 3\.0 but model\.descriptor\.rcut is 2\.5",
        ),
        (edit("descriptor.type_one_side", True), r"networks holds 9 networks; expected 3"),
        (edit("descriptor.type_one_side", "false"), r"type_one_side must be true or false"),
        (edit("descriptor.rcut_smth", 3.0), r"model\.descriptor\.rcut_smth is 3\.0; expected a"),
        (edit("descriptor.sel", [8, 8]), r"model\.descriptor\.sel has 2 entries; expected one"),
        (edit("descriptor.sel", [8, -1, 8]), r"model\.descriptor\.sel\[1\] is -1"),
        (edit("descriptor.neuron", [4, 0]), r"model\.descriptor\.neuron\[1\] is 0"),
        (edit("descriptor.activation_function", "tanhh"), r"activation_function is invalid"),
        (edit("descriptor.exclude_types", [[0, 5]]), r"exclude_types\[0\]\[1\] is 5"),
        (edit("type_map", ["O", "H", "O"]), r"model\.type_map lists \['O'\] more than once"),
        (edit("type_map", ["O", "H", ""]), r"model\.type_map\[2\] must be a non-empty string"),
        (edit("type_map", ["O", "H"]), r"model\.descriptor\.sel has 3 entries; expected one"),
        (edit("descriptor.axis_neuron", 9), r"model\.descriptor\.axis_neuron is 9; expected an"),
        (edit("fitting.dim_descrpt", 12), r"model\.fitting\.dim_descrpt is 12"),
        (edit("fitting.nets.networks", []), r"model\.fitting\.nets\.networks holds 0 networks"),
        (edit("atom_exclude_types", [3]), r"model\.atom_exclude_types\[0\] is 3"),
        (edit("descriptor.precision", "float128"), r"model\.descriptor\.precision is 'float128'"),
    ],
)
def test_edited_config_numbers_are_named(tmp_path, change, message):
    model = build()
    change(model.tree)
    with pytest.raises(ModelFileError, match=message):
        dpa.io.load(saved(model, tmp_path / "m.dp"))


def test_missing_array_is_named(tmp_path):
    model = build({"type": "dpa1", "sel": 20, "rcut": 3.0, "neuron": [4], "attn": 4})
    del model.tree["descriptor"]["attention_layers"]["attention_layers"][0]["attention_layer"][
        "in_proj"
    ]["@variables"]["w"]
    message = reload_error(model, tmp_path / "m.dp")
    assert "attention_layers[0].attention_layer.in_proj.@variables.w" in message
    assert "incomplete" in message


def test_dpa2_repformer_layer_of_wrong_shape_is_named():
    data = copy.deepcopy(build(DPA2).data)
    layer = data["model"]["descriptor"]["repformers_variable"]["repformer_layers"][1]
    layer["linear1"]["@variables"]["w"] = np.zeros((5, 8))
    with pytest.raises(ModelFileError, match=r"repformer_layers\[1\]\.linear1\.@variables\.w"):
        dpa.Model(data)


def test_dpa3_residual_count_is_checked():
    data = copy.deepcopy(build(DPA3).data)
    layer = data["model"]["descriptor"]["repflow_variable"]["repflow_layers"][0]
    layer["@variables"]["n_residual"].pop()
    with pytest.raises(
        ModelFileError, match=r"repflow_layers\[0\]\.@variables\.n_residual holds 2"
    ):
        dpa.Model(data)


def test_show_on_wrong_shape_model_is_one_line(tmp_path):
    model = build()
    model.tree["descriptor"]["@variables"]["dstd"] = np.ones((3, 20, 4))
    path = saved(model, tmp_path / "bad.dp")
    result = CliRunner().invoke(cli, ["show", str(path)], catch_exceptions=False)
    assert result.exit_code == 1
    lines = result.stderr.splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("dpa: error: ")
    assert "bad.dp: model.descriptor.@variables.dstd has shape (3, 20, 4)" in lines[0]


def test_float32_cast_of_a_too_large_weight_is_a_config_error():
    model = build()
    model.tree["fitting"]["@variables"]["bias_atom_e"][0, 0] = 1e300
    with pytest.raises(ConfigError, match=r"cannot be evaluated in float32: .*bias_atom_e holds"):
        model.with_precision("float32")


# ---------------------------------------------------------------------------------------------
# outputs that overflow


def overflowing() -> dpa.Model:
    """A model whose finite weights overflow: its output layers multiply by 1e308."""
    model = build()
    for net in model.tree["fitting"]["nets"]["networks"]:
        net["layers"][-1]["@variables"]["w"][:] = 1e308
    return dpa.Model(model.data)  # finite, so it loads


def test_overflowing_model_raises_evaluation_error(backend):
    pot = dpa.load_model(overflowing(), backend=backend)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # NumPy's overflow warnings
        with pytest.raises(EvaluationError) as info:
            pot.evaluate(np.stack([COORD, COORD + 0.01]), ATYPE, BOX)
    message = str(info.value)
    assert "se_e2_a model" in message
    assert re.search(r"non-finite (atom_energy for frame 0, atom \d|energy for frame 0 )", message)
    assert "the model is the likely cause" in message
    assert info.value.frame == 0


def test_ase_calculator_raises_evaluation_error():
    pytest.importorskip("ase")
    pytest.importorskip("torch")
    from ase import Atoms

    from dpa.calculator import DPACalculator

    atoms = Atoms("OHHCO", positions=COORD, cell=BOX, pbc=True)
    atoms.calc = DPACalculator(overflowing(), backend="torch")
    with pytest.raises(EvaluationError, match="the model is the likely cause"):
        atoms.get_potential_energy()


def test_dpa_test_names_system_frame_and_model():
    system = System("water_like", TYPE_MAP, ATYPE, np.stack([COORD] * 3), np.stack([BOX] * 3))
    pot = dpa.load_model(overflowing(), backend="numpy")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        with pytest.raises(EvaluationError) as info:
            predict(pot, system)
    message = str(info.value)
    assert message.startswith("water_like: the se_e2_a model")
    assert "frame 0" in message
    assert "the model is the likely cause" in message


def test_dpa_test_counts_frames_across_chunks():
    class LateNaN:
        """A stand-in potential whose energy turns NaN for frames moved off COORD."""

        type_map = TYPE_MAP
        can_compute_forces = False
        model = build()

        def evaluate(self, coord, atype, box, atomic=False):
            energy = np.where(coord[:, 0, 0] > 0.25, np.nan, 0.0)
            out = {"energy": energy, "atom_energy": np.zeros(coord.shape[:2])}
            check_outputs(out, self.model)
            return out

    coord = np.stack([COORD, COORD, COORD + 0.5])
    system = System("sys", TYPE_MAP, ATYPE, coord, np.stack([BOX] * 3))
    with pytest.raises(EvaluationError, match=r"^sys: the se_e2_a model .* energy for frame 2 "):
        predict(LateNaN(), system, chunk_size=2)


def test_dpa_test_blames_the_model_for_non_finite_predictions():
    class NaNPotential:
        """A stand-in potential (no output check of its own) predicting NaN energies."""

        type_map = TYPE_MAP
        can_compute_forces = False

        def evaluate(self, coord, atype, box, atomic=False):
            return {"energy": np.full(len(coord), np.nan)}

    system = System("sys", TYPE_MAP, ATYPE, np.stack([COORD] * 2), np.stack([BOX] * 2))
    with pytest.raises(EvaluationError, match=r"sys: .*frame 0; the model may be broken"):
        predict(NaNPotential(), system)


# ---------------------------------------------------------------------------------------------
# everything valid still loads


DPA2 = {
    "type": "dpa2",
    "repinit": {"rcut": 3.0, "rcut_smth": 0.5, "nsel": 20, "neuron": [4, 8], "axis_neuron": 2},
    "repformer": {
        "rcut": 2.5,
        "rcut_smth": 2.0,
        "nsel": 10,
        "nlayers": 2,
        "g1_dim": 8,
        "g2_dim": 4,
        "attn1_hidden": 4,
        "attn2_hidden": 4,
    },
}
DPA3 = {
    "type": "dpa3",
    "repflow": {
        "n_dim": 8,
        "e_dim": 6,
        "a_dim": 4,
        "nlayers": 2,
        "e_rcut": 3.0,
        "e_rcut_smth": 2.5,
        "e_sel": 20,
        "a_rcut": 2.5,
        "a_rcut_smth": 2.0,
        "a_sel": 8,
    },
}
DPA1 = {"type": "dpa1", "sel": 20, "rcut": 3.0, "neuron": [4, 8], "axis_neuron": 2, "attn": 4}


def variant(base: dict, block: str | None = None, **changes) -> dict:
    """`base` with `changes` merged into it (or into its sub-dict `block`)."""
    out = copy.deepcopy(base)
    (out if block is None else out[block]).update(changes)
    return out


VALID = {
    "se_e2_a": SE_E2_A,
    "se_e2_a_two_side_excl": variant(SE_E2_A, type_one_side=False, exclude_types=[[0, 1]]),
    "se_e2_a_one_side_f32": variant(SE_E2_A, type_one_side=True, precision="float32"),
    "se_e2_a_resnet": variant(SE_E2_A, neuron=[4, 4, 8], resnet_dt=True),
    "dpa1": DPA1,
    "dpa1_no_attention": variant(DPA1, attn_layer=0),
    "dpa1_strip_one_side": variant(DPA1, tebd_input_mode="strip", type_one_side=True),
    "dpa1_excl_f32": variant(DPA1, exclude_types=[[1, 2]], precision="float32"),
    "dpa1_no_tebd_out": variant(DPA1, concat_output_tebd=False, tebd_dim=3, attn_layer=3),
    "se_atten_v2": variant(DPA1, type="se_atten_v2"),
    "dpa2": DPA2,
    "dpa2_three_body_strip": variant(
        DPA2,
        "repinit",
        use_three_body=True,
        tebd_input_mode="strip",
        three_body_sel=12,
        three_body_rcut=2.5,
        three_body_rcut_smth=2.0,
    ),  # fmt: skip
    "dpa2_residual_h2_attn": variant(
        DPA2,
        "repformer",
        update_style="res_residual",
        update_h2=True,
        update_g1_has_attn=True,
        update_g2_has_g1g1=True,
        attn2_has_gate=True,
    ),  # fmt: skip
    "dpa2_conv_into_mlp": variant(DPA2, "repformer", g1_out_conv=False, g1_out_mlp=False),
    "dpa2_tebd_out_f32": variant(
        variant(DPA2, add_tebd_to_repinit_out=True, precision="float32"), "repinit", axis_neuron=1
    ),
    "dpa3": DPA3,
    "dpa3_split": variant(
        DPA3, "repflow", a_compress_rate=1, a_compress_e_rate=2, a_compress_use_split=True
    ),  # fmt: skip
    "dpa3_linear_compress_heads": variant(
        DPA3, "repflow", a_compress_rate=2, n_multi_edge_message=2, smooth_edge_update=True
    ),
    "dpa3_no_angle_update": variant(DPA3, "repflow", update_angle=False),
    "dpa3_sequential_concat_f32": variant(
        variant(DPA3, concat_output_tebd=True, precision="float32"),
        "repflow",
        sequential_update=True,
    ),  # fmt: skip
    "dpa3_res_avg_excl": variant(
        variant(DPA3, exclude_types=[[0, 2]]), "repflow", update_style="res_avg"
    ),
}


@pytest.mark.parametrize("name", sorted(VALID))
def test_valid_models_build_save_load_and_evaluate(tmp_path, name):
    model = build(VALID[name], numb_fparam=1, numb_aparam=2, resnet_dt=False)
    loaded = dpa.io.load(saved(model, tmp_path / "m.dp"))
    pot = dpa.load_model(loaded, backend="numpy")
    out = pot.evaluate(COORD, ATYPE, BOX, fparam=[0.5], aparam=np.ones((5, 2)))
    assert np.all(np.isfinite(out["energy"]))
    assert loaded.with_precision("float32").precision == "float32"


@pytest.mark.parametrize(
    "case",
    json.loads((LAM / "cases.json").read_text())["cases"],
    ids=lambda case: case["name"],
)
def test_fixture_configs_build_and_load(tmp_path, case):
    config = {k: case["config"][k] for k in ("type_map", "descriptor", "fitting_net")}
    model = dpa.build_model(config)
    dpa.io.load(saved(model, tmp_path / "m.dp"))
