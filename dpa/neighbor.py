"""Neighbor lists without ghost atoms: each slot holds (local atom j, integer image shift S).

A periodic image of atom j is atom j itself plus ``S @ box``, so the pair vector is
``r_ij = x[j] - x[i] + S @ box`` with ``x`` the coordinates exactly as given (not wrapped). The
model computes ``r_ij`` inside its autograd graph; this module only decides *which* (j, S) pairs
fill the slots, reproducing the DeePMD-kit rules of spec §2.3:

* candidates are all periodic images of all real atoms within ``d <= rcut`` (the zero-shift self
  pair excluded, other images of atom i itself included), sorted by increasing distance (ties by
  ``(j, S)`` lexicographically), truncated to ``Nsel = sum(sel)``;
* ``mixed_types=True``: that list, padded with -1 to width ``Nsel``;
* ``mixed_types=False``: blocks of widths ``sel[0], sel[1], ...``; block t holds the type-t atoms
  of the ``Nsel``-truncated list in increasing distance, padded with -1;
* virtual atoms (type < 0) have all -1 rows and are nobody's neighbor.

Two builders:

* :func:`build_neighbor_list` (NumPy, outside autograd): an O(N) cell list in fractional space
  for large systems, brute force over atoms x images for small ones.
* :func:`build_neighbor_list_xp` (any array-API namespace, static shapes): brute force over atoms
  x a fixed set of image shifts, for graphs that are exported with the neighbor list inside.

Distances used for the cutoff test and the ordering are computed by the same formula from the
original coordinates in every path, so the paths agree slot by slot.
"""

from __future__ import annotations

import math
import threading
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from array_api_compat import array_namespace
from array_api_compat import device as xp_device

from dpa.errors import ConfigError, DataError

__all__ = [
    "NeighborList",
    "NeighborOverflowWarning",
    "VerletPairs",
    "build_neighbor_list",
    "build_neighbor_list_xp",
    "image_shifts",
    "neighbor_stat",
]

# Candidate screening uses a cutoff enlarged by this relative amount, so that no pair with
# canonical distance <= rcut is lost to rounding in wrapped coordinates; the final test is exact.
_SCREEN_REL = 1e-9
# Brute force (atoms x images x atoms) when that product is at most this (measured crossover).
_BRUTE_MAX_WORK = 400_000
# Brute force works on chunks of images of at most this many atom pairs (bounded memory).
_BRUTE_CHUNK = 2_000_000
# Target bin thickness of the cell list, as a fraction of rcut (rcut/2: 5x5x5 stencil).
_BIN_FRACTION = 0.5
# Most images per axis and direction we accept (rcut / face distance; more means wrong units).
_MAX_IMAGES = 100
# Cells needing more images than this are always searched by brute force (no long stencil loop).
_MAX_STENCIL = 4000
# Most bins per axis (keeps linear bin ids in int64).
_MAX_BINS = 1 << 20


class NeighborOverflowWarning(UserWarning):
    """More neighbors within rcut than ``sel`` keeps: the farthest ones are dropped."""


@dataclass(frozen=True)
class NeighborList:
    """Neighbor list of a batch of frames, as local indices plus integer image shifts.

    ``nlist`` (nf, nat, Nsel) int64: local index j per slot, -1 for an empty slot.
    ``shift`` (nf, nat, Nsel, 3) int64: image shift S per slot (0 on empty slots), so that
    ``r_ij = x[j] - x[i] + S @ box[f]`` with the coordinates as given to the builder.
    ``nnei_type`` (nf, nat, ntypes) int64: neighbors of each type within rcut *before* truncation
    (0 for virtual atoms), for overflow reports and neighbor statistics.
    """

    nlist: np.ndarray
    shift: np.ndarray
    nnei_type: np.ndarray

    @property
    def nnei(self) -> np.ndarray:
        """Neighbors within rcut per atom before truncation, (nf, nat)."""
        return self.nnei_type.sum(axis=-1)

    @property
    def max_nnei(self) -> np.ndarray:
        """Largest number of neighbors within rcut of any atom, per frame (nf,)."""
        return self.nnei.max(axis=-1, initial=0)

    @property
    def max_nnei_type(self) -> np.ndarray:
        """Largest number of type-t neighbors within rcut of any atom, per frame (nf, ntypes)."""
        return self.nnei_type.max(axis=1, initial=0)


# ---------------------------------------------------------------------------------------------
# input validation
# ---------------------------------------------------------------------------------------------


def _check_config(rcut: float, sel: Sequence[int]) -> tuple[float, tuple[int, ...]]:
    """Validate rcut and sel (model-config values) and return them as plain Python numbers."""
    rcut = float(rcut)
    if not math.isfinite(rcut) or rcut <= 0.0:
        raise ConfigError(f"rcut must be a positive finite number, got {rcut!r}")
    sel_t = tuple(int(s) for s in sel)
    if len(sel_t) == 0 or any(s < 0 for s in sel_t):
        raise ConfigError(f"sel must be a non-empty list of non-negative integers, got {sel!r}")
    return rcut, sel_t


def _as_atype(atype: Any, nf: int | None = None) -> np.ndarray:
    """Return atom types as int64 of shape (nf, nat) ((1, nat) when given as (nat,))."""
    at = np.asarray(atype)
    if at.ndim not in (1, 2) or (at.size and not np.issubdtype(at.dtype, np.integer)):
        raise DataError(
            f"atype must be an integer array (nat,) or (nf, nat), got {at.shape} {at.dtype}"
        )
    at = at.astype(np.int64).reshape(-1, at.shape[-1])
    if nf is not None and at.shape[0] not in (1, nf):
        raise DataError(f"atype has {at.shape[0]} frames but coord has {nf}")
    return at


def _as_coord(coord: Any, nat: int) -> np.ndarray:
    """Return coordinates as float64 (nf, nat, 3); accepts (nf, nat, 3), (nf, nat*3), (nat, 3)."""
    c = np.asarray(coord, dtype=np.float64)
    if c.ndim == 3 and c.shape[1:] == (nat, 3):
        return c
    if c.ndim == 2 and c.shape == (nat, 3):
        return c[None]
    if c.ndim == 2 and c.shape[1] == 3 * nat:
        return c.reshape(c.shape[0], nat, 3)
    raise DataError(f"coord must have shape (nf, {nat}, 3) or (nf, {3 * nat}), got {c.shape}")


def _as_box(box: Any, nf: int) -> np.ndarray | None:
    """Return boxes as float64 (nf, 3, 3) (rows = cell vectors), or None without PBC."""
    if box is None:
        return None
    b = np.asarray(box, dtype=np.float64)
    if b.size == 9:
        b = np.broadcast_to(b.reshape(1, 3, 3), (nf, 3, 3))
    elif b.size == 9 * nf:
        b = b.reshape(nf, 3, 3)
    else:
        raise DataError(f"box must have shape (nf, 3, 3) or (nf, 9) with nf={nf}, got {b.shape}")
    return np.ascontiguousarray(b)


def _validate(coord: Any, atype: Any, box: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Normalize shapes and dtypes; raise DataError naming the frame/atom of bad values."""
    at = _as_atype(atype)
    nat = at.shape[1]
    x = _as_coord(coord, nat)
    nf = x.shape[0]
    at = _as_atype(at, nf)
    at = np.broadcast_to(at, (nf, nat))
    bad = ~np.isfinite(x).all(axis=-1) & (at >= 0)
    if bad.any():
        f, i = (int(v) for v in np.argwhere(bad)[0])
        raise DataError(
            f"coordinate of atom {i} in frame {f} is not finite ({x[f, i].tolist()}); "
            f"{int(bad.sum())} bad atom(s) in all"
        )
    b = _as_box(box, nf)
    if b is not None:
        _check_boxes(b)
    return x, at, b


def _check_boxes(box: np.ndarray) -> None:
    """Raise DataError for a non-finite or (near-)singular box, naming the frame."""
    finite = np.isfinite(box).all(axis=(1, 2))
    if not finite.all():
        f = int(np.flatnonzero(~finite)[0])
        raise DataError(f"box of frame {f} is not finite: {box[f].tolist()}")
    vol = np.abs(np.linalg.det(box))
    scale = np.prod(np.linalg.norm(box, axis=-1), axis=-1)
    singular = ~(vol > 1e-10 * scale)
    if singular.any():
        f = int(np.flatnonzero(singular)[0])
        raise DataError(
            f"box of frame {f} is singular (volume {vol[f]:.3g}): {box[f].tolist()}; "
            "give three linearly independent cell vectors as rows, or no box for a "
            "non-periodic system"
        )


# ---------------------------------------------------------------------------------------------
# geometry helpers
# ---------------------------------------------------------------------------------------------


def _face_distances(box: np.ndarray) -> np.ndarray:
    """Distances between opposite cell faces, d_k = V / |h_l x h_m|, for (..., 3, 3) boxes."""
    vol = np.abs(np.linalg.det(box))
    c = np.stack(
        [
            np.cross(box[..., 1, :], box[..., 2, :]),
            np.cross(box[..., 2, :], box[..., 0, :]),
            np.cross(box[..., 0, :], box[..., 1, :]),
        ],
        axis=-2,
    )
    return vol[..., None] / np.linalg.norm(c, axis=-1)


def _n_images(box: np.ndarray, rcut: float) -> np.ndarray:
    """Images needed per axis and direction, ceil(rcut / d_k), max over frames; (3,) int."""
    d = _face_distances(box.reshape(-1, 3, 3))
    nb = np.ceil(rcut / d).max(axis=0)  # compared as floats: a huge rcut overflows int64
    if (nb > _MAX_IMAGES).any():
        raise DataError(
            f"the cell is too small for rcut={rcut:g}: it needs {[f'{n:.3g}' for n in nb]} "
            f"periodic images per axis (at most {_MAX_IMAGES} supported); check the box units "
            "and the model's rcut"
        )
    return nb.astype(np.int64)


def _cube(nb: Sequence[int]) -> np.ndarray:
    """All integer vectors in [-nb0, nb0] x [-nb1, nb1] x [-nb2, nb2], lexicographic order."""
    axes = [np.arange(-int(n), int(n) + 1, dtype=np.int64) for n in nb]
    return np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, 3)


def image_shifts(box: Any, rcut: float) -> np.ndarray:
    """Integer image shifts (n_img, 3) that cover every pair within rcut after wrapping.

    ``box`` is (3, 3), (nf, 3, 3) or (nf, 9) (max over frames), or None for no PBC (only the
    zero shift). Shifts are in lexicographic order, so ties in :func:`build_neighbor_list_xp`
    break by (j, S) as in :func:`build_neighbor_list`. An exported graph built with these shifts
    is exact for any box whose face distances are at least those of ``box``.
    """
    rcut = float(rcut)
    if box is None:
        return np.zeros((1, 3), dtype=np.int64)
    b = np.asarray(box, dtype=np.float64).reshape(-1, 3, 3)
    _check_boxes(b)
    return _cube(_n_images(b, rcut))


def _wrap(x: np.ndarray, box: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Fractional coordinates wrapped into [0, 1), their integer offsets w (s = sw + w), and xw."""
    s = x @ np.linalg.inv(box)
    w = np.floor(s)
    sw = s - w
    edge = sw >= 1.0  # s = -tiny rounds to sw = 1.0
    sw[edge] -= 1.0
    w[edge] += 1.0
    return sw, w.astype(np.int64), sw @ box


def _pair_d2(
    x: np.ndarray, box: np.ndarray | None, ii: np.ndarray, jj: np.ndarray, shift: np.ndarray
) -> np.ndarray:
    """|x[j] - x[i] + S @ box|^2 by the canonical formula shared with the xp builder.

    Per component: ``(x[j] - x[i]) + ((S0 * h0 + S1 * h1) + S2 * h2)``, then x^2 + y^2 + z^2.
    Terms with a zero box entry are skipped, which leaves every rounding unchanged.
    """
    d2 = np.zeros(ii.size)
    s = None if box is None else shift.astype(np.float64)
    for k in range(3):
        r = x[jj, k] - x[ii, k]
        if s is not None:
            sv = None
            for m in range(3):
                if box[m, k] != 0.0:
                    term = s[:, m] * box[m, k]
                    sv = term if sv is None else sv + term
            if sv is not None:
                r = r + sv
        d2 += r * r
    return d2


# ---------------------------------------------------------------------------------------------
# pair search (one frame, real atoms only): returns a superset of the pairs within rcut
# ---------------------------------------------------------------------------------------------


def _brute_pairs(
    x: np.ndarray, box: np.ndarray | None, rc_screen: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All (i, j, S) within rc_screen by brute force over atoms x images x atoms."""
    n = x.shape[0]
    if box is None:
        imgs = np.zeros((1, 3), dtype=np.int64)
        xw, w = x, np.zeros((n, 3), dtype=np.int64)
    else:
        imgs = _cube(_n_images(box, rc_screen))
        _, w, xw = _wrap(x, box)
    vec = imgs.astype(np.float64) @ (np.zeros((3, 3)) if box is None else box)
    diag = np.arange(n)
    chunk = max(1, _BRUTE_CHUNK // (n * n))  # images per chunk: bounded memory
    out_i, out_s, out_j = [], [], []
    for lo in range(0, imgs.shape[0], chunk):
        v = vec[lo : lo + chunk]
        d2 = np.zeros((n, v.shape[0], n))
        for k in range(3):
            dk = xw[None, None, :, k] - xw[:, None, None, k] + v[None, :, None, k]
            d2 += dk * dk
        zero = np.flatnonzero((imgs[lo : lo + chunk] == 0).all(axis=1))
        if zero.size:
            d2[diag, zero[0], diag] = np.inf  # the atom itself, unshifted
        ii, si, jj = np.nonzero(d2 <= rc_screen * rc_screen)
        out_i.append(ii)
        out_s.append(si + lo)
        out_j.append(jj)
    ii, si, jj = np.concatenate(out_i), np.concatenate(out_s), np.concatenate(out_j)
    return ii, jj, imgs[si] - w[jj] + w[ii]


@dataclass(frozen=True)
class _Bins:
    """Atoms binned on a grid aligned with the cell axes (Cartesian axes without PBC)."""

    xw: np.ndarray  # (n, 3) coordinates used for screening (wrapped into the cell with PBC)
    w: np.ndarray  # (n, 3) int wrapping offsets: x = xw + w @ box
    b: np.ndarray  # (n, 3) int bin index per axis
    frac: np.ndarray  # (n, 3) position inside the bin along each axis, in [0, 1]
    nbin: np.ndarray  # (3,) bins per axis
    reach: np.ndarray  # (3,) stencil half-width in bins
    thick: np.ndarray  # (3,) distance between the faces of a bin
    orthogonal: bool  # bin faces mutually perpendicular: gaps add in quadrature


def _bins(x: np.ndarray, box: np.ndarray | None, rc_screen: float) -> _Bins:
    """Bin the atoms into bins at least rcut * _BIN_FRACTION thick (fractional space with PBC)."""
    width = rc_screen * _BIN_FRACTION
    if box is None:
        lo = x.min(axis=0)
        span = x.max(axis=0) - lo
        thick = np.maximum(width, span / (_MAX_BINS - 1))
        u = (x - lo) / thick
        b = np.floor(u).astype(np.int64)
        nbin = b.max(axis=0) + 1
        reach = np.minimum(np.ceil(rc_screen / thick).astype(np.int64), nbin - 1)
        return _Bins(x, np.zeros_like(b), b, u - b, nbin, reach, thick, True)
    sw, w, xw = _wrap(x, box)
    d = _face_distances(box)
    nbin = np.clip(np.floor(d / width), 1, _MAX_BINS).astype(np.int64)
    reach = np.ceil(rc_screen * nbin / d).astype(np.int64)
    if (reach > _MAX_IMAGES * nbin).any():
        _n_images(box, rc_screen)  # raises with the explanation
    u = sw * nbin
    b = np.minimum(np.floor(u).astype(np.int64), nbin - 1)
    metric = box @ box.T
    off = metric - np.diag(np.diag(metric))
    ortho = bool(np.abs(off).max() <= 1e-12 * np.diag(metric).max())
    return _Bins(xw, w, b, np.clip(u - b, 0.0, 1.0), nbin, reach, d / nbin, ortho)


def _lateral_reach(bins: _Bins, frac: np.ndarray, o0: int, o1: int, rc: float) -> np.ndarray:
    """Per atom, how far (length) the bin column (b0 + o0, b1 + o1, *) may extend along axis 2.

    The perpendicular gaps to the column's slabs along axes 0 and 1 are lower bounds of any
    distance into it; they add in quadrature for orthogonal bins. Negative means: skip.
    """
    gaps = []
    for k, o in ((0, o0), (1, o1)):
        if o > 0:
            gaps.append((o - frac[:, k]) * bins.thick[k])
        elif o < 0:
            gaps.append((frac[:, k] - (o + 1)) * bins.thick[k])
    if not gaps:
        return np.full(frac.shape[0], rc)
    if bins.orthogonal:
        left = rc * rc - sum(g * g for g in gaps) * (1.0 - 1e-9)
        return np.where(left >= 0.0, np.sqrt(np.maximum(left, 0.0)), -1.0)
    return np.where(np.max(np.stack(gaps), axis=0) * (1.0 - 1e-9) <= rc, rc, -1.0)


def _columns(reach: np.ndarray) -> list[tuple[int, int]]:
    """Bin columns (o0, o1) of the half stencil: (o0, o1) >= (0, 0) lexicographically."""
    r0, r1 = int(reach[0]), int(reach[1])
    return [(0, o1) for o1 in range(r1 + 1)] + [
        (o0, o1) for o0 in range(1, r0 + 1) for o1 in range(-r1, r1 + 1)
    ]


def _cell_pairs(
    x: np.ndarray, box: np.ndarray | None, rc_screen: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All (i, j, S) within rc_screen by a cell list over a half stencil, then mirrored.

    Atoms are sorted by bin (axis 2 fastest), so for each atom and bin column (o0, o1) the
    candidates along axis 2 form one contiguous range of the sorted atoms per periodic image of
    that axis; the range is trimmed per atom to the bins its cutoff sphere can reach.
    """
    n = x.shape[0]
    bins = _bins(x, box, rc_screen)
    n0, n1, n2 = (int(v) for v in bins.nbin)
    lin = (bins.b[:, 0] * n1 + bins.b[:, 1]) * n2 + bins.b[:, 2]
    order = np.argsort(lin, kind="stable")
    b_s, frac_s = bins.b[order], bins.frac[order]
    xs = [np.ascontiguousarray(bins.xw[order, k]) for k in range(3)]
    uniq, ustart = np.unique(lin[order], return_index=True)
    ustart = np.append(ustart, n)
    r2, t2 = int(bins.reach[2]), float(bins.thick[2])
    rc2 = rc_screen * rc_screen
    zero = np.zeros(n, dtype=np.int64)
    out_i, out_j, out_s = [], [], []
    for o0, o1 in _columns(bins.reach):
        along = _lateral_reach(bins, frac_s, o0, o1, rc_screen) * (1.0 + 1e-9) / t2
        alive = along >= 0.0
        hi = b_s[:, 2] + np.minimum(r2, np.floor(frac_s[:, 2] + along).astype(np.int64))
        if (o0, o1) == (0, 0):
            lo = b_s[:, 2]
        else:
            lo = b_s[:, 2] + np.maximum(-r2, np.ceil(frac_s[:, 2] - 1.0 - along).astype(np.int64))
        t0, t1 = b_s[:, 0] + o0, b_s[:, 1] + o1
        if box is None:
            q0 = q1 = zero
            alive &= (t0 >= 0) & (t0 < n0) & (t1 >= 0) & (t1 < n1)
            lo, hi = np.maximum(lo, 0), np.minimum(hi, n2 - 1)
            images = [0]
        else:
            q0, q1 = np.floor_divide(t0, n0), np.floor_divide(t1, n1)
            t0, t1 = t0 - q0 * n0, t1 - q1 * n1
            images = range(-((r2 + n2 - 1) // n2), (r2 + n2 - 1) // n2 + 1)
        base = (t0 * n1 + t1) * n2
        for q2 in images:
            seg_lo = np.maximum(lo, q2 * n2) - q2 * n2
            seg_hi = np.minimum(hi, q2 * n2 + n2 - 1) - q2 * n2
            idx = np.flatnonzero(alive & (seg_lo <= seg_hi))
            if idx.size == 0:
                continue
            start = ustart[np.searchsorted(uniq, base[idx] + seg_lo[idx], side="left")]
            end = ustart[np.searchsorted(uniq, base[idx] + seg_hi[idx], side="right")]
            if (o0, o1, q2) == (0, 0, 0):
                start = idx + 1  # own bin first: only atoms after i (each pair once)
            cnt = np.maximum(end - start, 0)
            total = int(cnt.sum())
            if total == 0:
                continue
            ends = np.cumsum(cnt)
            ii = np.repeat(idx, cnt)
            jj = np.arange(total) + np.repeat(start - (ends - cnt), cnt)
            d2 = np.zeros(total)
            for k in range(3):
                ci = xs[k][idx]
                if box is not None:
                    ci = ci - (q0[idx] * box[0, k] + q1[idx] * box[1, k] + q2 * box[2, k])
                dk = xs[k][jj] - np.repeat(ci, cnt)
                d2 += dk * dk
            keep = np.flatnonzero(d2 <= rc2)
            ii, jj = ii[keep], jj[keep]
            out_i.append(ii)
            out_j.append(jj)
            out_s.append(np.stack([q0[ii], q1[ii], np.full(ii.size, q2, dtype=np.int64)], 1))
    if not out_i:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, np.zeros((0, 3), dtype=np.int64)
    ii_s, jj_s, sp = np.concatenate(out_i), np.concatenate(out_j), np.concatenate(out_s)
    ii = order[np.concatenate([ii_s, jj_s])]
    jj = order[np.concatenate([jj_s, ii_s])]
    sp = np.concatenate([sp, -sp])
    return ii, jj, sp - bins.w[jj] + bins.w[ii]


def _prefer_brute(n: int, box: np.ndarray | None, rc_screen: float) -> bool:
    """Brute force for small work, or for cells so small that the stencil loop would be long."""
    if box is None:
        return n * n <= _BRUTE_MAX_WORK
    nb = _n_images(box, rc_screen)
    n_img = int(np.prod(2 * nb + 1))
    return n * n * n_img <= _BRUTE_MAX_WORK or n_img > _MAX_STENCIL


def _frame_pairs(
    x: np.ndarray, box: np.ndarray | None, rcut: float, method: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Pairs (i, j, S, d^2) with canonical distance <= rcut, for the real atoms of one frame."""
    n = x.shape[0]
    rc_screen = rcut * (1.0 + _SCREEN_REL)
    if n == 0:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, np.zeros((0, 3), dtype=np.int64), np.zeros(0)
    if method == "auto":
        method = "brute" if _prefer_brute(n, box, rc_screen) else "cell"
    if method == "brute":
        ii, jj, s = _brute_pairs(x, box, rc_screen)
    elif method == "cell":
        ii, jj, s = _cell_pairs(x, box, rc_screen)
    else:
        raise ValueError(f"method must be 'auto', 'cell' or 'brute', got {method!r}")
    d2 = _pair_d2(x, box, ii, jj, s)
    keep = np.flatnonzero(d2 <= rcut * rcut)
    return ii[keep], jj[keep], s[keep], d2[keep]


class VerletPairs:
    """Pair candidates of one frame within rcut + skin, reused while no atom has moved more than
    skin/2 since they were found (same atoms, same box): consecutive MD steps skip the pair
    search and only recompute distances. The pairs kept are exactly those a fresh search finds,
    so the lists are identical. Candidates are only gathered when the atoms moved less than
    skin/2 since the call before; other atoms, another box (NPT) or a far-away frame (frames of
    a trajectory file one by one) get a plain search at rcut, so they cost nothing extra.
    One per stream of frames (a `dpa.Potential` holds one)."""

    def __init__(self, skin: float = 1.0) -> None:
        if not skin > 0.0:
            raise ConfigError(f"the Verlet skin must be positive; got {skin}")
        self.skin = float(skin)
        self.searches = 0  # pair searches so far (plain or with the skin)
        self._key: tuple | None = None
        self._last = np.zeros((0, 3))  # positions of the call before
        self._origin = np.zeros((0, 3))  # positions the candidates were found at
        self._candidates: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
        self._lock = threading.Lock()

    def pairs(
        self, x: np.ndarray, box: np.ndarray | None, rcut: float, method: str, atoms: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """`_frame_pairs(x, box, rcut, method)`; `atoms` (the real atoms' indices) keys the cache."""
        key = (rcut, method, atoms.tobytes(), None if box is None else box.tobytes())
        limit = (0.5 * self.skin * (1.0 - 1e-9)) ** 2
        with self._lock:
            same, previous = key == self._key, self._last
            self._key, self._last = key, x.copy()
            if not (
                same
                and self._candidates is not None
                and _max_displacement2(x, self._origin) <= limit
            ):
                self.searches += 1
                if not (same and _max_displacement2(x, previous) <= limit):
                    self._candidates = None
                    return _frame_pairs(x, box, rcut, method)
                ii, jj, s, _ = _frame_pairs(x, box, rcut + self.skin, method)
                self._origin, self._candidates = x.copy(), (ii, jj, s)
            ii, jj, s = self._candidates
        d2 = _pair_d2(x, box, ii, jj, s)
        keep = np.flatnonzero(d2 <= rcut * rcut)
        return ii[keep], jj[keep], s[keep], d2[keep]


def _max_displacement2(x: np.ndarray, origin: np.ndarray) -> float:
    """Largest squared displacement of an atom from `origin` (inf when the shapes differ)."""
    if x.shape != origin.shape:
        return math.inf
    return float(np.max(np.sum((x - origin) ** 2, axis=1), initial=0.0))


# ---------------------------------------------------------------------------------------------
# from pairs to sorted, truncated, optionally type-split slots
# ---------------------------------------------------------------------------------------------


def _tie_keys(jj: np.ndarray, s: np.ndarray) -> np.ndarray:
    """One int64 per pair that orders pairs by (j, S0, S1, S2)."""
    off = int(np.abs(s).max(initial=0))
    base = 2 * off + 1
    key = jj.astype(np.int64)
    for k in range(3):
        key = key * base + (s[:, k] + off)
    return key


def _sorted_rows(
    n: int, ii: np.ndarray, jj: np.ndarray, s: np.ndarray, d2: np.ndarray, width: int
) -> np.ndarray:
    """Pair indices (n, width) per center, by increasing (d^2, j, S), -1 padded/truncated."""
    p = ii.size
    cnt = np.bincount(ii, minlength=n)
    ncol = max(int(cnt.max(initial=0)), 1)
    by_i = np.argsort(ii)  # order inside a row is irrelevant: rows are fully sorted below
    flat = np.arange(p) + (ii[by_i] * ncol - (np.cumsum(cnt) - cnt)[ii[by_i]])
    dist = np.full(n * ncol, np.inf)
    dist[flat] = d2[by_i]
    dist = dist.reshape(n, ncol)
    pidx = np.full(n * ncol, -1, dtype=np.int64)
    pidx[flat] = by_i
    pidx = pidx.reshape(n, ncol)
    perm = np.argsort(dist, axis=1)
    ds = np.take_along_axis(dist, perm, axis=1)
    tied = np.flatnonzero(((ds[:, 1:] == ds[:, :-1]) & np.isfinite(ds[:, 1:])).any(axis=1))
    if tied.size:
        keys = _tie_keys(jj, s)[pidx[tied]]
        keys[pidx[tied] < 0] = np.iinfo(np.int64).max
        perm[tied] = np.lexsort((keys, dist[tied]), axis=-1)
    out = np.take_along_axis(pidx, perm[:, :width], axis=1)
    if out.shape[1] < width:
        out = np.pad(out, ((0, 0), (0, width - out.shape[1])), constant_values=-1)
    return out


def _split_types(tj: np.ndarray, sel: Sequence[int]) -> np.ndarray:
    """Columns of a distance-sorted list that form the per-type blocks (mixed_types=False).

    ``tj`` (n, Nsel): neighbor type per slot, ``len(sel)`` on empty slots. Returns (n, Nsel)
    column indices into the list, block t (width sel[t]) holding the first type-t columns in
    order, -1 where a block has fewer.
    """
    n, width_all = tj.shape
    grouped = np.argsort(tj.astype(np.int16), axis=1, kind="stable")  # by type, then distance
    count = np.stack([(tj == t).sum(axis=1) for t in range(len(sel))], axis=1)
    first = np.cumsum(count, axis=1) - count
    blocks = []
    for t, width in enumerate(sel):
        k = np.arange(width)
        idx = np.minimum(first[:, t : t + 1] + k, max(width_all - 1, 0))
        cols = np.take_along_axis(grouped, idx, axis=1)
        blocks.append(np.where(k < count[:, t : t + 1], cols, -1))
    return np.concatenate(blocks, axis=1)


def _fill_frame(
    x: np.ndarray,
    atype: np.ndarray,
    box: np.ndarray | None,
    rcut: float,
    sel: tuple[int, ...],
    mixed_types: bool,
    method: str,
    nlist: np.ndarray,
    shift: np.ndarray,
    nnei_type: np.ndarray,
    pair_cache: VerletPairs | None = None,
) -> None:
    """Fill one frame's nlist (nat, Nsel), shift (nat, Nsel, 3), nnei_type (nat, ntypes).

    The outputs come pre-filled with -1 / 0 / 0; rows of virtual atoms are left so.
    """
    ntypes, nsel = nnei_type.shape[1], sum(sel)
    real = np.flatnonzero(atype >= 0)
    types = atype[real]
    if pair_cache is None:
        ii, jj, s, d2 = _frame_pairs(x[real], box, rcut, method)
    else:
        ii, jj, s, d2 = pair_cache.pairs(x[real], box, rcut, method, real)
    if ii.size == 0:
        return
    tpair = types[jj]
    counts = np.bincount(ii * ntypes + tpair, minlength=real.size * ntypes)
    pidx = _sorted_rows(real.size, ii, jj, s, d2, nsel)
    if not mixed_types:
        tj = np.append(tpair, len(sel))[pidx]  # index -1 (empty) -> len(sel)
        cols = _split_types(tj, sel)
        pidx = np.where(cols >= 0, np.take_along_axis(pidx, np.maximum(cols, 0), axis=1), -1)
    # index -1 (empty slot) picks the appended sentinel: j = -1, S = 0
    j_ext = np.append(real[jj], -1)
    s_ext = np.concatenate([s, np.zeros((1, 3), dtype=np.int64)])
    if real.size == atype.size:
        np.take(j_ext, pidx, out=nlist, mode="wrap")  # "wrap": unbuffered, and -1 -> sentinel
        np.take(s_ext, pidx, axis=0, out=shift, mode="wrap")
        nnei_type[...] = counts.reshape(real.size, ntypes)
    else:
        nlist[real] = j_ext[pidx]
        shift[real] = s_ext[pidx]
        nnei_type[real] = counts.reshape(real.size, ntypes)


def _warn_overflow(
    nnei_type: np.ndarray, sel: tuple[int, ...], mixed_types: bool, rcut: float
) -> None:
    """Emit one NeighborOverflowWarning naming the worst atom, if any atom overflows sel."""
    nsel = sum(sel)
    total = nnei_type.sum(axis=-1)
    over = total > nsel
    if not mixed_types:
        over_t = nnei_type[..., : len(sel)] > np.asarray(sel)
        over = over | over_t.any(axis=-1)
    if not over.any():
        return
    f, i = np.unravel_index(int(np.argmax(np.where(over, total, -1))), total.shape)
    msg = (
        f"atom {i} of frame {f} has {int(total[f, i])} neighbors within rcut={rcut} "
        f"(per type: {nnei_type[f, i].tolist()}) but sel={list(sel)} keeps at most "
        f"{nsel if mixed_types else list(sel)}; the farthest neighbors are dropped, which changes "
        f"the model. {int(over.sum())} atom(s) in {int(over.any(axis=1).sum())} frame(s) "
        "overflow. Raise `sel` in the model config (`dpa neighbor-stat` reports the maxima)."
    )
    warnings.warn(msg, NeighborOverflowWarning, stacklevel=3)


def build_neighbor_list(
    coord: Any,
    atype: Any,
    box: Any,
    rcut: float,
    sel: Sequence[int],
    mixed_types: bool,
    *,
    method: str = "auto",
    pair_cache: VerletPairs | None = None,
) -> NeighborList:
    """Build the (j, S) neighbor list of spec §2.3 in NumPy; see the module docstring.

    ``coord`` (nf, nat, 3) (or (nf, nat*3), (nat, 3)); ``atype`` (nat,) or (nf, nat), < 0 marks
    virtual atoms; ``box`` (nf, 3, 3) / (nf, 9) / (3, 3) with cell vectors as rows, or None.
    ``method``: "auto" (by size), "cell" (cell list) or "brute" (atoms x images). A
    ``pair_cache`` (:class:`VerletPairs`) is used for single-frame input: successive calls along
    a trajectory reuse its candidates. Warns with :class:`NeighborOverflowWarning` when ``sel``
    truncates; raises DataError for bad input.
    """
    rcut, sel_t = _check_config(rcut, sel)
    x, at, b = _validate(coord, atype, box)
    nf, nat = at.shape
    ntypes = max(int(at.max(initial=-1)) + 1, len(sel_t))
    if not mixed_types and ntypes > len(sel_t):
        f, i = (int(v) for v in np.argwhere(at >= len(sel_t))[0])
        raise DataError(
            f"atom {i} of frame {f} has type {int(at[f, i])} but sel={list(sel_t)} has only "
            f"{len(sel_t)} entries (one per type) for mixed_types=False"
        )
    nsel = sum(sel_t)
    nlist = np.full((nf, nat, nsel), -1, dtype=np.int64)
    shift = np.zeros((nf, nat, nsel, 3), dtype=np.int64)
    nnei_type = np.zeros((nf, nat, ntypes), dtype=np.int64)
    for f in range(nf):
        bf = None if b is None else b[f]
        cache = pair_cache if nf == 1 else None
        _fill_frame(
            x[f],
            at[f],
            bf,
            rcut,
            sel_t,
            mixed_types,
            method,
            nlist[f],
            shift[f],
            nnei_type[f],
            cache,
        )
    _warn_overflow(nnei_type, sel_t, mixed_types, rcut)
    return NeighborList(nlist=nlist, shift=shift, nnei_type=nnei_type)


def neighbor_stat(
    coord: Any, atype: Any, box: Any, rcut: float, ntypes: int
) -> tuple[float, np.ndarray]:
    """Minimum pair distance and max number of type-t neighbors within rcut, over atoms and frames.

    Pairs include periodic images (also of an atom with itself). The minimum distance is taken
    over pairs within rcut, so it is ``inf`` when no atom has a neighbor within rcut.
    """
    rcut, _ = _check_config(rcut, [0])
    x, at, b = _validate(coord, atype, box)
    if int(at.max(initial=-1)) >= ntypes:
        raise DataError(f"atom types go up to {int(at.max())} but ntypes={ntypes}")
    min_d2 = math.inf
    max_nnei = np.zeros(ntypes, dtype=np.int64)
    for f in range(x.shape[0]):
        real = np.flatnonzero(at[f] >= 0)
        ii, jj, _, d2 = _frame_pairs(x[f, real], None if b is None else b[f], rcut, "auto")
        if d2.size:
            min_d2 = min(min_d2, float(d2.min()))
        counts = np.bincount(ii * ntypes + at[f, real][jj], minlength=real.size * ntypes)
        max_nnei = np.maximum(max_nnei, counts.reshape(real.size, ntypes).max(axis=0, initial=0))
    return math.sqrt(min_d2), max_nnei


# ---------------------------------------------------------------------------------------------
# array-API builder with static shapes (for graphs that are exported with the list inside)
# ---------------------------------------------------------------------------------------------


def _xp_cross(xp: Any, a: Any, b: Any) -> Any:
    """Cross product over the last axis of size 3, with elementwise ops only."""
    a0, a1, a2 = a[..., 0], a[..., 1], a[..., 2]
    b0, b1, b2 = b[..., 0], b[..., 1], b[..., 2]
    return xp.stack([a1 * b2 - a2 * b1, a2 * b0 - a0 * b2, a0 * b1 - a1 * b0], axis=-1)


def _xp_wrap_offsets(xp: Any, coord: Any, box: Any) -> Any:
    """Integer-valued offsets w = floor(x @ inv(box)) (nf, nat, 3), as floats."""
    h0, h1, h2 = box[:, 0, :], box[:, 1, :], box[:, 2, :]
    c = xp.stack([_xp_cross(xp, h1, h2), _xp_cross(xp, h2, h0), _xp_cross(xp, h0, h1)], axis=1)
    vol = xp.sum(h0 * c[:, 0, :], axis=-1)
    # s_k = x . c_k / V : fractional coordinate along cell vector k
    s = xp.sum(coord[:, :, None, :] * c[:, None, :, :], axis=-1) / vol[:, None, None]
    return xp.floor(s)


def _xp_gather_types(xp: Any, at: Any, idx: Any) -> Any:
    """at[f, idx[f, i, k]] for types at (nf, nat) and in-range indices idx (nf, nat, k)."""
    nf, nat, k = idx.shape
    flat = xp.take_along_axis(at, xp.reshape(idx, (nf, nat * k)), axis=1)
    return xp.reshape(flat, (nf, nat, k))


def build_neighbor_list_xp(
    coord: Any,
    atype: Any,
    box: Any,
    rcut: float,
    sel: Sequence[int],
    mixed_types: bool,
    images: Any,
) -> tuple[Any, Any]:
    """The neighbor list of :func:`build_neighbor_list` in any array-API namespace, static shapes.

    Brute force over atoms x ``images`` (n_img, 3) integer shifts (from :func:`image_shifts`;
    lexicographic order makes ties break by (j, S)). ``coord`` (nf, nat, 3) float, ``atype``
    (nat,) or (nf, nat) int, ``box`` (nf, 3, 3) or None. Returns ``(nlist (nf, nat, Nsel),
    shift (nf, nat, Nsel, 3))`` in the namespace's default index dtype. No value-dependent Python
    branching, no in-place writes, no overflow warning (it cannot inspect values). Memory is
    O(nf * nat^2 * n_img): meant for exported inference graphs, not for large systems.
    """
    rcut, sel_t = _check_config(rcut, sel)
    xp = array_namespace(coord)
    dev = xp_device(coord)
    nf, nat = coord.shape[0], coord.shape[1]
    nsel = sum(sel_t)
    atype = xp.asarray(atype, device=dev)
    at = xp.broadcast_to(xp.reshape(atype, (-1, nat)), (nf, nat))
    if box is None:
        img = xp.zeros((1, 3), dtype=coord.dtype, device=dev)
        w = xp.zeros((nf, nat, 3), dtype=coord.dtype, device=dev)
    else:
        box = xp.reshape(box, (nf, 3, 3))
        img = xp.astype(xp.asarray(images, device=dev), coord.dtype)
        w = _xp_wrap_offsets(xp, coord, box)
    n_img = img.shape[0]
    # total shift S[f, i, j, s] = img[s] - w[f, j] + w[f, i]  (relative to the given coordinates)
    shift = img[None, None, None, :, :] - w[:, None, :, None, :] + w[:, :, None, None, :]
    r = coord[:, None, :, None, :] - coord[:, :, None, None, :]
    if box is not None:
        sv = (
            shift[..., 0:1] * box[:, None, None, None, 0, :]
            + shift[..., 1:2] * box[:, None, None, None, 1, :]
        ) + shift[..., 2:3] * box[:, None, None, None, 2, :]
        r = r + sv
    d2 = r[..., 0] * r[..., 0] + r[..., 1] * r[..., 1] + r[..., 2] * r[..., 2]
    ar = xp.arange(nat, device=dev)
    self_pair = (ar[:, None, None] == ar[None, :, None]) & xp.all(img == 0, axis=-1)[None, None, :]
    real = at >= 0
    ok = (
        real[:, :, None, None]
        & real[:, None, :, None]
        & ~self_pair[None, ...]
        & (d2 <= rcut * rcut)
    )
    key = xp.reshape(xp.where(ok, d2, xp.inf), (nf, nat, nat * n_img))
    shift = xp.reshape(shift, (nf, nat, nat * n_img, 3))
    ncand = nat * n_img
    if ncand < nsel:
        pad = xp.full((nf, nat, nsel - ncand), xp.inf, dtype=key.dtype, device=dev)
        key = xp.concat([key, pad], axis=-1)
    order = xp.argsort(key, axis=-1, stable=True)[..., :nsel]
    valid = xp.isfinite(xp.take_along_axis(key, order, axis=-1))
    cand = xp.where(valid, order, 0)
    nlist = xp.where(valid, cand // n_img, -1)
    svals = xp.stack([xp.take_along_axis(shift[..., c], cand, axis=-1) for c in range(3)], axis=-1)
    svals = xp.where(valid[..., None], svals, 0)
    if not mixed_types:
        nlist, svals = _xp_split_types(xp, nlist, svals, at, sel_t)
    return nlist, xp.astype(svals, nlist.dtype)


def _xp_split_types(
    xp: Any, nlist: Any, shift: Any, at: Any, sel: tuple[int, ...]
) -> tuple[Any, Any]:
    """Per-type blocks (mixed_types=False) of a distance-sorted list by stable sorts, no scatter."""
    valid = nlist >= 0
    tj = xp.where(valid, _xp_gather_types(xp, at, xp.where(valid, nlist, 0)), -1)
    blocks_n, blocks_s = [], []
    for t, width in enumerate(sel):
        mine = tj == t
        rank = xp.argsort(xp.astype(~mine, xp.int8), axis=-1, stable=True)[..., :width]
        keep = xp.take_along_axis(mine, rank, axis=-1)
        blocks_n.append(xp.where(keep, xp.take_along_axis(nlist, rank, axis=-1), -1))
        sh = xp.stack([xp.take_along_axis(shift[..., c], rank, axis=-1) for c in range(3)], axis=-1)
        blocks_s.append(xp.where(keep[..., None], sh, 0))
    return xp.concat(blocks_n, axis=-1), xp.concat(blocks_s, axis=-2)


def fold_pair_exclusion(
    nlist: Any,
    shift: Any,
    atype: Any,
    pairs: Sequence[Sequence[int]],
    ntypes: int,
    compact: bool,
) -> tuple[Any, Any]:
    """Model-level `pair_exclude_types` (symmetric) folded into a list, in any array namespace.

    Slots of excluded (center type, neighbor type) pairs become empty (-1, zero shift), in place
    (spec §2.3-5: se_e2_a, DPA-1); with `compact` the empty slots of every row then move to its
    end, the real ones keeping their order (spec §2.3-6: the distance-sorted lists DPA-2/DPA-3
    need). `nlist` (nf, nat, nsel), `shift` (nf, nat, nsel, 3), `atype` (nat,). Idempotent."""
    if not pairs:
        return nlist, shift
    xp = array_namespace(nlist)
    table = np.zeros((ntypes, ntypes), dtype=bool)
    for a, b in pairs:
        table[a, b] = table[b, a] = True
    real = nlist >= 0
    safe = xp.where(real, nlist, xp.zeros_like(nlist))
    atype = xp.asarray(atype, device=xp_device(nlist))
    nbr = xp.reshape(xp.take(atype, xp.reshape(safe, (-1,)), axis=0), nlist.shape)
    pair = atype[None, :, None] * ntypes + nbr
    flat_table = xp.asarray(table.reshape(-1), device=xp_device(nlist))
    drop = real & xp.reshape(xp.take(flat_table, xp.reshape(pair, (-1,)), axis=0), nlist.shape)
    nlist = xp.where(drop, xp.full_like(nlist, -1), nlist)
    if compact:
        order = xp.argsort(xp.astype(nlist < 0, xp.int8), axis=-1, stable=True)
        nlist = xp.take_along_axis(nlist, order, axis=-1)
        shift = xp.take_along_axis(shift, order[..., None], axis=-2)
    return nlist, xp.where(nlist[..., None] >= 0, shift, xp.zeros_like(shift))


def wrapped_positions(coord: np.ndarray, box: np.ndarray | None) -> np.ndarray:
    """Coordinates (nf, nat, 3) wrapped into their cell (spec §2.1); unchanged without a box."""
    if box is None:
        return coord
    return np.stack([_wrap(coord[f], box[f])[2] for f in range(coord.shape[0])])
