"""DeePMD-kit's initial draws for DPA-3 (see dpa.dpmodel.deepmd_init)."""

from __future__ import annotations

from ...deepmd_init import draw_layer, draw_network, draw_residual

# repflow layer members and their child index in DeePMD-kit's RepFlowLayer
_REPFLOW_LINEARS = {
    "node_self_mlp": 0,
    "node_sym_linear": 2,
    "node_edge_linear": 4,
    "edge_self_linear": 6,
    "a_compress_n_linear": 8,
    "a_compress_e_linear": 9,
    "edge_angle_linear1": 10,
    "edge_angle_linear2": 11,
    "angle_self_linear": 13,
}


def draw_like_deepmd(desc: dict, seed: int) -> None:
    """Type embedding [2, S]; repflows [1, S]: edge_embd [0, ...], angle_embd [1, ...], layer ii
    [ii, 1, ...] with its linears and residuals at the indices DeePMD-kit gives them."""
    flow = desc["repflow_variable"]
    args = desc["repflow_args"]
    block = [1, seed]
    draw_layer(flow["edge_embd"], [0, *block])
    draw_layer(flow["angle_embd"], [1, *block])
    for ii, layer in enumerate(flow["repflow_layers"]):
        at = [ii, 1, *block]
        for name, index in _REPFLOW_LINEARS.items():
            if name in layer:
                draw_layer(layer[name], [index, *at])
        residuals = layer.get("@variables")
        if residuals is None:
            continue
        n_res, e_res, a_res = (residuals[k] for k in ("n_residual", "e_residual", "a_residual"))
        draw_residual(n_res, 0, [1, *at], args)
        draw_residual(n_res, 1, [3, *at], args)
        for head in range(len(n_res) - 2):
            draw_residual(n_res, 2 + head, [head, 5, *at], args)
        draw_residual(e_res, 0, [7, *at], args)
        if len(e_res) > 1:
            draw_residual(e_res, 1, [12, *at], args)
        if a_res:
            draw_residual(a_res, 0, [14, *at], args)
    draw_network(desc["type_embedding"]["embedding"], [2, seed])
