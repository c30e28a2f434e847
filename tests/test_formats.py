"""Model files: .dp / .pth / .jax conversions are exact, saving is atomic, loading runs no code."""

from __future__ import annotations

import importlib.util
import itertools
import json
from pathlib import Path

import h5py
import numpy as np
import pytest
from builders import DEEPMD_FIXTURES, Payload, dpa1

import dpa
import dpa.io
from dpa.tree import split_variables, variables

HAS_TORCH = importlib.util.find_spec("torch") is not None
needs_torch = pytest.mark.skipif(not HAS_TORCH, reason="torch is not installed")

CONFIGS = {
    "dpa1-f64": {
        "descriptor": dpa1(56, tebd_input_mode="strip"),
        "fitting_net": {"neuron": [8, 8], "numb_fparam": 1},
        "pair_exclude_types": [[0, 2]],
    },
    "se_e2_a-f32": {
        "descriptor": {
            "type": "se_e2_a",
            "sel": [10, 20, 6],
            "rcut": 4.0,
            "neuron": [4, 8],
            "precision": "float32",
        },
        "fitting_net": {"neuron": [8], "precision": "float32"},
    },
}


@pytest.fixture(scope="module", params=list(CONFIGS))
def model(request, make_model) -> dpa.Model:
    return make_model(CONFIGS[request.param], seed=3)


def assert_same_model(a: dpa.Model, b: dpa.Model) -> None:
    """Same metadata (everything but the arrays) and bitwise equal arrays of the same dtype."""
    skel_a, leaves_a = split_variables(a.data)
    skel_b, leaves_b = split_variables(b.data)
    assert skel_a == skel_b
    assert len(leaves_a) == len(leaves_b) > 0
    for i, (x, y) in enumerate(zip(leaves_a, leaves_b, strict=True)):
        x, y = np.asarray(x), np.asarray(y)
        assert (x.dtype, x.shape) == (y.dtype, y.shape), f"variable {i}"
        assert x.tobytes() == y.tobytes(), f"variable {i} differs"


# ---------------------------------------------------------------------------------------------
# Round trips


@needs_torch
def test_round_trip_dp_pth_jax_dp(model, tmp_path):
    paths = [tmp_path / name for name in ("a.dp", "b.pth", "c.jax", "d.dp")]
    model.save(paths[0])
    for src, dst in itertools.pairwise(paths):
        dpa.io.convert(src, dst)
    for path in paths:
        assert_same_model(model, dpa.io.load(path))
    precision = model.precision
    dtypes = {np.asarray(v).dtype for v in variables(model.tree["descriptor"])}
    assert np.dtype(precision) in dtypes


@needs_torch
def test_dp_files_are_identical_after_round_trip(model, tmp_path):
    """.dp -> .pth -> .jax -> .dp gives the same HDF5 content (JSON and every dataset)."""
    model.save(tmp_path / "a.dp")
    dpa.io.convert(tmp_path / "a.dp", tmp_path / "b.pth")
    dpa.io.convert(tmp_path / "b.pth", tmp_path / "c.jax")
    dpa.io.convert(tmp_path / "c.jax", tmp_path / "d.dp")
    assert hdf5_content(tmp_path / "a.dp") == hdf5_content(tmp_path / "d.dp")


def hdf5_content(path: Path) -> tuple:
    """(parsed JSON, {dataset: (dtype, shape, bytes)}, other attribute names) of a .dp file."""
    with h5py.File(path, "r") as f:
        tree = json.loads(f.attrs["json"])
        data = {k: (f[k].dtype.str, f[k].shape, f[k][()].tobytes()) for k in f.keys()}
        return tree, data, sorted(set(f.attrs) - {"json"})


@needs_torch
def test_converted_models_evaluate_identically(backend, tmp_path, make_model, get_system):
    model = make_model(CONFIGS["dpa1-f64"], seed=4)
    model.save(tmp_path / "m.dp")
    dpa.io.convert(tmp_path / "m.dp", tmp_path / "m.pth")
    dpa.io.convert(tmp_path / "m.pth", tmp_path / "m.jax")
    system = get_system("skewed")
    args = (system.coord, system.atype, system.box)
    fparam = np.array([[0.3], [-0.2]])
    ref = dpa.load_model(model, backend=backend).evaluate(*args, atomic=True, fparam=fparam)
    assert set(ref) >= {"energy", "atom_energy"}
    for suffix in ("m.pth", "m.jax"):
        pot = dpa.load_model(tmp_path / suffix, backend=backend)
        assert pot.backend == backend
        out = pot.evaluate(*args, atomic=True, fparam=fparam)
        assert set(out) == set(ref)
        for key in ref:
            assert np.array_equal(out[key], ref[key]), f"{suffix} {key}"


# ---------------------------------------------------------------------------------------------
# DeePMD-kit files


@pytest.mark.parametrize("case", ["dpa1_fparam_f64", "se_e2_a_twoside_f32", "se_atten_v2_f64"])
def test_deepmd_file_resaved_keeps_everything(case, tmp_path):
    src = DEEPMD_FIXTURES / f"{case}.dp"
    if not src.is_file():
        pytest.fail(f"fixture {src} is missing")
    original = dpa.io.load(src)
    assert original.data["software"] == "deepmd-kit"
    dpa.io.save(original, tmp_path / "resaved.dp")
    assert_same_model(original, dpa.io.load(tmp_path / "resaved.dp"))
    assert hdf5_content(src) == hdf5_content(tmp_path / "resaved.dp")


# ---------------------------------------------------------------------------------------------
# Atomic writes


def test_save_to_missing_folder_writes_nothing(model, tmp_path):
    target = tmp_path / "no" / "such" / "folder" / "m.dp"
    with pytest.raises(dpa.ModelFileError, match="folder"):
        model.save(target)
    assert list(tmp_path.iterdir()) == []


SUFFIX_MODULE = {
    ".dp": "dpa.formats.dp",
    ".pth": "dpa.backends.torch.modelfile",
    ".jax": "dpa.backends.jax.modelfile",
}


@pytest.mark.parametrize("suffix", list(SUFFIX_MODULE))
def test_failed_write_leaves_old_file_and_no_temporary(suffix, model, tmp_path, monkeypatch):
    if suffix == ".pth" and not HAS_TORCH:
        pytest.skip("torch is not installed")
    target = tmp_path / f"m{suffix}"
    target.write_bytes(b"old content")

    def broken_writer(path: Path, data: dict) -> None:
        path.write_bytes(b"half a model")
        raise OSError("disk full")

    module = importlib.import_module(SUFFIX_MODULE[suffix])
    monkeypatch.setattr(module, "write", broken_writer)
    with pytest.raises(OSError, match="disk full"):
        dpa.io.save(model, target)
    assert target.read_bytes() == b"old content"
    assert sorted(p.name for p in tmp_path.iterdir()) == [target.name]


# ---------------------------------------------------------------------------------------------
# Loading never runs code


@needs_torch
def test_pth_with_pickled_object_is_rejected(tmp_path):
    import torch

    marker = tmp_path / "code-was-run"
    path = tmp_path / "evil.pth"
    torch.save({"format": "dpa.pth", "version": 1, "data": Payload(marker)}, path)
    with pytest.raises(dpa.ModelFileError, match="evil.pth"):
        dpa.io.load(path)
    assert not marker.exists()
    torch.load(path, weights_only=False)  # the payload is live: a full unpickle runs it
    assert marker.exists()


def test_jax_file_with_pickled_array_is_rejected(model, tmp_path):
    marker = tmp_path / "code-was-run"
    path = tmp_path / "evil.jax"
    model.save(path)
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    arrays["v00000"] = np.array([Payload(marker)], dtype=object)
    with open(path, "wb") as f:
        np.savez(f, **arrays)
    with pytest.raises(dpa.ModelFileError, match="evil.jax"):
        dpa.io.load(path)
    assert not marker.exists()
