"""`dpa.train.change_bias.change_bias` and `dpa change-bias` against DeePMD-kit 3.2.0's `dp --pt change-bias`
(tests/fixtures/change_bias, made by tests/fixtures/make_change_bias_fixture.py)."""

from __future__ import annotations

import functools
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import dpa
import dpa.io
from dpa.data import load_systems
from dpa.data.system import System
from dpa.errors import ConfigError, DataError
from dpa.model import Model
from dpa.multitask import MultiTaskModel
from dpa.train.change_bias import change_bias
from dpa.tree import variables
from dpa_cli.main import cli

FIXTURES = Path(__file__).parent / "fixtures" / "change_bias"
EXPECTED = json.loads((FIXTURES / "expected.json").read_text())
SYSTEMS = [FIXTURES / "data" / name for name in EXPECTED["systems"]]
SINGLE = ["se_e2_a", "dpa1", "dpa2", "dpa3"]
MULTI = ["mt_dpa3_sharefit", "mt_dpa2"]
RUNS = ["change_all", "set_all", "change_n2", "set_n2", "bias_change", "bias_set"]
BRANCH = EXPECTED["branch"]
HAS_PT_READER = (Path(dpa.__file__).parent / "deepmd_pt.py").exists()


#: Change-mode fits inherit the differences between dpa's and DeePMD-kit's predicted energies.
#: DPA-1: its attention amplifies the round-off of neighbours right at the cutoff (~1e-7 eV on
#: 2 of the 7 frames, the same with `dpa test` vs DeePMD-kit's DeepPot). float32 models: float32
#: round-off of the predictions.
CHANGE_ATOL = {"dpa1": 1e-7, "dpa3": 1e-6, "mt_dpa3_sharefit": 1e-6}


def tolerance(case: str, run: str) -> dict:
    """1e-8 absolute, or CHANGE_ATOL for a change-mode fit."""
    if run.startswith("change"):
        return {"atol": CHANGE_ATOL.get(case, 1e-8), "rtol": 0.0}
    return {"atol": 1e-8, "rtol": 0.0}


@functools.cache
def systems() -> list[System]:
    return load_systems([str(p) for p in SYSTEMS])


@functools.cache
def model(name: str) -> Model:
    return dpa.io.load(FIXTURES / name)


def deepmd_inputs(run: dict) -> dict:
    """The keyword arguments of change_bias that reproduce one DeePMD-kit run: the frames it
    sampled (it draws `-n` frames at random per system), or the bias values."""
    if "bias_value" in run:
        return {"bias_values": run["bias_value"], "mode": run["mode"]}
    picked = [s.frames(run["frames"][Path(s.path).name]) for s in systems()]
    return {"systems": picked, "mode": run["mode"]}


def out_stat(m: Model) -> tuple[np.ndarray, np.ndarray]:
    var = m.tree["@variables"]
    return np.asarray(var["out_bias"]).reshape(-1), np.asarray(var["out_std"]).reshape(-1)


def multitask(case: str) -> MultiTaskModel:
    """DeePMD-kit's per-head .dp files of a multi-task checkpoint, as one MultiTaskModel."""
    files = EXPECTED["cases"][case]["branch_files"]
    return MultiTaskModel.from_branches({b: model(f) for b, f in files.items()})


# ---------------------------------------------------------------- against DeePMD-kit


@pytest.mark.parametrize("run", RUNS)
@pytest.mark.parametrize("case", SINGLE)
def test_single_task_matches_deepmd(case: str, run: str) -> None:
    expected = EXPECTED["cases"][case]["runs"][run]
    before = model(f"{case}.dp")
    old = [a.copy() for a in out_stat(before)]
    new = change_bias(before, **deepmd_inputs(expected))
    assert isinstance(new, Model)
    bias, std = out_stat(new)
    np.testing.assert_allclose(bias, expected["out_bias"], **tolerance(case, run))
    np.testing.assert_allclose(std, expected["out_std"], **tolerance(case, run))
    for was, now in zip(old, out_stat(before), strict=True):  # the input is not changed
        np.testing.assert_array_equal(was, now)


@pytest.mark.parametrize("run", RUNS)
@pytest.mark.parametrize("case", MULTI)
def test_multi_task_branch_matches_deepmd(case: str, run: str) -> None:
    """--model-branch water_a, checked on DeePMD-kit's per-head .dp files joined into one model:
    only that branch changes, the other keeps its bias and std."""
    expected = EXPECTED["cases"][case]["runs"][run]
    mt = multitask(case)
    new = change_bias(mt, head=BRANCH, **deepmd_inputs(expected))
    assert isinstance(new, MultiTaskModel) and new.names == mt.names
    bias, std = out_stat(new.branches[BRANCH])
    np.testing.assert_allclose(bias, expected["out_bias"], **tolerance(case, run))
    np.testing.assert_allclose(std, expected["out_std"], **tolerance(case, run))
    other = next(n for n in new.names if n != BRANCH)
    np.testing.assert_array_equal(
        out_stat(new.branches[other])[0], expected["other_branch_out_bias"]
    )
    np.testing.assert_array_equal(
        out_stat(new.branches[other])[1], expected["other_branch_out_std"]
    )


@pytest.mark.skipif(not HAS_PT_READER, reason="the DeePMD-kit .pt reader has not landed yet")
@pytest.mark.parametrize("run", ["change_all", "set_n2", "bias_change"])
def test_multi_task_pt_checkpoint(run: str) -> None:
    case = "mt_dpa3_sharefit"
    expected = EXPECTED["cases"][case]["runs"][run]
    mt = dpa.io.load_any(FIXTURES / "mt_dpa3_sharefit.pt")
    new = change_bias(mt, head=BRANCH, **deepmd_inputs(expected))
    assert isinstance(new, MultiTaskModel)
    bias, std = out_stat(new.branches[BRANCH])
    np.testing.assert_allclose(bias, expected["out_bias"], **tolerance(case, run))
    np.testing.assert_allclose(std, expected["out_std"], **tolerance(case, run))
    np.testing.assert_array_equal(
        out_stat(new.branch("water_b"))[0], expected["other_branch_out_bias"]
    )


def test_deepmd_run_facts() -> None:
    """What the fixture measured: -n counts frames per system, -f gives the same fit as -s, the
    default output is MODEL_updated.SUFFIX, and -b ignores -m and keeps out_std."""
    for case in EXPECTED["cases"].values():
        runs = case["runs"]
        assert all(len(f) == 2 for f in runs["change_n2"]["frames"].values())
        np.testing.assert_allclose(
            runs["change_datafile"]["out_bias"], runs["change_all"]["out_bias"], rtol=1e-12
        )
        assert runs["bias_change"]["out_bias"] == runs["bias_set"]["out_bias"]
        assert runs["bias_change"]["out_std"] == case["out_std_before"]
    assert EXPECTED["default_output"] == ["se_e2_a_updated.pth"]


# ---------------------------------------------------------------- our own behaviour


def test_first_frames_and_all_frames() -> None:
    """nbatch takes the first frames of each system; 0 and None take all of them."""
    m = model("se_e2_a.dp")
    first = change_bias(m, systems=[s.frames(slice(0, 2)) for s in systems()], mode="set")
    assert isinstance(first, Model)
    np.testing.assert_array_equal(
        out_stat(change_bias(m, systems=systems(), nbatch=2, mode="set"))[0], out_stat(first)[0]
    )
    all_runs = EXPECTED["cases"]["se_e2_a"]["runs"]["set_all"]
    for nbatch in (0, None):
        new = change_bias(m, systems=[str(p) for p in SYSTEMS], nbatch=nbatch, mode="set")
        np.testing.assert_allclose(out_stat(new)[0], all_runs["out_bias"], atol=1e-8)


def test_shared_arrays_stay_shared(tmp_path: Path) -> None:
    """Branches that share their networks by identity still do after the change, and the
    written multi-task file holds every branch."""
    base = model("mt_dpa2_water_a.dp")
    own = {k: np.array(v) for k, v in base.tree["@variables"].items()}  # out stats: per branch
    twin = Model({**base.data, "model": {**base.tree, "@variables": own}})
    mt = MultiTaskModel.from_branches({"water_a": base, "water_b": twin})
    new = change_bias(mt, bias_values=[-1.0, -2.0], head="WATER_A")  # names: any case
    assert isinstance(new, MultiTaskModel)
    assert new.num_params == mt.num_params  # nothing duplicated
    a, b = (variables(new.branches[n].tree["descriptor"]) for n in ("water_a", "water_b"))
    assert all(x is y for x, y in zip(a, b, strict=True))
    dpa.io.save(new, tmp_path / "mt.dp")
    back = dpa.io.load_any(tmp_path / "mt.dp")
    assert isinstance(back, MultiTaskModel)
    np.testing.assert_array_equal(out_stat(back.branch("water_a"))[0], [-1.0, -2.0])
    np.testing.assert_array_equal(out_stat(back.branch("water_b"))[0], out_stat(base)[0])


def test_api_errors(tmp_path: Path) -> None:
    single, mt = model("se_e2_a.dp"), multitask("mt_dpa2")
    with pytest.raises(ConfigError, match="not a branch.*water_a.*water_b"):
        change_bias(mt, bias_values=[1.0, 2.0], head="water_c")
    with pytest.raises(ConfigError, match="multi-task model: choose a branch"):
        change_bias(mt, bias_values=[1.0, 2.0])
    with pytest.raises(ConfigError, match="single-task model"):
        change_bias(single, bias_values=[1.0, 2.0], head="water_a")
    with pytest.raises(ConfigError, match="either data systems .* or bias values"):
        change_bias(single)
    with pytest.raises(ConfigError, match="either data systems .* or bias values"):
        change_bias(single, systems=systems(), bias_values=[1.0, 2.0])
    with pytest.raises(ConfigError, match=r"3 bias values .* 2 types .*\['O', 'H'\]"):
        change_bias(single, bias_values=[1.0, 2.0, 3.0])
    with pytest.raises(ConfigError, match="unknown change-bias mode"):
        change_bias(single, bias_values=[1.0, 2.0], mode="add")  # type: ignore[arg-type]
    with pytest.raises(DataError, match="element 'C' is not in the model's type_map"):
        change_bias(single, systems=[bad_system(tmp_path, "carbon")])
    with pytest.raises(DataError, match="no energy labels"):
        change_bias(single, systems=[bad_system(tmp_path, "unlabelled")], mode="set")


def bad_system(tmp_path: Path, kind: str) -> Path:
    """A copy of the first fixture system with an element the models lack, or no energies."""
    path = tmp_path / kind
    shutil.copytree(SYSTEMS[0], path)
    if kind == "carbon":
        (path / "type_map.raw").write_text("C\nH\n")
    else:
        (path / "set.000" / "energy.npy").unlink()
    return path


# ---------------------------------------------------------------- command line


def run(*args: str):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def test_cli_datafile_and_default_output(tmp_path: Path) -> None:
    src = tmp_path / "model.dp"
    shutil.copy(FIXTURES / "se_e2_a.dp", src)
    datafile = tmp_path / "systems.txt"
    datafile.write_text("".join(f"{p}\n" for p in SYSTEMS) + "\n")
    result = run("change-bias", str(src), "-f", str(datafile), "-m", "set")
    assert result.exit_code == 0, result.output
    expected = EXPECTED["cases"]["se_e2_a"]["runs"]["set_all"]["out_bias"]
    new = dpa.io.load(tmp_path / "model_updated.dp")
    np.testing.assert_allclose(out_stat(new)[0], expected, atol=1e-8)
    lines = result.stdout.splitlines()
    assert lines[0] == "# energy bias (mode set)"
    o_line = next(line.split() for line in lines if line.split()[:1] == ["O"])
    assert float(o_line[1]) == pytest.approx(-93.5755004883, abs=1e-9)
    assert float(o_line[2]) == pytest.approx(expected[0], abs=1e-9)


def test_cli_bias_values_and_branch(tmp_path: Path) -> None:
    mt_file = tmp_path / "mt.pth"
    dpa.io.save(multitask("mt_dpa3_sharefit"), mt_file)
    out = tmp_path / "out.jax"
    result = run(
        "change-bias", str(mt_file), "-b", "-90.5", "-180.25", "--model-branch", BRANCH,
        "-o", str(out), "-m", "set",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert f"branch {BRANCH}" in result.stdout
    back = dpa.io.load_any(out)
    assert isinstance(back, MultiTaskModel) and sorted(back.names) == ["water_a", "water_b"]
    np.testing.assert_array_equal(out_stat(back.branch(BRANCH))[0], [-90.5, -180.25])
    before = EXPECTED["cases"]["mt_dpa3_sharefit"]["runs"]["set_all"]["other_branch_out_bias"]
    np.testing.assert_array_equal(out_stat(back.branch("water_b"))[0], before)


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["-b", "1", "2", "-s", "x"], 2, "exclude each other"),
        (["-b"], 2, "-b needs at least one number"),
        (["-m", "add", "-b", "1", "2"], 2, "'add' is not one of"),
        (["-n", "-1", "-b", "1", "2"], 2, "-1 is not in the range"),
        (["-b", "1", "2", "3"], 1, "3 bias values for the 2 types"),
        (["-b", "1", "2", "--model-branch", "water_a"], 1, "single-task model"),
        ([], 1, "not a deepmd/npy system"),  # no -s/-f/-b: the current folder, empty here
    ],
)
def test_cli_errors_write_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, args: list[str], code: int, message: str
) -> None:
    src = tmp_path / "model.dp"
    shutil.copy(FIXTURES / "se_e2_a.dp", src)
    monkeypatch.chdir(tmp_path)
    result = run("change-bias", str(src), *args)
    assert result.exit_code == code
    assert message in " ".join(result.stderr.split())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.dp"]


def test_cli_unknown_branch_lists_branches(tmp_path: Path) -> None:
    mt_file = tmp_path / "mt.dp"
    dpa.io.save(multitask("mt_dpa2"), mt_file)
    for args, message in (
        (["--model-branch", "nope"], "'nope' is not a branch of this model; branches: water_a"),
        ([], "choose a branch with --model-branch"),
    ):
        result = run("change-bias", str(mt_file), "-b", "1", "2", *args)
        assert result.exit_code == 1
        assert message in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mt.dp"]
    for kind, message in (("carbon", "not in the model's type_map"), ("unlabelled", "no energy")):
        result = run("change-bias", str(mt_file), "-s", str(bad_system(tmp_path, kind)),
                     "--model-branch", BRANCH)  # fmt: skip
        assert result.exit_code == 1 and message in result.stderr
        assert not (tmp_path / "mt_updated.dp").exists()


def test_set_renormalises_a_shared_fparam(tmp_path: Path) -> None:
    """-m set recomputes fparam avg/inv_std from the frames, as DeePMD-kit; in a multi-task
    model whose branches share the fitting, the new arrays are shared too."""
    config = {
        "type_map": ["O", "H"],
        "descriptor": {"type": "se_e2_a", "sel": [20, 40], "rcut": 4.0, "neuron": [4, 8]},
        "fitting_net": {"neuron": [8], "numb_fparam": 1},
    }
    base = dpa.build_model(config, seed=1)
    own = {k: np.array(v) for k, v in base.tree["@variables"].items()}
    twin = Model({**base.data, "model": {**base.tree, "@variables": own}})
    mt = MultiTaskModel.from_branches({"a": base, "b": twin})
    path = shutil.copytree(SYSTEMS[0], tmp_path / "sys")
    fparam = np.array([[0.5], [1.0], [2.0], [4.5]])
    np.save(path / "set.000" / "fparam.npy", fparam)
    new = change_bias(mt, systems=[str(path)], mode="set", head="a")
    assert isinstance(new, MultiTaskModel)
    fa, fb = (new.branches[n].tree["fitting"]["@variables"] for n in ("a", "b"))
    assert fa["fparam_avg"] is fb["fparam_avg"] and fa["fparam_inv_std"] is fb["fparam_inv_std"]
    np.testing.assert_allclose(fa["fparam_avg"], [fparam.mean()])
    np.testing.assert_allclose(fa["fparam_inv_std"], [1.0 / fparam.std()])
    assert new.num_params == mt.num_params
    old = base.tree["fitting"]["@variables"]["fparam_avg"]
    np.testing.assert_array_equal(old, np.zeros_like(old))  # the input is not changed


def test_default_output_names() -> None:
    from dpa_cli.change_bias import default_output

    assert default_output("dir.pt/model.pth") == "dir.pt/model_updated.pth"
    assert default_output("model.ckpt-3.pt") == "model.ckpt-3_updated.dp"  # dpa writes no .pt
    assert default_output("m.savedmodel/") == "m_updated.savedmodel"
