"""Neighbor lists (dpa.neighbor) against an explicit ghost-atom brute-force reference (spec §2.2-2.3)."""

from __future__ import annotations

import itertools
import warnings

import numpy as np
import pytest
from builders import npy_frames

import dpa.neighbor
from dpa.errors import DataError
from dpa.neighbor import (
    NeighborOverflowWarning,
    VerletPairs,
    build_neighbor_list,
    build_neighbor_list_xp,
    image_shifts,
    neighbor_stat,
)

# ---------------------------------------------------------------------------------------------
# reference: wrap, explicit ghost atoms, sort, truncate, split (written straight from the spec)
# ---------------------------------------------------------------------------------------------


def _ghosts(x, box, rcut):
    """Wrapped coordinates, extended coordinates, owner index and integer shift of each ghost."""
    nat = len(x)
    if box is None:
        return x, np.zeros((nat, 3)), x, np.arange(nat), np.zeros((nat, 3), dtype=int)
    frac = x @ np.linalg.inv(box)
    w = np.floor(frac)
    xw = (frac - w) @ box
    vol = abs(np.linalg.det(box))
    faces = [np.cross(box[1], box[2]), np.cross(box[2], box[0]), np.cross(box[0], box[1])]
    nb = [int(np.ceil(rcut / (vol / np.linalg.norm(c)))) for c in faces]
    shifts = np.array(list(itertools.product(*[range(-n, n + 1) for n in nb])))
    shifts = shifts[np.argsort(np.linalg.norm(shifts, axis=1), kind="stable")]
    ext = np.concatenate([xw + s @ box for s in shifts])
    owner = np.tile(np.arange(nat), len(shifts))
    ext_shift = np.repeat(shifts, nat, axis=0)
    return xw, w, ext, owner, ext_shift


def reference(coord, atype, box, rcut, sel, mixed):
    """Per frame and atom: the slots as a list of (j, S, d, ghost vector) or None (empty).

    S is the ghost's image shift re-expressed relative to the unwrapped input coordinates.
    """
    nsel = sum(sel)
    out = []
    for f in range(coord.shape[0]):
        xw, w, ext, owner, ext_shift = _ghosts(coord[f], None if box is None else box[f], rcut)
        rows = []
        for i in range(len(xw)):
            if atype[i] < 0:
                rows.append([None] * nsel)
                continue
            d = np.linalg.norm(ext - xw[i], axis=1)
            d[atype[owner] < 0] = np.inf
            d[i] = -1.0  # self with zero shift (ghost index i) ranks first ...
            order = np.argsort(d, kind="stable")[1 : nsel + 1]  # ... and is removed
            order = order[d[order] <= rcut]
            entries = [
                (
                    int(owner[a]),
                    tuple(int(v) for v in ext_shift[a] - w[owner[a]] + w[i]),
                    d[a],
                    ext[a] - xw[i],
                )
                for a in order
            ]
            if mixed:
                slots = entries + [None] * (nsel - len(entries))
            else:
                slots = []
                for t, width in enumerate(sel):
                    block = [e for e in entries if atype[e[0]] == t][:width]
                    slots += block + [None] * (width - len(block))
            rows.append(slots)
        out.append(rows)
    return out


def _vectors(coord, box, nlist, shift):
    """r_ij = x[j] - x[i] + S @ box for every slot (nf, nat, nsel, 3), NaN on empty slots."""
    idx = np.maximum(nlist, 0)
    xj = np.take_along_axis(coord[:, None, :, :], idx[..., None], axis=2)
    r = xj - coord[:, :, None, :]
    if box is not None:
        r = r + np.einsum("fiks,fsc->fikc", shift.astype(float), box)
    return np.where((nlist >= 0)[..., None], r, np.nan)


def assert_matches(nl, coord, atype, box, rcut, sel, mixed):
    """Slot occupancy, sorted distances, (j, S) sets and pair vectors agree with the reference."""
    ref = reference(coord, atype, box, rcut, sel, mixed)
    r = _vectors(coord, box, nl.nlist, nl.shift)
    d = np.linalg.norm(r, axis=-1)
    assert nl.nlist.shape == (coord.shape[0], coord.shape[1], sum(sel))
    assert nl.shift.shape == nl.nlist.shape + (3,)
    assert (nl.shift[nl.nlist < 0] == 0).all()
    for f, rows in enumerate(ref):
        for i, slots in enumerate(rows):
            filled = np.array([e is not None for e in slots])
            np.testing.assert_array_equal(
                nl.nlist[f, i] >= 0, filled, err_msg=f"frame {f} atom {i}"
            )
            ref_d = np.array([e[2] for e in slots if e is not None])
            np.testing.assert_allclose(d[f, i][filled], ref_d, rtol=0, atol=1e-10)
            pairs = zip(nl.nlist[f, i], nl.shift[f, i], strict=True)
            got = {(int(j), tuple(int(v) for v in s)) for j, s in pairs if j >= 0}
            assert got == {(e[0], e[1]) for e in slots if e is not None}, (f, i)
            # the vectors equal the reference ghost vectors (as multisets: exact ties may swap)
            ref_r = np.array([e[3] for e in slots if e is not None]).reshape(-1, 3)
            np.testing.assert_allclose(
                _canonical_order(r[f, i][filled]), _canonical_order(ref_r), atol=1e-9
            )


def _canonical_order(vectors):
    """Vectors (n, 3) sorted by (rounded length, rounded components): a tie-free order."""
    v = np.asarray(vectors, dtype=float).reshape(-1, 3)
    keys = np.round(np.column_stack([np.linalg.norm(v, axis=1), v]), 6)
    return v[np.lexsort(keys.T[::-1])]


# ---------------------------------------------------------------------------------------------
# systems
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def water():
    return npy_frames("water/data_0", 1, type_map=None)


@pytest.fixture(scope="module")
def molecule():
    return npy_frames("molecules_nopbc/C1H4O2", 3, type_map=None)


def small_triclinic():
    """A 4-atom strongly skewed cell, and an rcut of 2.6x its smallest face distance."""
    box = np.array([[3.0, 0.0, 0.0], [1.7, 2.6, 0.0], [-1.1, 0.9, 2.4]])
    frac = np.array([[0.1, 0.2, 0.3], [0.6, 0.1, 0.9], [0.35, 0.75, 0.5], [0.9, 0.55, 0.05]])
    coord = (frac @ box)[None]
    vol = abs(np.linalg.det(box))
    dmin = min(vol / np.linalg.norm(np.cross(box[a], box[b])) for a, b in [(1, 2), (2, 0), (0, 1)])
    return coord, np.array([0, 1, 1, 0]), box[None], 2.6 * dmin


def _quiet(fn, *args, **kw):
    """Call fn with neighbor-overflow warnings silenced."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NeighborOverflowWarning)
        return fn(*args, **kw)


# ---------------------------------------------------------------------------------------------
# tests
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["auto", "cell", "brute"])
@pytest.mark.parametrize(
    "mixed, sel", [(True, [120]), (True, [35]), (False, [46, 92]), (False, [20, 30])]
)
def test_water_matches_reference(water, method, mixed, sel):
    coord, atype, box = water
    nl = _quiet(build_neighbor_list, coord, atype, box, 6.0, sel, mixed, method=method)
    assert_matches(nl, coord, atype, box, 6.0, sel, mixed)


def test_cell_and_brute_identical_on_random_systems():
    rng = np.random.default_rng(0)
    box = np.array([[14.0, 0.0, 0.0], [4.0, 13.0, 0.0], [-3.0, 2.5, 15.0]])
    coord = (rng.random((2, 400, 3)) @ box) + rng.integers(-3, 4, (2, 400, 3)) @ box
    atype = rng.integers(0, 3, 400)
    for b in (box[None].repeat(2, 0), None):
        for mixed, sel in [(True, [60]), (False, [20, 20, 20])]:
            a = _quiet(build_neighbor_list, coord, atype, b, 4.0, sel, mixed, method="cell")
            c = _quiet(build_neighbor_list, coord, atype, b, 4.0, sel, mixed, method="brute")
            np.testing.assert_array_equal(a.nlist, c.nlist)
            np.testing.assert_array_equal(a.shift, c.shift)
            np.testing.assert_array_equal(a.nnei_type, c.nnei_type)


@pytest.mark.parametrize("method", ["auto", "cell", "brute"])
@pytest.mark.parametrize("mixed", [True, False])
def test_small_skewed_cell_sees_many_images(method, mixed):
    coord, atype, box, rcut = small_triclinic()
    sel = [400] if mixed else [200, 200]
    nl = build_neighbor_list(coord, atype, box, rcut, sel, mixed, method=method)
    assert_matches(nl, coord, atype, box, rcut, sel, mixed)
    # atom 0 sees images of itself and each other atom through several shifts
    row = nl.nlist[0, 0]
    assert (row == 0).sum() >= 2
    assert all((row == j).sum() > 1 for j in range(4))


@pytest.mark.parametrize("method", ["cell", "brute", "xp"])
def test_cutoff_is_inclusive(method):
    coord = np.array([[[0.5, 0.5, 0.5], [2.5, 0.5, 0.5], [0.5, 3.5, 0.5]]])
    box = np.diag([8.0, 6.0, 10.0])[None]  # atom 2 is 3.0 from atom 0 directly and via the image
    for rcut, expect in [(2.0, {(1, 0)}), (1.999, set()), (3.0, {(1, 0), (2, 0), (2, -1)})]:
        if method == "xp":
            img = image_shifts(box, rcut)
            nl, sh = build_neighbor_list_xp(coord, [0, 0, 0], box, rcut, [8], True, img)
        else:
            res = build_neighbor_list(coord, [0, 0, 0], box, rcut, [8], True, method=method)
            nl, sh = res.nlist, res.shift
        got = {(int(j), int(s[1])) for j, s in zip(nl[0, 0], sh[0, 0], strict=True) if j >= 0}
        assert got == expect, rcut


def test_brute_force_in_image_chunks(monkeypatch):
    coord, atype, box, rcut = small_triclinic()
    whole = build_neighbor_list(coord, atype, box, rcut, [400], True, method="brute")
    monkeypatch.setattr(dpa.neighbor, "_BRUTE_CHUNK", 40)  # 2 images per chunk
    chunked = build_neighbor_list(coord, atype, box, rcut, [400], True, method="brute")
    np.testing.assert_array_equal(chunked.nlist, whole.nlist)
    np.testing.assert_array_equal(chunked.shift, whole.shift)


def test_types_per_frame(water):
    coord, atype, box = water
    coord2 = np.concatenate([coord, coord + 0.3])
    atype2 = np.stack([atype, atype[::-1]])
    nl = build_neighbor_list(coord2, atype2, np.concatenate([box, box]), 6.0, [46, 92], False)
    for f in range(2):
        one = build_neighbor_list(coord2[f : f + 1], atype2[f], box, 6.0, [46, 92], False)
        np.testing.assert_array_equal(nl.nlist[f], one.nlist[0])
        np.testing.assert_array_equal(nl.shift[f], one.shift[0])


def test_molecule_without_box(molecule):
    coord, atype, _ = molecule
    for rcut, mixed, sel in [(6.0, True, [6]), (2.0, True, [4]), (6.0, False, [1, 4, 2])]:
        nl = _quiet(build_neighbor_list, coord, atype, None, rcut, sel, mixed)
        assert (nl.shift == 0).all()
        assert_matches(nl, coord, atype, None, rcut, sel, mixed)
        nl_cell = _quiet(build_neighbor_list, coord, atype, None, rcut, sel, mixed, method="cell")
        np.testing.assert_array_equal(nl_cell.nlist, nl.nlist)


def test_coordinates_outside_the_cell(water):
    coord, atype, box = water
    rng = np.random.default_rng(1)
    moved = coord + rng.integers(-5, 6, coord.shape) @ box[0] + 0.5 * box[0, 0]
    base = build_neighbor_list(coord, atype, box, 6.0, [120], True)
    nl = build_neighbor_list(moved, atype, box, 6.0, [120], True)
    np.testing.assert_array_equal(nl.nlist, base.nlist)
    r0 = _vectors(coord, box, base.nlist, base.shift)
    r1 = _vectors(moved, box, nl.nlist, nl.shift)
    np.testing.assert_allclose(r1, r0, atol=1e-9)
    assert_matches(nl, moved, atype, box, 6.0, [120], True)


@pytest.mark.parametrize("mixed, sel", [(True, [120]), (False, [46, 92])])
def test_virtual_atoms(water, mixed, sel):
    coord, atype, box = water
    atype = atype.copy()
    virtual = [0, 5, 100, 191]
    atype[virtual] = -1
    coord = coord.copy()
    coord[0, 5] = np.nan  # a virtual atom's coordinates are never used
    nl = build_neighbor_list(coord, atype, box, 6.0, sel, mixed)
    assert (nl.nlist[:, virtual] == -1).all()
    assert not np.isin(nl.nlist, virtual).any()
    assert (nl.nnei_type[:, virtual] == 0).all()
    assert_matches(nl, coord, atype, box, 6.0, sel, mixed)


def test_overflow_warns_once_with_details(water):
    coord, atype, box = water
    with pytest.warns(NeighborOverflowWarning) as rec:
        nl = build_neighbor_list(coord, atype, box, 6.0, [60], True)
    assert len(rec) == 1
    msg = str(rec[0].message)
    i = int(np.argmax(nl.nnei[0]))
    assert f"atom {i} of frame 0" in msg and f"{nl.nnei[0, i]} neighbors" in msg
    assert "sel=[60]" in msg and "Raise `sel`" in msg
    assert nl.max_nnei[0] > 60 and (nl.nlist[0] >= 0).all()


def test_overflow_of_one_type_warns(water):
    coord, atype, box = water
    nmax = build_neighbor_list(coord, atype, box, 6.0, [200], True).max_nnei_type[0]
    sel = [int(nmax[0]) - 1, int(nmax[1]) + 50]  # total fits, type 0 does not
    with pytest.warns(NeighborOverflowWarning, match="sel=\\["):
        nl = build_neighbor_list(coord, atype, box, 6.0, sel, False)
    assert_matches(nl, coord, atype, box, 6.0, sel, False)


def test_no_warning_when_sel_suffices(water):
    coord, atype, box = water
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        nl = build_neighbor_list(coord, atype, box, 6.0, [46, 92], False)
    assert (nl.max_nnei_type[0] <= [46, 92]).all()


def test_ties_break_by_index_then_shift():
    # simple cubic lattice of 2 atoms: every shell is full of exact ties
    box = np.eye(3)[None] * 2.0
    coord = np.array([[[0.0, 0.0, 0.0], [1.0, 1.0, 1.0]]])
    atype = np.array([0, 0])
    lists = [
        _quiet(build_neighbor_list, coord, atype, box, 4.1, [30], True, method=m)
        for m in ("cell", "brute")
    ]
    img = image_shifts(box, 4.1)
    xp_nl, xp_sh = build_neighbor_list_xp(coord, atype, box, 4.1, [30], True, img)
    for nl, sh in [(lists[0].nlist, lists[0].shift), (lists[1].nlist, lists[1].shift)]:
        np.testing.assert_array_equal(nl, xp_nl)
        np.testing.assert_array_equal(sh, xp_sh)
    d = np.round(np.linalg.norm(_vectors(coord, box, xp_nl, xp_sh), axis=-1), 9)
    for i in range(2):
        keys = [(d[0, i, k], xp_nl[0, i, k], *xp_sh[0, i, k]) for k in range(30)]
        assert keys == sorted(keys)


@pytest.mark.parametrize("bad", ["singular", "nan_coord", "inf_box", "type_vs_sel", "shape"])
def test_bad_input_raises_data_error(water, bad):
    coord, atype, box = water
    coord = np.concatenate([coord, coord])
    box = np.concatenate([box, box])
    sel, mixed, match = [120], True, ""
    if bad == "singular":
        box[1, 2] = box[1, 0] + box[1, 1]
        match = "frame 1 is singular"
    elif bad == "nan_coord":
        coord[1, 7, 2] = np.nan
        match = "atom 7 in frame 1"
    elif bad == "inf_box":
        box[0, 0, 0] = np.inf
        match = "frame 0"
    elif bad == "type_vs_sel":
        sel, mixed, match = [120], False, "type 1"
    else:
        coord = coord[:, :10]
        match = "coord must have shape"
    with pytest.raises(DataError, match=match):
        build_neighbor_list(coord, atype, box, 6.0, sel, mixed)


def _xp_converter(name):
    """Function turning a NumPy array into an array of the named library (skip if absent)."""
    if name == "numpy":
        return np.asarray
    if name == "array_api_strict":
        return pytest.importorskip("array_api_strict").asarray
    if name == "torch":
        return pytest.importorskip("torch").asarray
    return pytest.importorskip("jax.numpy").asarray


def _xp_cases(water, molecule):
    """(coord, atype, box, rcut, sel, mixed) systems for the array-API builder."""
    coord, atype, box = water
    coord = coord[:, ::2] + 0.7 * box[0, 1] - 1.3 * box[0, 2]  # 96 atoms, outside the cell
    atype = atype[::2]
    tri = small_triclinic()
    mol = (molecule[0][:1], molecule[1], None, 3.0)
    return [
        (coord, atype, box, 6.0, [60], True),
        (coord, atype, box, 6.0, [10, 15], False),
        (*tri, [400], True),
        (*tri, [150, 150], False),
        (*mol, [6], True),
        (*mol, [1, 3, 2], False),
    ]


@pytest.mark.parametrize("backend", ["numpy", "array_api_strict", "torch"])
def test_xp_builder_agrees_with_numpy(water, molecule, backend):
    conv = _xp_converter(backend)
    for c, t, b, rcut, sel, mixed in _xp_cases(water, molecule):
        ref = _quiet(build_neighbor_list, c, t, b, rcut, sel, mixed)
        img = image_shifts(b, rcut)
        bx = None if b is None else conv(b)
        nl, sh = build_neighbor_list_xp(conv(c), conv(t), bx, rcut, sel, mixed, img)
        np.testing.assert_array_equal(np.asarray(nl), ref.nlist)
        np.testing.assert_array_equal(np.asarray(sh), ref.shift)


@pytest.mark.parametrize("case", [1, 2, 4])
def test_xp_builder_under_jax_jit(water, molecule, case):
    jax = pytest.importorskip("jax")
    c, t, b, rcut, sel, mixed = _xp_cases(water, molecule)[case]
    ref = _quiet(build_neighbor_list, c, t, b, rcut, sel, mixed)
    img = image_shifts(b, rcut)
    with jax.enable_x64(True):
        fn = jax.jit(lambda c, t, b: build_neighbor_list_xp(c, t, b, rcut, sel, mixed, img))
        nl, sh = fn(c, t, b)
        np.testing.assert_array_equal(np.asarray(nl), ref.nlist)
        np.testing.assert_array_equal(np.asarray(sh), ref.shift)


def test_image_shifts():
    box = np.diag([10.0, 4.0, 2.5])
    img = image_shifts(box, 5.0)
    assert img.shape == (3 * 5 * 5, 3) and img.dtype == np.int64
    assert [tuple(v) for v in img] == sorted(tuple(v) for v in img)
    assert np.abs(img).max(axis=0).tolist() == [1, 2, 2]
    np.testing.assert_array_equal(image_shifts(None, 5.0), np.zeros((1, 3)))


def test_neighbor_stat(water, molecule):
    coord, atype, box = water
    ref = reference(coord, atype, box, 6.0, [500], True)
    dmin, nmax = neighbor_stat(coord, atype, box, 6.0, 2)
    ref_d = min(e[2] for row in ref[0] for e in row if e)
    np.testing.assert_allclose(dmin, ref_d, rtol=1e-12)
    ref_n = [max(sum(1 for e in row if e and atype[e[0]] == t) for row in ref[0]) for t in (0, 1)]
    assert nmax.tolist() == ref_n
    c, t, _ = molecule
    dmin, nmax = neighbor_stat(c, t, None, 100.0, 3)
    pair = np.linalg.norm(c[:, :, None] - c[:, None, :], axis=-1)
    np.testing.assert_allclose(dmin, pair[pair > 0].min(), rtol=1e-12)
    assert nmax.tolist() == np.bincount(t, minlength=3).tolist()  # every type has other-type atoms
    dmin, nmax = neighbor_stat(c, t, None, 0.5, 3)
    assert dmin == np.inf and (nmax == 0).all()


@pytest.mark.parametrize("mixed, sel", [(False, [46, 92]), (True, [120])])
def test_verlet_pairs_give_fresh_lists_along_a_trajectory(water, mixed, sel):
    """Cached candidates give the lists a fresh search gives, step after step; atoms that moved
    past skin/2 start a new search with the skin; a new box or other atoms a plain search."""
    coord, atype, box = water
    rng = np.random.default_rng(3)
    cache = VerletPairs(skin=0.6)
    x = coord[:1].copy()
    for _ in range(12):  # random walk, 0.08 Å per step and atom
        x = x + rng.normal(scale=0.08 / np.sqrt(3), size=x.shape)
        cached = build_neighbor_list(x, atype, box, 6.0, sel, mixed, pair_cache=cache)
        fresh = build_neighbor_list(x, atype, box, 6.0, sel, mixed)
        np.testing.assert_array_equal(cached.nlist, fresh.nlist)
        np.testing.assert_array_equal(cached.shift, fresh.shift)
        np.testing.assert_array_equal(cached.nnei_type, fresh.nnei_type)
    # a plain search, one with the skin, then reuse until atoms have moved far enough
    assert 3 <= cache.searches < 12
    searches = cache.searches
    build_neighbor_list(x, atype, box, 6.0, sel, mixed, pair_cache=cache)
    assert cache.searches == searches  # same frame again: no search
    build_neighbor_list(x, atype, box * 1.01, 6.0, sel, mixed, pair_cache=cache)
    assert cache.searches == searches + 1  # another box: a plain search
    x[0, 5] += 0.31  # the same box again, and one atom jumped past skin/2: a plain search
    moved = build_neighbor_list(x, atype, box * 1.01, 6.0, sel, mixed, pair_cache=cache)
    assert cache.searches == searches + 2
    fresh = build_neighbor_list(x, atype, box * 1.01, 6.0, sel, mixed)
    np.testing.assert_array_equal(moved.nlist, fresh.nlist)
    virtual = atype.copy()
    virtual[7] = -1  # other atoms
    build_neighbor_list(x, virtual, box * 1.01, 6.0, sel, mixed, pair_cache=cache)
    assert cache.searches == searches + 3


def test_verlet_pairs_search_far_frames_plainly(water, monkeypatch):
    """Frames far from each other (a trajectory file read frame by frame) get plain searches at
    rcut; candidates within rcut + skin are only gathered once the atoms move little."""
    coord, atype, box = water
    radii = []
    search = dpa.neighbor._frame_pairs

    def recording(x, box_, rcut, method):
        radii.append(rcut)
        return search(x, box_, rcut, method)

    monkeypatch.setattr(dpa.neighbor, "_frame_pairs", recording)
    rng = np.random.default_rng(5)
    cache = VerletPairs(skin=1.0)
    for _ in range(3):  # every atom 0.6-1 Å away from where it was
        step = rng.normal(size=coord[:1].shape)
        x = coord[:1] + step / np.linalg.norm(step, axis=-1, keepdims=True) * rng.uniform(0.6, 1.0)
        cached = build_neighbor_list(x, atype, box, 6.0, [46, 92], False, pair_cache=cache)
        np.testing.assert_array_equal(
            cached.nlist, _quiet(build_neighbor_list, x, atype, box, 6.0, [46, 92], False).nlist
        )
    assert radii[:6:2] == [6.0, 6.0, 6.0]  # cached calls (even entries) searched at rcut only
    x = x + 0.01  # a small step: now the skin pays
    build_neighbor_list(x, atype, box, 6.0, [46, 92], False, pair_cache=cache)
    assert radii[-1] == 7.0
