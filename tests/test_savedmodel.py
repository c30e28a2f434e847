"""TensorFlow SavedModel export: `dpa convert IN OUT.savedmodel` and the tensorflow backend.

One small model per descriptor type (se_e2_a, DPA-1, DPA-2, DPA-3; random statistics, some with
atom and pair exclusions) is exported once (module-scoped fixture) from a `.pth` (se_e2_a through
the CLI, DPA-2) or a `.jax` file (DPA-1, DPA-3). A separate Python process in which `dpa` cannot
be imported evaluates it with plain TensorFlow on periodic water, a small skewed triclinic cell
(images matter: it needs image range 2) and a molecule without box, through `serving_default`
(neighbor list built in the graph) and `evaluate_nlist` (neighbor list from dpa). Both must equal
the source file's backend (torch for .pth, jax for .jax) to 1e-10 (float64).

Speed: that process runs while the references are computed here, and compiles with XLA's
expensive optimizations off (round-off only; far below the tolerance). Each (model, system
shape) is one XLA compilation; evaluate_nlist reuses the one of serving_default's model part.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import textwrap
from pathlib import Path

import numpy as np
import pytest
from builders import dpa1, dpa2, dpa3, se_e2_a, xla_optimizations_off

import dpa
import dpa.io
from dpa.backends.tensorflow import savedmodel as sm_format

pytestmark = pytest.mark.skipif(
    any(importlib.util.find_spec(m) is None for m in ("tensorflow", "jax", "torch")),
    reason="needs tensorflow, jax and torch",
)

TYPE_MAP = ["O", "H", "C"]  # the type map of conftest's systems
RCUT = 4.0
FIT = {"neuron": [8, 8]}
CONFIGS = {
    "se_e2_a": {  # per-type networks; descriptor pair exclusion; atom exclusion
        "descriptor": se_e2_a([20, 28, 12], RCUT, exclude_types=[[0, 2]]),
        "atom_exclude_types": [2],
    },
    "dpa1": {"descriptor": dpa1(56, RCUT, tebd_dim=4)},
    "dpa2": {  # model-level pair exclusion (re-sorted list) and atom exclusion
        "descriptor": dpa2(56, RCUT),
        "pair_exclude_types": [[1, 2]],
        "atom_exclude_types": [2],
    },
    "dpa3": {"descriptor": dpa3(56, RCUT)},
}
KINDS = tuple(CONFIGS)
SOURCE = {"se_e2_a": ".pth", "dpa1": ".jax", "dpa2": ".pth", "dpa3": ".jax"}
BACKEND = {".pth": "torch", ".jax": "jax"}
SYSTEMS = ("water", "skewed", "molecule")
OUTPUTS = ("energy", "force", "virial", "atom_energy")
TOL = 1e-10
CHECKS_KIND = "dpa3"  # the model the bad-input checks run on (fastest to compile)
MIXED_KIND = "dpa2"  # the model a batch of frames with different boxes and types runs on

# Runs in `python -I -S` with only site-packages on sys.path: no editable-install hook, no repo.
PLAIN_TF = textwrap.dedent(
    """
    import importlib.util, json, sys
    sys.path.append(sys.argv[1])
    inputs, output = sys.argv[2], sys.argv[3]
    report = {"dpa_importable": importlib.util.find_spec("dpa") is not None}
    import numpy as np
    import tensorflow as tf

    data = dict(np.load(inputs))
    plan = json.loads(str(data.pop("plan")))
    out = {}
    for kind, path in plan["savedmodels"].items():
        m = tf.saved_model.load(path)
        report[kind + "/metadata"] = m.signatures["get_metadata"]()["json"].numpy().decode()
        for name in plan["systems"]:
            frame = {k: tf.constant(data[name + "/" + k]) for k in ("coord", "atype", "box")}
            res = m.signatures["serving_default"](**frame)
            out.update({kind + "/" + name + "/graph/" + k: v.numpy() for k, v in res.items()})
            nl = {k: tf.constant(data[kind + "/" + name + "/" + k]) for k in ("nlist", "shift")}
            res = m.signatures["evaluate_nlist"](**frame, **nl)
            out.update({kind + "/" + name + "/nlist/" + k: v.numpy() for k, v in res.items()})
        if kind == plan["mixed_kind"]:  # frame 1: no box, types reversed (atom 0 is C)
            t, b = data["skewed/atype"].copy(), data["skewed/box"].copy()
            t[1], b[1] = t[1][::-1], 0.0
            frame = dict(coord=tf.constant(data["skewed/coord"]), atype=tf.constant(t), box=tf.constant(b))
            res = m.signatures["serving_default"](**frame)
            out.update({"mixed/" + k: v.numpy() for k, v in res.items()})
        if kind != plan["checks_kind"]:
            continue
        c = data["skewed/coord"]
        t = data["skewed/atype"]
        b = data["skewed/box"]
        cast = m.evaluate(tf.constant(c, tf.float32), tf.constant(t, tf.int64), tf.constant(b, tf.float32))
        out["cast/energy"] = cast["energy"].numpy()
        c32, b32 = c.astype(np.float32).astype(np.float64), b.astype(np.float32).astype(np.float64)
        ref = m.signatures["serving_default"](coord=tf.constant(c32), atype=tf.constant(t), box=tf.constant(b32))
        out["cast/ref"] = ref["energy"].numpy()
        overlap = c.copy()
        overlap[:, 1] = overlap[:, 0]
        bad = {
            "float32": dict(coord=tf.constant(c, tf.float32), atype=tf.constant(t), box=tf.constant(b)),
            "small_box": dict(coord=tf.constant(c), atype=tf.constant(t), box=tf.constant(b * 0.45)),
            "type": dict(coord=tf.constant(c), atype=tf.constant(t + 1), box=tf.constant(b)),
            "overlap": dict(coord=tf.constant(overlap), atype=tf.constant(t), box=tf.constant(b)),
        }
        for what, args in bad.items():
            try:
                m.signatures["serving_default"](**args)
                report["error/" + what] = None
            except Exception as err:
                report["error/" + what] = type(err).__name__ + ": " + str(err)
    np.savez(output, report=json.dumps(report), **out)
    """
)


@pytest.fixture(scope="module")
def systems(get_system) -> dict:
    return {name: get_system(name) for name in SYSTEMS}


@pytest.fixture(scope="module")
def exported(tmp_path_factory, make_model) -> dict[str, dict]:
    """kind -> {model, source (.pth/.jax file), savedmodel}; se_e2_a converted by the CLI."""
    from click.testing import CliRunner

    from dpa_cli.main import cli

    folder = tmp_path_factory.mktemp("savedmodel")
    found = {}
    for kind in KINDS:
        model = make_model({"fitting_net": FIT, **CONFIGS[kind]}, seed=KINDS.index(kind))
        source = folder / f"{kind}{SOURCE[kind]}"
        model.save(source)
        target = folder / f"{kind}.savedmodel"
        if kind == "se_e2_a":
            result = CliRunner().invoke(cli, ["convert", str(source), str(target)])
            assert result.exit_code == 0, result.output
        else:
            dpa.io.convert(source, target)
        found[kind] = {"model": model, "source": source, "savedmodel": target}
    return found


@pytest.fixture(scope="module")
def plain_tf_process(exported, systems, tmp_path_factory):
    """The plain-TensorFlow process, started (it runs while `references` are computed)."""
    folder = tmp_path_factory.mktemp("plain_tf")
    plan = {
        "savedmodels": {k: str(v["savedmodel"]) for k, v in exported.items()},
        "systems": SYSTEMS,
        "mixed_kind": MIXED_KIND,
        "checks_kind": CHECKS_KIND,
    }
    data = {"plan": json.dumps(plan)}
    for name, s in systems.items():
        nf = s.coord.shape[0]
        data[f"{name}/coord"] = s.coord
        data[f"{name}/atype"] = np.broadcast_to(s.atype, s.coord.shape[:2]).astype(np.int32)
        data[f"{name}/box"] = np.zeros((nf, 3, 3)) if s.box is None else s.box
        for kind, item in exported.items():
            pot = dpa.load_model(item["model"], backend="numpy")
            nlist, shift = pot.neighbor_list(s.coord, s.atype, s.box)
            data[f"{kind}/{name}/nlist"], data[f"{kind}/{name}/shift"] = nlist, shift
    np.savez(folder / "inputs.npz", **data)
    (folder / "plain_tf.py").write_text(PLAIN_TF)
    env = {
        "PATH": os.environ.get("PATH", ""),
        "TF_CPP_MIN_LOG_LEVEL": "2",
        "XLA_FLAGS": "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true",
    }
    cmd = [sys.executable, "-I", "-S", str(folder / "plain_tf.py")]
    cmd += [sysconfig.get_paths()["purelib"], str(folder / "inputs.npz")]
    cmd += [str(folder / "outputs.npz")]
    with open(folder / "log.txt", "wb") as log:  # a file: a full pipe would stall the process
        proc = subprocess.Popen(cmd, cwd=folder, env=env, stdout=log, stderr=subprocess.STDOUT)
    yield proc, folder
    if proc.poll() is None:
        proc.kill()
        proc.wait()


@pytest.fixture(scope="module")
def references(exported, systems) -> dict:
    """(kind, system) -> outputs of the source file on its backend (torch .pth, jax .jax)."""
    refs = {}
    with xla_optimizations_off():  # compile time; round-off only
        for kind, item in exported.items():
            pot = dpa.load_model(item["source"])
            assert pot.backend == BACKEND[SOURCE[kind]]
            for name, s in systems.items():
                refs[kind, name] = pot.evaluate(s.coord, s.atype, s.box)
    return refs


@pytest.fixture(scope="module")
def plain_tf(plain_tf_process, references) -> tuple[dict, dict]:
    """(report, arrays) of the plain-TensorFlow process (waited for after the references)."""
    proc, folder = plain_tf_process
    proc.wait(timeout=900)
    assert proc.returncode == 0, (folder / "log.txt").read_text()[-4000:]
    with np.load(folder / "outputs.npz") as z:
        arrays = {k: z[k] for k in z.files}
    return json.loads(str(arrays.pop("report"))), arrays


def _assert_close(got: dict, ref: dict, what: str) -> float:
    worst = 0.0
    for key in OUTPUTS:
        a, b = np.asarray(got[key]), np.asarray(ref[key])
        assert a.shape == b.shape, (what, key, a.shape, b.shape)
        diff = float(np.max(np.abs(a - b)))
        assert diff <= TOL, f"{what} {key}: max |diff| {diff:.3g}"
        worst = max(worst, diff)
    assert np.max(np.abs(ref["force"])) > 1e-4, "forces vanish: the test would prove nothing"
    return worst


def test_load_model_runs_the_savedmodel(
    plain_tf_process, references, exported, systems, monkeypatch
):
    """dpa.load_model("m.savedmodel", backend="tensorflow") evaluates the SavedModel itself
    (neighbor list from dpa, trimmed DPA-1 list padded back, no box -> zeros; evaluate_nlist
    signature); a model changed after loading (another precision) would be exported afresh; by
    default the model embedded in the file is evaluated (torch here), never the graph. First in
    the file and asking for the plain-TF process, so it runs while that process does."""
    from dpa.backends.tensorflow import backend as tensorflow_backend
    from dpa.backends.tensorflow import export

    path = exported["dpa1"]["savedmodel"]
    with monkeypatch.context() as patch:  # the file is run, not re-exported
        patch.setattr(export, "build_module", lambda *a, **k: pytest.fail("re-exported"))
        pot = dpa.load_model(path, backend="tensorflow")
    assert pot.backend == "tensorflow" and pot.type_map == TYPE_MAP
    for name in ("skewed", "molecule"):
        s = systems[name]
        _assert_close(pot.evaluate(s.coord, s.atype, s.box), references["dpa1", name], name)
    with pytest.raises(dpa.BackendError, match="atom virial"):
        pot.evaluate(s.coord, s.atype, s.box, atomic=True)
    embedded = tensorflow_backend._embedded_tree(path)
    assert tensorflow_backend._same_tree(pot.model.tree, embedded)
    assert not tensorflow_backend._same_tree(pot.model.with_precision("float32").tree, embedded)
    default_pot = dpa.load_model(path)
    assert default_pot.backend == "torch"
    got = default_pot.evaluate(s.coord, s.atype, s.box)
    _assert_close(got, references["dpa1", "molecule"], "torch on the embedded model")


def test_savedmodel_converts_back_exactly(exported, tmp_path):
    item = exported["dpa2"]
    dpa.io.convert(item["savedmodel"], tmp_path / "back.dp")
    back = dpa.io.load(tmp_path / "back.dp")
    from dpa.tree import variables

    for a, b in zip(variables(back.tree), variables(item["model"].tree), strict=True):
        np.testing.assert_array_equal(a, b)


def test_show_names_the_savedmodel_format(exported):
    from click.testing import CliRunner

    from dpa_cli.main import cli

    result = CliRunner().invoke(cli, ["show", str(exported["dpa3"]["savedmodel"])])
    assert result.exit_code == 0, result.output
    assert "savedmodel (TensorFlow SavedModel" in result.output
    assert "dpa3" in result.output


def test_reading_a_savedmodel_imports_no_framework(exported):
    code = (
        "import sys, dpa, dpa.io; m = dpa.io.load(sys.argv[1]); print(m.type_map); "
        "print(sorted(x for x in ('tensorflow', 'jax', 'torch') if x in sys.modules))"
    )
    path = str(exported["dpa1"]["savedmodel"])
    out = subprocess.run([sys.executable, "-c", code, path], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == [str(TYPE_MAP), "[]"]


def test_foreign_savedmodel_is_refused(tmp_path):
    import tensorflow as tf

    module = tf.Module()
    module.f = tf.function(
        lambda x: {"y": 2.0 * x}, input_signature=[tf.TensorSpec([], tf.float64)]
    )
    tf.saved_model.save(module, str(tmp_path / "other.savedmodel"))
    with pytest.raises(dpa.ModelFileError, match="not one exported by dpa"):
        dpa.load_model(tmp_path / "other.savedmodel")
    (tmp_path / "empty.savedmodel").mkdir()
    with pytest.raises(dpa.ModelFileError, match="not a TensorFlow SavedModel"):
        dpa.load_model(tmp_path / "empty.savedmodel")


def test_incompatible_format_version_is_refused(exported, tmp_path):
    path = tmp_path / "future.savedmodel"
    shutil.copytree(exported["dpa1"]["savedmodel"], path)
    meta_file = path / "assets" / sm_format.METADATA_ASSET
    meta = json.loads(meta_file.read_text())
    meta["format_version"], meta["versions"]["dpa"] = 99, "9.9.0"
    meta_file.write_text(json.dumps(meta))
    with pytest.raises(dpa.ModelFileError) as info:
        dpa.load_model(path)
    message = str(info.value)
    assert "format version 99" in message and "dpa 9.9.0" in message
    assert f"reads format version {sm_format.FORMAT_VERSION}" in message


def test_unexportable_model_leaves_nothing_behind(tmp_path):
    cfg = {"type_map": ["O", "H"], "descriptor": CONFIGS["dpa1"]["descriptor"]}
    model = dpa.build_model({**cfg, "fitting_net": {**FIT, "numb_aparam": 1}}, seed=0)
    with pytest.raises(dpa.ModelFileError, match="aparam"):
        model.save(tmp_path / "m.savedmodel")
    assert list(tmp_path.iterdir()) == []


def test_existing_directory_that_is_not_a_savedmodel_is_kept(tmp_path, make_model):
    target = tmp_path / "data.savedmodel"
    target.mkdir()
    (target / "keep.txt").write_text("precious")
    model = make_model({"fitting_net": FIT, **CONFIGS["dpa1"]})
    with pytest.raises(dpa.ModelFileError, match="not a SavedModel directory"):
        model.save(target)
    assert (target / "keep.txt").read_text() == "precious"


def test_atomic_directory_replaces_or_keeps_the_old_model(tmp_path):
    target = tmp_path / "m.savedmodel"
    with sm_format.atomic_directory(target) as tmp:
        (tmp / "saved_model.pb").write_text("old")
    with pytest.raises(RuntimeError), sm_format.atomic_directory(target) as tmp:
        (tmp / "saved_model.pb").write_text("half")
        raise RuntimeError("interrupted")
    assert (target / "saved_model.pb").read_text() == "old"
    with sm_format.atomic_directory(target) as tmp:
        (tmp / "saved_model.pb").write_text("new")
    assert (target / "saved_model.pb").read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.savedmodel"]
    assert oct(target.stat().st_mode & 0o777) == oct(0o777 & ~_umask())


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def test_tensorflow_is_a_registered_backend():
    from dpa.backends.base import BACKENDS, available_backends

    assert "tensorflow" in BACKENDS
    assert "tensorflow" not in available_backends()  # it runs exported models, not any file
    assert Path(dpa.backends.tensorflow.savedmodel.__file__).name == "savedmodel.py"


# ---- results of the plain-TensorFlow process (last: it runs while the tests above do) ----


@pytest.mark.parametrize("signature", ["graph", "nlist"])
@pytest.mark.parametrize("name", SYSTEMS)
@pytest.mark.parametrize("kind", KINDS)
def test_plain_tensorflow_equals_source_backend(plain_tf, references, kind, name, signature):
    """serving_default (neighbor list in the graph) and evaluate_nlist (list given) in plain TF
    equal the source file's backend."""
    _, arrays = plain_tf
    got = {k: arrays[f"{kind}/{name}/{signature}/{k}"] for k in OUTPUTS}
    _assert_close(got, references[kind, name], f"{kind} {name} {signature}")


def test_frames_of_one_call_differ_in_periodicity_and_types(plain_tf, exported, systems):
    """Each frame has its own box (zeros: none) and types; atom 0's type (the type of empty
    slots, one switch branch per type for DPA-2) differs between the frames."""
    _, arrays = plain_tf
    s = systems["skewed"]
    pot = dpa.load_model(exported[MIXED_KIND]["source"])
    first = pot.evaluate(s.coord[:1], s.atype, s.box[:1])
    second = pot.evaluate(s.coord[1:], s.atype[::-1], None)
    ref = {k: np.concatenate([first[k], second[k]]) for k in OUTPUTS}
    _assert_close({k: arrays[f"mixed/{k}"] for k in OUTPUTS}, ref, "mixed frames")


def test_plain_tensorflow_process_had_no_dpa(plain_tf):
    report, _ = plain_tf
    assert report["dpa_importable"] is False


def test_metadata(plain_tf, exported):
    """get_metadata in plain TF and the assets file (read without TensorFlow) agree."""
    import jax
    import tensorflow as tf

    report, _ = plain_tf
    for kind, item in exported.items():
        meta = json.loads(report[f"{kind}/metadata"])
        assert meta == sm_format.read_metadata(item["savedmodel"])
        model = item["model"]
        assert meta["format"] == "dpa.savedmodel" and meta["format_version"] == 1
        assert meta["type_map"] == TYPE_MAP and meta["rcut"] == model.rcut
        assert meta["sel"] == model.sel and meta["nsel"] == sum(model.sel)
        assert meta["descriptor"] == model.descriptor_type
        assert meta["versions"]["dpa"] == dpa.__version__
        assert meta["versions"]["jax"] == jax.__version__
        assert meta["versions"]["tensorflow"] == tf.__version__
        assert meta["model_def_script"]["descriptor"]["type"] == CONFIGS[kind]["descriptor"]["type"]
        assert "@variables" in meta["model_tree"]


def test_float32_and_int64_inputs_are_cast(plain_tf):
    """`evaluate` casts float32 coord/box and int64 types; the signature refuses float32."""
    report, arrays = plain_tf
    np.testing.assert_array_equal(arrays["cast/energy"], arrays["cast/ref"])
    assert "float" in report["error/float32"]


@pytest.mark.parametrize(
    "what, message",
    [
        ("small_box", "box too small or singular for the in-graph neighbor list"),
        ("type", "atom types must be indices into the type_map"),
        ("overlap", "overlap"),
    ],
)
def test_bad_input_is_refused_inside_the_graph(plain_tf, what, message):
    report, _ = plain_tf
    error = report[f"error/{what}"]
    assert error is not None and error.startswith("InvalidArgumentError"), error
    assert message in error
