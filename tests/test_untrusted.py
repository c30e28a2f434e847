"""Hostile and broken inputs: each is refused with one DPAError naming the culprit, runs no code
from the file, writes nothing, and never turns into a NaN. Crafted SavedModel graphs are in
test_savedmodel_untrusted.py; this file has pickles, corrupt files, wrong shapes, NaN weights
and a bounded property-based fuzz of the model readers (hypothesis, derandomized)."""

from __future__ import annotations

import copy
import tempfile
from pathlib import Path

import numpy as np
import pytest
from builders import Payload, write_npy_system
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import dpa
import dpa.data
import dpa.io
from dpa.errors import ConfigError, DataError, DPAError, ModelFileError
from dpa.tree import map_variables, split_variables, variables

CONFIG = {
    "type_map": ["O", "H"],
    "descriptor": {
        "type": "se_atten",
        "sel": 12,
        "rcut": 3.0,
        "rcut_smth": 0.5,
        "neuron": [4, 8],
        "axis_neuron": 2,
        "attn": 4,
        "attn_layer": 1,
    },
    "fitting_net": {"neuron": [6, 6]},
}
COORD = np.array([[0.0, 0.0, 0.0], [0.96, 0.0, 0.0], [-0.24, 0.93, 0.0], [2.0, 2.0, 2.0]])
ATYPE = np.array([0, 1, 1, 0])
BOX = np.eye(3) * 7.0
FUZZ = settings(
    max_examples=40,
    deadline=None,
    derandomize=True,  # the same examples on every run: CI is reproducible
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@pytest.fixture(scope="module")
def model() -> dpa.Model:
    return dpa.build_model(CONFIG, seed=1)


@pytest.fixture(scope="module")
def reference(model) -> np.ndarray:
    return dpa.load_model(model, backend="numpy").evaluate(COORD, ATYPE, BOX)["energy"]


@pytest.fixture(scope="module")
def files(model, tmp_path_factory) -> dict[str, bytes]:
    """The model written in every dpa-written format, as bytes."""
    folder = tmp_path_factory.mktemp("formats")
    found = {}
    for suffix in (".dp", ".pth", ".jax"):
        if suffix == ".pth":
            pytest.importorskip("torch")
        path = folder / f"m{suffix}"
        model.save(path)
        found[suffix] = path.read_bytes()
    return found


def _same_model(a: dpa.Model, b: dpa.Model) -> bool:
    """Same skeleton and bit-identical variables."""
    (sa, va), (sb, vb) = split_variables(a.tree), split_variables(b.tree)
    if sa != sb or len(va) != len(vb):
        return False
    return all(
        np.asarray(x).dtype == np.asarray(y).dtype and np.array_equal(x, y)
        for x, y in zip(va, vb, strict=True)
    )


def _listing(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


# ---------------------------------------------------------------------------------------------
# Hostile files


def test_a_pickle_in_a_data_file_is_refused_and_never_run(tmp_path):
    marker = tmp_path / "code-was-run"
    arrays = {"coord": np.array([Payload(marker)], dtype=object), "box": np.eye(3).reshape(1, 9)}
    system = write_npy_system(tmp_path / "s", "0\n1\n", arrays)
    with pytest.raises(DataError, match="coord.npy"):
        dpa.data.load_system(str(system))
    assert not marker.exists()


def test_a_yaml_input_with_a_python_tag_is_refused_and_never_run(tmp_path):
    from dpa.train.config import read_train_input

    marker = tmp_path / "code-was-run"
    path = tmp_path / "input.yaml"
    path.write_text(f"model: !!python/object/apply:pathlib.Path.touch ['{marker}']\n")
    with pytest.raises(ConfigError, match="input.yaml"):
        read_train_input(path)
    assert not marker.exists()


@pytest.mark.parametrize("suffix", [".dp", ".pth", ".jax"])
def test_a_truncated_model_file_is_refused_naming_it(files, tmp_path, suffix):
    path = tmp_path / f"cut{suffix}"
    path.write_bytes(files[suffix][: len(files[suffix]) // 2])
    with pytest.raises(ModelFileError, match=f"cut{suffix}"):
        dpa.io.load(path)


def test_a_nan_weight_is_refused_at_load_naming_the_variable(model, tmp_path):
    data = copy.deepcopy(model.data)
    w = data["model"]["fitting"]["nets"]["networks"][0]["layers"][0]["@variables"]["w"]
    w[0, 0] = np.nan
    path = tmp_path / "nan.dp"
    dpa.formats.dp.write(path, data)  # the raw writer: Model() would refuse it before saving
    with pytest.raises(ModelFileError, match=r"nan.dp.*layers\[0\].*w.*(nan|NaN|not finite)"):
        dpa.load_model(path, backend="numpy")


def test_statistics_disagreeing_with_sel_are_refused(model, tmp_path):
    data = copy.deepcopy(model.data)
    data["model"]["descriptor"]["sel"] = [13]
    data["model_def_script"]["descriptor"]["sel"] = 13
    path = tmp_path / "sel.dp"
    dpa.formats.dp.write(path, data)
    with pytest.raises(ModelFileError, match=r"sel.dp.*davg"):
        dpa.io.load(path)


# ---------------------------------------------------------------------------------------------
# Property-based fuzz of the readers: a damaged file is refused or reads back identical


@pytest.mark.parametrize("suffix", [".dp", ".pth", ".jax"])
@FUZZ
@given(data=st.data())
def test_damaged_files_are_refused_or_read_back_identical(files, model, suffix, data):
    original = files[suffix]
    edits = data.draw(
        st.lists(
            st.tuples(st.integers(0, len(original) - 1), st.integers(0, 255)),
            min_size=1,
            max_size=4,
        ),
        label="edits",
    )
    cut = data.draw(st.one_of(st.none(), st.integers(0, len(original) - 1)), label="cut")
    damaged = bytearray(original)
    for pos, byte in edits:
        damaged[pos] = byte
    if cut is not None:
        damaged = damaged[:cut]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"damaged{suffix}"
        path.write_bytes(bytes(damaged))
        try:
            loaded = dpa.io.load(path)
        except ModelFileError as err:
            assert "damaged" in str(err)
        else:  # the edit hit bytes the reader never uses: the model must be exactly the same
            assert _same_model(loaded, model)
        assert _listing(Path(tmp)) == [path.name]  # nothing written beside it


def _variable_edits(model: dpa.Model) -> st.SearchStrategy:
    """(variable index, how to break it)."""
    n = len(variables(model.tree))
    kinds = st.sampled_from(["nan", "inf", "zero_std", "drop_row", "add_axis", "ints", "strings"])
    return st.tuples(st.integers(0, n - 1), kinds)


def _break(array: np.ndarray, kind: str) -> np.ndarray:
    a = np.array(array, copy=True)
    if kind in ("nan", "inf") and a.size and a.dtype.kind == "f":
        a.flat[a.size // 2] = np.nan if kind == "nan" else np.inf
    elif kind == "zero_std" and a.size and a.dtype.kind == "f":
        a[...] = 0.0
    elif kind == "drop_row" and a.ndim and a.shape[0] > 1:
        a = a[:-1]
    elif kind == "add_axis":
        a = a[None]
    elif kind == "ints":
        a = a.astype(np.int64)
    elif kind == "strings":
        a = a.astype(str)
    return a


@FUZZ
@given(edit=st.data())
def test_a_broken_variable_is_refused_or_evaluates_finite(model, reference, edit):
    index, kind = edit.draw(_variable_edits(model))
    counter = iter(range(1 << 30))
    tree = map_variables(
        model.tree, lambda a: _break(a, kind) if next(counter) == index else np.array(a)
    )
    try:
        broken = dpa.Model({**model.data, "model": tree})
    except ModelFileError as err:
        assert "@variables" in str(err) or "model." in str(err)
        return
    try:
        out = dpa.load_model(broken, backend="numpy").evaluate(COORD, ATYPE, BOX)
    except DPAError:
        return
    assert np.all(np.isfinite(out["energy"]))
    assert np.all(np.isfinite(out["atom_energy"]))


@FUZZ
@given(
    key=st.sampled_from(["sel", "rcut", "rcut_smth", "neuron", "axis_neuron", "attn"]),
    value=st.one_of(
        st.integers(-3, 40),
        st.integers(10**9, 10**13),
        st.floats(allow_nan=True, allow_infinity=True),
        st.lists(st.integers(-2, 20), max_size=3),
        st.text(max_size=3),
        st.none(),
        st.booleans(),
    ),
)
def test_a_changed_config_value_is_refused_or_evaluates_finite(model, key, value):
    tree = copy.deepcopy(model.tree)
    tree["descriptor"][key] = value
    try:
        changed = dpa.Model({**model.data, "model": tree})
        out = dpa.load_model(changed, backend="numpy").evaluate(COORD, ATYPE, BOX)
    except DPAError:
        return
    assert np.all(np.isfinite(out["energy"]))
