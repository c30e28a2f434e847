"""Reading DeePMD-kit PyTorch checkpoints (`.pt`): every array equals the tree DeePMD-kit itself
serializes from the same file, evaluation equals DeePMD-kit's `DeepPot` on the checkpoint, the
branches of a multi-task file share their common arrays, heads resolve like DeePMD-kit's, and
foreign, broken or hostile `.pt` files are refused without running code from them.
Fixtures and their generator: tests/fixtures/deepmd_pt/ (see tests/fixtures/README.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from builders import Payload  # noqa: E402

import dpa  # noqa: E402
import dpa.io  # noqa: E402
from dpa.errors import ConfigError, ModelFileError, ModelWriteError  # noqa: E402
from dpa.formats import dp as dpfile  # noqa: E402
from dpa.tree import variables  # noqa: E402

HERE = Path(__file__).resolve().parent / "fixtures" / "deepmd_pt"
SINGLE = ("se_e2_a", "dpa1", "dpa2", "dpa3")  # all float64
MULTI = {"mt_dpa2": "float64", "mt_dpa3_sharefit": "float32"}
HEADS = ("water_a", "water_b")
# (case, head or None, DeePMD-kit's .dp of it)
TREES = [(c, None, HERE / f"{c}.dp") for c in SINGLE] + [
    (c, h, HERE / f"{c}.{h}.dp") for c in MULTI for h in HEADS
]
OUTPUTS = ("energy", "force", "virial", "atom_energy")


def flat(node: Any, path: str = "", inside: bool = False) -> dict[str, Any]:
    """{tree path: array} of every array leaf (under "@variables" keys) of a data dict."""
    out: dict[str, Any] = {}
    if isinstance(node, dict):
        for k, v in node.items():
            out.update(flat(v, f"{path}/{k}", inside or k == "@variables"))
    elif isinstance(node, list | tuple):
        for i, v in enumerate(node):
            out.update(flat(v, f"{path}[{i}]", inside))
    elif inside and node is not None:
        out[path] = np.asarray(node)
    return out


def checkpoint(case: str) -> Path:
    return HERE / f"{case}.pt"


@pytest.mark.parametrize(("case", "head", "reference"), TREES, ids=lambda x: str(x))
def test_arrays_equal_deepmd_tree(case, head, reference):
    ours = dpa.io.load(checkpoint(case), head).data
    theirs = dpfile.read(reference)
    mine, ref = flat(ours), flat(theirs)
    assert sorted(mine) == sorted(ref)  # model arrays and the top-level min_nbor_dist
    for path, array in ref.items():
        assert mine[path].dtype == array.dtype and mine[path].shape == array.shape, path
        assert np.array_equal(mine[path], array), path
    assert ours["model_def_script"] == theirs["model_def_script"]
    assert ours["model"]["descriptor"]["type"] == theirs["model"]["descriptor"]["type"]


@pytest.fixture(scope="module")
def water() -> dict[str, np.ndarray]:
    with np.load(HERE / "water.npz") as z:
        return {k: z[k] for k in z.files}


def _max_differences(pot: dpa.Potential, water: dict, expected: dict, head: str) -> dict:
    out = pot.evaluate(water["coord"], water["atype"], water["box"], atomic=True)
    return {k: float(np.abs(out[k] - expected[f"{head}.{k}"]).max()) for k in OUTPUTS}


@pytest.mark.parametrize("case", SINGLE)
def test_single_task_evaluation_matches_deepmd(case, water):
    with np.load(HERE / f"{case}.npz") as expected:
        pot = dpa.load_model(checkpoint(case), backend="torch")
        diff = _max_differences(pot, water, expected, "Default")
    assert max(diff.values()) < 1e-10, diff


@pytest.mark.parametrize("case", MULTI)
@pytest.mark.parametrize("head", HEADS)
def test_multitask_evaluation_matches_deepmd(case, head, water):
    # float32 models agree to float32 round-off (energy ~3e4 eV summed over 192 atoms)
    tolerance = 1e-10 if MULTI[case] == "float64" else {"energy": 1e-4, "virial": 1e-4}
    with np.load(HERE / f"{case}.npz") as expected:
        pot = dpa.load_model(checkpoint(case), backend="torch", head=head)
        diff = _max_differences(pot, water, expected, head)
    for key, value in diff.items():
        limit = tolerance if isinstance(tolerance, float) else tolerance.get(key, 1e-5)
        assert value < limit, (key, diff)


# ------------------------------------------------------------------------ multi-task sharing


@pytest.mark.parametrize("case", MULTI)
def test_shared_arrays_are_one_object_and_stored_once(case, tmp_path):
    model = dpa.io.load_any(checkpoint(case))
    assert isinstance(model, dpa.MultiTaskModel)
    assert model.names == ["water_b", "water_a"]  # the checkpoint's model_dict order
    a, b = (model.branches[h].tree for h in HEADS)
    assert (
        a["descriptor"]["type_embedding"]["embedding"]["layers"][0]["@variables"]["w"]
        is (b["descriptor"]["type_embedding"]["embedding"]["layers"][0]["@variables"]["w"])
    )
    assert a["@variables"]["out_bias"] is not b["@variables"]["out_bias"]  # per branch
    summed = sum(m.num_params for m in model.branches.values())
    assert model.num_params < summed
    shared_fitting = "sharefit" in case
    fit_a, fit_b = (
        t["fitting"]["nets"]["networks"][0]["layers"][0]["@variables"]["w"] for t in (a, b)
    )
    assert (fit_a is fit_b) == shared_fitting
    # the stored copy keeps the sharing
    model.save(tmp_path / "mt.dp")
    again = dpa.io.load_any(tmp_path / "mt.dp")
    assert isinstance(again, dpa.MultiTaskModel) and again.num_params == model.num_params
    assert len(variables(again.data["model"])) == len(variables(model.data["model"]))


def test_branch_metadata():
    model = dpa.io.load_any(checkpoint("mt_dpa2"))
    assert isinstance(model, dpa.MultiTaskModel)
    assert model.aliases("water_a") == ["alias_a"]
    assert (
        model.data["model_def_script"]["model_dict"]["water_a"]
        == (model.branches["water_a"].data["model_def_script"])
    )
    for head in HEADS:  # min_nbor_dist is per branch, outside the model tree
        assert model.branches[head].data["@variables"]["min_nbor_dist"].shape == ()


# ------------------------------------------------------------------------ heads


def test_head_is_case_insensitive_and_accepts_aliases(water):
    path = checkpoint("mt_dpa2")
    ref = dpa.load_model(path, backend="numpy", head="water_a").evaluate(
        water["coord"][:1], water["atype"], water["box"][:1]
    )["energy"]
    for head in ("WATER_A", "Water_a", "ALIAS_A"):
        pot = dpa.load_model(path, backend="numpy", head=head)
        out = pot.evaluate(water["coord"][:1], water["atype"], water["box"][:1])["energy"]
        assert np.array_equal(out, ref)
    other = dpa.load_model(path, backend="numpy", head="water_b")
    assert not np.array_equal(
        other.evaluate(water["coord"][:1], water["atype"], water["box"][:1])["energy"], ref
    )


def test_unknown_head_lists_the_branches():
    with pytest.raises(ConfigError, match=r"mt_dpa2\.pt.*'nope'.*water_b.*alias_b.*water_a"):
        dpa.load_model(checkpoint("mt_dpa2"), backend="numpy", head="nope")


def test_multitask_without_head_lists_the_branches():
    with pytest.raises(ConfigError, match=r"multi-task.*water_b.*water_a"):
        dpa.load_model(checkpoint("mt_dpa3_sharefit"), backend="numpy")


def test_single_task_head():
    assert dpa.io.load(checkpoint("se_e2_a"), "default").num_params > 0
    with pytest.raises(ConfigError, match="single-task"):
        dpa.io.load(checkpoint("se_e2_a"), "water_a")


# ------------------------------------------------------------------------ layouts and refusals


def _state(case: str) -> dict:
    payload = torch.load(checkpoint(case), map_location="cpu", weights_only=True)
    return payload["model"]


def test_full_checkpoint_and_bare_state_dict(tmp_path):
    full = torch.load(checkpoint("se_e2_a"), map_location="cpu", weights_only=True)
    assert "optimizer" in full  # the fixture keeps DeePMD-kit's complete file
    torch.save(full["model"], tmp_path / "bare.pt")
    bare = flat(dpa.io.load(tmp_path / "bare.pt").data)
    ref = flat(dpa.io.load(checkpoint("se_e2_a")).data)
    assert sorted(bare) == sorted(ref)
    assert all(np.array_equal(bare[k], ref[k]) for k in ref)


def test_not_a_deepmd_checkpoint(tmp_path):
    torch.save({"a": 1}, tmp_path / "other.pt")
    with pytest.raises(
        ModelFileError, match=r"other\.pt.*not a DeePMD-kit checkpoint.*model_params"
    ):
        dpa.io.load(tmp_path / "other.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a torch file at all")
    with pytest.raises(ModelFileError, match=r"junk\.pt"):
        dpa.io.load(tmp_path / "junk.pt")


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torch.jit, to make the archive
def test_torchscript_and_dpa_pth_are_named(tmp_path):
    scripted = torch.jit.script(torch.nn.Linear(2, 2))
    torch.jit.save(scripted, str(tmp_path / "frozen.pt"))
    with pytest.raises(ModelFileError, match=r"frozen\.pt.*TorchScript.*never runs"):
        dpa.io.load(tmp_path / "frozen.pt")
    model = dpa.io.load(checkpoint("dpa1"))
    model.save(tmp_path / "m.pth")
    (tmp_path / "m.pt").write_bytes((tmp_path / "m.pth").read_bytes())
    with pytest.raises(ModelFileError, match=r"m\.pt.*rename it to \.pth"):
        dpa.io.load(tmp_path / "m.pt")


def test_pickled_object_is_refused_without_running_it(tmp_path):
    marker = tmp_path / "code-was-run"
    state = _state("se_e2_a")
    state["_extra_state"] = {"model_params": Payload(marker)}
    torch.save({"model": state}, tmp_path / "evil.pt")
    with pytest.raises(ModelFileError, match=r"evil\.pt.*never runs code"):
        dpa.io.load(tmp_path / "evil.pt")
    assert not marker.exists()


def test_unmapped_tensor_is_refused(tmp_path):
    state = _state("se_e2_a")
    state["model.Default.atomic_model.descriptor.sea.extra.matrix"] = torch.zeros(2, 2)
    torch.save({"model": state}, tmp_path / "extra.pt")
    with pytest.raises(ModelFileError, match=r"extra\.pt.*no place.*sea\.extra\.matrix"):
        dpa.io.load(tmp_path / "extra.pt")


def test_missing_tensor_is_refused(tmp_path):
    state = _state("dpa2")
    key = next(k for k in state if k.endswith("repformers.layers.0.linear1.matrix"))
    del state[key]
    torch.save({"model": state}, tmp_path / "missing.pt")
    with pytest.raises(
        ModelFileError, match=r"missing\.pt.*no tensor.*repformer_layers\[0\]/linear1"
    ):
        dpa.io.load(tmp_path / "missing.pt")


def test_wrong_shape_is_refused(tmp_path):
    state = _state("dpa1")
    state["model.Default.atomic_model.out_bias"] = torch.zeros(1, 3, 1, dtype=torch.float64)
    torch.save({"model": state}, tmp_path / "shape.pt")
    with pytest.raises(ModelFileError, match=r"shape\.pt.*out_bias.*\(1, 3, 1\)"):
        dpa.io.load(tmp_path / "shape.pt")


def test_unsupported_option_names_the_file(tmp_path):
    state = _state("dpa1")
    state["_extra_state"]["model_params"]["descriptor"]["lmax"] = 2
    torch.save({"model": state}, tmp_path / "lmax.pt")
    with pytest.raises(ModelFileError, match=r"lmax\.pt.*does not support.*lmax"):
        dpa.io.load(tmp_path / "lmax.pt")


def test_writing_pt_is_refused(tmp_path):
    model = dpa.io.load(checkpoint("dpa1"))
    with pytest.raises(ModelWriteError, match=r"does not write.*\.dp.*\.pth.*\.jax"):
        model.save(tmp_path / "out.pt")
    with pytest.raises(ModelWriteError, match="does not write"):
        dpa.io.convert(checkpoint("dpa1"), tmp_path / "again.pt")
    assert list(tmp_path.iterdir()) == []


def test_convert_head_and_whole(tmp_path):
    dpa.io.convert(checkpoint("mt_dpa2"), tmp_path / "a.dp", head="Water_A")
    single = dpa.io.load_any(tmp_path / "a.dp")
    assert isinstance(single, dpa.Model)
    ref = flat(dpfile.read(HERE / "mt_dpa2.water_a.dp"))
    got = flat(single.data)
    assert all(np.array_equal(got[k], ref[k]) for k in ref)
    dpa.io.convert(checkpoint("mt_dpa2"), tmp_path / "all.pth")
    whole = dpa.io.load_any(tmp_path / "all.pth")
    assert isinstance(whole, dpa.MultiTaskModel) and whole.names == ["water_b", "water_a"]
