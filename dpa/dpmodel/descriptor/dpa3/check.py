"""The DPA-3 descriptor check: type embedding, edge and angle embeddings, repflow layers."""

from __future__ import annotations

from ...check.networks import dense, residuals, type_embedding, update_layers
from ...check.nodes import (
    MAX_RCUT,
    MAX_SEL,
    Node,
    choice,
    cutoffs,
    fail,
    integer,
    number,
    protection,
    same_ntypes,
    sel_total,
    type_pairs,
)


def check_tree(desc: Node, ntypes: int) -> None:
    """DPA-3 (spec §7): type embedding, edge/angle embeddings, repflow layers."""
    same_ntypes(desc["ntypes"], ntypes)
    protection(desc.get("env_protection", 0.0))
    type_pairs(desc.get("exclude_types", []), ntypes)
    if desc.get("add_chg_spin_ebd", False).value:
        fail(
            desc["add_chg_spin_ebd"],
            "is set: charge/spin conditioning is not supported",
            "use a model without it",
        )
    args = desc["repflow_args"]
    e_rcut = cutoffs(args["e_rcut"], args["e_rcut_smth"])
    if cutoffs(args["a_rcut"], args["a_rcut_smth"]) > e_rcut:
        fail(args["a_rcut"], f"is {args['a_rcut'].value}; expected at most e_rcut = {e_rcut}")
    if args.get("use_exp_switch", False).value:
        for key in ("e_rcut_smth", "a_rcut_smth"):
            number(args[key], 0.0, MAX_RCUT, lo_open=True)
    e_sel = sel_total(args["e_sel"])
    integer(args["a_sel"], 1, e_sel)
    if args.get("use_dynamic_sel", False).value:
        number(args["sel_reduce_factor"], 0.0, MAX_SEL, lo_open=True)
    dims = {k: integer(args[k], 1) for k in ("n_dim", "e_dim", "a_dim")}
    integer(args["axis_neuron"], 1, min(dims["n_dim"], dims["e_dim"]))
    choice(args["update_style"], ("res_avg", "res_incr", "res_residual"))
    type_embedding(desc["type_embedding"], ntypes, dims["n_dim"], f"{args.path}.n_dim")
    flow = desc["repflow_variable"]
    dense(flow["edge_embd"], 1, dims["e_dim"], "the edge input to e_dim", need_bias=True)
    dense(flow["angle_embd"], 1, dims["a_dim"], "the angle input to a_dim")
    layers = update_layers(
        flow, "repflow_layers", ntypes, args["e_sel"], e_sel, args["e_rcut"], args["e_rcut_smth"]
    )
    for layer in layers:
        _repflow_layer(layer, args, dims)


def _angle_widths(args: Node, n: int, e: int, a: int) -> tuple[int, int]:
    """(n_c, e_c): the compressed node and edge widths of the angle inputs (spec §7.3)."""
    rate = integer(args["a_compress_rate"], 0, a)
    if rate == 0:
        return n, e
    e_rate = integer(args["a_compress_e_rate"], 1)
    n_c, e_c = a // rate, a // (2 * rate) * e_rate
    if args["a_compress_use_split"].value and (n_c > n or e_c > e):
        fail(args, f"splits {n_c} node and {e_c} edge channels off n_dim {n} and e_dim {e}")
    return n_c, e_c


def _repflow_layer(layer: Node, args: Node, dims: dict[str, int]) -> None:
    """One repflow layer: node, edge and angle weights, and its residual vectors."""
    n, e, a = dims["n_dim"], dims["e_dim"], dims["a_dim"]
    heads = integer(args["n_multi_edge_message"], 1)
    axis = int(args["axis_neuron"].value)
    dense(layer["node_self_mlp"], n, n, "n_dim to n_dim")
    dense(layer["node_sym_linear"], axis * (e + n), n, "axis_neuron·(e_dim + n_dim) to n_dim")
    dense(layer["node_edge_linear"], 2 * n + e, heads * n, "[n_i, n_j, e_ij] to heads·n_dim")
    dense(layer["edge_self_linear"], 2 * n + e, e, "[n_i, n_j, e_ij] to e_dim")
    update_angle = bool(args["update_angle"].value)
    if update_angle:
        n_c, e_c = _angle_widths(args, n, e, a)
        angle_in = a + n_c + 2 * e_c
        why = f"[a, n_c, e_c, e_c] = {a} + {n_c} + 2·{e_c}"
        dense(layer["edge_angle_linear1"], angle_in, e, why)
        dense(layer["edge_angle_linear2"], e, e, "e_dim to e_dim")
        dense(layer["angle_self_linear"], angle_in, a, why)
        if args["a_compress_rate"].value and not args["a_compress_use_split"].value:
            dense(layer["a_compress_n_linear"], n, n_c, "n_dim to the compressed node width")
            dense(layer["a_compress_e_linear"], e, e_c, "e_dim to the compressed edge width")
    if args["update_style"].value == "res_residual":
        var = layer["@variables"]
        residuals(var.get("n_residual", []), 2 + heads, n, "node update terms")
        residuals(var.get("e_residual", []), 2 if update_angle else 1, e, "edge update terms")
        if update_angle:
            residuals(var.get("a_residual", []), 1, a, "angle update terms")
