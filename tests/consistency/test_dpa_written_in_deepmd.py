"""`.dp` files WRITTEN BY dpa load in DeePMD-kit 3.2.0, and dpa reproduces DeePMD-kit's numbers.

The fixtures in tests/fixtures/dpa_written/ come from tests/fixtures/make_dpa_written.py: models
built with dpa.build_model (random statistics), saved with Model.save, then loaded and evaluated
by DeePMD-kit itself (deserialized pt model, and `dp convert-backend` + DeepPot, which agree).
Here every installed dpa backend loads the same file and must give DeePMD-kit's energy, force,
virial, atom energy and atom virial (numpy: energies only) to 1e-10 (float64) or 1e-5 relative
to max(1, max|value|) (float32).
"""

from __future__ import annotations

import functools
import json

import numpy as np
import pytest
from builders import FIXTURES as FIXTURE_ROOT
from builders import SYSTEM_NAMES as SYSTEMS

import dpa

FIXTURES = FIXTURE_ROOT / "dpa_written"
ALL_KEYS = ("energy", "force", "virial", "atom_energy", "atom_virial")
ENERGY_KEYS = ("energy", "atom_energy")


def _cases() -> dict[str, dict]:
    path = FIXTURES / "cases.json"
    if not path.exists():
        return {}
    return {c["name"]: c for c in json.loads(path.read_text())["cases"]}


CASES = _cases()
pytestmark = pytest.mark.skipif(not CASES, reason=f"no fixtures in {FIXTURES}")


@functools.cache
def reference(case: str) -> dict[str, np.ndarray]:
    with np.load(FIXTURES / f"{case}.npz") as npz:
        return {k: npz[k] for k in npz.files}


@functools.cache
def potential(case: str, backend: str) -> dpa.Potential:
    return dpa.load_model(FIXTURES / f"{case}.dp", backend=backend)


def test_deepmd_loaded_every_file():
    """DeePMD-kit deserialized and converted every dpa-written file, and its paths agreed."""
    problems = []
    for name, case in CASES.items():
        row = case["deepmd"]
        if "error" in row:
            last = row["traceback"].strip().splitlines()[-4:]
            problems.append(f"{name}: DeePMD-kit failed: {row['error']}\n  " + "\n  ".join(last))
        elif not row["ok"]:
            problems.append(
                f"{name}: DeePMD-kit's loading paths disagree (pt vs DeepPot "
                f"{row['pt_vs_deeppot']:.2e}, pt vs dpmodel {row['pt_vs_dpmodel_energy']:.2e})"
            )
        elif row["reserialized_differences"]:
            problems.append(f"{name}: {row['reserialized_differences']}")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("system", SYSTEMS)
@pytest.mark.parametrize("case", list(CASES))
def test_dpa_reproduces_deepmd(case, system, backend):
    ref = reference(case)
    if f"{system}_energy" not in ref:
        pytest.skip("DeePMD-kit could not evaluate this file (see test_deepmd_loaded_every_file)")
    get = lambda key: ref.get(f"{system}_{key}")  # noqa: E731
    got = potential(case, backend).evaluate(
        get("coord"),
        get("atype"),
        get("box"),
        atomic=True,
        fparam=get("fparam"),
        aparam=get("aparam"),
    )
    float32 = CASES[case]["precision"] == "float32"
    problems = []
    for key in ENERGY_KEYS if backend == "numpy" else ALL_KEYS:
        want = get(key)
        if got[key].shape != want.shape:
            problems.append(f"{key}: shape {got[key].shape} != {want.shape}")
            continue
        diff = float(np.max(np.abs(got[key] - want)))
        tol = 1e-5 * max(1.0, float(np.max(np.abs(want)))) if float32 else 1e-10
        if not diff <= tol:  # also catches NaN
            problems.append(f"{key}: max |dpa - DeePMD-kit| = {diff:.3e} > {tol:.1e}")
    assert not problems, "\n".join(problems)
