"""Small reliability defects, each once reproduced: empty data sets, a type map naming an element
twice, an absurd cutoff, and torch.compile shared by threads."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from builders import write_npy_system
from click.testing import CliRunner

import dpa
from dpa.errors import DataError
from dpa.neighbor import build_neighbor_list
from dpa_cli.main import cli

CONFIG = {
    "type_map": ["O", "H"],
    "descriptor": {"type": "se_e2_a", "sel": [8, 8], "rcut": 3.0, "neuron": [4], "axis_neuron": 2},
    "fitting_net": {"neuron": [4]},
}


def _npy_system(folder: Path, nframes: int, type_map: str = "O\nH\n", types: str = "0\n1\n1\n"):
    """A deepmd/npy water system of `nframes` frames (0 allowed) in `folder`."""
    nat = len(types.split())
    rng = np.random.default_rng(0)
    arrays = {
        "coord": rng.random((nframes, 3 * nat)) * 2,
        "box": np.tile(np.eye(3).reshape(1, 9) * 8, (nframes, 1)),
        "energy": np.zeros(nframes),
        "force": np.zeros((nframes, 3 * nat)),
    }
    return write_npy_system(folder, types, arrays, type_map)


@pytest.fixture(scope="module")
def model_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("model") / "m.dp"
    dpa.build_model(CONFIG).save(path)
    return path


def _train_input(tmp: Path, system: Path) -> Path:
    cfg = {
        "model": CONFIG,
        "learning_rate": {"start_lr": 1e-3},
        "loss": {},
        "training": {
            "numb_steps": 1,
            "training_data": {"systems": [str(system)], "batch_size": 1},
        },
    }
    path = tmp / "input.json"
    path.write_text(json.dumps(cfg))
    return path


def test_a_system_without_frames_is_one_clear_error(tmp_path, model_file):
    empty = _npy_system(tmp_path / "empty", 0)
    message = r"set.000/coord.npy: holds no frames"
    for args in (
        ["--backend", "numpy", "test", "-m", str(model_file), "-s", str(empty)],
        ["neighbor-stat", "-s", str(empty), "-r", "3"],
        ["--backend", "torch", "train", str(_train_input(tmp_path, empty)), "-o", str(tmp_path)],
    ):
        result = CliRunner().invoke(cli, args)
        assert result.exit_code == 1, result.output
        assert result.output.count("\n") == 1 and message in result.output, result.output


def test_a_type_map_naming_an_element_twice_is_refused(tmp_path):
    system = _npy_system(tmp_path / "s", 2, type_map="O\nH\nH\n", types="0\n1\n2\n")
    with pytest.raises(DataError, match=r"type_map.raw: lists 'H' twice \(types 1 and 2\)"):
        dpa.data.load_system(str(system))


def test_a_system_built_with_a_repeated_type_map_is_refused():
    from dpa.data.system import System

    with pytest.raises(DataError, match=r"lists H more than once"):
        System("mem", ["O", "H", "H"], [0, 1, 2], np.zeros((1, 3, 3)))


@pytest.mark.parametrize("rcut", [1e20, 1e300])
def test_a_huge_cutoff_is_refused_not_overflowed(rcut):
    coord = np.array([[[0.0, 0.0, 0.0], [1.0, 0.0, 0.0]]])
    with pytest.raises(DataError, match="too small for rcut"):
        build_neighbor_list(coord, np.array([0, 0]), np.eye(3)[None] * 5, rcut, [4], True)


def test_compiled_torch_model_shared_by_threads_compiles_once(tmp_path, model_file):
    pytest.importorskip("torch")
    script = tmp_path / "threads.py"
    script.write_text(
        "import threading, numpy as np, dpa\n"
        f"pot = dpa.load_model({str(model_file)!r}, backend='torch', compile=True)\n"
        "coord = np.random.default_rng(0).random((6, 3)) * 4\n"
        "atype = np.array([0, 1, 1, 0, 1, 1])\n"
        "out = [None] * 4\n"
        "def run(i): out[i] = pot.evaluate(coord, atype, np.eye(3) * 6)['energy'][0]\n"
        "ts = [threading.Thread(target=run, args=(i,)) for i in range(4)]\n"
        "[t.start() for t in ts]; [t.join() for t in ts]\n"
        "ref = dpa.load_model(pot.model, backend='torch').evaluate(coord, atype, np.eye(3) * 6)\n"
        "print(max(abs(e - ref['energy'][0]) for e in out))\n"
    )
    proc = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "recompile_limit" not in proc.stderr and "Unexpected recompilation" not in proc.stderr
    assert float(proc.stdout.split()[-1]) < 1e-10
