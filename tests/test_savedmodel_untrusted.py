"""A `.savedmodel` is a program: dpa never runs its graph unless asked (backend="tensorflow"),
and then only after checking, without running anything, that it holds what dpa's exporter writes.

One tiny DPA-3 model is exported once per module. Hostile SavedModels are crafted from tf.Modules
with dpa's three signatures (input names and dtypes as dpa's) whose graphs write, read or call
Python, with the real export's assets/ copied in (so the embedded model and metadata are real).
Each hostile file is first shown to act when TensorFlow runs it (the tests could fail), then:
the default load, `dpa show`, `dpa test`, `dpa convert` and DPACalculator evaluate the embedded
model and never touch the marker file, and backend="tensorflow" refuses it naming the op.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from builders import DATA, dpa3
from click.testing import CliRunner

import dpa
import dpa.io
from dpa_cli.main import cli

pytestmark = pytest.mark.skipif(
    any(importlib.util.find_spec(m) is None for m in ("tensorflow", "jax")),
    reason="needs tensorflow and jax",
)

TOL = 1e-10
OUTPUTS = ("energy", "force", "virial", "atom_energy")
CONFIG = {"descriptor": dpa3(56), "fitting_net": {"neuron": [8, 8]}}


@pytest.fixture(scope="module")
def real(tmp_path_factory, make_model) -> dict:
    """A real export: {model, dp (its .dp file), savedmodel, nsel}."""
    folder = tmp_path_factory.mktemp("real")
    model = make_model(CONFIG, seed=7)
    model.save(folder / "model.dp")
    dpa.io.convert(folder / "model.dp", folder / "model.savedmodel")
    meta = json.loads((folder / "model.savedmodel/assets/dpa_metadata.json").read_text())
    return {
        "model": model,
        "dp": folder / "model.dp",
        "savedmodel": folder / "model.savedmodel",
        "nsel": meta["nsel"],
    }


@pytest.fixture(scope="module")
def skewed(get_system):
    return get_system("skewed")


@pytest.fixture(scope="module")
def reference(real, skewed) -> dict:
    """The real model on the jax backend (the skewed periodic system)."""
    pot = dpa.load_model(real["model"], backend="jax")
    return pot.evaluate(skewed.coord, skewed.atype, skewed.box)


def _frame_specs(nsel: int | None) -> list:
    """dpa's signature inputs: coord, atype, box [, nlist, shift]."""
    import tensorflow as tf

    specs = [
        tf.TensorSpec([None, None, 3], tf.float64, name="coord"),
        tf.TensorSpec([None, None], tf.int32, name="atype"),
        tf.TensorSpec([None, 3, 3], tf.float64, name="box"),
    ]
    if nsel is not None:
        specs += [
            tf.TensorSpec([None, None, nsel], tf.int64, name="nlist"),
            tf.TensorSpec([None, None, nsel, 3], tf.int64, name="shift"),
        ]
    return specs


def craft(
    folder: Path,
    real: dict,
    effect: Callable[[], list],
    extra: Callable | None = None,
    nlist_specs: list | None = None,
) -> Path:
    """A SavedModel with dpa's signatures whose graphs run `effect()` and answer zeros (with
    ops dpa's exporter also uses), holding the real export's assets/."""
    import tensorflow as tf

    meta_json = (real["savedmodel"] / "assets" / "dpa_metadata.json").read_text()

    def outputs(coord, box):
        with tf.control_dependencies(effect()):
            return {
                "energy": coord[:, 0, 0] * 0.0,
                "force": coord * 0.0,
                "virial": box * 0.0,
                "atom_energy": coord[:, :, 0] * 0.0,
            }

    def metadata():
        with tf.control_dependencies(effect()):
            return {"json": tf.constant(meta_json)}

    module = tf.Module()
    serving = tf.function(
        lambda coord, atype, box: outputs(coord, box), input_signature=_frame_specs(None)
    )
    nlist = tf.function(
        lambda coord, atype, box, nlist, shift: outputs(coord, box),
        input_signature=nlist_specs or _frame_specs(real["nsel"]),
    )
    module.get_metadata = tf.function(metadata, input_signature=[])
    module.evaluate_nlist = nlist
    if extra is not None:
        extra(module)
    path = folder / "hostile.savedmodel"
    signatures = {
        "serving_default": serving.get_concrete_function(),
        "evaluate_nlist": nlist.get_concrete_function(),
        "get_metadata": module.get_metadata.get_concrete_function(),
    }
    tf.saved_model.save(module, str(path), signatures=signatures)
    shutil.copytree(real["savedmodel"] / "assets", path / "assets", dirs_exist_ok=True)
    return path


def _write(marker: Path) -> Callable[[], list]:
    """An effect that writes `marker`."""
    import tensorflow as tf

    return lambda: [tf.io.write_file(str(marker), "written by the SavedModel")]


def _run_graph(path: Path, nsel: int) -> None:
    """Run the file's signatures in plain TensorFlow (what dpa must never do by default)."""
    import tensorflow as tf

    loaded = tf.saved_model.load(str(path))
    loaded.signatures["get_metadata"]()
    frame = {
        "coord": tf.zeros([1, 2, 3], tf.float64),
        "atype": tf.zeros([1, 2], tf.int32),
        "box": tf.zeros([1, 3, 3], tf.float64),
        "nlist": -tf.ones([1, 2, nsel], tf.int64),
        "shift": tf.zeros([1, 2, nsel, 3], tf.int64),
    }
    loaded.signatures["evaluate_nlist"](**frame)


def _assert_close(got: dict, ref: dict) -> None:
    for key in OUTPUTS:
        np.testing.assert_allclose(got[key], ref[key], rtol=0, atol=TOL, err_msg=key)
    assert np.max(np.abs(ref["energy"])) > 1e-3, "energies vanish: the test would prove nothing"


def _cli(*args: str):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


@pytest.fixture
def writer(tmp_path, real) -> tuple[Path, Path]:
    """(hostile SavedModel that writes `marker` from every signature, marker)."""
    marker = tmp_path / "marker.txt"
    return craft(tmp_path, real, _write(marker)), marker


def test_hostile_graph_really_writes(writer, real):
    """Positive control: run in TensorFlow, the crafted graph writes its file."""
    path, marker = writer
    _run_graph(path, real["nsel"])
    assert marker.is_file()


def test_default_load_evaluates_the_embedded_model(writer, skewed, reference):
    path, marker = writer
    pot = dpa.load_model(path)
    assert pot.backend != "tensorflow"
    _assert_close(pot.evaluate(skewed.coord, skewed.atype, skewed.box), reference)
    assert not marker.exists()


def test_tensorflow_backend_refuses_the_write(writer):
    path, marker = writer
    with pytest.raises(dpa.ModelFileError) as info:
        dpa.load_model(path, backend="tensorflow")
    message = str(info.value)
    assert str(path) in message and "'WriteFile'" in message and "function" in message
    assert "without backend='tensorflow'" in message
    assert not marker.exists()


def test_environment_backend_is_asking(writer, monkeypatch):
    """DPA_BACKEND=tensorflow asks for the graph: checked and refused like backend=."""
    path, marker = writer
    monkeypatch.setenv("DPA_BACKEND", "tensorflow")
    with pytest.raises(dpa.ModelFileError, match="WriteFile"):
        dpa.load_model(path)
    assert not marker.exists()


def test_cli_show_and_convert_read_the_embedded_model(writer, real, tmp_path):
    path, marker = writer
    result = _cli("show", str(path))
    assert result.exit_code == 0, result.output
    assert "dpa3" in result.output
    result = _cli("convert", str(path), str(tmp_path / "back.dp"))
    assert result.exit_code == 0, result.output
    from dpa.tree import variables

    back = dpa.io.load(tmp_path / "back.dp")
    for a, b in zip(variables(back.tree), variables(real["model"].tree), strict=True):
        np.testing.assert_array_equal(a, b)
    assert not marker.exists()


@pytest.mark.skipif(not (DATA / "water" / "data_0").is_dir(), reason="shared data not found")
def test_cli_test_evaluates_the_embedded_model(writer, real, tmp_path):
    path, marker = writer
    water = str(DATA / "water" / "data_0")
    runs = {}
    for name, model in (("hostile", path), ("real", real["dp"])):
        prefix = tmp_path / name / "detail"
        result = _cli("test", "-m", str(model), "-s", water, "-n", "1", "-d", str(prefix))
        assert result.exit_code == 0, result.output
        runs[name] = Path(f"{prefix}.e.out").read_text().splitlines()[1:]
    assert runs["hostile"] == runs["real"]
    assert not marker.exists()
    result = _cli("--backend", "tensorflow", "test", "-m", str(path), "-s", water, "-n", "1")
    assert result.exit_code == 1
    assert "WriteFile" in result.stderr
    assert not marker.exists()


def test_ase_calculator_evaluates_the_embedded_model(writer, skewed, reference):
    from ase import Atoms

    from dpa.calculator import DPACalculator

    path, marker = writer
    names = ["O", "H", "C"]
    atoms = Atoms(
        [names[t] for t in skewed.atype], positions=skewed.coord[0], cell=skewed.box[0], pbc=True
    )
    atoms.calc = DPACalculator(path)
    assert atoms.get_potential_energy() == pytest.approx(reference["energy"][0], abs=TOL)
    np.testing.assert_allclose(atoms.get_forces(), reference["force"][0], atol=TOL, rtol=0)
    assert not marker.exists()


def test_file_reads_and_python_calls_are_refused(tmp_path, real):
    import tensorflow as tf

    effects = {
        "ReadFile": lambda: [tf.io.read_file(str(real["savedmodel"] / "saved_model.pb"))],
        "EagerPyFunc": lambda: [tf.py_function(lambda: 0.0, [], tf.float64)],
    }
    for op, effect in effects.items():
        path = craft(tmp_path / op, real, effect)
        with pytest.raises(dpa.ModelFileError, match=f"op '{op}'") as info:
            dpa.load_model(path, backend="tensorflow")
        assert str(path) in str(info.value) and "__inference_" in str(info.value)


def test_a_function_named_like_the_saver_is_checked(tmp_path, real):
    """Functions are checked by reachability, not name: one called `_traced_restore` (as the
    saver's restore function, which legitimately holds RestoreV2) is still refused."""
    import tensorflow as tf

    marker = tmp_path / "marker.txt"

    @tf.function(autograph=False)
    def _traced_restore():
        tf.io.write_file(str(marker), "written by the SavedModel")
        return tf.constant(0.0, tf.float64)

    path = craft(tmp_path, real, lambda: [_traced_restore()])
    with pytest.raises(dpa.ModelFileError, match="WriteFile.*_traced_restore"):
        dpa.load_model(path, backend="tensorflow")
    assert not marker.exists()


def test_resource_initialized_at_load_is_refused(tmp_path, real):
    """TensorFlow runs a resource's `_initialize` function from the file while loading it."""
    import tensorflow as tf

    marker = tmp_path / "marker.txt"

    class Hostile(tf.saved_model.experimental.TrackableResource):
        def _create_resource(self):
            return tf.raw_ops.VarHandleOp(dtype=tf.float64, shape=[], shared_name="hostile")

        def _initialize(self):
            return tf.io.write_file(str(marker), "written while loading")

    def attach(module):
        module.resource = Hostile()

    path = craft(tmp_path / "craft", real, lambda: [], extra=attach)
    marker.unlink(missing_ok=True)  # saving initialized it once
    with pytest.raises(dpa.ModelFileError, match="'resource' object"):
        dpa.load_model(path, backend="tensorflow")
    assert not marker.exists()
    tf.saved_model.load(str(path))  # positive control: loading alone writes
    assert marker.is_file()


def test_signature_inputs_are_checked(tmp_path, real):
    """An evaluate_nlist taking other dtypes than dpa's (int64 atype) is refused from the
    protobuf, before TensorFlow would fail or cast."""
    import tensorflow as tf

    specs = _frame_specs(real["nsel"])
    specs[1] = tf.TensorSpec([None, None], tf.int64, name="atype")
    path = craft(tmp_path, real, lambda: [], nlist_specs=specs)
    with pytest.raises(dpa.ModelFileError, match="signature 'evaluate_nlist' has inputs"):
        dpa.load_model(path, backend="tensorflow")


def _edit_graph(path: Path, edit: Callable) -> None:
    """Rewrite saved_model.pb with `edit(meta_graph)` applied (the protobuf, nothing run)."""
    from tensorflow.core.protobuf import saved_model_pb2

    proto = saved_model_pb2.SavedModel()
    proto.ParseFromString((path / "saved_model.pb").read_bytes())
    edit(proto.meta_graphs[0])
    (path / "saved_model.pb").write_bytes(proto.SerializeToString())


def _xla_nodes(meta_graph) -> list:
    return [
        node
        for function in meta_graph.graph_def.library.function
        for node in function.node_def
        if node.op == "XlaCallModule"
    ]


def _token(meta_graph) -> None:
    _xla_nodes(meta_graph)[0].attr["has_token_input_output"].b = True


def _callback(meta_graph) -> None:
    name = meta_graph.graph_def.library.function[0].signature.name
    _xla_nodes(meta_graph)[0].attr["function_list"].list.func.add().name = name


def _foreign_custom_call(meta_graph) -> None:
    """The StableHLO replaced by one calling a custom-call target dpa never uses."""
    import jax
    from jax import export

    def f(x):
        return jax.ffi.ffi_call("host_io", jax.ShapeDtypeStruct(x.shape, x.dtype))(x)

    checks = [export.DisabledSafetyCheck.custom_call("host_io")]
    spec = jax.ShapeDtypeStruct((3,), "float32")
    module = export.export(jax.jit(f), disabled_checks=checks)(spec).mlir_module_serialized
    _xla_nodes(meta_graph)[0].attr["module"].s = module


def _implements(meta_graph) -> None:
    meta_graph.graph_def.library.function[0].attr["api_implements"].s = b"swap"


def _no_object_graph(meta_graph) -> None:
    meta_graph.ClearField("object_graph_def")


@pytest.mark.parametrize(
    "edit, message",
    [
        (_token, "XlaCallModule node .* calls back into the host"),
        (_callback, "XlaCallModule node .* calls back into the host"),
        (_foreign_custom_call, "holds a custom call 'host_io'"),
        (_implements, "has attributes \\['api_implements'\\]"),
        (_no_object_graph, "not a TensorFlow 2 SavedModel with one object graph"),
    ],
)
def test_edited_real_export_is_refused(tmp_path, real, edit, message):
    """Host callbacks of the XLA module, function swapping, or a TF1 layout (whose init and
    restore ops TensorFlow would run at load) in an otherwise real export: refused."""
    path = tmp_path / "edited.savedmodel"
    shutil.copytree(real["savedmodel"], path)
    _edit_graph(path, edit)
    with pytest.raises(dpa.ModelFileError, match=message):
        dpa.load_model(path, backend="tensorflow")


def _rewrite_checkpoint(path: Path, change: Callable[[str, np.ndarray], np.ndarray]) -> None:
    """Write variables/ again with every tensor passed through `change(key, value)`."""
    import tensorflow as tf

    prefix = str(path / "variables" / "variables")
    reader = tf.train.load_checkpoint(prefix)
    keys = sorted(reader.get_variable_to_dtype_map())
    values = [change(k, reader.get_tensor(k)) for k in keys]
    for old in (path / "variables").iterdir():
        old.unlink()
    tf.raw_ops.SaveV2(
        prefix=prefix,
        tensor_names=keys,
        shape_and_slices=[""] * len(keys),
        tensors=[tf.constant(v) for v in values],
    )


def test_changed_variables_are_refused(tmp_path, real):
    """One variable of the checkpoint one ulp away from the embedded model: refused, by name;
    the unchanged rewrite is accepted (the rewrite itself is faithful)."""
    path = tmp_path / "changed.savedmodel"
    shutil.copytree(real["savedmodel"], path)
    _rewrite_checkpoint(path, lambda key, value: value)
    assert dpa.load_model(path, backend="tensorflow").backend == "tensorflow"  # unchanged: runs

    def nudge(key: str, value: np.ndarray) -> np.ndarray:
        if key.startswith("params/3/"):
            value = value.copy()
            value.flat[0] = np.nextafter(value.flat[0], np.inf)
        return value

    _rewrite_checkpoint(path, nudge)
    with pytest.raises(dpa.ModelFileError, match=r"params\[3\].*differs") as info:
        dpa.load_model(path, backend="tensorflow")
    assert str(path) in str(info.value)


def test_real_export_runs_under_tensorflow_and_warns(real, skewed, reference, caplog, monkeypatch):
    """backend="tensorflow" runs the real file (not a re-export), equal to jax, and warns
    once that this trusts the file."""
    from dpa.backends.tensorflow import export

    with monkeypatch.context() as patch:
        patch.setattr(export, "build_module", lambda *a, **k: pytest.fail("re-exported"))
        with caplog.at_level(logging.WARNING, logger="dpa"):
            pot = dpa.load_model(real["savedmodel"], backend="tensorflow")
    assert pot.backend == "tensorflow"
    warnings = [r for r in caplog.records if r.name.startswith("dpa") and "trusts" in r.message]
    assert len(warnings) == 1 and str(real["savedmodel"]) in warnings[0].getMessage()
    _assert_close(pot.evaluate(skewed.coord, skewed.atype, skewed.box), reference)


def test_model_changed_after_loading_is_exported_in_memory(real, monkeypatch):
    """A tree that is not the file's embedded model (here: another precision) never goes through
    the file: it is exported in memory (the legitimate re-export)."""
    from dpa.backends.tensorflow import export
    from dpa.backends.tensorflow.backend import TensorFlowBackend

    calls = []

    class Built:
        signatures = {"evaluate_nlist": "in-memory"}

    monkeypatch.setattr(export, "build_module", lambda data, *a, **k: calls.append(data) or Built)
    backend = TensorFlowBackend(real["savedmodel"])
    changed = real["model"].with_precision("float32").tree
    assert backend.prepare(changed).fn == "in-memory"
    assert calls == [{"model": changed}]


def test_allowlist_covers_a_fresh_export_and_holds_no_io(real):
    """The reachable ops of a fresh export are inside the allowlist; it holds no I/O op."""
    from dpa.backends.tensorflow import graph_check as check

    path = real["savedmodel"]
    meta_graph = check._meta_graph(check.parse(path), path)
    found = {op for op, _, _ in check.reachable_ops(meta_graph, path)}
    assert found <= check.FUNCTION_OPS
    assert "XlaCallModule" in found  # the model itself is reached
    io_ops = {"WriteFile", "ReadFile", "SaveV2", "RestoreV2", "MergeV2Checkpoints", "PrintV2"}
    io_ops |= {"PyFunc", "EagerPyFunc", "PyFuncStateless", "AssignVariableOp", "MatchingFiles"}
    assert not io_ops & check.FUNCTION_OPS
    saver = [f for f in meta_graph.graph_def.library.function if "RestoreV2" in str(f)]
    assert saver, "the saver's functions exist (and hold I/O) but are not reachable"
