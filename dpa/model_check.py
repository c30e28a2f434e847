"""Load-time validation of a serialized model tree (`data["model"]`, spec §1-8, Appendix A).

Every array is checked for dtype and finiteness, every network layer for its shape along the
chain the forward pass feeds it, statistics against `sel`, biases against `type_map`, and the
config numbers the forward pass reads for sane bounds, so a corrupt or edited file fails here,
as a `ModelFileError` naming the JSON path and what was expected, and not later as NaN energies,
a silently wrong sum, a MemoryError or a raw traceback. The expected shapes follow the formulas
of the `build` functions and the forward code of `dpa.dpmodel`. NumPy only.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, NoReturn

import numpy as np

from .dpmodel.model import descriptor_module
from .dpmodel.network import activation
from .dpmodel.type_embed import ECONF_DIM, econf_vectors
from .errors import ConfigError, ModelFileError

MAX_SEL = 100_000  # most neighbor slots a list may have (sum of sel)
MAX_RCUT = 100.0  # Å
MAX_WIDTH = 1 << 16  # largest layer width, embedding dimension or head count
PRECISIONS = ("default", "float64", "float32", "double", "single")
FIX = "the file is corrupt or was edited; re-export it from its source"
FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
# switches the forward pass (or DeePMD-kit) reads as booleans: a string or a number there would
# switch a branch on silently ("false" is truthy)
FLAGS = frozenset(
    """a_compress_use_split add_chg_spin_ebd add_tebd_to_repinit_out attn2_has_gate attn_dotr
    attn_mask bias bias_out concat_output_tebd direct_dist do_mask dotr edge_init_use_dist
    g1_out_conv g1_out_mlp has_gate mixed_types normalize optim_update padding resnet resnet_dt
    sequential_update set_davg_zero smooth smooth_edge_update smooth_type_embedding tot_ener_zero
    trainable_ln type_one_side update_angle update_chnnl_2 update_g1_has_attn update_g1_has_conv
    update_g1_has_drrd update_g1_has_grrg update_g2_has_attn update_g2_has_g1g1 update_h2
    use_aparam_as_mask use_dynamic_sel use_econf_tebd use_exp_switch use_loc_mapping
    use_sqrt_nnei use_tebd_bias use_three_body use_timestep""".split()
)


def check_model_tree(model: dict) -> None:
    """Raise ModelFileError naming the path of the first invalid entry of a model tree."""
    try:
        _check_tree(Node(model, "model"))
    except (TypeError, ValueError, KeyError, IndexError, AttributeError, OverflowError) as err:
        # a shape of the tree no check foresaw: still one clear line, never a traceback
        raise ModelFileError(
            f"the model tree is malformed ({type(err).__name__}: {err}); {FIX}"
        ) from err


def _check_tree(root: Node) -> None:
    """The checks in order: structure, arrays, fields, descriptor, fitting, model level."""
    _structure(root)
    ntypes = len(_type_map(root["type_map"]))
    _check_arrays(root)
    _walk_fields(root["descriptor"])
    _walk_fields(root["fitting"])
    dim = _check_descriptor(root["descriptor"], ntypes)
    _check_fitting(root["fitting"], ntypes, dim)
    _check_model_level(root, ntypes)


# --------------------------------------------------------------------------- tree access


@dataclass(frozen=True)
class Node:
    """A value of the tree with its JSON path, for messages such as `model.fitting.ntypes`."""

    value: Any
    path: str

    def has(self, key: str) -> bool:
        """Whether the dict holds `key` with a non-None value."""
        return isinstance(self.value, dict) and self.value.get(key) is not None

    def __getitem__(self, key: str | int) -> Node:
        """The required entry `key` (a dict key or a list index)."""
        if isinstance(key, int):
            items = self.list()
            if key >= len(items):
                fail(self, f"has {len(items)} entries; expected at least {key + 1}")
            return Node(items[key], f"{self.path}[{key}]")
        if not isinstance(self.value, dict):
            fail(self, f"must be a dict (holding {key!r}), got {type(self.value).__name__}")
        if self.value.get(key) is None:
            raise ModelFileError(f"the model tree lacks {self.path}.{key}; the file is incomplete")
        return Node(self.value[key], f"{self.path}.{key}")

    def get(self, key: str, default: Any = None) -> Node:
        """The entry `key`, or a node holding `default` when it is absent (as `dict.get`: a
        stored None stays None, and the forward pass reads it so)."""
        if isinstance(self.value, dict) and key in self.value:
            return Node(self.value[key], f"{self.path}.{key}")
        return Node(default, f"{self.path}.{key}")

    def list(self) -> list:
        """The value as a list (a tuple is accepted)."""
        if not isinstance(self.value, list | tuple):
            fail(self, f"must be a list, got {type(self.value).__name__}")
        return list(self.value)

    def items(self) -> list[Node]:
        """The entries of a list value as nodes."""
        return [Node(v, f"{self.path}[{i}]") for i, v in enumerate(self.list())]


def fail(node: Node, problem: str, fix: str = FIX) -> NoReturn:
    """Raise the ModelFileError for `node`: its path, the problem, how to fix it."""
    raise ModelFileError(f"{node.path} {problem}; {fix}")


def _int(node: Node, lo: int = 0, hi: int = MAX_WIDTH) -> int:
    """An integer (an integral float is accepted) in [lo, hi]."""
    v = node.value
    ok = isinstance(v, int | np.integer) and not isinstance(v, bool | np.bool_)
    if isinstance(v, float | np.floating) and math.isfinite(v) and float(v).is_integer():
        ok, v = True, int(v)
    if not ok:
        fail(node, f"must be an integer, got {v!r}")
    if not lo <= int(v) <= hi:
        fail(node, f"is {v}; expected an integer in [{lo}, {hi}]")
    return int(v)


def _float(node: Node, lo: float, hi: float, lo_open: bool = False) -> float:
    """A finite real number in [lo, hi] (or (lo, hi] with lo_open)."""
    v = node.value
    if isinstance(v, bool | np.bool_) or not isinstance(v, int | float | np.integer | np.floating):
        fail(node, f"must be a number, got {v!r}")
    x = float(v)
    if not math.isfinite(x) or x < lo or x > hi or (lo_open and x == lo):
        interval = f"{'(' if lo_open else '['}{lo:g}, {hi:g}]"
        fail(node, f"is {v!r}; expected a finite number in {interval}")
    return x


def _widths(node: Node) -> list[int]:
    """A non-empty list of positive layer widths (`neuron`)."""
    widths = [_int(n, 1) for n in node.items()]
    if not widths:
        fail(node, "is empty; expected at least one layer width")
    return widths


def _choice(node: Node, allowed: tuple[str, ...]) -> str:
    """A string among `allowed`."""
    if node.value not in allowed:
        fail(node, f"is {node.value!r}; expected one of {', '.join(map(repr, allowed))}")
    return node.value


# --------------------------------------------------------------------------- whole-tree checks


def _structure(root: Node) -> None:
    """The parts every model has, as dicts; only standard energy models."""
    missing = [k for k in ("type_map", "descriptor", "fitting", "@variables") if not root.has(k)]
    if missing:
        raise ModelFileError(f"the model tree lacks {missing}; the file is incomplete")
    for key in ("descriptor", "fitting", "@variables"):
        if not isinstance(root.value[key], dict):
            fail(root[key], f"must be a dict, got {type(root.value[key]).__name__}")
    if root.get("type", "standard").value != "standard":
        fail(
            root["type"],
            f"is {root.value['type']!r}: only standard energy models are supported",
            "use an energy model",
        )
    if root["fitting"].get("type", "ener").value != "ener":
        fail(
            root["fitting"]["type"],
            f"is {root.value['fitting']['type']!r}: only energy fittings ('ener') are supported",
            "use an energy model",
        )


def _type_map(node: Node) -> list[str]:
    """type_map: a non-empty list of unique, non-empty strings."""
    names = node.list()
    if not names:
        fail(node, "is empty; expected the element names of the model")
    for item in node.items():
        if not isinstance(item.value, str) or not item.value:
            fail(item, f"must be a non-empty string, got {item.value!r}")
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        fail(node, f"lists {twice} more than once")
    return names


def _walk_fields(node: Node) -> None:
    """Every `activation_function` and `precision` field names a known function / precision."""
    value = node.value
    if isinstance(value, dict):
        for key, child in value.items():
            if key == "@variables":
                continue
            sub = Node(child, f"{node.path}.{key}")
            if key == "activation_function":
                try:
                    activation(child)
                except ConfigError as err:
                    fail(sub, f"is invalid ({err})")
            elif key == "precision":
                _choice(sub, PRECISIONS)
            elif key in FLAGS:
                if not isinstance(child, bool | np.bool_):
                    fail(sub, f"must be true or false, got {child!r}")
            else:
                _walk_fields(sub)
    elif isinstance(value, list | tuple):
        for item in node.items():
            _walk_fields(item)


def _leaves(node: Node, inside: bool = False) -> Iterator[Node]:
    """The variable leaves (non-None values under "@variables") with their paths."""
    value = node.value
    if isinstance(value, dict):
        for key, child in value.items():
            yield from _leaves(Node(child, f"{node.path}.{key}"), inside or key == "@variables")
    elif isinstance(value, list | tuple):
        for item in node.items():
            yield from _leaves(item, inside)
    elif value is not None and inside:
        yield node


def _check_arrays(root: Node) -> None:
    """Every variable is a float32/float64 array of finite values; no dstd entry is zero."""
    for leaf in _leaves(root):
        array = _as_array(leaf)
        if array.dtype not in FLOAT_DTYPES:
            fail(leaf, f"has dtype {array.dtype}; expected float32 or float64")
        finite = np.isfinite(array)
        if not finite.all():
            bad = np.argwhere(~finite)
            first = tuple(int(i) for i in bad[0])
            fail(
                leaf,
                f"holds {array[first]} at index {first} ({len(bad)} non-finite value(s) in all)",
                "the file is corrupt or was saved from a diverged training; re-export it from "
                "its source or retrain",
            )
        if leaf.path.endswith("@variables.dstd") and not np.all(array > 0):
            bad = np.argwhere(~(array > 0))
            first = tuple(int(i) for i in bad[0])
            fail(
                leaf,
                f"holds {array[first]} at index {first} ({len(bad)} entries <= 0): the "
                "environment matrix is divided by dstd",
                "the descriptor statistics are broken; recompute them (retrain) or re-export "
                "the model from its source",
            )


def _as_array(node: Node) -> np.ndarray:
    """A variable as a NumPy array (ModelFileError when it is not array-like)."""
    try:
        return np.asarray(node.value)
    except (TypeError, ValueError) as err:
        fail(node, f"is not an array ({err})")


def _array(node: Node, shape: tuple[int, ...], why: str) -> np.ndarray:
    """A variable of exactly `shape`; `why` says where the expected shape comes from."""
    array = _as_array(node)
    if array.shape != shape:
        fail(node, f"has shape {array.shape}; expected {shape} ({why})")
    return array


def _optional(node: Node, shape: tuple[int, ...], why: str) -> None:
    """A variable that may be absent (None) and otherwise has `shape`."""
    if node.value is not None:
        _array(node, shape, why)


def _types(node: Node, ntypes: int) -> None:
    """A list of atom types, each in [0, ntypes) (None: none, as the forward reads it)."""
    for item in node.items() if node.value is not None else []:
        _int(item, 0, ntypes - 1)


def _type_pairs(node: Node, ntypes: int) -> None:
    """A list of [type, type] pairs, each type in [0, ntypes) (None: none)."""
    for pair in node.items() if node.value is not None else []:
        if len(pair.list()) != 2:
            fail(pair, f"is {pair.value!r}; expected a pair [type_a, type_b]")
        _types(pair, ntypes)


def _ntypes(node: Node, ntypes: int) -> None:
    """A stored `ntypes` field (when present) equals len(type_map)."""
    if node.value is not None and _int(node, 1, MAX_SEL) != ntypes:
        fail(node, f"is {node.value}; expected {ntypes} = len(model.type_map)")


def _same_cutoffs(env_mat: Node, rcut: Node, rcut_smth: Node) -> None:
    """A block's stored env_mat repeats its cutoffs: a difference means one was edited."""
    for key, node in (("rcut", rcut), ("rcut_smth", rcut_smth)):
        stored = env_mat.get(key)
        if stored.value is not None and _float(stored, 0.0, MAX_RCUT) != float(node.value):
            fail(stored, f"is {stored.value} but {node.path} is {node.value}; they must agree")


def _cutoffs(rcut: Node, rcut_smth: Node) -> float:
    """0 < rcut <= MAX_RCUT and 0 <= rcut_smth < rcut; returns rcut."""
    rc = _float(rcut, 0.0, MAX_RCUT, lo_open=True)
    if _float(rcut_smth, 0.0, MAX_RCUT) >= rc:
        fail(rcut_smth, f"is {rcut_smth.value}; expected a value below {rcut.path} = {rc:g}")
    return rc


def _sel_total(node: Node) -> int:
    """Number of neighbor slots of a `sel` (an int or a list of ints), at most MAX_SEL."""
    items = [node] if not isinstance(node.value, list | tuple) else node.items()
    total = sum(_int(item, 0, MAX_SEL) for item in items)
    if not 0 < total <= MAX_SEL:
        fail(node, f"adds up to {total} neighbor slots; expected 1 to {MAX_SEL}")
    return total


# --------------------------------------------------------------------------- layers and networks


def _layer(
    node: Node,
    n_in: int | None,
    n_out: int | None,
    why: str = "",
    need_bias: bool = False,
) -> tuple[int, int]:
    """A dense layer: w (n_in, n_out), b and idt (n_out) or absent; returns w's shape."""
    var = node["@variables"]
    w = _as_array(var["w"])
    if w.ndim != 2:
        fail(var["w"], f"has shape {w.shape}; expected a matrix (n_in, n_out)")
    rows, cols = (int(s) for s in w.shape)
    expected = (rows if n_in is None else n_in, cols if n_out is None else n_out)
    if (rows, cols) != expected:
        fail(var["w"], f"has shape {w.shape}; expected {expected}{f' ({why})' if why else ''}")
    for key in ("b", "idt"):
        _optional(var.get(key), (cols,), f"the layer's {cols} outputs")
    if need_bias and not var.has("b"):
        fail(var, "lacks the bias b this layer needs")
    return rows, cols


def _network(node: Node, n_in: int, n_out: int | None, why_in: str, why_out: str = "") -> int:
    """A stack of dense layers chained n_in -> ... -> n_out; returns the output width."""
    width = n_in
    for i, layer in enumerate(node["layers"].items()):
        why = why_in if i == 0 else f"the output width {width} of the layer before"
        _, width = _layer(layer, width, None, why)
    if n_out is not None and width != n_out:
        fail(node, f"gives {width} outputs; expected {n_out} ({why_out})")
    return width


def _collection(node: Node, count: int, why: str) -> list[Node]:
    """The `networks` of a NetworkCollection: exactly `count` of them (a surplus means the
    switch choosing them, such as type_one_side or mixed_types, was changed)."""
    nets = node["networks"].items()
    if len(nets) != count:
        fail(node["networks"], f"holds {len(nets)} networks; expected {count} ({why})")
    return nets


def _layer_norm(node: Node, dim: int) -> None:
    """LayerNorm: w and b of shape (dim,) or absent, eps a small positive number."""
    var = node.get("@variables", {})
    for key in ("w", "b"):
        _optional(var.get(key), (dim,), f"LayerNorm over {dim} features")
    _float(node.get("eps", 1e-5), 0.0, 1.0, lo_open=True)


def _type_embedding(node: Node, ntypes: int, dim: int, what: str) -> None:
    """The type embedding net: (ntypes or 118 econf inputs) -> `dim` columns."""
    _ntypes(node["ntypes"], ntypes)
    if node.get("use_econf_tebd", False).value:
        try:
            econf_vectors(node["type_map"].value)
        except ConfigError as err:
            fail(node["type_map"], f"is unusable ({err})")
        n_in, why = ECONF_DIM, f"use_econf_tebd: {ECONF_DIM} electronic-configuration inputs"
    else:
        n_in, why = ntypes, f"one-hot input of the {ntypes} types"
    _network(node["embedding"], n_in, dim, why, what)


def _stats(node: Node, ntypes: int, nsel: int, sel_path: str) -> None:
    """davg and dstd of an env-mat block: (ntypes, nsel, 4)."""
    why = f"(ntypes, slots, 4) with {nsel} slots from {sel_path}"
    for key in ("davg", "dstd"):
        _array(node[key], (ntypes, nsel, 4), why)


# --------------------------------------------------------------------------- descriptors


def _check_descriptor(desc: Node, ntypes: int) -> int:
    """Check a descriptor; returns its output width (`dim_out`)."""
    try:
        module = descriptor_module(desc.value)
    except ConfigError as err:
        fail(desc["type"], f"is not supported ({err})", "convert the model to a supported type")
    kind = module.__name__.rsplit(".", 1)[-1]
    {"se_e2_a": _se_e2_a, "dpa1": _dpa1, "dpa2": _dpa2, "dpa3": _dpa3}[kind](desc, ntypes)
    return int(module.dim_out(desc.value))


def _env_mat(desc: Node) -> None:
    """The env_mat dict the se_e2_a/DPA-1 forward reads its protection from."""
    _protection(desc["env_mat"].get("protection", 0.0))
    _same_cutoffs(desc["env_mat"], desc["rcut"], desc["rcut_smth"])


def _protection(node: Node) -> None:
    """env_protection: added to r in 1/(r + p), so non-negative (and not absurd)."""
    _float(node, 0.0, MAX_RCUT)


def _atom_ener(node: Node) -> None:
    """atom_ener: None or a list of per-type vacuum energies (numbers or None)."""
    for item in node.items() if node.value is not None else []:
        if item.value is not None:
            _float(item, -math.inf, math.inf)


def _se_e2_a(desc: Node, ntypes: int) -> None:
    """se_e2_a (spec §4): per-type networks of input 1, statistics (ntypes, Σsel, 4)."""
    _cutoffs(desc["rcut"], desc["rcut_smth"])
    sel = desc["sel"]
    if len(sel.list()) != ntypes:
        fail(sel, f"has {len(sel.list())} entries; expected one per type ({ntypes})")
    nsel = _sel_total(sel)
    neuron = _widths(desc["neuron"])
    _int(desc["axis_neuron"], 1, neuron[-1])
    _env_mat(desc)
    _type_pairs(desc.get("exclude_types", []), ntypes)
    one_side = bool(desc.get("type_one_side", False).value)
    count = ntypes if one_side else ntypes * ntypes
    why = f"type_one_side: one per type, {ntypes}" if one_side else f"ntypes² = {count}"
    for net in _collection(desc["embeddings"], count, why):
        _network(net, 1, neuron[-1], "the radial env-mat input", f"{desc.path}.neuron[-1]")
    _stats(desc["@variables"], ntypes, nsel, f"{desc.path}.sel")


def _dpa1(desc: Node, ntypes: int) -> None:
    """DPA-1 / se_atten / se_atten_v2 (spec §5): type embedding, embedding nets, attention."""
    _cutoffs(desc["rcut"], desc["rcut_smth"])
    nsel = _sel_total(desc["sel"])
    _ntypes(desc["ntypes"], ntypes)
    neuron = _widths(desc["neuron"])
    _int(desc["axis_neuron"], 1, neuron[-1])
    d_t = _int(desc["tebd_dim"], 1)
    if _int(desc.get("lmax", 1), 1, 4) != 1:
        fail(desc["lmax"], "is not 1: angular moments are not supported", "use a model with lmax 1")
    _env_mat(desc)
    _type_pairs(desc.get("exclude_types", []), ntypes)
    _type_embedding(desc["type_embedding"], ntypes, d_t, f"{desc.path}.tebd_dim")
    strip = desc.value["type"] == "se_atten_v2"
    if not strip:
        strip = _choice(desc.get("tebd_input_mode", "concat"), ("concat", "strip")) == "strip"
    one_side = bool(desc.get("type_one_side", False).value)
    _pair_embedding(desc, desc, neuron[-1], d_t, strip, one_side, "neuron[-1]")
    for layer in desc["attention_layers"]["attention_layers"].items():
        _attention_layer(layer, neuron[-1])
    _stats(desc["@variables"], ntypes, nsel, f"{desc.path}.sel")


def _pair_embedding(
    desc: Node, var: Node, width: int, d_t: int, strip: bool, one_side: bool, what: str
) -> None:
    """embeddings (and embeddings_strip) of the se_atten pair embedding (spec §5.2 step 4)."""
    type_in = d_t if one_side else 2 * d_t
    types = "T_neighbor" if one_side else "T_neighbor, T_center"
    if strip:
        radial_in, why = 1, "strip mode: the radial input alone"
        (net,) = _collection(var["embeddings_strip"], 1, "the type network of strip mode")
        _network(net, type_in, width, f"[{types}], tebd_dim {d_t} each", f"{desc.path}.{what}")
    else:
        radial_in, why = 1 + type_in, f"concat mode: [radial, {types}] with tebd_dim {d_t}"
    (net,) = _collection(var["embeddings"], 1, "the shared embedding network")
    _network(net, radial_in, width, why, f"{desc.path}.{what}")


def _attention_layer(layer: Node, dim: int) -> None:
    """One gated self-attention layer over `dim` features (spec §5.3)."""
    attn = layer["attention_layer"]
    hidden = _int(attn["hidden_dim"], 1)
    if attn.get("temperature").value is None:
        _float(attn["scaling_factor"], 0.0, 1e30, lo_open=True)
    else:
        _float(attn["temperature"], 0.0, 1e30, lo_open=True)
    _layer(attn["in_proj"], dim, 3 * hidden, f"[Q | K | V] of hidden_dim {hidden} from {dim}")
    _layer(attn["out_proj"], hidden, dim, f"hidden_dim {hidden} back to {dim}")
    _layer_norm(layer["attn_layer_norm"], dim)


def _dpa2(desc: Node, ntypes: int) -> None:
    """DPA-2 (spec §6): repinit (+ three-body), g1 shape transform, repformer layers."""
    _ntypes(desc["ntypes"], ntypes)
    _protection(desc.get("env_protection", 0.0))
    _type_pairs(desc.get("exclude_types", []), ntypes)
    args = desc["repinit_args"]
    _cutoffs(args["rcut"], args["rcut_smth"])
    nsel = _sel_total(args["nsel"])
    neuron = _widths(args["neuron"])
    axis = _int(args["axis_neuron"], 1, neuron[-1])
    d_t = _int(args["tebd_dim"], 1)
    strip = _choice(args["tebd_input_mode"], ("concat", "strip")) == "strip"
    _type_embedding(desc["type_embedding"], ntypes, d_t, f"{args.path}.tebd_dim")
    var = desc["repinit_variable"]
    one_side = bool(args["type_one_side"].value)
    _pair_embedding(desc, var, neuron[-1], d_t, strip, one_side, "repinit_args.neuron[-1]")
    _stats(var["@variables"], ntypes, nsel, f"{args.path}.nsel")
    _same_cutoffs(var.get("env_mat", {}), args["rcut"], args["rcut_smth"])
    width = neuron[-1] * axis
    if args.get("use_three_body", False).value:
        width += _three_body(desc, ntypes, d_t, strip)
    g1_dim = _int(desc["repformer_args"]["g1_dim"], 1)
    shape = desc["g1_shape_tranform"]
    if shape.get("@class").value == "Identity":
        if width != g1_dim:
            fail(shape, f"is Identity but the repinit output has {width} features, not {g1_dim}")
    else:
        _layer(shape, width, g1_dim, "repinit output width to repformer_args.g1_dim")
    if desc.get("add_tebd_to_repinit_out", False).value:
        _layer(desc["tebd_transform"], d_t, g1_dim, "tebd_dim to repformer_args.g1_dim")
    _repformers(desc, ntypes, g1_dim)


def _three_body(desc: Node, ntypes: int, d_t: int, strip: bool) -> int:
    """The three-body block (spec §6.4); returns its output width."""
    args = desc["repinit_args"]
    _cutoffs(args["three_body_rcut"], args["three_body_rcut_smth"])
    nsel = _sel_total(args["three_body_sel"])
    neuron = _widths(args["three_body_neuron"])
    var = desc["repinit_three_body_variable"]
    what = f"{args.path}.three_body_neuron[-1]"
    if strip:
        (net,) = _collection(var["embeddings_strip"], 1, "the type network of strip mode")
        _network(net, 2 * d_t, neuron[-1], f"[T_j, T_k], tebd_dim {d_t} each", what)
        radial_in, why = 1, "strip mode: the angular input alone"
    else:
        radial_in, why = 1 + 2 * d_t, f"concat mode: [E_jk, T_j, T_k] with tebd_dim {d_t}"
    (net,) = _collection(var["embeddings"], 1, "the shared embedding network")
    _network(net, radial_in, neuron[-1], why, what)
    _stats(var["@variables"], ntypes, nsel, f"{args.path}.three_body_sel")
    _same_cutoffs(var.get("env_mat", {}), args["three_body_rcut"], args["three_body_rcut_smth"])
    return neuron[-1]


def _repformers(desc: Node, ntypes: int, d1: int) -> None:
    """The repformer block: g2 embedding, statistics and every layer (spec §6.5-6.9)."""
    args = desc["repformer_args"]
    rcut = _cutoffs(args["rcut"], args["rcut_smth"])
    if rcut > float(desc["repinit_args"]["rcut"].value):
        fail(args["rcut"], f"is {rcut}; expected at most {desc.path}.repinit_args.rcut")
    nsel = _sel_total(args["nsel"])
    d2 = _int(args["g2_dim"], 1)
    _choice(args["update_style"], ("res_avg", "res_incr", "res_residual"))
    block = desc["repformers_variable"]
    _layer(block["g2_embd"], 1, d2, "a distance feature to repformer_args.g2_dim")
    _stats(block["@variables"], ntypes, nsel, f"{args.path}.nsel")
    _same_cutoffs(block.get("env_mat", {}), args["rcut"], args["rcut_smth"])
    layers = block["repformer_layers"].items()
    if not layers:
        fail(block["repformer_layers"], "is empty; expected at least one repformer layer")
    for layer in layers:
        _repformer_layer(layer, d1, d2)


REPFORMER_FLAGS = (
    "update_chnnl_2",
    "update_g1_has_conv",
    "update_g1_has_drrd",
    "update_g1_has_grrg",
    "update_g1_has_attn",
    "update_g2_has_g1g1",
    "update_g2_has_attn",
    "update_h2",
    "g1_out_conv",
    "g1_out_mlp",
)


def _repformer_layer(layer: Node, d1: int, d2: int) -> None:
    """One repformer layer: the weights its update terms read, and its residual vectors."""
    for key, dim in (("g1_dim", d1), ("g2_dim", d2)):
        if _int(layer[key], 1) != dim:
            fail(layer[key], f"is {layer[key].value}; expected {dim}, the block's {key}")
    flags = {k: bool(layer[k].value) for k in REPFORMER_FLAGS}
    style = _choice(layer["update_style"], ("res_avg", "res_incr", "res_residual"))
    n_f = _repformer_f_terms(layer, flags, d1, d2)
    n_g = _repformer_g_terms(layer, flags, d1, d2) if flags["update_chnnl_2"] else 0
    if style == "res_residual":
        var = layer["@variables"]
        _residuals(var.get("g1_residual", []), n_f, d1, "g1 update terms")
        if flags["update_chnnl_2"]:
            _residuals(var.get("g2_residual", []), n_g, d2, "g2 update terms")
            _residuals(var.get("h2_residual", []), int(flags["update_h2"]), 1, "h2 update terms")


def _repformer_f_terms(layer: Node, flags: dict[str, bool], d1: int, d2: int) -> int:
    """The g1 update weights of a repformer layer; returns the number of g1 update terms."""
    axis = _int(layer["axis_neuron"], 1)
    for flag, dim, name in (
        ("update_g1_has_grrg", d2, "g2_dim"),
        ("update_g1_has_drrd", d1, "g1_dim"),
    ):
        if flags[flag] and axis > dim:
            fail(layer["axis_neuron"], f"is {axis}; expected at most {name} = {dim} ({flag})")
    terms, in1 = 1, 0  # linear1 is always a term
    if flags["g1_out_mlp"]:
        _layer(layer["g1_self_mlp"], d1, d1, "g1_dim to g1_dim")
        terms += 1
    else:
        in1 += d1
    if flags["update_g1_has_conv"]:
        if flags["g1_out_conv"]:
            _layer(layer["proj_g1g2"], d2, d1, "g1_out_conv: (g2_dim, g1_dim)")
            terms += 1
        else:
            _layer(layer["proj_g1g2"], d1, d2, "conv into linear1: (g1_dim, g2_dim)")
            in1 += d2
    in1 += axis * d2 if flags["update_g1_has_grrg"] else 0
    in1 += axis * d1 if flags["update_g1_has_drrd"] else 0
    _layer(layer["linear1"], in1, d1, "the concatenated g1 update inputs to g1_dim")
    if flags["update_g1_has_attn"]:
        _local_attention(layer["loc_attn"], d1)
        terms += 1
    return terms


def _repformer_g_terms(layer: Node, flags: dict[str, bool], d1: int, d2: int) -> int:
    """The g2/h2 update weights of a repformer layer; returns the number of g2 update terms."""
    _layer(layer["linear2"], d2, d2, "g2_dim to g2_dim")
    terms = 1
    if flags["update_g2_has_g1g1"]:
        _layer(layer["proj_g1g1g2"], d1, d2, "g1_dim to g2_dim")
        terms += 1
    if flags["update_g2_has_attn"] or flags["update_h2"]:
        amap = layer["attn2g_map"]
        hidden, heads = _int(amap["hidden_dim"], 1), _int(amap["head_num"], 1)
        _layer(amap["mapqk"], d2, 2 * hidden * heads, "queries and keys of every head")
        if flags["update_g2_has_attn"]:
            apply = layer["attn2_mh_apply"]
            if _int(apply["head_num"], 1) != heads:
                fail(apply["head_num"], f"is {apply['head_num'].value}; expected {heads} heads")
            _layer(apply["mapv"], d2, d2 * heads, "values of every head")
            _layer(apply["head_map"], d2 * heads, d2, "heads back to g2_dim")
            _layer_norm(layer["attn2_lm"], d2)
            terms += 1
        if flags["update_h2"]:
            _layer(layer["attn2_ev_apply"]["head_map"], heads, 1, "one weight per head")
    return terms


def _local_attention(node: Node, d1: int) -> None:
    """The g1 self-attention (`loc_attn`) weights."""
    hidden, heads = _int(node["hidden_dim"], 1), _int(node["head_num"], 1)
    _layer(node["mapq"], d1, hidden * heads, "queries of every head")
    _layer(node["mapkv"], d1, (hidden + d1) * heads, "keys and values of every head")
    _layer(node["head_map"], d1 * heads, d1, "heads back to g1_dim")


def _residuals(node: Node, count: int, dim: int, what: str) -> None:
    """A list of `count` residual vectors of shape (dim,), one per update term."""
    items = node.items()
    if len(items) != count:
        fail(node, f"holds {len(items)} vectors; expected {count}, one per {what[:-1]}")
    for item in items:
        _array(item, (dim,), what)


def _dpa3(desc: Node, ntypes: int) -> None:
    """DPA-3 (spec §7): type embedding, edge/angle embeddings, repflow layers."""
    _ntypes(desc["ntypes"], ntypes)
    _protection(desc.get("env_protection", 0.0))
    _type_pairs(desc.get("exclude_types", []), ntypes)
    if desc.get("add_chg_spin_ebd", False).value:
        fail(
            desc["add_chg_spin_ebd"],
            "is set: charge/spin conditioning is not supported",
            "use a model without it",
        )
    args = desc["repflow_args"]
    e_rcut = _cutoffs(args["e_rcut"], args["e_rcut_smth"])
    if _cutoffs(args["a_rcut"], args["a_rcut_smth"]) > e_rcut:
        fail(args["a_rcut"], f"is {args['a_rcut'].value}; expected at most e_rcut = {e_rcut}")
    if args.get("use_exp_switch", False).value:
        for key in ("e_rcut_smth", "a_rcut_smth"):
            _float(args[key], 0.0, MAX_RCUT, lo_open=True)
    e_sel = _sel_total(args["e_sel"])
    _int(args["a_sel"], 1, e_sel)
    if args.get("use_dynamic_sel", False).value:
        _float(args["sel_reduce_factor"], 0.0, MAX_SEL, lo_open=True)
    dims = {k: _int(args[k], 1) for k in ("n_dim", "e_dim", "a_dim")}
    _int(args["axis_neuron"], 1, min(dims["n_dim"], dims["e_dim"]))
    _choice(args["update_style"], ("res_avg", "res_incr", "res_residual"))
    _type_embedding(desc["type_embedding"], ntypes, dims["n_dim"], f"{args.path}.n_dim")
    flow = desc["repflow_variable"]
    _layer(flow["edge_embd"], 1, dims["e_dim"], "the edge input to e_dim", need_bias=True)
    _layer(flow["angle_embd"], 1, dims["a_dim"], "the angle input to a_dim")
    _stats(flow["@variables"], ntypes, e_sel, f"{args.path}.e_sel")
    _same_cutoffs(flow.get("env_mat", {}), args["e_rcut"], args["e_rcut_smth"])
    layers = flow["repflow_layers"].items()
    if not layers:
        fail(flow["repflow_layers"], "is empty; expected at least one repflow layer")
    for layer in layers:
        _repflow_layer(layer, args, dims)


def _angle_widths(args: Node, n: int, e: int, a: int) -> tuple[int, int]:
    """(n_c, e_c): the compressed node and edge widths of the angle inputs (spec §7.3)."""
    rate = _int(args["a_compress_rate"], 0, a)
    if rate == 0:
        return n, e
    e_rate = _int(args["a_compress_e_rate"], 1)
    n_c, e_c = a // rate, a // (2 * rate) * e_rate
    if args["a_compress_use_split"].value and (n_c > n or e_c > e):
        fail(args, f"splits {n_c} node and {e_c} edge channels off n_dim {n} and e_dim {e}")
    return n_c, e_c


def _repflow_layer(layer: Node, args: Node, dims: dict[str, int]) -> None:
    """One repflow layer: node, edge and angle weights, and its residual vectors."""
    n, e, a = dims["n_dim"], dims["e_dim"], dims["a_dim"]
    heads = _int(args["n_multi_edge_message"], 1)
    axis = int(args["axis_neuron"].value)
    _layer(layer["node_self_mlp"], n, n, "n_dim to n_dim")
    _layer(layer["node_sym_linear"], axis * (e + n), n, "axis_neuron·(e_dim + n_dim) to n_dim")
    _layer(layer["node_edge_linear"], 2 * n + e, heads * n, "[n_i, n_j, e_ij] to heads·n_dim")
    _layer(layer["edge_self_linear"], 2 * n + e, e, "[n_i, n_j, e_ij] to e_dim")
    update_angle = bool(args["update_angle"].value)
    if update_angle:
        n_c, e_c = _angle_widths(args, n, e, a)
        angle_in = a + n_c + 2 * e_c
        why = f"[a, n_c, e_c, e_c] = {a} + {n_c} + 2·{e_c}"
        _layer(layer["edge_angle_linear1"], angle_in, e, why)
        _layer(layer["edge_angle_linear2"], e, e, "e_dim to e_dim")
        _layer(layer["angle_self_linear"], angle_in, a, why)
        if args["a_compress_rate"].value and not args["a_compress_use_split"].value:
            _layer(layer["a_compress_n_linear"], n, n_c, "n_dim to the compressed node width")
            _layer(layer["a_compress_e_linear"], e, e_c, "e_dim to the compressed edge width")
    if args["update_style"].value == "res_residual":
        var = layer["@variables"]
        _residuals(var.get("n_residual", []), 2 + heads, n, "node update terms")
        _residuals(var.get("e_residual", []), 2 if update_angle else 1, e, "edge update terms")
        if update_angle:
            _residuals(var.get("a_residual", []), 1, a, "angle update terms")


# --------------------------------------------------------------------------- fitting, model


def _check_fitting(fit: Node, ntypes: int, dim_descrpt: int) -> None:
    """The energy fitting: input width from the descriptor, one output, per-type biases."""
    _ntypes(fit["ntypes"], ntypes)
    nfp = _int(fit.get("numb_fparam", 0), 0)
    nap = _int(fit.get("numb_aparam", 0), 0)
    ncase = _int(fit.get("dim_case_embd", 0), 0)
    stored = fit.get("dim_descrpt")
    if stored.value is not None and _int(stored, 1) != dim_descrpt:
        fail(stored, f"is {stored.value}; the descriptor gives {dim_descrpt} features")
    use_mask = bool(fit.get("use_aparam_as_mask", False).value)
    n_in = dim_descrpt + nfp + (0 if use_mask else nap) + ncase
    why = (
        f"descriptor width {dim_descrpt} + numb_fparam {nfp} + numb_aparam "
        f"{0 if use_mask else nap} + dim_case_embd {ncase}"
    )
    mixed = bool(fit.get("mixed_types", True).value)
    count = 1 if mixed else ntypes
    for net in _collection(fit["nets"], count, "one shared" if mixed else "one per type"):
        _network(net, n_in, 1, why, "one energy per atom")
    default = fit.get("default_fparam")
    if default.value is not None:
        values = default.items()
        if len(values) != nfp:
            fail(default, f"has {len(values)} values; expected numb_fparam = {nfp}")
        for value in values:
            _float(value, -math.inf, math.inf)
    _types(fit.get("exclude_types", []), ntypes)
    _atom_ener(fit.get("atom_ener"))
    var = fit["@variables"]
    _array(var["bias_atom_e"], (ntypes, 1), "one bias per type of model.type_map")
    for key, size in (
        ("fparam_avg", nfp),
        ("fparam_inv_std", nfp),
        ("aparam_avg", 0 if use_mask else nap),
        ("aparam_inv_std", 0 if use_mask else nap),
        ("case_embd", ncase),
    ):
        if size:
            _array(var[key], (size,), f"{key.split('_')[0]} size {size}")


def _check_model_level(root: Node, ntypes: int) -> None:
    """out_bias/out_std (1, ntypes, 1) and the model-level exclusions."""
    var = root["@variables"]
    why = f"(1, ntypes, 1) for the {ntypes} types of model.type_map"
    _array(var["out_bias"], (1, ntypes, 1), why)
    _optional(var.get("out_std"), (1, ntypes, 1), why)
    _types(root.get("atom_exclude_types", []), ntypes)
    _type_pairs(root.get("pair_exclude_types", []), ntypes)
