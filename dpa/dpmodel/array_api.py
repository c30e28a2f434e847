"""The few array helpers where array libraries differ or where autograd needs care.

Everything here is written against the Python array API (`array_api_compat.array_namespace`), so the
same code runs on NumPy, PyTorch, JAX and array-api-strict.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from array_api_compat import array_namespace, device, to_device

from .native import native_kernels

Array = Any

GROUP_OVERHEAD = 0.03  # relative cost of one more neighbor group (its extra operations)


def stop_gradient(x: Array) -> Array:
    """x as a constant for autodiff (identity for libraries without autodiff).

    Only for values the result does not depend on mathematically, such as the shift of a
    softmax: their backward pass is work for nothing.
    """
    kernels = native_kernels(xp_of(x))
    return x if kernels is None else kernels.stop_gradient(x)


def row_blocks(x: Array, nrows: int, bytes_per_row: int, max_blocks: int = 8) -> list[slice]:
    """Slices that cut `nrows` independent rows into at most `max_blocks` blocks of about the
    working set that suits the framework of `x` (one block where it names none).

    XLA on CPU runs each elementwise pass over a whole array; over blocks that fit the CPU's
    cache, the passes of one block find their operands still in cache. The cap keeps compiled
    programs small for large inputs.
    """
    kernels = native_kernels(xp_of(x))
    budget = None if kernels is None else kernels.row_block_bytes()
    if budget is None or not isinstance(nrows, int) or nrows <= 1:  # symbolic sizes: one block
        return [slice(0, nrows)]
    nblocks = min(max_blocks, nrows, -(-nrows * int(bytes_per_row) // budget))
    size = -(-nrows // max(nblocks, 1))
    return [slice(i, min(i + size, nrows)) for i in range(0, nrows, size)]


def _neighbor_group_limit(x: Array) -> int:
    """The most neighbor groups the framework of `x` may cut rows into right now (1: none)."""
    kernels = native_kernels(xp_of(x))
    return 1 if kernels is None else kernels.neighbor_group_limit()


def wants_neighbor_groups(x: Array) -> bool:
    """Whether `x`'s framework cuts rows into neighbor groups (runs eagerly) right now."""
    return _neighbor_group_limit(x) > 1


def to_host(x: Array) -> np.ndarray:
    """x as a NumPy array (detached, copied from the device where needed); eager arrays only."""
    if isinstance(x, np.ndarray):
        return x
    return np.asarray(to_device(stop_gradient(x), "cpu"))


def neighbor_groups(counts: Array, width: int) -> list[tuple[np.ndarray, int]] | None:
    """Rows cut into groups of similar neighbor count, each with the width it needs.

    counts: (nrows,) slots each row needs (all slots past them are empty) of a list `width`
    wide. Returns [(row indices, group width)] with each width one past the group's largest
    count (an empty slot to stand in for the cut ones) and at most `width`, or None where
    the framework groups no rows (`native_kernels`) or the full list is cheapest. The cost
    counted is the attention's, rows x width^2, plus a little per extra group for its extra
    operations.
    """
    most = _neighbor_group_limit(counts)
    if most <= 1:
        return None
    host = to_host(counts).reshape(-1)
    order = np.argsort(host, kind="stable")
    ranked = host[order]
    nrows = ranked.size
    best, best_cost = None, float(nrows) * width * width
    for ngroups in range(1, min(most, nrows) + 1):
        bounds = [nrows * i // ngroups for i in range(ngroups + 1)]
        groups = [
            (order[lo:hi], min(int(ranked[hi - 1]) + 1, width))
            for lo, hi in zip(bounds[:-1], bounds[1:], strict=True)
            if hi > lo
        ]
        cost = sum(rows.size * w * w for rows, w in groups) * (1.0 + GROUP_OVERHEAD * (ngroups - 1))
        if cost < best_cost:
            best, best_cost = groups, cost
    return best


def xp_of(*arrays: Array) -> Any:
    """The array namespace of the given arrays (None entries are ignored)."""
    return array_namespace(*[a for a in arrays if a is not None])


def gather_neighbors(features: Array, index: Array) -> Array:
    """Rows of per-atom `features` (nf, nat, ...) picked by `index` (nf, nat, nnei) of valid atoms.

    Returns (nf, nat, nnei, ...). `index` must not hold -1: redirect empty slots first. One
    `take` over the flattened frames (an index-select; its backward is one index-add).
    """
    xp = array_namespace(features, index)
    nf, nat = features.shape[0], features.shape[1]
    nnei = index.shape[2]
    tail = tuple(features.shape[2:])
    flat = xp.reshape(features, (nf * nat, *tail))
    if nf > 1:
        offset = xp.arange(nf, dtype=index.dtype, device=device(index)) * nat
        index = index + xp.reshape(offset, (nf, 1, 1))
    out = xp.take(flat, xp.reshape(index, (nf * nat * nnei,)), axis=0)
    return xp.reshape(out, (nf, nat, nnei, *tail))


def safe_norm(x: Array, floor: float = 0.0) -> Array:
    """Euclidean norm over the last axis whose gradient is finite at zero (clamped at `floor`)."""
    xp = array_namespace(x)
    sq = xp.sum(x * x, axis=-1, keepdims=True)
    tiny = floor * floor if floor > 0 else 1e-300 if x.dtype == xp.float64 else 1e-37
    return xp.sqrt(xp.maximum(sq, xp.asarray(tiny, dtype=x.dtype)))


def to_dtype(x: Array, dtype: Any) -> Array:
    """Cast `x` to `dtype` unless it already is (no copy then)."""
    xp = array_namespace(x)
    return x if x.dtype == dtype else xp.astype(x, dtype)


def dtype_of(xp: Any, precision: str) -> Any:
    """The float dtype of a serialized precision name ('float64', 'float32', 'default', ...)."""
    name = {"default": "float64", "double": "float64", "single": "float32"}.get(
        precision, precision
    )
    if name not in ("float64", "float32", "float16", "bfloat16"):
        from ..errors import ConfigError

        raise ConfigError(f"unknown precision {precision!r}; use 'float64' or 'float32'")
    if name == "bfloat16":
        return xp.bfloat16
    return getattr(xp, name)


def like(ref: Array, value: Any, dtype: Any = None) -> Array:
    """`value` (host data) as an array of `ref`'s namespace and device (dtype: given or inferred)."""
    xp = array_namespace(ref)
    return xp.asarray(value, dtype=dtype, device=device(ref))
