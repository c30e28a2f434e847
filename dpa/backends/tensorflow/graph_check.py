"""Static checks of a `.savedmodel` before TensorFlow may run it (`backend="tensorflow"`).

A SavedModel is a program: `tf.saved_model.load` runs functions stored in the file (resource
initializers, saveable restore functions) and every signature call runs the file's graph. dpa
evaluates a `.savedmodel` through its embedded `.dp` model by default; only on request does it run
the graph, and only after these checks, which parse the protobufs and read the checkpoint's data
(`saved_model_pb2`, `tf.train.load_checkpoint`): nothing here executes anything from the file.

What TensorFlow 2's `tf.saved_model.load` executes (load.py, `load_partial` and `Loader`): a file
without an object graph goes through `load_v1_in_v2`, which runs the saver's restore op and the
file's init ops, so it is refused. With an object graph, the loader builds the objects (variables,
assets, functions), restores variable values with TensorFlow's own restore ops (built in Python,
not taken from the file), calls the `save`/`restore` functions of nodes with `saveable_objects`
and `_create_resource`/`_initialize` of `resource` nodes; dpa's exports have neither, so such
nodes are refused. The meta graph's `saver_def` (the `_traced_save`/`_traced_restore` functions,
which legitimately hold SaveV2/RestoreV2) is not used by this loader, and those functions are not
reachable from the object graph or the signatures, so they are not checked. Everything that is
reachable is: every concrete function of the object graph and the functions behind every
signature_def, followed through function calls, control-flow branches and gradients.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from dpa.errors import ModelFileError

# Ops inside the functions reachable from the object graph and the signatures. Obtained by
# exporting one small model of each built-in descriptor type (the configs of
# tests/test_savedmodel.py, exclusions included) with dpa 0.1.0, jax 0.10.2 and TensorFlow
# 2.21.0, and collecting the ops of every reachable function with `reachable_ops`: all four
# gave exactly this set. tests/test_savedmodel_untrusted.py checks that a fresh export stays
# inside it; an exporter change that adds ops must re-measure and extend it. None of these reads
# or writes files, runs Python, prints, or changes state beyond its own outputs (Assert only fails
# the call with its message). The saver's functions (SaveV2, RestoreV2, MergeV2Checkpoints,
# AssignVariableOp, ...) are not reachable, so not measured.
FUNCTION_OPS = frozenset(
    {
        "Abs",
        "All",
        "Any",
        "Assert",
        "Cast",
        "CheckNumerics",
        "Const",
        "Cross",
        "Equal",
        "Greater",
        "GreaterEqual",
        "Identity",
        "If",
        "Less",
        "LessEqual",
        "LogicalNot",
        "LogicalOr",
        "Min",
        "Mul",
        "NoOp",
        "NotEqual",
        "Pack",
        "PartitionedCall",
        "PreventGradient",
        "Range",
        "ReadVariableOp",
        "RealDiv",
        "Shape",
        "Sqrt",
        "Squeeze",
        "StatefulPartitionedCall",
        "StridedSlice",
        "Sum",
        "XlaCallModule",
    }
)
# Ops of the top-level graph that the signature_defs (including `__saved_model_init_op`, which
# sets the asset paths) depend on; measured the same way (identical for the four exports).
# Python TensorFlow 2 does not run these nodes (its signatures come from the object graph);
# TensorFlow Serving and C++ do.
TOP_LEVEL_OPS = frozenset(
    {
        "AssignVariableOp",
        "NoOp",
        "PartitionedCall",
        "Placeholder",
        "StatefulPartitionedCall",
        "VarHandleOp",
    }
)
# Inside the XlaCallModule's StableHLO (read with jaxlib's MLIR bindings when jax is installed;
# deserializing runs nothing): the dialects and custom-call targets of the same four exports.
# Host transfers (infeed, outfeed, send, recv) and host callbacks are custom calls or ops outside
# these, so they are refused.
MODULE_DIALECTS = frozenset({"func", "stablehlo"})
HOST_TRANSFER_OPS = frozenset(
    {"stablehlo.infeed", "stablehlo.outfeed", "stablehlo.send", "stablehlo.recv"}
)
CUSTOM_CALL_TARGETS = frozenset({"shape_assertion"})
# Object graph nodes of dpa's exports: the module, its list of variables, the signature map.
OBJECT_KINDS = frozenset({"asset", "bare_concrete_function", "function", "user_object", "variable"})
USER_OBJECTS = frozenset({"_generic_user_object", "signature_map", "trackable_list_wrapper"})
# Attributes of the functions of dpa's exports (all of them, measured as above). Others, such as
# `api_implements`, let TensorFlow swap a called function for another one of the library.
FUNCTION_ATTRS = frozenset({"_construction_context", "_input_shapes"})

F64, I32, I64, STRING = 2, 3, 9, 7  # tensorflow DataType enum values
FRAME_INPUTS = {"coord": F64, "atype": I32, "box": F64}
SIGNATURES = {
    "serving_default": FRAME_INPUTS,
    "evaluate_nlist": {**FRAME_INPUTS, "nlist": I64, "shift": I64},
    "get_metadata": {},
}
SIGNATURE_OUTPUTS = {
    "serving_default": {"energy": F64, "force": F64, "virial": F64, "atom_energy": F64},
    "evaluate_nlist": {"energy": F64, "force": F64, "virial": F64, "atom_energy": F64},
    "get_metadata": {"json": STRING},
}
CHECKPOINT_GRAPH_KEY = "_CHECKPOINTABLE_OBJECT_GRAPH"
FIX = (
    "load it without backend='tensorflow' (dpa then evaluates the model embedded in "
    "assets/dpa_model.dp), or export the model again with `dpa convert model.dp model.savedmodel`"
)


def check_savedmodel(path: str | os.PathLike) -> None:
    """ModelFileError unless the SavedModel at `path` holds only what dpa's exporter writes."""
    path = Path(path)
    meta_graph = _meta_graph(parse(path), path)
    _check_objects(meta_graph.object_graph_def, path)
    _check_signatures(meta_graph, path)
    _check_function_attrs(meta_graph.graph_def.library, path)
    for op, function, node in reachable_ops(meta_graph, path):
        if op not in FUNCTION_OPS:
            raise ModelFileError(
                f"{path}: refusing to run this SavedModel's graph: op {op!r} (node {node!r} in "
                f"function {function!r}) is not one dpa's exporter writes, and it may read or "
                f"write files or run code; {FIX}"
            )


def parse(path: Path) -> Any:
    """The `SavedModel` protobuf of `path/saved_model.pb` (parsing runs nothing)."""
    from google.protobuf.message import DecodeError
    from tensorflow.core.protobuf import saved_model_pb2

    proto = saved_model_pb2.SavedModel()
    try:
        proto.ParseFromString((path / "saved_model.pb").read_bytes())
    except (OSError, DecodeError) as err:
        raise ModelFileError(f"{path}: unreadable saved_model.pb ({err}); {FIX}") from None
    return proto


def _meta_graph(proto: Any, path: Path) -> Any:
    """The single TF2 meta graph (one without an object graph would run its init/restore ops)."""
    if len(proto.meta_graphs) != 1 or not proto.meta_graphs[0].HasField("object_graph_def"):
        raise ModelFileError(
            f"{path}: not a TensorFlow 2 SavedModel with one object graph, as dpa writes "
            f"(TensorFlow would run its init and restore ops at load); {FIX}"
        )
    return proto.meta_graphs[0]


def _check_objects(graph: Any, path: Path) -> None:
    """Refuse object graph nodes that make TensorFlow run file functions at load."""
    for node_id, node in enumerate(graph.nodes):
        kind = node.WhichOneof("kind")
        what = None
        if kind not in OBJECT_KINDS:
            what = f"a {kind!r} object"
        elif kind == "user_object" and node.user_object.identifier not in USER_OBJECTS:
            what = f"a user object {node.user_object.identifier!r}"
        elif node.registered_name or node.registered_saver:
            what = f"a registered object {node.registered_name or node.registered_saver!r}"
        elif len(node.saveable_objects):
            what = f"saveable objects {sorted(node.saveable_objects)}"
        if what is not None:
            raise ModelFileError(
                f"{path}: refusing to run this SavedModel's graph: object graph node {node_id} "
                f"is {what}, which dpa's exporter never writes (TensorFlow would run functions "
                f"of the file while loading it); {FIX}"
            )


def _check_function_attrs(library: Any, path: Path) -> None:
    """No function of the library carries attributes dpa's exporter does not write."""
    for function in library.function:
        extra = sorted(set(function.attr) - FUNCTION_ATTRS)
        if extra:
            raise ModelFileError(
                f"{path}: refusing to run this SavedModel's graph: function "
                f"{function.signature.name!r} has attributes {extra}, which dpa's exporter never "
                f"writes (they may make TensorFlow run another function instead); {FIX}"
            )


def _check_signatures(meta_graph: Any, path: Path) -> None:
    """The signatures dpa calls exist, with the input and output names and dtypes it passes."""
    for name, inputs in SIGNATURES.items():
        if name not in meta_graph.signature_def:
            raise ModelFileError(f"{path}: the SavedModel lacks the signature {name!r}; {FIX}")
        signature = meta_graph.signature_def[name]
        for side, expected, found in (
            ("inputs", inputs, signature.inputs),
            ("outputs", SIGNATURE_OUTPUTS[name], signature.outputs),
        ):
            got = {key: found[key].dtype for key in found}
            if got != expected:
                raise ModelFileError(
                    f"{path}: signature {name!r} has {side} {_dtypes(got)}, but dpa's exports "
                    f"have {_dtypes(expected)}; {FIX}"
                )


def _dtypes(spec: dict[str, int]) -> str:
    """`name: dtype` pairs of a signature side, for messages."""
    from tensorflow.core.framework import types_pb2

    pairs = (f"{key}: {types_pb2.DataType.Name(dtype)}" for key, dtype in sorted(spec.items()))
    return "{" + ", ".join(pairs) + "}"


def reachable_ops(meta_graph: Any, path: Path) -> Iterator[tuple[str, str, str]]:
    """(op, function, node) of every node of every function TensorFlow may run from this file:
    those of the object graph and those the signature_defs call, followed through calls."""
    library = {f.signature.name: f for f in meta_graph.graph_def.library.function}
    gradients = {g.function_name: g.gradient_func for g in meta_graph.graph_def.library.gradient}
    roots = list(_object_graph_functions(meta_graph.object_graph_def))
    roots += _top_level_calls(meta_graph, library, path)
    seen: set[str] = set()
    queue = deque(roots)
    while queue:
        name = queue.popleft()
        if name in seen:
            continue
        if name not in library:
            raise ModelFileError(f"{path}: the graph calls function {name!r}, which is missing")
        seen.add(name)
        if name in gradients:
            queue.append(gradients[name])
        for node in library[name].node_def:
            queue.extend(_called_functions(node))
            if node.op in library:  # a direct call of a library function
                queue.append(node.op)
                continue
            _check_xla_call(node, name, path)
            _check_stablehlo(node, name, path)
            yield node.op, name, node.name


def _object_graph_functions(graph: Any) -> Iterator[str]:
    """Names of the concrete functions the object graph exposes or binds."""
    yield from graph.concrete_functions
    for node in graph.nodes:
        kind = node.WhichOneof("kind")
        if kind == "function":
            yield from node.function.concrete_functions
        elif kind == "bare_concrete_function":
            yield node.bare_concrete_function.concrete_function_name


def _top_level_calls(meta_graph: Any, library: dict, path: Path) -> list[str]:
    """Functions called by the top-level nodes the signature_defs depend on (ops checked)."""
    nodes = {node.name: node for node in meta_graph.graph_def.node}
    queue = deque(
        _node_name(tensor.name)
        for signature in meta_graph.signature_def.values()
        for side in (signature.inputs, signature.outputs)
        for tensor in side.values()
    )
    seen: set[str] = set()
    calls: list[str] = []
    while queue:
        name = queue.popleft()
        if name in seen:
            continue
        seen.add(name)
        node = nodes.get(name)
        if node is None:
            raise ModelFileError(f"{path}: a signature refers to node {name!r}, which is missing")
        if node.op in library:
            calls.append(node.op)
        elif node.op not in TOP_LEVEL_OPS:
            raise ModelFileError(
                f"{path}: refusing to run this SavedModel's graph: op {node.op!r} (top-level "
                f"node {name!r}, which a signature depends on) is not one dpa's exporter writes; "
                f"{FIX}"
            )
        calls.extend(_called_functions(node))
        queue.extend(_node_name(i) for i in node.input)
    return calls


def _node_name(tensor: str) -> str:
    """The node of a tensor or control input name ('^a', 'a:0', 'a')."""
    return tensor.lstrip("^").split(":")[0]


def _called_functions(node: Any) -> Iterator[str]:
    """Functions a node calls through its attributes (calls, If/While branches, XLA modules)."""
    for value in node.attr.values():
        if value.HasField("func"):
            yield value.func.name
        elif value.HasField("list"):
            yield from (f.name for f in value.list.func)


def _check_xla_call(node: Any, function: str, path: Path) -> None:
    """An XlaCallModule takes no host callbacks (no functions, no token threading)."""
    if node.op != "XlaCallModule":
        return
    callbacks = list(node.attr["function_list"].list.func) if "function_list" in node.attr else []
    token = "has_token_input_output" in node.attr and node.attr["has_token_input_output"].b
    if callbacks or token:
        raise ModelFileError(
            f"{path}: refusing to run this SavedModel's graph: the XlaCallModule node "
            f"{node.name!r} in function {function!r} calls back into the host (function_list "
            f"{[f.name for f in callbacks]}, has_token_input_output={token}), which dpa's "
            f"exporter never writes; {FIX}"
        )


def _check_stablehlo(node: Any, function: str, path: Path) -> None:
    """An XlaCallModule's StableHLO holds no host transfers and only dpa's custom calls (checked
    where jaxlib can read it; without jax the attribute checks above stand alone)."""
    if node.op != "XlaCallModule":
        return
    try:
        from jaxlib.mlir import ir
        from jaxlib.mlir.dialects import stablehlo
    except ImportError:
        return
    with ir.Context() as context:
        try:
            module = stablehlo.deserialize_portable_artifact(context, node.attr["module"].s)
        except Exception as err:  # bytes this jaxlib cannot read
            raise ModelFileError(
                f"{path}: cannot read the StableHLO of XlaCallModule node {node.name!r} in "
                f"function {function!r} ({err}); upgrade jax, or {FIX}"
            ) from None
        for op in _module_ops(module.operation):
            what = _foreign_module_op(op)
            if what is not None:
                raise ModelFileError(
                    f"{path}: refusing to run this SavedModel's graph: the StableHLO of "
                    f"XlaCallModule node {node.name!r} in function {function!r} holds {what}, "
                    f"which dpa's exporter never writes; {FIX}"
                )


def _module_ops(op: Any) -> Iterator[Any]:
    """Every operation nested in an MLIR operation, depth first."""
    for region in op.regions:
        for block in region.blocks:
            for inner in block.operations:
                yield inner.operation
                yield from _module_ops(inner.operation)


def _foreign_module_op(op: Any) -> str | None:
    """What is not dpa's about a StableHLO operation, or None."""
    from jaxlib.mlir import ir

    name = op.name
    if name.split(".")[0] not in MODULE_DIALECTS or name in HOST_TRANSFER_OPS:
        return f"op {name!r}"
    if name == "stablehlo.custom_call":
        target = ir.StringAttr(op.attributes["call_target_name"]).value
        if target not in CUSTOM_CALL_TARGETS:
            return f"a custom call {target!r}"
    return None


def check_variables(path: str | os.PathLike, leaves: list[np.ndarray]) -> None:
    """ModelFileError unless the SavedModel's variables are exactly `leaves` (the embedded
    model's arrays), as dtypes, shapes and values, read from variables/ without running it."""
    path = Path(path)
    meta_graph = _meta_graph(parse(path), path)
    _check_variable_nodes(meta_graph.object_graph_def, len(leaves), path)
    reader = _checkpoint_reader(path)
    keys = _checkpoint_keys(reader, len(leaves), path)
    for index, (key, expected) in enumerate(zip(keys, leaves, strict=True)):
        value = reader.get_tensor(key)
        expected = np.asarray(expected)
        if not identical(np.asarray(value), expected):
            raise ModelFileError(
                f"{path}: variable params[{index}] ({key}) of the SavedModel differs from the "
                f"model in assets/dpa_model.dp (dtype {value.dtype} vs {expected.dtype}, shape "
                f"{np.shape(value)} vs {expected.shape}); the graph would not compute the model "
                f"the file claims to hold; {FIX}"
            )


def identical(a: np.ndarray, b: np.ndarray) -> bool:
    """Same dtype, shape and bytes (NaN payloads and signed zeros included)."""
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


def _children(node: Any) -> dict[str, int]:
    """local name -> node id of an object graph node's children."""
    return {child.local_name: child.node_id for child in node.children}


def _check_variable_nodes(graph: Any, count: int, path: Path) -> None:
    """The object graph's variables are exactly root.params[0..count-1]."""
    params = _children(graph.nodes[0]).get("params")
    ids = _children(graph.nodes[params]) if params is not None else {}
    wanted = [ids.get(str(i)) for i in range(count)]
    variables = {i for i, node in enumerate(graph.nodes) if node.WhichOneof("kind") == "variable"}
    if None in wanted or set(wanted) != variables or len(ids) != count:
        raise ModelFileError(
            f"{path}: the SavedModel's variables are not the {count} arrays of the model in "
            f"assets/dpa_model.dp (found {len(variables)} variables); {FIX}"
        )


def _checkpoint_reader(path: Path) -> Any:
    """A reader of variables/variables (TensorFlow's bundle reader: it reads, runs nothing)."""
    import tensorflow as tf

    try:
        return tf.train.load_checkpoint(str(path / "variables" / "variables"))
    except Exception as err:  # a missing or damaged checkpoint
        raise ModelFileError(f"{path}: unreadable variables/ checkpoint ({err}); {FIX}") from None


def _checkpoint_keys(reader: Any, count: int, path: Path) -> list[str]:
    """Checkpoint keys of root.params[i] for i < count, as TensorFlow's restore matches them."""
    from tensorflow.core.protobuf import trackable_object_graph_pb2

    graph = trackable_object_graph_pb2.TrackableObjectGraph()
    try:
        graph.ParseFromString(reader.get_tensor(CHECKPOINT_GRAPH_KEY))
        if any(node.registered_saver.name for node in graph.nodes):
            raise ValueError("a node names a registered saver, which dpa never writes")
        params = _children(graph.nodes[0])["params"]
        ids = _children(graph.nodes[params])
        return [_value_key(graph.nodes[ids[str(i)]]) for i in range(count)]
    except Exception as err:  # no object graph, or one without root.params[i]
        raise ModelFileError(
            f"{path}: the variables/ checkpoint does not hold the model's {count} variables "
            f"({type(err).__name__}: {err}); {FIX}"
        ) from None


def _value_key(node: Any) -> str:
    """The checkpoint key of a variable node's value."""
    keys = [a.checkpoint_key for a in node.attributes if a.name == "VARIABLE_VALUE"]
    if len(keys) != 1:
        raise KeyError("VARIABLE_VALUE")
    return keys[0]
