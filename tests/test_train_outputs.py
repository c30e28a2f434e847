"""`dpa train`'s output folder: one run at a time, every output inside it, nothing overwritten
that is not the run's own, and input values of the wrong kind refused."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from builders import water_section, write_small_input

from dpa.errors import ConfigError, OutputError
from dpa.train.outdir import locked_output_folder

pytest.importorskip("torch")
from dpa.train.loop import train  # noqa: E402


def _input(tmp: Path, steps: int = 2, **training) -> Path:
    data = {"training_data": water_section(), **training}
    return write_small_input(tmp, ["O", "H"], data, steps, disp_freq=1, save_freq=2)


def test_a_second_run_on_a_busy_folder_fails_and_writes_nothing(tmp_path):
    out = tmp_path / "run"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time\n"
            "from dpa.train.outdir import locked_output_folder\n"
            f"with locked_output_folder({str(out)!r}):\n"
            "    print('locked', flush=True)\n"
            "    sys.stdin.read()\n",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(OutputError, match=rf"another `dpa train` run \(process {holder.pid}\)"):
            train(_input(tmp_path), "torch", out)
        assert not (out / "lcurve.out").exists()
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)
    final = train(_input(tmp_path), "torch", out)  # free again once the holder has ended
    assert final == out / "model.pth" and final.is_file()


def test_the_lock_is_released_by_a_killed_holder(tmp_path):
    out = tmp_path / "run"
    code = f"from dpa.train.outdir import locked_output_folder as L\nL({str(out)!r}).__enter__()\n"
    code += "import os; os.kill(os.getpid(), 9)"
    subprocess.run([sys.executable, "-c", code], check=False)
    with locked_output_folder(out):  # no stale lock: the kernel dropped it with the process
        with pytest.raises(OutputError, match="another `dpa train` run"):
            with locked_output_folder(out):
                pass


def test_cli_reports_a_busy_folder_on_one_line(tmp_path):
    from click.testing import CliRunner

    from dpa_cli.main import cli

    out = tmp_path / "run"
    with locked_output_folder(out):
        result = CliRunner().invoke(
            cli, ["--backend", "torch", "train", str(_input(tmp_path)), "-o", str(out)]
        )
    assert result.exit_code == 1
    assert result.output.count("\n") == 1 and "another `dpa train` run" in result.output


@pytest.mark.parametrize(
    "key, name, message",
    [
        ("disp_file", "../lcurve.out", "outside the output folder"),
        ("disp_file", "ABSOLUTE", "relative to the output folder"),
        ("save_ckpt", "../../model.ckpt", "outside the output folder"),
        ("disp_file", "input.json", "would overwrite the training input"),
        ("disp_file", "model.pth", "would overwrite the final model"),
        ("disp_file", "checkpoint", "would overwrite the checkpoint pointer"),
    ],
)
def test_output_names_stay_inside_the_folder(tmp_path, key, name, message):
    if name == "ABSOLUTE":  # an absolute path elsewhere than the output folder
        name = str(tmp_path.parent / "elsewhere" / "lcurve.out")
    inp = _input(tmp_path, **{key: name})
    before = inp.read_text()
    with pytest.raises(ConfigError, match=f"training.{key}.*{message}"):
        train(inp, "torch", tmp_path)  # -o is the input's own folder
    assert inp.read_text() == before
    assert not list(tmp_path.parent.glob("lcurve.out")) and not (tmp_path / "model.pth").exists()


def test_a_file_that_is_no_learning_curve_is_not_overwritten(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "notes.txt").write_text("my notes\n")
    with pytest.raises(ConfigError, match="exists and is not a learning curve"):
        train(_input(tmp_path, disp_file="notes.txt"), "torch", out)
    assert (out / "notes.txt").read_text() == "my notes\n"


def test_a_learning_curve_in_a_subfolder_works(tmp_path):
    out = tmp_path / "run"
    train(_input(tmp_path, disp_file="curves/lcurve.txt", save_ckpt="ckpt/m"), "torch", out)
    assert (out / "curves" / "lcurve.txt").read_text().startswith("# step")
    assert (out / "ckpt" / "m-2.pth").is_file()


@pytest.mark.parametrize(
    "section, key",
    [("training", "numb_steps"), ("training", "disp_freq"), ("loss", "start_pref_f")],
)
def test_true_is_not_a_number(tmp_path, section, key):
    cfg = json.loads(_input(tmp_path).read_text())
    cfg[section][key] = True
    (tmp_path / "bool.json").write_text(json.dumps(cfg))
    with pytest.raises(ConfigError, match=rf"{section}\.{key}: true/false is not a valid value"):
        train(tmp_path / "bool.json", "torch", tmp_path / "o")


def test_true_is_not_a_cutoff():
    import dpa

    config = {
        "type_map": ["O", "H"],
        "descriptor": {"type": "se_e2_a", "sel": [4, 4], "rcut": True, "resnet_dt": True},
        "fitting_net": {"neuron": [4]},
    }
    with pytest.raises(ConfigError, match=r"model\.descriptor\.rcut: true/false"):
        dpa.build_model(config)
    config["descriptor"]["rcut"] = 3.0  # bool keys still take bools
    assert dpa.build_model(config).rcut == 3.0
