"""DPA-2 descriptor: build() reproduces DeePMD-kit's serialized layout; numbers on the fixtures."""

from __future__ import annotations

import json

import numpy as np
import pytest
from builders import LAM_FIXTURES as LAM
from builders import neighbor_edges

import dpa
from dpa.dpmodel.descriptor.dpa2 import descriptor as dpa2
from dpa.dpmodel.descriptor.dpa2.settings import DPA2Settings
from dpa.errors import ConfigError
from dpa.formats import dp

CASES = {
    c["name"]: c
    for c in json.loads((LAM / "cases.json").read_text())["cases"]
    if c["descriptor_type"] == "dpa2"
}
# values that legitimately differ between a fresh build and a fixture
FREE = {"precision", "seed"}


def _canonical_config(case: dict) -> dict:
    """The fixture's input section as build() receives it (canonical precision, ln_eps filled)."""
    cfg = json.loads(json.dumps(case["config"]["descriptor"]))
    cfg["precision"] = "float32" if case["precision"] == "float32" else "float64"
    if cfg["repformer"].get("ln_eps") is None:
        cfg["repformer"]["ln_eps"] = 1e-5
    return cfg


def _skeleton(tree, path=""):
    """{path: shape or value} of every leaf, arrays by shape, precision strings dropped."""
    out = {}
    if isinstance(tree, dict):
        for k, v in tree.items():
            if k in FREE:
                continue
            out.update(_skeleton(v, f"{path}/{k}"))
    elif isinstance(tree, list) and any(isinstance(v, (dict, list, np.ndarray)) for v in tree):
        for i, v in enumerate(tree):
            out.update(_skeleton(v, f"{path}[{i}]"))
    elif isinstance(tree, np.ndarray):
        out[path] = ("array", tree.shape, tree.dtype.name)
    else:
        out[path] = tree
    return out


@pytest.mark.parametrize("name", sorted(CASES))
def test_build_matches_deepmd_layout(name):
    case = CASES[name]
    ref = dp.read(LAM / f"{name}.dp")["model"]["descriptor"]
    built = dpa2.build(
        _canonical_config(case), case["config"]["type_map"], np.random.default_rng(0)
    )
    got, want = _skeleton(built), _skeleton(ref)
    assert list(got) == list(want)  # same keys, same order
    assert got == want
    assert dpa2.dim_out(built) == dpa2.dim_out(ref)


@pytest.mark.parametrize("name", ["dpa2_concat_f64", "dpa2_nosmooth_f64", "dpa2_excl_f64"])
def test_numpy_energy_matches_deepmd(name):
    ref = np.load(LAM / f"{name}.npz")
    pot = dpa.load_model(LAM / f"{name}.dp", backend="numpy")
    for system in ("water", "skewed", "molecule"):
        out = pot.evaluate(
            ref[f"{system}_coord"], ref[f"{system}_atype"], ref.get(f"{system}_box"), atomic=True
        )
        np.testing.assert_allclose(out["atom_energy"], ref[f"{system}_atom_energy"], atol=1e-10)
        np.testing.assert_allclose(out["energy"], ref[f"{system}_energy"], atol=1e-10)


def test_numpy_and_torch_agree_on_a_built_model():
    pytest.importorskip("torch")
    case = CASES["dpa2_strip3b_f64"]
    section = {
        "type_map": case["config"]["type_map"],
        "descriptor": case["config"]["descriptor"],
        "fitting_net": {"neuron": [8]},
    }
    model = dpa.build_model(section, seed=3)
    ref = np.load(LAM / "dpa2_strip3b_f64.npz")
    args = (ref["skewed_coord"], ref["skewed_atype"], ref["skewed_box"])
    a = dpa.load_model(model, backend="numpy").evaluate(*args, atomic=True)
    b = dpa.load_model(model, backend="torch").evaluate(*args, atomic=True)
    np.testing.assert_allclose(a["atom_energy"], b["atom_energy"], atol=1e-12)


@pytest.mark.parametrize("name", ["dpa2_strip3b_f64", "dpa2_nosmooth_f64"])
def test_repformer_list_trimmed_by_the_hint_gives_same_numbers(name):
    """Slots the host hint proves empty are not materialized; the softmaxes count them."""
    from dpa.dpmodel.descriptor.common import Edges

    desc = dp.read(LAM / f"{name}.dp")["model"]["descriptor"]
    rng = np.random.default_rng(7)
    var = desc["repformers_variable"]["@variables"]
    var["davg"] = rng.normal(size=var["davg"].shape)  # empty slots get non-zero phantom rows
    var["dstd"] = rng.uniform(0.5, 1.5, size=var["dstd"].shape)
    ref = np.load(LAM / f"{name}.npz")
    coord, atype, box = ref["water_coord"], ref["water_atype"], ref["water_box"]
    args = desc["repinit_args"]
    edges, nl = neighbor_edges(coord, atype, box, args["rcut"], [args["nsel"]])
    rij = edges.rij
    rcut, nsel = desc["repformer_args"]["rcut"], desc["repformer_args"]["nsel"]
    dist = np.where(nl.nlist >= 0, np.linalg.norm(rij, axis=-1), np.inf)
    used = int((dist <= rcut).sum(-1).max())
    assert used < nsel - 4  # the trimmed list is clearly narrower
    settings = DPA2Settings.from_tree(desc)
    full = dpa2.forward_parts(settings, desc, edges)
    hinted = Edges(rij, nl.nlist, atype, atype, ((rcut, used),))
    trimmed = dpa2.forward_parts(settings, desc, hinted)
    assert trimmed[2].shape[2] == used  # g2 holds only the slots that can be real
    np.testing.assert_allclose(trimmed[0], full[0], rtol=0, atol=1e-12)
    np.testing.assert_allclose(trimmed[1], full[1], rtol=0, atol=1e-12)


def test_bad_update_style_is_rejected():
    cfg = _canonical_config(CASES["dpa2_concat_f64"])
    cfg["repformer"]["update_style"] = "res_magic"
    with pytest.raises(ConfigError, match="update_style"):
        dpa2.build(cfg, ["O", "H", "C"], np.random.default_rng(0))


def test_repformer_larger_than_repinit_is_rejected():
    cfg = _canonical_config(CASES["dpa2_concat_f64"])
    cfg["repformer"]["nsel"] = cfg["repinit"]["nsel"] + 4
    with pytest.raises(ConfigError, match="repinit rcut/nsel"):
        dpa2.build(cfg, ["O", "H", "C"], np.random.default_rng(0))
