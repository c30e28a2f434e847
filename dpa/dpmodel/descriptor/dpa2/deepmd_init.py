"""DeePMD-kit's initial draws for DPA-2 (see dpa.dpmodel.deepmd_init)."""

from __future__ import annotations

from ...deepmd_init import draw_embeddings, draw_glorot, draw_layer, draw_network, draw_residual

# repformer layer members (name, sub-layer or None, child indices) in DeePMD-kit's RepformerLayer
_REPFORMER_LINEARS = (
    ("linear1", None, [1]),
    ("linear2", None, [2]),
    ("proj_g1g2", None, [4]),
    ("proj_g1g1g2", None, [5]),
    ("attn2g_map", "mapqk", [7]),
    ("attn2_mh_apply", "mapv", [0, 8]),
    ("attn2_mh_apply", "head_map", [1, 8]),
    ("attn2_ev_apply", "head_map", [11]),
    ("loc_attn", "mapq", [0, 13]),
    ("loc_attn", "mapkv", [1, 13]),
    ("loc_attn", "head_map", [2, 13]),
    ("g1_self_mlp", None, [15]),
)


def _repformer_residual_seeds(layer: dict) -> dict[str, list[int]]:
    """Child index of each residual vector, in the order the layer appends them."""
    g1 = [0]
    if "g1_self_mlp" in layer:
        g1.append(16)
    if layer.get("g1_out_conv") and "proj_g1g2" in layer:
        g1.append(17)
    if "loc_attn" in layer:
        g1.append(14)
    g2 = []
    if "linear2" in layer:
        g2.append(3)
        if "proj_g1g1g2" in layer:
            g2.append(6)
        if "attn2_mh_apply" in layer:
            g2.append(10)
    return {"g1_residual": g1, "g2_residual": g2, "h2_residual": [12]}


def draw_like_deepmd(desc: dict, seed: int) -> None:
    """repinit [0, S] (embeddings only), repformers [1, S] (g2_embd [0, ...], layer ii
    [ii, 1, ...]), type embedding [2, S], g1_shape_tranform [3, S] (Glorot), tebd_transform
    [4, S], the three-body block [5, S]."""
    draw_embeddings(desc["repinit_variable"], [0, seed])
    if "repinit_three_body_variable" in desc:
        draw_embeddings(desc["repinit_three_body_variable"], [5, seed])
    formers = desc["repformers_variable"]
    block = [1, seed]
    draw_layer(formers["g2_embd"], [0, *block])
    args = desc["repformer_args"]
    for ii, layer in enumerate(formers["repformer_layers"]):
        at = [ii, 1, *block]
        for name, sub, index in _REPFORMER_LINEARS:
            if name in layer:
                draw_layer(layer[name] if sub is None else layer[name][sub], [*index, *at])
        residuals = layer.get("@variables")
        if residuals is None:
            continue
        for key, indices in _repformer_residual_seeds(layer).items():
            for k in range(len(residuals[key])):
                draw_residual(residuals[key], k, [indices[k], *at], args)
    draw_network(desc["type_embedding"]["embedding"], [2, seed])
    if desc["g1_shape_tranform"].get("@variables") is not None:
        draw_glorot(desc["g1_shape_tranform"], [3, seed])
    if "tebd_transform" in desc:
        draw_layer(desc["tebd_transform"], [4, seed])
