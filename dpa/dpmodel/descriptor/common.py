"""Pieces shared by the descriptors: neighbor types, pair-exclusion masks, per-type dispatch."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from array_api_compat import device

from ..array_api import Array, like, to_host, xp_of

ATTN_LOGIT_SHIFT = 20.0  # smooth attention: empty slots sit at logit -20 (spec §5.3, §11.1-3)
MASKED_LOGIT = -1e30  # finite "minus infinity": all-empty rows and their gradients stay NaN-free
TYPE_BLOCKS = "type_blocks"  # key of the per-type block widths among `Edges.slot_counts`


@dataclass(frozen=True)
class Edges:
    """The neighbor graph of one batch of frames, as every descriptor consumes it.

    rij: (nf, nat, nnei, 3) neighbor-minus-center vectors (garbage on empty slots);
    nlist: (nf, nat, nnei) local neighbor index, -1 on empty slots;
    atype: (nat,) device array of types; atype_host: the same as NumPy, for static dispatch;
    slot_counts: host-side hints that let a descriptor cut padded work (see
    `dpa.dpmodel.model.NeighborSpec`): (r, n), no row has a real slot within r beyond the first
    n slots; (TYPE_BLOCKS, (w_0, w_1, ...)), the per-type blocks of a trimmed se_e2_a list are
    w_t wide (sel[t] without the hint).
    """

    rij: Array
    nlist: Array
    atype: Array
    atype_host: np.ndarray
    slot_counts: tuple[tuple[Any, Any], ...] = ()

    def type_block_widths(self, sel: Sequence[int]) -> tuple[int, ...]:
        """Widths of the per-type blocks of the list: `sel` unless the host trimmed them."""
        for key, widths in self.slot_counts:
            if key == TYPE_BLOCKS:
                return tuple(widths)
        return tuple(int(s) for s in sel)

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


def empty_slots_alike(desc: dict) -> bool:
    """Whether every empty slot of a center type contributes the same, so the host may cut
    trailing empty slots and one kept empty slot stands in for them (DPA-1, se_e2_a): float64
    only (float32 results follow DeePMD-kit's summation order over the full width), no pair
    exclusion, and davg/dstd equal across slots (as statistics make them)."""
    if desc.get("precision", "float64") != "float64" or desc.get("exclude_types"):
        return False
    var = desc.get("@variables", {})
    return all(
        np.ptp(to_host(var[key]), axis=1).max(initial=0.0) == 0.0
        for key in ("davg", "dstd")
        if key in var
    )


def stand_in_weights(width: int, dropped: int, like_array: Array) -> Array:
    """(width, 1) slot weights: 1, and 1 + `dropped` on the last slot, an empty one that stands
    in for the `dropped` cut empty slots in a sum over neighbors."""
    xp = xp_of(like_array)
    weight = np.ones((width, 1))
    weight[-1, 0] += dropped
    return xp.asarray(weight, dtype=like_array.dtype, device=device(like_array))


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
