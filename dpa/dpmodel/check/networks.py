"""Dense layers, networks and collections, layer norms, the type embedding, env-mat statistics
and residual vectors: the building blocks the descriptor and fitting checks share."""

from __future__ import annotations

from ...errors import ConfigError
from ..type_embed import ECONF_DIM, econf_vectors
from .nodes import (
    Node,
    array,
    as_array,
    fail,
    number,
    optional_array,
    protection,
    same_cutoffs,
    same_ntypes,
)


def dense(
    node: Node,
    n_in: int | None,
    n_out: int | None,
    why: str = "",
    need_bias: bool = False,
) -> tuple[int, int]:
    """A dense layer: w (n_in, n_out), b and idt (n_out) or absent; returns w's shape."""
    var = node["@variables"]
    w = as_array(var["w"])
    if w.ndim != 2:
        fail(var["w"], f"has shape {w.shape}; expected a matrix (n_in, n_out)")
    rows, cols = (int(s) for s in w.shape)
    expected = (rows if n_in is None else n_in, cols if n_out is None else n_out)
    if (rows, cols) != expected:
        fail(var["w"], f"has shape {w.shape}; expected {expected}{f' ({why})' if why else ''}")
    for key in ("b", "idt"):
        optional_array(var.get(key), (cols,), f"the layer's {cols} outputs")
    if need_bias and not var.has("b"):
        fail(var, "lacks the bias b this layer needs")
    return rows, cols


def network(node: Node, n_in: int, n_out: int | None, why_in: str, why_out: str = "") -> int:
    """A stack of dense layers chained n_in -> ... -> n_out; returns the output width."""
    width = n_in
    for i, layer in enumerate(node["layers"].items()):
        why = why_in if i == 0 else f"the output width {width} of the layer before"
        _, width = dense(layer, width, None, why)
    if n_out is not None and width != n_out:
        fail(node, f"gives {width} outputs; expected {n_out} ({why_out})")
    return width


def collection(node: Node, count: int, why: str) -> list[Node]:
    """The `networks` of a NetworkCollection: exactly `count` of them (a surplus means the
    switch choosing them, such as type_one_side or mixed_types, was changed)."""
    nets = node["networks"].items()
    if len(nets) != count:
        fail(node["networks"], f"holds {len(nets)} networks; expected {count} ({why})")
    return nets


def layer_norm(node: Node, dim: int) -> None:
    """LayerNorm: w and b of shape (dim,) or absent, eps a small positive number."""
    var = node.get("@variables", {})
    for key in ("w", "b"):
        optional_array(var.get(key), (dim,), f"LayerNorm over {dim} features")
    number(node.get("eps", 1e-5), 0.0, 1.0, lo_open=True)


def type_embedding(node: Node, ntypes: int, dim: int, what: str) -> None:
    """The type embedding net: (ntypes or 118 econf inputs) -> `dim` columns."""
    same_ntypes(node["ntypes"], ntypes)
    if node.get("use_econf_tebd", False).value:
        try:
            econf_vectors(node["type_map"].value)
        except ConfigError as err:
            fail(node["type_map"], f"is unusable ({err})")
        n_in, why = ECONF_DIM, f"use_econf_tebd: {ECONF_DIM} electronic-configuration inputs"
    else:
        n_in, why = ntypes, f"one-hot input of the {ntypes} types"
    network(node["embedding"], n_in, dim, why, what)


def stats(node: Node, ntypes: int, nsel: int, sel_path: str) -> None:
    """davg and dstd of an env-mat block: (ntypes, nsel, 4)."""
    why = f"(ntypes, slots, 4) with {nsel} slots from {sel_path}"
    for key in ("davg", "dstd"):
        array(node[key], (ntypes, nsel, 4), why)


def residuals(node: Node, count: int, dim: int, what: str) -> None:
    """A list of `count` residual vectors of shape (dim,), one per update term."""
    items = node.items()
    if len(items) != count:
        fail(node, f"holds {len(items)} vectors; expected {count}, one per {what[:-1]}")
    for item in items:
        array(item, (dim,), what)


def update_layers(
    block: Node, key: str, ntypes: int, sel: Node, nsel: int, rcut: Node, rcut_smth: Node
) -> list[Node]:
    """Statistics, stored cutoffs and the non-empty layer list `key` of a DPA-2/3 update block."""
    stats(block["@variables"], ntypes, nsel, sel.path)
    same_cutoffs(block.get("env_mat", {}), rcut, rcut_smth)
    layers = block[key].items()
    if not layers:
        fail(block[key], f"is empty; expected at least one {key.split('_')[0]} layer")
    return layers


def env_mat(desc: Node) -> None:
    """The env_mat dict the se_e2_a/DPA-1 forward reads its protection from."""
    protection(desc["env_mat"].get("protection", 0.0))
    same_cutoffs(desc["env_mat"], desc["rcut"], desc["rcut_smth"])
