"""The DPA-2 descriptor check: repinit (+ three-body), the g1 shape transform, repformer layers."""

from __future__ import annotations

from ...check.networks import (
    collection,
    dense,
    layer_norm,
    network,
    residuals,
    stats,
    type_embedding,
    update_layers,
)
from ...check.nodes import (
    Node,
    choice,
    cutoffs,
    fail,
    integer,
    protection,
    same_cutoffs,
    same_ntypes,
    sel_total,
    type_pairs,
    widths,
)
from ..dpa1.check import pair_embedding


def check_tree(desc: Node, ntypes: int) -> None:
    """DPA-2 (spec §6): repinit (+ three-body), g1 shape transform, repformer layers."""
    same_ntypes(desc["ntypes"], ntypes)
    protection(desc.get("env_protection", 0.0))
    type_pairs(desc.get("exclude_types", []), ntypes)
    args = desc["repinit_args"]
    cutoffs(args["rcut"], args["rcut_smth"])
    nsel = sel_total(args["nsel"])
    neuron = widths(args["neuron"])
    axis = integer(args["axis_neuron"], 1, neuron[-1])
    d_t = integer(args["tebd_dim"], 1)
    strip = choice(args["tebd_input_mode"], ("concat", "strip")) == "strip"
    type_embedding(desc["type_embedding"], ntypes, d_t, f"{args.path}.tebd_dim")
    var = desc["repinit_variable"]
    one_side = bool(args["type_one_side"].value)
    pair_embedding(desc, var, neuron[-1], d_t, strip, one_side, "repinit_args.neuron[-1]")
    stats(var["@variables"], ntypes, nsel, f"{args.path}.nsel")
    same_cutoffs(var.get("env_mat", {}), args["rcut"], args["rcut_smth"])
    width = neuron[-1] * axis
    if args.get("use_three_body", False).value:
        width += _three_body(desc, ntypes, d_t, strip)
    g1_dim = integer(desc["repformer_args"]["g1_dim"], 1)
    shape = desc["g1_shape_tranform"]
    if shape.get("@class").value == "Identity":
        if width != g1_dim:
            fail(shape, f"is Identity but the repinit output has {width} features, not {g1_dim}")
    else:
        dense(shape, width, g1_dim, "repinit output width to repformer_args.g1_dim")
    if desc.get("add_tebd_to_repinit_out", False).value:
        dense(desc["tebd_transform"], d_t, g1_dim, "tebd_dim to repformer_args.g1_dim")
    _repformers(desc, ntypes, g1_dim)


def _three_body(desc: Node, ntypes: int, d_t: int, strip: bool) -> int:
    """The three-body block (spec §6.4); returns its output width."""
    args = desc["repinit_args"]
    cutoffs(args["three_body_rcut"], args["three_body_rcut_smth"])
    nsel = sel_total(args["three_body_sel"])
    neuron = widths(args["three_body_neuron"])
    var = desc["repinit_three_body_variable"]
    what = f"{args.path}.three_body_neuron[-1]"
    if strip:
        (net,) = collection(var["embeddings_strip"], 1, "the type network of strip mode")
        network(net, 2 * d_t, neuron[-1], f"[T_j, T_k], tebd_dim {d_t} each", what)
        radial_in, why = 1, "strip mode: the angular input alone"
    else:
        radial_in, why = 1 + 2 * d_t, f"concat mode: [E_jk, T_j, T_k] with tebd_dim {d_t}"
    (net,) = collection(var["embeddings"], 1, "the shared embedding network")
    network(net, radial_in, neuron[-1], why, what)
    stats(var["@variables"], ntypes, nsel, f"{args.path}.three_body_sel")
    same_cutoffs(var.get("env_mat", {}), args["three_body_rcut"], args["three_body_rcut_smth"])
    return neuron[-1]


def _repformers(desc: Node, ntypes: int, d1: int) -> None:
    """The repformer block: g2 embedding, statistics and every layer (spec §6.5-6.9)."""
    args = desc["repformer_args"]
    rcut = cutoffs(args["rcut"], args["rcut_smth"])
    if rcut > float(desc["repinit_args"]["rcut"].value):
        fail(args["rcut"], f"is {rcut}; expected at most {desc.path}.repinit_args.rcut")
    nsel = sel_total(args["nsel"])
    d2 = integer(args["g2_dim"], 1)
    choice(args["update_style"], ("res_avg", "res_incr", "res_residual"))
    block = desc["repformers_variable"]
    dense(block["g2_embd"], 1, d2, "a distance feature to repformer_args.g2_dim")
    layers = update_layers(
        block, "repformer_layers", ntypes, args["nsel"], nsel, args["rcut"], args["rcut_smth"]
    )
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
        if integer(layer[key], 1) != dim:
            fail(layer[key], f"is {layer[key].value}; expected {dim}, the block's {key}")
    flags = {k: bool(layer[k].value) for k in REPFORMER_FLAGS}
    style = choice(layer["update_style"], ("res_avg", "res_incr", "res_residual"))
    n_f = _repformer_f_terms(layer, flags, d1, d2)
    n_g = _repformer_g_terms(layer, flags, d1, d2) if flags["update_chnnl_2"] else 0
    if style == "res_residual":
        var = layer["@variables"]
        residuals(var.get("g1_residual", []), n_f, d1, "g1 update terms")
        if flags["update_chnnl_2"]:
            residuals(var.get("g2_residual", []), n_g, d2, "g2 update terms")
            residuals(var.get("h2_residual", []), int(flags["update_h2"]), 1, "h2 update terms")


def _repformer_f_terms(layer: Node, flags: dict[str, bool], d1: int, d2: int) -> int:
    """The g1 update weights of a repformer layer; returns the number of g1 update terms."""
    axis = integer(layer["axis_neuron"], 1)
    for flag, dim, name in (
        ("update_g1_has_grrg", d2, "g2_dim"),
        ("update_g1_has_drrd", d1, "g1_dim"),
    ):
        if flags[flag] and axis > dim:
            fail(layer["axis_neuron"], f"is {axis}; expected at most {name} = {dim} ({flag})")
    terms, in1 = 1, 0  # linear1 is always a term
    if flags["g1_out_mlp"]:
        dense(layer["g1_self_mlp"], d1, d1, "g1_dim to g1_dim")
        terms += 1
    else:
        in1 += d1
    if flags["update_g1_has_conv"]:
        if flags["g1_out_conv"]:
            dense(layer["proj_g1g2"], d2, d1, "g1_out_conv: (g2_dim, g1_dim)")
            terms += 1
        else:
            dense(layer["proj_g1g2"], d1, d2, "conv into linear1: (g1_dim, g2_dim)")
            in1 += d2
    in1 += axis * d2 if flags["update_g1_has_grrg"] else 0
    in1 += axis * d1 if flags["update_g1_has_drrd"] else 0
    dense(layer["linear1"], in1, d1, "the concatenated g1 update inputs to g1_dim")
    if flags["update_g1_has_attn"]:
        _local_attention(layer["loc_attn"], d1)
        terms += 1
    return terms


def _repformer_g_terms(layer: Node, flags: dict[str, bool], d1: int, d2: int) -> int:
    """The g2/h2 update weights of a repformer layer; returns the number of g2 update terms."""
    dense(layer["linear2"], d2, d2, "g2_dim to g2_dim")
    terms = 1
    if flags["update_g2_has_g1g1"]:
        dense(layer["proj_g1g1g2"], d1, d2, "g1_dim to g2_dim")
        terms += 1
    if flags["update_g2_has_attn"] or flags["update_h2"]:
        amap = layer["attn2g_map"]
        hidden, heads = integer(amap["hidden_dim"], 1), integer(amap["head_num"], 1)
        dense(amap["mapqk"], d2, 2 * hidden * heads, "queries and keys of every head")
        if flags["update_g2_has_attn"]:
            apply = layer["attn2_mh_apply"]
            if integer(apply["head_num"], 1) != heads:
                fail(apply["head_num"], f"is {apply['head_num'].value}; expected {heads} heads")
            dense(apply["mapv"], d2, d2 * heads, "values of every head")
            dense(apply["head_map"], d2 * heads, d2, "heads back to g2_dim")
            layer_norm(layer["attn2_lm"], d2)
            terms += 1
        if flags["update_h2"]:
            dense(layer["attn2_ev_apply"]["head_map"], heads, 1, "one weight per head")
    return terms


def _local_attention(node: Node, d1: int) -> None:
    """The g1 self-attention (`loc_attn`) weights."""
    hidden, heads = integer(node["hidden_dim"], 1), integer(node["head_num"], 1)
    dense(node["mapq"], d1, hidden * heads, "queries of every head")
    dense(node["mapkv"], d1, (hidden + d1) * heads, "keys and values of every head")
    dense(node["head_map"], d1 * heads, d1, "heads back to g1_dim")
