"""Tests of the `dpa` command line: options, exit codes, neighbor-stat, show, convert and test."""

from __future__ import annotations

import functools
import importlib.metadata
import itertools
import math
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from builders import DATA, dpa1, model_config, needs_data
from click.testing import CliRunner

import dpa
from dpa._version import DISTRIBUTION
from dpa.data import load_system
from dpa.tree import variables
from dpa_cli.main import cli

try:
    import dpa.neighbor as _neighbor  # noqa: F401

    HAS_NEIGHBOR = hasattr(_neighbor, "neighbor_stat")
except ImportError:
    HAS_NEIGHBOR = False
needs_neighbor = pytest.mark.skipif(
    not HAS_NEIGHBOR, reason="dpa.neighbor.neighbor_stat is not implemented yet"
)
try:
    import dpa.io as _io

    HAS_CONVERT = hasattr(_io, "convert")
except ImportError:
    HAS_CONVERT = False
CONFIG = model_config(dpa1(60))


def run(*args: str, env: dict | None = None):
    """Invoke the CLI in-process; stdout and stderr are kept apart."""
    return CliRunner().invoke(cli, list(args), env=env, catch_exceptions=False)


# ---------------------------------------------------------------- options and exit codes


def test_help_lists_commands():
    result = run("--help")
    assert result.exit_code == 0
    for command in ("show", "convert", "test", "neighbor-stat"):
        assert re.search(rf"^\s+{command}\s", result.stdout, re.M)
    assert "DPA_BACKEND" in result.stdout


def test_version():
    result = run("--version")
    assert result.exit_code == 0
    assert result.stdout == f"dpa {dpa.__version__}\n"
    assert dpa.__version__ == importlib.metadata.version(DISTRIBUTION)  # the PyPI name


def test_import_is_light():
    """Importing the CLI (so `dpa --help`) must not import torch, jax or dpdata."""
    code = (
        "import sys, dpa_cli.main; "
        "print(sorted(m for m in ('torch', 'jax', 'dpdata', 'tensorflow') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize(
    "args",
    [
        ("test",),  # missing -m and -s
        ("--backend", "nope", "show", "x.dp"),
        ("neighbor-stat", "-s", "x", "-r", "-1"),
        ("-v", "-q", "show", "x.dp"),
        ("frobnicate",),
    ],
)
def test_usage_errors_exit_2(args):
    assert run(*args).exit_code == 2


def test_bad_backend_from_environment_exits_2():
    assert run("show", "x.dp", env={"DPA_BACKEND": "fortran"}).exit_code == 2


def test_dpa_error_is_one_line_and_exit_1(tmp_path):
    (tmp_path / "empty").mkdir()
    result = run("neighbor-stat", "-s", str(tmp_path / "empty"), "-r", "6")
    assert result.exit_code == 1
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("dpa: error: ")
    assert "empty: not a deepmd/npy system (missing type.raw)" in lines[0]


def test_verbose_error_shows_traceback(tmp_path):
    (tmp_path / "empty").mkdir()
    result = run("-v", "neighbor-stat", "-s", str(tmp_path / "empty"), "-r", "6")
    assert result.exit_code == 1
    assert "Traceback (most recent call last)" in result.stderr
    assert result.stderr.splitlines()[-1].startswith("dpa: error: ")


def test_console_script_exit_code(tmp_path):
    """The installed entry point behaves like the in-process group (exit 1, one line)."""
    code = "from dpa_cli.main import main; main()"
    out = subprocess.run(
        [sys.executable, "-c", code, "neighbor-stat", "-s", str(tmp_path / "nope"), "-r", "3"],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 1
    assert out.stderr.strip().splitlines() == [
        f"dpa: error: {tmp_path / 'nope'}: no such file or folder"
    ]


# ---------------------------------------------------------------- neighbor-stat


def brute_neighbor_stat(coord, atype, box, rcut, ntypes):
    """Min pair distance and max neighbors per type within rcut (d <= rcut), over all images.

    Pair vectors are reduced to fractional components in [-0.5, 0.5) (the data holds unwrapped
    coordinates), then every image shift that can come within rcut is tried.
    """
    dmin, nmax = math.inf, np.zeros(ntypes, dtype=np.int64)
    nat = coord.shape[1]
    for f in range(coord.shape[0]):
        rij = coord[f][None, :, :] - coord[f][:, None, :]  # rij[i, j] = x_j - x_i
        if box is None:
            shifts = np.zeros((1, 3))
        else:
            cell = box[f]
            frac = rij @ np.linalg.inv(cell)
            rij = (frac - np.round(frac)) @ cell
            vol = abs(np.linalg.det(cell))
            widths = [
                vol / np.linalg.norm(np.cross(cell[(i + 1) % 3], cell[(i + 2) % 3]))
                for i in range(3)
            ]
            n = [math.ceil(rcut / w + 0.5) for w in widths]
            grid = itertools.product(*(range(-k, k + 1) for k in n))
            shifts = np.array(list(grid), dtype=np.float64) @ cell
        d2 = np.square(rij[:, None, :, :] + shifts[None, :, None, :]).sum(axis=-1)  # [i, s, j]
        zero = np.flatnonzero(np.all(shifts == 0, axis=1))[0]
        d2[np.arange(nat), zero, np.arange(nat)] = np.inf  # an atom is not its own neighbor
        inside = d2 <= rcut * rcut
        if inside.any():
            dmin = min(dmin, math.sqrt(float(d2[inside].min())))
        per_type = inside.sum(axis=1) @ (atype[:, None] == np.arange(ntypes)[None, :])  # [i, t]
        nmax = np.maximum(nmax, per_type.max(axis=0))
    return dmin, nmax


def _parse_neighbor_stat(stdout: str):
    dmin = float(re.search(r"^min_nbor_dist: (\S+)$", stdout, re.M).group(1))
    nmax = [
        int(v) for v in re.search(r"^max_nbor_size: \[(.*)\]$", stdout, re.M).group(1).split(",")
    ]
    tmap = re.search(r"^type_map: (.*)$", stdout, re.M).group(1).split()
    return dmin, nmax, tmap


@functools.cache
def brute_for(path: Path, rcut: float) -> tuple[float, dict[str, int]]:
    """Brute-force neighbor stat of one system: min distance, max neighbors by element."""
    s = load_system(path)
    dmin, nmax = brute_neighbor_stat(s.coord, s.atype, s.box, rcut, len(s.type_map))
    return dmin, dict(zip(s.type_map, nmax.tolist(), strict=True))


def merged_brute(paths, rcut, type_map):
    """Brute-force neighbor stat of several systems, max neighbors in `type_map` order."""
    stats = [brute_for(p, rcut) for p in paths]
    dmin = min(d for d, _ in stats)
    return dmin, [max(n.get(t, 0) for _, n in stats) for t in type_map]


@needs_data
@needs_neighbor
def test_neighbor_stat_water_matches_brute_force():
    paths = [DATA / "water" / "data_0", DATA / "water" / "data_3"]
    rcut = 6.0
    result = run("neighbor-stat", "-s", str(paths[0]), "-s", str(paths[1]), "-r", str(rcut))
    assert result.exit_code == 0, result.stderr
    got_dmin, got_nmax, tmap = _parse_neighbor_stat(result.stdout)
    assert tmap == ["O", "H"]
    dmin, nmax = merged_brute(paths, rcut, tmap)
    assert got_dmin == pytest.approx(dmin, abs=1e-6)
    assert got_nmax == nmax
    assert 0.8 < dmin < 1.2  # an O-H bond: the brute force itself is sane
    for p in paths:  # the per-system lines
        d, n = brute_for(p, rcut)
        line = re.search(rf"^# {re.escape(str(p))} \(80 frames\): (.*)$", result.stdout, re.M)
        assert line.group(1) == f"min_nbor_dist {d:.6f}, max_nbor_size [{n['O']}, {n['H']}]"

    # -t reorders the result; -q drops the per-system lines
    flipped = run("-q", "neighbor-stat", "-s", str(paths[0]), "-r", str(rcut), "-t", "H,O")
    assert flipped.exit_code == 0, flipped.stderr
    got_dmin, got_nmax, tmap = _parse_neighbor_stat(flipped.stdout)
    dmin, nmax = merged_brute(paths[:1], rcut, ["H", "O"])
    assert tmap == ["H", "O"] and got_nmax == nmax
    assert got_dmin == pytest.approx(dmin, abs=1e-6)
    assert "# " not in flipped.stdout


@needs_data
@needs_neighbor
def test_neighbor_stat_mixed_periodic_and_molecules():
    paths = [DATA / "water" / "data_3", DATA / "molecules_nopbc" / "C4H3O1"]
    rcut = 6.0
    result = run("neighbor-stat", "-s", str(paths[0]), "-s", str(paths[1]), "-r", str(rcut))
    assert result.exit_code == 0, result.stderr
    got_dmin, got_nmax, tmap = _parse_neighbor_stat(result.stdout)
    assert tmap == ["O", "H", "C"]  # union of the type maps, in order of appearance
    dmin, nmax = merged_brute(paths, rcut, tmap)
    assert got_dmin == pytest.approx(dmin, abs=1e-6)
    assert got_nmax == nmax
    assert nmax[2] > 0  # carbon neighbors come from the molecule only


@needs_data
def test_neighbor_stat_unknown_element_in_type_map():
    result = run("neighbor-stat", "-s", str(DATA / "water" / "data_0"), "-r", "6", "-t", "O")
    assert result.exit_code == 1
    assert "element 'H' is not in the model's type_map ['O']" in result.stderr


# ---------------------------------------------------------------- show / convert / test

_METRIC = re.compile(r"^(Energy|Force|Virial)\s+(MAE|RMSE)(/Natoms)?\s*: (\S+) ", re.M)


def _metrics(block: str) -> dict[str, float]:
    """{'energy mae': ..., 'energy/natoms rmse': ...} from a report block."""
    out = {}
    for kind, stat, per_atom, value in _METRIC.findall(block):
        out[f"{kind.lower()}{per_atom.lower()} {stat.lower()}"] = float(value)
    return out


def _blocks(stdout: str) -> tuple[list[str], str]:
    """Per-system report blocks and the weighted-average block."""
    head, _, overall = stdout.partition("# ----------weighted average of errors")
    systems = head.split("# ---------------output of dpa test")[1:]
    return systems, overall


def _read_detail(path: Path) -> list[tuple[str, np.ndarray]]:
    """(header, rows) blocks of a detail file."""
    blocks = []
    for line in path.read_text().splitlines():
        if line.startswith("#"):
            blocks.append((line, []))
        else:
            blocks[-1][1].append([float(v) for v in line.split()])
    return [(h, np.array(rows)) for h, rows in blocks]


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    """A small random DPA-1 water model saved as .dp."""
    path = tmp_path_factory.mktemp("model") / "water.dp"
    dpa.build_model(CONFIG, seed=0).save(str(path))
    return path


def test_show(model_file):
    result = run("show", str(model_file))
    assert result.exit_code == 0, result.stderr
    model = dpa.load_model(str(model_file)).model
    fields = dict(
        (k.strip(), v.strip())
        for k, v in (line.split(":", 1) for line in result.stdout.splitlines())
    )
    assert fields["descriptor"] == "dpa1"
    assert fields["type_map"] == "O H"
    assert float(fields["rcut"]) == 4.0 and float(fields["rcut_smth"]) == 0.5
    assert fields["sel"] == "60"
    assert int(fields["parameters"].replace(",", "")) == model.num_params > 0
    assert fields["precision"] == str(model.precision)
    assert fields["file format"].startswith("dp")


def test_show_missing_model_is_one_line_error(tmp_path):
    result = run("show", str(tmp_path / "missing.dp"))
    assert result.exit_code == 1
    assert len(result.stderr.splitlines()) == 1 and "missing.dp" in result.stderr


@needs_data
@pytest.mark.skipif(not HAS_CONVERT, reason="dpa.io.convert is not implemented yet")
@pytest.mark.parametrize("suffix, backend", [(".pth", "torch"), (".jax", "jax")])
def test_convert_round_trip_is_exact(model_file, tmp_path, suffix, backend):
    pytest.importorskip(backend)
    out = tmp_path / f"water{suffix}"
    result = run("convert", str(model_file), str(out))
    assert result.exit_code == 0, result.stderr
    assert result.stdout == f"converted {model_file} -> {out}\n"
    back = tmp_path / "back.dp"
    assert run("-q", "convert", str(out), str(back)).stdout == ""
    # the same parameters come back: same numbers (the numpy backend: fast, no jit)
    s = load_system(DATA / "water" / "data_0").frames(slice(0, 2))
    ref = dpa.load_model(str(model_file), backend="numpy")
    a = ref.evaluate(s.coord, s.remap_types(ref.type_map), s.box, atomic=True)
    for path in (out, back):
        pot = dpa.load_model(str(path), backend="numpy")
        b = pot.evaluate(s.coord, s.remap_types(pot.type_map), s.box, atomic=True)
        for key in ("energy", "atom_energy"):
            np.testing.assert_allclose(a[key], b[key], rtol=0, atol=1e-10)


@pytest.mark.skipif(not HAS_CONVERT, reason="dpa.io.convert is not implemented yet")
def test_convert_unknown_suffix_is_one_line_error(model_file, tmp_path):
    result = run("convert", str(model_file), str(tmp_path / "model.xyz"))
    assert result.exit_code == 1
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("dpa: error: ") and "model.xyz" in lines[0]
    assert not (tmp_path / "model.xyz").exists()


def _expected(pot, system, nframes):
    """Predictions and `dp test` errors computed here, straight from pot.evaluate."""
    s = system.frames(slice(0, nframes))
    out = pot.evaluate(s.coord, s.remap_types(pot.type_map), s.box)
    nat = s.natoms
    de = out["energy"] - s.energy
    err = {
        "energy mae": np.mean(np.abs(de)),
        "energy rmse": np.sqrt(np.mean(de**2)),
        "energy/natoms mae": np.mean(np.abs(de)) / nat,
        "energy/natoms rmse": np.sqrt(np.mean(de**2)) / nat,
    }
    if "force" in out:
        df = out["force"] - s.force
        err["force mae"], err["force rmse"] = np.mean(np.abs(df)), np.sqrt(np.mean(df**2))
    if "virial" in out and s.virial is not None:
        dv = out["virial"] - s.virial
        err["virial mae"], err["virial rmse"] = np.mean(np.abs(dv)), np.sqrt(np.mean(dv**2))
        err["virial/natoms mae"], err["virial/natoms rmse"] = (
            err["virial mae"] / nat,
            err["virial rmse"] / nat,
        )
    return s, out, err


@needs_data
def _weighted(stats: list[tuple[float, float]], kind: str) -> float:
    """Merge (error, weight) pairs: MAE by weighted mean, RMSE by root of weighted mean square."""
    total = sum(w for _, w in stats)
    if kind == "mae":
        return sum(e * w for e, w in stats) / total
    return math.sqrt(sum(e * e * w for e, w in stats) / total)


def _share_potential(monkeypatch, model_file, backend):
    """Make the CLI use the test's own Potential (jit caches are per Potential); record calls."""
    pot = dpa.load_model(str(model_file), backend=backend)
    calls = []

    def load_model(path, backend=None, compile=False, precision=None, head=None):
        calls.append((str(path), backend, compile))
        assert precision is None and head is None
        return pot

    monkeypatch.setattr(dpa, "load_model", load_model)
    return pot, calls


@pytest.mark.parametrize("backend, n", [("torch", 3), ("jax", 2)])  # jax: fewer shapes to jit
def test_dp_test_metrics_and_detail_files(model_file, tmp_path, monkeypatch, backend, n):
    pytest.importorskip(backend)
    pot, calls = _share_potential(monkeypatch, model_file, backend)
    # water: no virial labels; water_virial: virial; OUTCAR: 1 frame (read by dpdata, name-guessed)
    paths = [DATA / "water" / "data_0", DATA / "water_virial", DATA / "vasp_OUTCAR"]
    prefix = tmp_path / "detail"
    args = ["--backend", backend, "test", "-m", str(model_file), "-n", str(n), "-d", str(prefix)]
    args += ["--chunk-size", "2"] + [a for p in paths for a in ("-s", str(p))]
    result = run(*args)
    assert result.exit_code == 0, result.stderr
    assert calls == [(str(model_file), backend, False)]
    expected = [_expected(pot, load_system(p), n) for p in paths]
    systems = [e[0] for e in expected]
    assert [s.nframes for s in systems] == [n, n, 1]

    blocks, overall = _blocks(result.stdout)
    assert len(blocks) == 3
    for block, (s, _, exp) in zip(blocks, expected, strict=True):
        got = _metrics(block)
        assert set(got) == set(exp)
        assert f"# number of test data : {s.nframes}" in block
        for key, value in exp.items():
            assert got[key] == pytest.approx(value, rel=1e-6), key
    assert "virial mae" not in _metrics(blocks[0])  # water/data_0 has no virial labels
    assert "virial/natoms rmse" in _metrics(blocks[1])

    # weighted average: energies by frames, forces by force components, virials by components
    got = _metrics(overall)
    weight = {"energy": lambda s: s.nframes, "force": lambda s: s.nframes * s.natoms * 3}
    weight["energy/natoms"] = weight["energy"]
    weight["virial"] = weight["virial/natoms"] = lambda s: s.nframes * 9
    assert set(got) == set(expected[1][2])
    for key, value in got.items():
        quantity, kind = key.split()
        stats = [(e[key], weight[quantity](s)) for s, _, e in expected if key in e]
        assert value == pytest.approx(_weighted(stats, kind), rel=1e-6), key
    assert "# number of systems : 3" in overall

    # detail files, in the dp test layout: one "# <system>: <columns>" header per system
    (s0, p0, _), (s1, p1, _), (s2, p2, _) = expected
    e = _read_detail(Path(f"{prefix}.e.out"))
    assert [h for h, _ in e] == [f"# {p}: data_e pred_e" for p in paths]
    for (_, rows), (s, pred, _) in zip(e, expected, strict=True):
        np.testing.assert_allclose(rows, np.stack([s.energy, pred["energy"]], 1), rtol=1e-12)
    ea = _read_detail(Path(f"{prefix}.e_peratom.out"))
    for (_, rows), (_, rows_pa), s in zip(e, ea, systems, strict=True):
        np.testing.assert_allclose(rows_pa, rows / s.natoms, rtol=1e-12)
    f = _read_detail(Path(f"{prefix}.f.out"))
    assert f[0][0] == f"# {paths[0]}: data_fx data_fy data_fz pred_fx pred_fy pred_fz"
    assert [rows.shape for _, rows in f] == [(n * 192, 6), (n * 384, 6), (6, 6)]
    np.testing.assert_allclose(f[1][1][:, :3], s1.force.reshape(-1, 3), rtol=1e-12)
    np.testing.assert_allclose(f[1][1][:, 3:], p1["force"].reshape(-1, 3), rtol=1e-12)
    v = _read_detail(Path(f"{prefix}.v.out"))
    assert [h.split(":")[0] for h, _ in v] == [f"# {paths[1]}", f"# {paths[2]}"]
    assert v[0][0].startswith(f"# {paths[1]}: data_vxx data_vxy data_vxz data_vyx")
    assert v[0][0].endswith("pred_vzx pred_vzy pred_vzz")
    np.testing.assert_allclose(v[0][1][:, :9], s1.virial.reshape(n, 9), rtol=1e-12)
    np.testing.assert_allclose(v[0][1][:, 9:], p1["virial"].reshape(n, 9), rtol=1e-12)
    np.testing.assert_allclose(v[1][1][:, 9:], p2["virial"].reshape(1, 9), rtol=1e-12)
    va = _read_detail(Path(f"{prefix}.v_peratom.out"))
    np.testing.assert_allclose(va[0][1], v[0][1] / 384, rtol=1e-12)
    np.testing.assert_allclose(va[1][1], v[1][1] / 6, rtol=1e-12)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "detail.e.out",
        "detail.e_peratom.out",
        "detail.f.out",
        "detail.v.out",
        "detail.v_peratom.out",
    ]  # fmt: skip  (no temporary files left behind)


@needs_data
def test_dp_test_numpy_backend_reports_energy_only(model_file, tmp_path):
    water = DATA / "water" / "data_0"
    result = run(
        "--backend",
        "numpy",
        "test",
        "-m",
        str(model_file),
        "-s",
        str(water),
        "-n",
        "2",
        "-d",
        str(tmp_path / "d"),
    )
    assert result.exit_code == 0, result.stderr
    assert "computes no forces: reporting energy errors only" in result.stdout
    pot = dpa.load_model(str(model_file), backend="numpy")
    _, _, exp = _expected(pot, load_system(water), 2)
    blocks, overall = _blocks(result.stdout)
    got = _metrics(blocks[0])
    assert set(got) == {"energy mae", "energy rmse", "energy/natoms mae", "energy/natoms rmse"}
    for key, value in got.items():
        assert value == pytest.approx(exp[key], rel=1e-6)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.e.out", "d.e_peratom.out"]


@needs_data
def test_dp_test_element_missing_from_model(model_file):
    mol = DATA / "molecules_nopbc" / "C4H3O1"
    result = run("test", "-m", str(model_file), "-s", str(mol))
    assert result.exit_code == 1
    assert result.stderr.splitlines() == [
        f"dpa: error: {mol}: element 'C' is not in the model's type_map ['O', 'H']; "
        "use a model trained with 'C' or drop those atoms"
    ]


@needs_data
def test_dp_test_detail_folder_is_created(model_file, tmp_path):
    water = DATA / "water" / "data_0"
    result = run(
        "test", "-m", str(model_file), "-s", str(water), "-n", "1", "-d", str(tmp_path / "no" / "d")
    )
    assert result.exit_code == 0, result.output
    names = sorted(p.name for p in (tmp_path / "no").iterdir())
    assert names == ["d.e.out", "d.e_peratom.out", "d.f.out"]


def test_dp_test_detail_folder_impossible(model_file, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    water = DATA / "water" / "data_0"
    result = run(
        "test", "-m", str(model_file), "-s", str(water), "-n", "1", "-d", str(blocker / "d")
    )
    assert result.exit_code == 1
    assert "cannot create folder" in result.stderr


# ---------------------------------------------------------------- DeePMD-kit .pt and heads

PT_FIXTURES = Path(__file__).resolve().parent / "fixtures" / "deepmd_pt"
MT_PT = PT_FIXTURES / "mt_dpa3_sharefit.pt"  # two branches sharing descriptor and fitting


def test_show_multitask_lists_branches():
    pytest.importorskip("torch")
    result = run("show", str(MT_PT))
    assert result.exit_code == 0, result.stderr
    out = result.stdout
    model = dpa.io.load_any(MT_PT)
    assert isinstance(model, dpa.MultiTaskModel)
    assert re.search(r"^file format\s+: pt \(DeePMD-kit", out, re.M)
    assert re.search(r"^branches\s+: water_b, water_a$", out, re.M)
    assert re.search(rf"^parameters\s+: {model.num_params:,} stored", out, re.M)
    summed = sum(m.num_params for m in model.branches.values())
    assert re.search(rf"^summed\s+: {summed:,} ", out, re.M)
    shared = int(re.search(r"^shared\s+: ([\d,]+)", out, re.M)[1].replace(",", ""))
    a, b = (variables(m.tree) for m in model.branches.values())
    in_both = {id(x) for x in a} & {id(x) for x in b}
    assert shared == sum(x.size for x in a if id(x) in in_both) > summed // 4
    for name in ("water_b", "water_a"):
        block = out.split(f"branch {name}\n")[1].split("branch ")[0]
        assert re.search(rf"aliases\s+: alias_{name[-1]}$", block, re.M)
        assert re.search(r"descriptor\s+: dpa3$", block, re.M)
        assert re.search(r"type_map\s+: O H$", block, re.M)
        observed = model.info(name)["observed_type"]
        assert re.search(rf"observed types\s+: {' '.join(observed)}$", block, re.M)


def test_show_single_task_pt_and_one_head():
    pytest.importorskip("torch")
    result = run("show", str(PT_FIXTURES / "dpa1.pt"))
    assert result.exit_code == 0, result.stderr
    assert re.search(r"^descriptor\s+: dpa1$", result.stdout, re.M)
    result = run("show", str(MT_PT), "--head", "ALIAS_A")
    assert result.exit_code == 0, result.stderr
    assert re.search(r"^branch\s+: ALIAS_A$", result.stdout, re.M)
    assert re.search(r"^descriptor\s+: dpa3$", result.stdout, re.M)


def test_convert_head_extracts_one_branch(tmp_path):
    pytest.importorskip("torch")
    out = tmp_path / "a.dp"
    result = run("convert", str(MT_PT), str(out), "--head", "water_A")
    assert result.exit_code == 0, result.stderr
    assert result.stdout == f"converted {MT_PT} (branch water_A) -> {out}\n"
    single = dpa.io.load_any(out)
    assert isinstance(single, dpa.Model)
    ref = dpa.io.load(MT_PT, "water_a")
    assert single.num_params == ref.num_params
    assert single.data["model_def_script"] == ref.data["model_def_script"]


def test_convert_multitask_keeps_all_branches_or_needs_head(tmp_path):
    pytest.importorskip("torch")
    whole = tmp_path / "all.dp"
    assert run("-q", "convert", str(MT_PT), str(whole)).exit_code == 0
    model = dpa.io.load_any(whole)
    assert isinstance(model, dpa.MultiTaskModel) and model.names == ["water_b", "water_a"]
    result = run("convert", str(MT_PT), str(tmp_path / "m.savedmodel"))
    assert result.exit_code == 1
    assert "--head" in result.stderr and "water_b" in result.stderr
    result = run("convert", str(MT_PT), str(tmp_path / "x.dp"), "--head", "nope")
    assert result.exit_code == 1 and "'nope'" in result.stderr and "water_a" in result.stderr
    result = run("convert", str(MT_PT), str(tmp_path / "x.pt"), "--head", "water_a")
    assert result.exit_code == 1 and "does not write" in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["all.dp"]


@needs_data
def test_dp_test_head(tmp_path):
    pytest.importorskip("torch")
    water = DATA / "water" / "data_0"
    reports = {}
    for head in ("water_a", "WATER_B"):
        result = run("--backend", "numpy", "test", "-m", str(MT_PT), "--head", head,
                     "-s", str(water), "-n", "1")  # fmt: skip
        assert result.exit_code == 0, result.stderr
        reports[head] = _metrics(_blocks(result.stdout)[0][0])
    pot = dpa.load_model(MT_PT, backend="numpy", head="water_a")
    _, _, exp = _expected(pot, load_system(water), 1)
    assert reports["water_a"]["energy mae"] == pytest.approx(exp["energy mae"], rel=1e-6)
    assert reports["water_a"]["energy mae"] != reports["WATER_B"]["energy mae"]
    result = run("test", "-m", str(MT_PT), "-s", str(water), "-n", "1")
    assert result.exit_code == 1 and "water_b" in result.stderr and "water_a" in result.stderr
