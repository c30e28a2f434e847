"""The load-time check of a DPA-1 tree (se_atten, se_atten_v2), and of the pair embedding that
DPA-2's repinit block shares."""

from __future__ import annotations

from ...check.networks import collection, dense, env_mat, layer_norm, network, stats, type_embedding
from ...check.nodes import (
    Node,
    choice,
    cutoffs,
    fail,
    integer,
    number,
    same_ntypes,
    sel_total,
    type_pairs,
    widths,
)


def check_tree(desc: Node, ntypes: int) -> None:
    """DPA-1 / se_atten / se_atten_v2 (spec §5): type embedding, embedding nets, attention."""
    cutoffs(desc["rcut"], desc["rcut_smth"])
    nsel = sel_total(desc["sel"])
    same_ntypes(desc["ntypes"], ntypes)
    neuron = widths(desc["neuron"])
    integer(desc["axis_neuron"], 1, neuron[-1])
    d_t = integer(desc["tebd_dim"], 1)
    if integer(desc.get("lmax", 1), 1, 4) != 1:
        fail(desc["lmax"], "is not 1: angular moments are not supported", "use a model with lmax 1")
    env_mat(desc)
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
