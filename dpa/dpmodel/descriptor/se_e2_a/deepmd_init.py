"""DeePMD-kit's initial draws for se_e2_a (see dpa.dpmodel.deepmd_init)."""

from __future__ import annotations

from ...deepmd_init import draw_network


def draw_like_deepmd(desc: dict, seed: int) -> None:
    """Network (t_0, ..., t_{d-1}) is stored at sum t_i N^i but seeded with its position in
    DeePMD-kit's construction order, itertools.product over the types (t_0 slowest)."""
    collection = desc["embeddings"]
    ntypes, ndim = int(collection["ntypes"]), int(collection["ndim"])
    for k, net in enumerate(collection["networks"]):
        if net is None:
            continue
        key = [(k // ntypes**i) % ntypes for i in range(ndim)]
        position = sum(t * ntypes ** (ndim - 1 - i) for i, t in enumerate(key))
        draw_network(net, [position, seed])
