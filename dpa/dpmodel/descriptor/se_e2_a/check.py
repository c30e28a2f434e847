"""The load-time check of an se_e2_a tree (spec §4)."""

from __future__ import annotations

from ...check.networks import collection, env_mat, network, stats
from ...check.nodes import Node, cutoffs, fail, integer, sel_total, type_pairs, widths


def check_tree(desc: Node, ntypes: int) -> None:
    """se_e2_a (spec §4): per-type networks of input 1, statistics (ntypes, Σsel, 4)."""
    cutoffs(desc["rcut"], desc["rcut_smth"])
    sel = desc["sel"]
    if len(sel.list()) != ntypes:
        fail(sel, f"has {len(sel.list())} entries; expected one per type ({ntypes})")
    nsel = sel_total(sel)
    neuron = widths(desc["neuron"])
    integer(desc["axis_neuron"], 1, neuron[-1])
    env_mat(desc)
    type_pairs(desc.get("exclude_types", []), ntypes)
    one_side = bool(desc.get("type_one_side", False).value)
    count = ntypes if one_side else ntypes * ntypes
    why = f"type_one_side: one per type, {ntypes}" if one_side else f"ntypes² = {count}"
    for net in collection(desc["embeddings"], count, why):
        network(net, 1, neuron[-1], "the radial env-mat input", f"{desc.path}.neuron[-1]")
    stats(desc["@variables"], ntypes, nsel, f"{desc.path}.sel")
