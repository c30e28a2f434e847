"""The se_e2_a and DPA-1 (se_atten, se_atten_v2) descriptor checks, and the se_atten pair
embedding DPA-2's repinit block shares."""

from __future__ import annotations

from .networks import collection, dense, layer_norm, network, stats, type_embedding
from .nodes import (
    Node,
    choice,
    cutoffs,
    fail,
    integer,
    number,
    protection,
    same_cutoffs,
    same_ntypes,
    sel_total,
    type_pairs,
    widths,
)


def _env_mat(desc: Node) -> None:
    """The env_mat dict the se_e2_a/DPA-1 forward reads its protection from."""
    protection(desc["env_mat"].get("protection", 0.0))
    same_cutoffs(desc["env_mat"], desc["rcut"], desc["rcut_smth"])


def se_e2_a(desc: Node, ntypes: int) -> None:
    """se_e2_a (spec §4): per-type networks of input 1, statistics (ntypes, Σsel, 4)."""
    cutoffs(desc["rcut"], desc["rcut_smth"])
    sel = desc["sel"]
    if len(sel.list()) != ntypes:
        fail(sel, f"has {len(sel.list())} entries; expected one per type ({ntypes})")
    nsel = sel_total(sel)
    neuron = widths(desc["neuron"])
    integer(desc["axis_neuron"], 1, neuron[-1])
    _env_mat(desc)
    type_pairs(desc.get("exclude_types", []), ntypes)
    one_side = bool(desc.get("type_one_side", False).value)
    count = ntypes if one_side else ntypes * ntypes
    why = f"type_one_side: one per type, {ntypes}" if one_side else f"ntypes² = {count}"
    for net in collection(desc["embeddings"], count, why):
        network(net, 1, neuron[-1], "the radial env-mat input", f"{desc.path}.neuron[-1]")
    stats(desc["@variables"], ntypes, nsel, f"{desc.path}.sel")


def dpa1(desc: Node, ntypes: int) -> None:
    """DPA-1 / se_atten / se_atten_v2 (spec §5): type embedding, embedding nets, attention."""
    cutoffs(desc["rcut"], desc["rcut_smth"])
    nsel = sel_total(desc["sel"])
    same_ntypes(desc["ntypes"], ntypes)
    neuron = widths(desc["neuron"])
    integer(desc["axis_neuron"], 1, neuron[-1])
    d_t = integer(desc["tebd_dim"], 1)
    if integer(desc.get("lmax", 1), 1, 4) != 1:
        fail(desc["lmax"], "is not 1: angular moments are not supported", "use a model with lmax 1")
    _env_mat(desc)
    type_pairs(desc.get("exclude_types", []), ntypes)
    type_embedding(desc["type_embedding"], ntypes, d_t, f"{desc.path}.tebd_dim")
    strip = desc.value["type"] == "se_atten_v2"
    if not strip:
        strip = choice(desc.get("tebd_input_mode", "concat"), ("concat", "strip")) == "strip"
    one_side = bool(desc.get("type_one_side", False).value)
    pair_embedding(desc, desc, neuron[-1], d_t, strip, one_side, "neuron[-1]")
    for layer in desc["attention_layers"]["attention_layers"].items():
        _attention_layer(layer, neuron[-1])
    stats(desc["@variables"], ntypes, nsel, f"{desc.path}.sel")


def pair_embedding(
    desc: Node, var: Node, width: int, d_t: int, strip: bool, one_side: bool, what: str
) -> None:
    """embeddings (and embeddings_strip) of the se_atten pair embedding (spec §5.2 step 4)."""
    type_in = d_t if one_side else 2 * d_t
    types = "T_neighbor" if one_side else "T_neighbor, T_center"
    if strip:
        radial_in, why = 1, "strip mode: the radial input alone"
        (net,) = collection(var["embeddings_strip"], 1, "the type network of strip mode")
        network(net, type_in, width, f"[{types}], tebd_dim {d_t} each", f"{desc.path}.{what}")
    else:
        radial_in, why = 1 + type_in, f"concat mode: [radial, {types}] with tebd_dim {d_t}"
    (net,) = collection(var["embeddings"], 1, "the shared embedding network")
    network(net, radial_in, width, why, f"{desc.path}.{what}")


def _attention_layer(layer: Node, dim: int) -> None:
    """One gated self-attention layer over `dim` features (spec §5.3)."""
    attn = layer["attention_layer"]
    hidden = integer(attn["hidden_dim"], 1)
    if attn.get("temperature").value is None:
        number(attn["scaling_factor"], 0.0, 1e30, lo_open=True)
    else:
        number(attn["temperature"], 0.0, 1e30, lo_open=True)
    dense(attn["in_proj"], dim, 3 * hidden, f"[Q | K | V] of hidden_dim {hidden} from {dim}")
    dense(attn["out_proj"], hidden, dim, f"hidden_dim {hidden} back to {dim}")
    layer_norm(layer["attn_layer_norm"], dim)
