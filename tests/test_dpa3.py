"""DPA-3 descriptor: serialized layout of fresh models, and invariances of the forward pass."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
from builders import LAM_FIXTURES as LAM
from builders import TYPE_MAP, neighbor_edges

from dpa.dpmodel.array_api import gather_neighbors
from dpa.dpmodel.descriptor.common import Edges
from dpa.dpmodel.descriptor.dpa3 import descriptor as dpa3
from dpa.dpmodel.descriptor.dpa3.settings import RepflowSettings
from dpa.dpmodel.model import descriptor_forward
from dpa.formats import dp

CASES = {
    c["name"]: c
    for c in json.loads((LAM / "cases.json").read_text())["cases"]
    if c["descriptor_type"] == "dpa3"
}


def _config(case: str) -> dict:
    """The case's descriptor section as the schema hands it to `build` (canonical precision)."""
    cfg = copy.deepcopy(CASES[case]["config"]["descriptor"])
    cfg["precision"] = "float32" if cfg["precision"] == "float32" else "float64"
    return cfg


def _stored(case: str) -> dict:
    return dp.read(LAM / f"{case}.dp")["model"]["descriptor"]


def _layout(tree, path: str = "") -> dict:
    """Flattened {path: shape/dtype or value} of a serialized tree, with precisions unified."""
    out = {}
    if isinstance(tree, dict):
        for k, v in tree.items():
            out.update(_layout(v, f"{path}/{k}"))
    elif isinstance(tree, list | tuple) and any(isinstance(v, dict | np.ndarray) for v in tree):
        for i, v in enumerate(tree):
            out.update(_layout(v, f"{path}/{i}"))
    elif isinstance(tree, np.ndarray):
        out[path] = (tree.shape, tree.dtype.name)
    elif path.endswith("/precision"):
        out[path] = {"default": "float64"}.get(tree, tree)
    else:
        out[path] = [list(p) for p in tree] if path.endswith("exclude_types") else tree
    return out


@pytest.mark.parametrize("case", sorted(CASES))
def test_build_matches_deepmd_layout(case):
    built = dpa3.build(_config(case), TYPE_MAP, np.random.default_rng(0))
    ours, theirs = _layout(built), _layout(_stored(case))
    assert ours.keys() == theirs.keys()
    for key in theirs:
        assert ours[key] == theirs[key], key


def test_build_fresh_statistics():
    built = dpa3.build(_config("dpa3_v31_f64"), TYPE_MAP, np.random.default_rng(0))
    var = built["repflow_variable"]["@variables"]
    assert np.all(var["davg"] == 0.0) and np.all(var["dstd"] == 0.3)
    layer = built["repflow_variable"]["repflow_layers"][0]["@variables"]
    assert all(np.all(v == 0.1) for v in layer["n_residual"] + layer["e_residual"])


def _water_edges(width: int | None = None):
    """Edges of two water frames within e_rcut 5.0 (68 slots), optionally trimmed to `width`."""
    ref = np.load(LAM / "dpa3_default_f64.npz")
    coord, atype, box = ref["water_coord"], ref["water_atype"], ref["water_box"]
    edges, _ = neighbor_edges(coord, atype, box, 5.0, [68])
    if width is None:
        return edges
    return Edges(edges.rij[:, :, :width], edges.nlist[:, :, :width], atype, atype)


@pytest.mark.parametrize("case", ["dpa3_default_f64", "dpa3_dynsel_f64", "dpa3_excl_f64"])
def test_trimmed_width_gives_same_numbers(case):
    desc = _stored(case)
    full = _water_edges()
    used = int((full.nlist >= 0).sum(-1).max())
    assert used < 68
    ref = descriptor_forward(desc, full)
    np.testing.assert_allclose(
        descriptor_forward(desc, _water_edges(used)), ref, rtol=0, atol=1e-12
    )


def test_optim_update_flag_does_not_change_numbers():
    desc = _stored("dpa3_v31_f64")
    other = copy.deepcopy(desc)
    other["repflow_args"]["optim_update"] = False
    for layer in other["repflow_variable"]["repflow_layers"]:
        layer["optim_update"] = False
    edges = _water_edges()
    np.testing.assert_array_equal(descriptor_forward(desc, edges), descriptor_forward(other, edges))


def test_dynamic_sel_normalizers():
    stored = _stored("dpa3_dynsel_f64")["repflow_args"]
    args = {**stored, "e_sel": 1200, "a_sel": 300, "use_dynamic_sel": True}
    args["sel_reduce_factor"] = 10.0

    def normalizers(repflow_args: dict) -> tuple[float, float]:
        return RepflowSettings.from_tree(repflow_args, 1).normalizers

    assert normalizers(args) == (120.0, 30.0)
    assert normalizers({**args, "use_dynamic_sel": False}) == (1200.0, 300.0)


def test_neighbor_gather_uses_local_indices():
    edges = _water_edges()
    nlist = np.where(edges.nlist >= 0, edges.nlist, 0)
    feats = np.arange(2 * 192 * 2, dtype=float).reshape(2, 192, 2)
    got = gather_neighbors(feats, nlist)
    assert np.array_equal(got[1, 5, 0], feats[1, nlist[1, 5, 0]])
