"""Inference precision switch: a float64 model run in float32 and a float32 model run in float64,
without retraining, on every backend (`dpa.load_model(..., precision=)`, `Model.with_precision`,
the ASE calculator and `dpa test --precision`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from builders import DEEPMD_FIXTURES, LAM_FIXTURES, TYPE_MAP, WATER, water_frames

import dpa
from dpa.backends.base import available_backends
from dpa.tree import variables

F64 = DEEPMD_FIXTURES / "dpa1_concat_f64.dp"  # DPA-1, float64 (DeePMD-kit written)
F32 = DEEPMD_FIXTURES / "se_e2_a_twoside_f32.dp"  # se_e2_a, float32
DPA3 = LAM_FIXTURES / "dpa3_v31_f64.dp"


def installed(backend: str) -> bool:
    return backend in available_backends()


@pytest.fixture(scope="module")
def water():
    """Frame 0 of the bundled water data typed against the fixtures' type_map [O, H, C]."""
    return water_frames(1, TYPE_MAP)


def evaluate(path: Path, backend: str, precision: str | None, water) -> dict:
    if not installed(backend):
        pytest.skip(f"{backend} is not installed")
    pot = dpa.load_model(path, backend=backend, precision=precision)
    out = pot.evaluate(*water)
    return {k: out[k] for k in (("energy",) if backend == "numpy" else ("energy", "force"))}


def relative(a: np.ndarray, b: np.ndarray) -> float:
    """max |a - b| / max |b|."""
    return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


def test_float64_model_in_float32(backend, water):
    ref = evaluate(F64, backend, None, water)
    low = evaluate(F64, backend, "float32", water)
    for key, value in ref.items():
        assert low[key].dtype == np.float64  # outputs stay float64 NumPy arrays
        err = relative(low[key], value)
        assert err < 1e-5, (key, err)
        assert err > 0.0, key  # it really ran in float32


def test_float32_model_in_float64(backend, water):
    ref = evaluate(F32, backend, None, water)
    high = evaluate(F32, backend, "float64", water)
    for key, value in ref.items():
        err = relative(high[key], value)
        assert 0.0 < err < 1e-5, (key, err)
    if backend != "jax":  # (jax: one more compilation for the same check)
        same = evaluate(F32, backend, "float32", water)  # its own precision: the same numbers
        for key, value in ref.items():
            np.testing.assert_array_equal(same[key], value)


def test_dpa3_in_float32_numpy(water):
    ref = evaluate(DPA3, "numpy", None, water)["energy"]
    low = evaluate(DPA3, "numpy", "float32", water)["energy"]
    assert 0.0 < relative(low, ref) < 1e-5


def test_with_precision_casts_a_copy(tmp_path):
    model = dpa.io.load(F64)
    low = model.with_precision("float32")
    assert low.precision == "float32" and model.precision == "float64"
    for part in ("descriptor", "fitting"):
        dtypes = {np.asarray(v).dtype for v in variables(low.tree[part])}
        assert dtypes == {np.dtype(np.float32)}, part
        assert np.dtype(np.float64) in {np.asarray(v).dtype for v in variables(model.tree[part])}
    assert low.tree["@variables"]["out_bias"].dtype == np.float64  # reductions stay float64
    assert low.data["model_def_script"]["descriptor"]["precision"] == "float32"
    path = tmp_path / "low.dp"
    low.save(path)
    again = dpa.io.load(path)
    assert again.precision == "float32"
    assert again.tree["fitting"]["precision"] == "float32"


def test_invalid_precision_is_a_clear_error():
    with pytest.raises(dpa.ConfigError, match="allowed: float64, float32"):
        dpa.load_model(F64, backend="numpy", precision="float16")
    with pytest.raises(dpa.ConfigError, match="'half'"):
        dpa.io.load(F64).with_precision("half")


def test_calculator_precision(water):
    pytest.importorskip("ase")
    if not installed("torch"):
        pytest.skip("torch is not installed")
    from ase import Atoms

    from dpa.calculator import DPACalculator

    coord, atype, box = water
    atoms = Atoms(np.array(["O", "H", "C"])[atype], positions=coord[0], cell=box[0], pbc=True)
    results = {}
    for precision in (None, "float32"):
        atoms.calc = DPACalculator(F64, backend="torch", precision=precision)
        assert atoms.calc.potential.precision == (precision or "float64")
        results[precision] = (atoms.get_potential_energy(), atoms.get_forces(), atoms.get_stress())
    for ref, low in zip(results[None], results["float32"], strict=True):
        assert 0.0 < relative(np.atleast_1d(low), np.atleast_1d(ref)) < 1e-5
    pot = dpa.load_model(F64, backend="torch")  # a loaded Potential is cast too
    assert DPACalculator(pot, precision="float32").potential.precision == "float32"
    with pytest.raises(dpa.ConfigError, match="allowed"):
        DPACalculator(F64, backend="torch", precision="double")


def test_cli_precision(tmp_path):
    if not installed("torch"):
        pytest.skip("torch is not installed")
    from click.testing import CliRunner

    from dpa_cli.main import cli

    def run(*args: str):
        return CliRunner().invoke(cli, ["--backend", "torch", "test", "-m", str(F64), *args])

    results = {}
    for precision in ("float64", "float32"):
        out = run("-s", str(WATER), "-n", "1", "--precision", precision)
        assert out.exit_code == 0, out.output
        rmse = [line for line in out.output.splitlines() if line.startswith("Force  RMSE")]
        results[precision] = float(rmse[-1].split(":")[1].split()[0])
    assert results["float32"] == pytest.approx(results["float64"], rel=1e-4)
    bad = run("-s", str(WATER), "--precision", "float16")
    assert bad.exit_code == 2
    assert "float64" in bad.output and "float32" in bad.output
