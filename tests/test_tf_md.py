"""examples/tf_md: velocity-Verlet NVE written in TensorFlow on an exported SavedModel conserves
energy, in a process where dpa cannot be imported (only site-packages on sys.path)."""

from __future__ import annotations

import json
import subprocess
import sys
import sysconfig

import pytest
from builders import ROOT, WATER, smooth_water_model

from dpa.data import load_system

pytest.importorskip("tensorflow")
pytest.importorskip("jax")

STEPS = 200  # 100 fs at 0.5 fs

# `python -I -S`: no editable-install hook, no repo; the example runs with site-packages only
BOOT = """
import runpy, sys
sys.path.append(sys.argv.pop(1))
try:
    import dpa
except ImportError:
    pass
else:
    raise SystemExit("dpa is importable in the plain process")
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def test_tensorflow_nve_conserves_energy(tmp_path):
    model = smooth_water_model(load_system(WATER))
    saved = tmp_path / "water.savedmodel"
    model.save(saved)
    script = ROOT / "examples" / "tf_md" / "run.py"
    cmd = [sys.executable, "-I", "-S", "-c", BOOT, sysconfig.get_paths()["purelib"], str(script)]
    cmd += [str(saved), "--data", str(WATER), "--steps", str(STEPS), "--log-every", "100"]
    env = {"PATH": "/usr/bin:/bin", "TF_CPP_MIN_LOG_LEVEL": "2"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.strip().splitlines()
    assert lines[0].startswith("step    100") and lines[1].startswith("step    200")
    report = json.loads(lines[-1])
    assert report["potential_range_ev_per_atom"] > 2e-3  # the atoms really moved
    assert report["max_abs_dE_ev_per_atom"] < 1e-4  # total energy kept to 0.1 meV/atom
