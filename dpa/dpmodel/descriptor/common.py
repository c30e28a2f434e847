"""Pieces shared by the descriptors: neighbor types, pair-exclusion masks, per-type dispatch."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..array_api import Array, like, xp_of

ATTN_LOGIT_SHIFT = 20.0  # smooth attention: empty slots sit at logit -20 (spec §5.3, §11.1-3)
MASKED_LOGIT = -1e30  # finite "minus infinity": all-empty rows and their gradients stay NaN-free


@dataclass(frozen=True)
class Edges:
    """The neighbor graph of one batch of frames, as every descriptor consumes it.

    rij: (nf, nat, nnei, 3) neighbor-minus-center vectors (garbage on empty slots);
    nlist: (nf, nat, nnei) local neighbor index, -1 on empty slots;
    atype: (nat,) device array of types; atype_host: the same as NumPy, for static dispatch;
    slot_counts: host-side hints ((r, n), ...): no row has a real slot within r beyond the first
    n slots (lets a descriptor cut padded work; see `dpa.dpmodel.model.NeighborSpec`).
    """

    rij: Array
    nlist: Array
    atype: Array
    atype_host: np.ndarray
    slot_counts: tuple[tuple[float, int], ...] = ()

    def slots_within(self, radius: float) -> int:
        """Upper bound on the number of leading slots that can hold neighbors within `radius`."""
        for r, n in self.slot_counts:
            if r == radius:
                return min(n, self.nlist.shape[-1])
        return self.nlist.shape[-1]

    @property
    def mask(self) -> Array:
        """Real-neighbor mask (nf, nat, nnei)."""
        return self.nlist >= 0

    def neighbor_types(self, empty_type: int | None = None) -> Array:
        """Type of every slot's neighbor; empty slots get `empty_type` (default: type of atom 0)."""
        xp = xp_of(self.nlist)
        safe = xp.where(self.mask, self.nlist, xp.zeros_like(self.nlist))
        nf, nat, nnei = safe.shape
        types = xp.reshape(xp.take(self.atype, xp.reshape(safe, (-1,)), axis=0), (nf, nat, nnei))
        fill = self.atype_host[0] if empty_type is None else empty_type
        return xp.where(self.mask, types, xp.full_like(types, int(fill)))


def pair_keep_mask(edges: Edges, exclude_types: Sequence[Sequence[int]], ntypes: int) -> Array:
    """(nf, nat, nnei) bool: False where (center type, neighbor type) is an excluded pair.

    Exclusion is symmetric; empty slots are never excluded (spec §2.7).
    """
    xp = xp_of(edges.nlist)
    table = np.ones((ntypes + 1, ntypes + 1), dtype=bool)
    for a, b in exclude_types:
        table[a, b] = table[b, a] = False
    flat = like(edges.nlist, table.reshape(-1))
    nbr = edges.neighbor_types(empty_type=ntypes)
    idx = edges.atype[None, :, None] * (ntypes + 1) + nbr
    nf, nat, nnei = idx.shape
    return xp.reshape(xp.take(flat, xp.reshape(idx, (-1,)), axis=0), (nf, nat, nnei))


def apply_per_center_type(
    x: Array,
    atype_host: np.ndarray,
    ntypes: int,
    fn: Callable[[int, Array], Array],
) -> Array:
    """Apply `fn(t, x_t)` to the atoms of each type t (axis 1) and put results back in atom order.

    The grouping uses host-side types, so shapes stay static for jit.
    """
    xp = xp_of(x)
    groups = [np.nonzero(atype_host == t)[0] for t in range(ntypes)]
    outputs, order = [], []
    for t, idx in enumerate(groups):
        if idx.size == 0:
            continue
        xt = xp.take(x, like(x, idx), axis=1) if idx.size != x.shape[1] else x
        outputs.append(fn(t, xt))
        order.append(idx)
    if len(outputs) == 1:
        return outputs[0]
    merged = xp.concat(outputs, axis=1)
    inverse = np.argsort(np.concatenate(order), kind="stable")
    return xp.take(merged, like(merged, inverse), axis=1)


def descriptor_dtype(xp: Any, descriptor: dict) -> Any:
    """The float dtype the descriptor computes in."""
    from ..array_api import dtype_of

    return dtype_of(xp, descriptor.get("precision", "float64"))


def contract_env(g: Array, env: Array, nnei: int) -> Array:
    """T = (1/N) Σ_j G_jᵀ R_j: (nf, nat, nnei, M1) × (nf, nat, nnei, 4) -> (nf, nat, M1, 4)."""
    xp = xp_of(g)
    return xp.matrix_transpose(g) @ env / nnei


def symmetry_descriptor(t: Array, axis_neuron: int) -> Array:
    """flatten(T T_<ᵀ) with T_< the first `axis_neuron` rows: index a·axis + b."""
    xp = xp_of(t)
    d = t @ xp.matrix_transpose(t[..., :axis_neuron, :])
    nf, nat = d.shape[0], d.shape[1]
    return xp.reshape(d, (nf, nat, d.shape[2] * d.shape[3]))
