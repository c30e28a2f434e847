"""`dpa train` end to end on the bundled water frames: outputs, determinism, restart after a
kill, auto sel, and errors before the first step."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from builders import FIXTURES, WATER, read_lcurve, water_frames, water_section, write_small_input

import dpa
from dpa.errors import ConfigError, DataError
from dpa.tree import variables

pytest.importorskip("torch")
from dpa.train.loop import TrainingDiverged, train  # noqa: E402


def _input(tmp: Path, steps: int = 12, **training) -> Path:
    data = {
        "training_data": water_section(),
        "validation_data": water_section(numb_btch=1),
        "max_ckpt_keep": 2,
        **training,
    }
    return write_small_input(tmp, ["O", "H"], data, steps, disp_freq=2, save_freq=4)


def _arrays(path: Path) -> list[np.ndarray]:
    return variables(dpa.io.load(path).tree)


def _same_model(a: Path, b: Path) -> None:
    for x, y in zip(_arrays(a), _arrays(b), strict=True):
        np.testing.assert_array_equal(x, y)


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory) -> tuple[Path, Path, Path]:
    """(input, returned final model, output folder) of one run of the default 12-step input,
    trained once for the tests that compare other runs with it."""
    tmp = tmp_path_factory.mktemp("reference")
    inp = _input(tmp)
    return inp, train(inp, "torch", tmp / "a"), tmp / "a"


def test_outputs_and_determinism(tmp_path, reference_run):
    inp, final, out = reference_run
    assert final == out / "model.pth"
    lines = (out / "lcurve.out").read_text().splitlines()
    assert lines[0].split()[1:] == [
        "step",
        "rmse_val",
        "rmse_trn",
        "rmse_e_val",
        "rmse_e_trn",
        "rmse_f_val",
        "rmse_f_trn",
        "lr",
    ]
    steps = [int(line.split()[0]) for line in lines if not line.startswith("#")]
    assert steps == [1, 2, 4, 6, 8, 10, 12]
    # at most max_ckpt_keep checkpoints, the pointer names the newest, each opens as a model
    assert sorted(p.name for p in out.glob("model.ckpt-*")) == [
        "model.ckpt-12.pth",
        "model.ckpt-8.pth",
    ]
    assert (out / "checkpoint").read_text().strip() == "model.ckpt-12.pth"
    _same_model(out / "model.ckpt-12.pth", final)
    model = dpa.io.load(final)
    system = dpa.data.load_system(WATER)
    counts = dpa.neighbor.neighbor_stat(system.coord, system.atype, system.box, 4.0, 2)[1]
    want = [int(np.ceil(c * 1.1 / 4)) * 4 for c in counts]  # auto: max count x 1.1, up to 4s
    assert model.tree["descriptor"]["sel"] == want == [16, 28]
    pot = dpa.load_model(final)
    assert np.isfinite(pot.evaluate(*water_frames(1))["energy"]).all()
    # same input and seed: the same curve and the same weights, bitwise
    train(inp, "torch", tmp_path / "b")
    assert (tmp_path / "b" / "lcurve.out").read_text() == (out / "lcurve.out").read_text()
    _same_model(tmp_path / "b" / "model.pth", final)


def test_restart_continues_the_same_curve(tmp_path, reference_run):
    inp, _, full = reference_run
    part = tmp_path / "part"
    part.mkdir()
    for name in ("model.ckpt-8.pth", "lcurve.out"):
        (part / name).write_bytes((full / name).read_bytes())
    train(inp, "torch", part, restart=str(part / "model.ckpt-8.pth"))
    assert (part / "lcurve.out").read_text() == (full / "lcurve.out").read_text()
    _same_model(part / "model.pth", full / "model.pth")


def test_killed_run_resumes_where_it_would_have_been(tmp_path):
    # killed once checkpoint 60 exists, 60 steps before the end (plenty to be killed in)
    inp = _input(tmp_path, steps=120, save_freq=20, disp_freq=20, max_ckpt_keep=3)
    train(inp, "torch", tmp_path / "ref")
    run = tmp_path / "run"
    cmd = [
        sys.executable,
        "-m",
        "dpa_cli.main",
        "-q",
        "--backend",
        "torch",
        "train",
        str(inp),
        "-o",
        str(run),
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while not (run / "model.ckpt-60.pth").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert proc.poll() is None, "the run ended before it could be killed"
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    for ckpt in run.glob("model.ckpt-*"):  # every file left is a complete model
        dpa.io.load(ckpt)
    train(inp, "torch", run, restart=str(run))
    assert (run / "lcurve.out").read_text() == (tmp_path / "ref" / "lcurve.out").read_text()
    _same_model(run / "model.pth", tmp_path / "ref" / "model.pth")


def test_jax_follows_the_torch_curve(tmp_path):
    pytest.importorskip("optax")
    inp = _input(tmp_path, steps=6)
    train(inp, "torch", tmp_path / "t")
    train(inp, "jax", tmp_path / "j")
    rows = [read_lcurve(tmp_path / d / "lcurve.out") for d in ("t", "j")]
    np.testing.assert_allclose(rows[0], rows[1], rtol=1e-6)
    for a, b in zip(
        _arrays(tmp_path / "t/model.pth"), _arrays(tmp_path / "j/model.jax"), strict=True
    ):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-10)


def test_errors_before_the_first_step(tmp_path):
    with pytest.raises(ConfigError, match="numb_steps"):
        train(_input(tmp_path, steps=0), "torch", tmp_path / "o")
    with pytest.raises(ConfigError, match="start_lr"):
        cfg = json.loads(_input(tmp_path).read_text())
        cfg["learning_rate"]["start_lr"] = 0
        (tmp_path / "bad_lr.json").write_text(json.dumps(cfg))
        train(tmp_path / "bad_lr.json", "torch", tmp_path / "o")
    with pytest.raises(DataError, match="batch size 20 is larger than its 8 frames"):
        train(
            _input(tmp_path, training_data=water_section(batch_size=20)),
            "torch",
            tmp_path / "o",
        )
    with pytest.raises(DataError):
        train(
            _input(tmp_path, training_data={"systems": [str(tmp_path / "none")]}),
            "torch",
            tmp_path / "o",
        )
    cfg = json.loads(_input(tmp_path).read_text())
    cfg["model"]["type_map"] = ["O", "C"]
    (tmp_path / "types.json").write_text(json.dumps(cfg))
    with pytest.raises(DataError, match="'H' is not in the model's type_map"):
        train(tmp_path / "types.json", "torch", tmp_path / "o")


def test_nan_loss_stops_and_keeps_the_last_checkpoint(tmp_path, monkeypatch):
    from dpa.backends.torch.train import TorchTrainer

    real_step, calls = TorchTrainer.step, []

    def step(self, *args):  # the sixth update produces a NaN loss
        calls.append(1)
        out = real_step(self, *args)
        return {**out, "loss": float("nan")} if len(calls) == 6 else out

    monkeypatch.setattr(TorchTrainer, "step", step)
    with pytest.raises(TrainingDiverged, match=r"loss became nan at step 6 .*model.ckpt-4.pth"):
        train(_input(tmp_path), "torch", tmp_path / "o")
    assert not (tmp_path / "o" / "model.pth").exists()
    assert (tmp_path / "o" / "checkpoint").read_text().strip() == "model.ckpt-4.pth"
    dpa.io.load(tmp_path / "o" / "model.ckpt-4.pth")


def test_init_model_keeps_its_statistics_and_checks_the_type_map(tmp_path):
    inp = _input(tmp_path, steps=4)
    first = train(inp, "torch", tmp_path / "a")
    again = train(inp, "torch", tmp_path / "b", init_model=str(first))
    stats = [dpa.io.load(p).tree["descriptor"]["@variables"]["davg"] for p in (first, again)]
    np.testing.assert_array_equal(stats[0], stats[1])  # not recomputed from the data
    cfg = json.loads(inp.read_text())
    cfg["model"]["type_map"] = ["H", "O"]
    (tmp_path / "swapped.json").write_text(json.dumps(cfg))
    with pytest.raises(ConfigError, match="type_map"):
        train(tmp_path / "swapped.json", "torch", tmp_path / "c", init_model=str(first))


def test_init_model_from_a_deepmd_kit_file(tmp_path):
    """A `.dp` written by DeePMD-kit carries its argcheck's model keys (srtab_add_bias, info,
    bridging_*, model_branch_alias); training starts from it and keeps its statistics."""
    source = FIXTURES / "train_step" / "dpa1_attn.dp"
    assert "srtab_add_bias" in dpa.io.load(source).data["model_def_script"]
    data = {"training_data": water_section()}
    inp = write_small_input(tmp_path, ["O", "H", "C"], data, 2, disp_freq=1, save_freq=2)
    final = train(inp, "torch", tmp_path / "o", init_model=str(source))
    before, after = dpa.io.load(source).tree, dpa.io.load(final).tree
    np.testing.assert_array_equal(
        after["descriptor"]["@variables"]["davg"], before["descriptor"]["@variables"]["davg"]
    )
    assert not np.array_equal(
        after["fitting"]["nets"]["networks"][0]["layers"][0]["@variables"]["w"],
        before["fitting"]["nets"]["networks"][0]["layers"][0]["@variables"]["w"],
    )


def test_cli_prints_progress_lines_without_a_terminal(tmp_path):
    """Piped output (CI, nohup) gets plain progress lines with ETA, no -v needed."""
    inp = _input(tmp_path, steps=4, disp_freq=2)
    cmd = [sys.executable, "-m", "dpa_cli.main", "--backend", "torch", "train", str(inp)]
    proc = subprocess.run(cmd + ["-o", str(tmp_path / "o")], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if "step " in line]
    assert [line.split("step ")[1].split()[0] for line in lines] == ["1/4", "2/4", "4/4"]
    assert all("ETA" in line for line in lines)
