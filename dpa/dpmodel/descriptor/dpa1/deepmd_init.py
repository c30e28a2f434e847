"""DeePMD-kit's initial draws for DPA-1 (see dpa.dpmodel.deepmd_init)."""

from __future__ import annotations

from ...deepmd_init import draw_embeddings, draw_layer, draw_network


def draw_like_deepmd(desc: dict, seed: int) -> None:
    """The se_atten block [1, S] with its attention layers, the type embedding [2, S]."""
    block = [1, seed]  # the se_atten block; the type embedding is [2, seed]
    draw_embeddings(desc, block)
    for i, layer in enumerate(desc["attention_layers"]["attention_layers"]):
        gated = [0, i, 0, *block]
        draw_layer(layer["attention_layer"]["in_proj"], [0, *gated])
        draw_layer(layer["attention_layer"]["out_proj"], [1, *gated])
    draw_network(desc["type_embedding"]["embedding"], [2, seed])
