"""DPA-1 and se_e2_a on neighbor lists cut to their widest row (per type block for se_e2_a)
plus one empty slot give the full-width numbers; cut widths never shrink under a `floor`."""

from __future__ import annotations

import numpy as np
import pytest
from builders import DEEPMD_FIXTURES as FIXTURES
from builders import neighbor_edges

from dpa.dpmodel.descriptor.common import TYPE_BLOCKS, Edges
from dpa.dpmodel.descriptor.dpa1 import descriptor as dpa1
from dpa.dpmodel.model import descriptor_forward, edge_vectors, neighbor_spec
from dpa.formats import dp
from dpa.neighbor import build_neighbor_list
from dpa.potential import slot_plan


def _with_random_stats(name: str) -> dict:
    """The fixture's descriptor with davg/dstd random per type (equal across slots, as
    statistics make them), so empty slots carry non-zero phantom rows."""
    desc = dp.read(FIXTURES / f"{name}.dp")["model"]["descriptor"]
    rng = np.random.default_rng(11)
    var = desc["@variables"]
    ntypes, nsel, _ = var["davg"].shape
    var["davg"] = np.repeat(rng.normal(size=(ntypes, 1, 4)), nsel, axis=1)
    var["dstd"] = np.repeat(rng.uniform(0.5, 1.5, size=(ntypes, 1, 4)), nsel, axis=1)
    return desc


def _full_and_cut(name: str):
    """The fixture's descriptor (random statistics) on its water frame: spec, full-width list,
    `slot_plan`'s cut list and hints, and the descriptor from each list."""
    desc = _with_random_stats(name)
    spec = neighbor_spec(desc)
    ref = np.load(FIXTURES / f"{name}.npz")
    coord, atype, box = ref["water_coord"], ref["water_atype"], ref["water_box"]
    full_edges, nl = neighbor_edges(coord, atype, box, spec.rcut, spec.sel, spec.mixed_types)
    full = descriptor_forward(desc, full_edges)
    nlist, shift, hints = slot_plan(spec, coord, box, nl.nlist, nl.shift)
    edges = Edges(edge_vectors(coord, box, nlist, shift), nlist, atype, atype, hints)
    return spec, nl.nlist, nlist, hints, full, descriptor_forward(desc, edges)


@pytest.mark.parametrize(
    "name", ["dpa1_concat_f64", "dpa1_strip_f64", "dpa1_concatsmoothtos_f64", "se_atten_v2_f64"]
)
def test_trimmed_list_gives_full_width_numbers(name):
    spec, full_list, nlist, _, full, cut = _full_and_cut(name)
    assert spec.trimmable and spec.keep_empty_slot
    assert nlist.shape[-1] < full_list.shape[-1]  # really cut
    assert (nlist[..., -1] < 0).all()  # the stand-in slot is empty in every row
    np.testing.assert_allclose(cut, full, rtol=0, atol=1e-12 * np.abs(full).max())


def test_not_trimmed_when_empty_slots_differ():
    """Slot-dependent statistics, float32 and pair exclusion keep the full width."""
    desc = _with_random_stats("dpa1_concat_f64")
    desc["@variables"]["davg"][:, -1, 0] += 0.1
    assert not neighbor_spec(desc).trimmable
    assert not neighbor_spec(
        dp.read(FIXTURES / "dpa1_concat_f32.dp")["model"]["descriptor"]
    ).trimmable
    assert not neighbor_spec(
        dp.read(FIXTURES / "dpa1_stripexcl_f64.dp")["model"]["descriptor"]
    ).trimmable


def test_cut_keeps_real_slots_behind_holes():
    """Model-level pair exclusion leaves holes in place: the cut goes past the last real slot."""
    spec = neighbor_spec(_with_random_stats("dpa1_concat_f64"))
    nlist = -np.ones((1, 2, 120), dtype=np.int64)
    nlist[0, 0, [0, 1, 5]] = [1, 1, 1]  # two real slots, a hole, a real one at slot 5
    nlist[0, 1, [0]] = 0
    shift = np.zeros((1, 2, 120, 3), dtype=np.int64)
    coord = np.zeros((1, 2, 3))
    cut, _, _ = slot_plan(spec, coord, None, nlist, shift)
    assert cut.shape[-1] == 7  # slots 0..5 and one empty stand-in
    np.testing.assert_array_equal(cut, nlist[..., :7])


@pytest.mark.parametrize("name", ["se_e2_a_twoside_f64", "se_e2_a_tos_f64"])
def test_se_e2_a_type_blocks_cut_give_full_width_numbers(name):
    spec, full_list, nlist, hints, full, cut = _full_and_cut(name)
    assert spec.trimmable and not spec.mixed_types
    widths = dict(hints)[TYPE_BLOCKS]
    assert all(w < n for w, n in zip(widths, spec.sel, strict=True))  # every block really cut
    ends = np.cumsum(widths)
    assert (nlist[..., ends - 1] < 0).all()  # each block ends with a slot empty in every row
    starts = np.cumsum([0, *spec.sel[:-1]])
    for start, width, end in zip(starts, widths, ends, strict=True):  # blocks keep their slots
        np.testing.assert_array_equal(
            nlist[..., end - width : end], full_list[..., start : start + width]
        )
    np.testing.assert_allclose(cut, full, rtol=0, atol=1e-12 * np.abs(full).max())


def test_se_e2_a_not_cut_with_slot_statistics_or_exclusion():
    for name in ("se_e2_a_slotstats_f64", "se_e2_a_twoside_f32", "se_e2_a_twosideexcl_f64"):
        assert not neighbor_spec(dp.read(FIXTURES / f"{name}.dp")["model"]["descriptor"]).trimmable


def test_floor_keeps_widths_from_shrinking():
    """With a floor dict the cut widths (and hints) only grow: few shapes for a jit cache."""
    spec = neighbor_spec(_with_random_stats("se_e2_a_twoside_f64"))
    nlist = -np.ones((1, 3, sum(spec.sel)), dtype=np.int64)
    shift = np.zeros((*nlist.shape, 3), dtype=np.int64)
    coord = np.zeros((1, 3, 3))
    wide, narrow = nlist.copy(), nlist.copy()
    wide[0, 0, :10] = 1  # 10 type-0 neighbors
    wide[0, 1, spec.sel[0] : spec.sel[0] + 3] = 2  # 3 type-1 neighbors
    narrow[0, 0, :2] = 1
    floor: dict = {}
    _, _, hints = slot_plan(spec, coord, None, wide, shift, 4, floor)
    assert dict(hints)[TYPE_BLOCKS] == (12, 4, 4)  # 10 + 1 empty -> 12; 3 + 1 -> 4; 0 + 1 -> 4
    cut, _, hints = slot_plan(spec, coord, None, narrow, shift, 4, floor)
    assert dict(hints)[TYPE_BLOCKS] == (12, 4, 4) and cut.shape[-1] == 20
    _, _, hints = slot_plan(spec, coord, None, narrow, shift, 4)  # no floor: as narrow as can be
    assert dict(hints)[TYPE_BLOCKS] == (4, 4, 4)


def _torch_forward(desc: dict, edges: Edges) -> np.ndarray:
    """dpa1.forward on torch tensors (where rows are grouped by neighbor count)."""
    torch = pytest.importorskip("torch")
    import dpa.backends.torch.backend  # noqa: F401  (registers the torch grouping)

    as_t = lambda a: torch.as_tensor(np.asarray(a))  # noqa: E731
    tree = _as_torch(desc, as_t)
    out = descriptor_forward(
        tree,
        Edges(as_t(edges.rij), as_t(edges.nlist), as_t(edges.atype), edges.atype_host),
    )
    return out.numpy()


def _as_torch(tree, as_t):
    """The serialized tree with its NumPy arrays as torch tensors."""
    if isinstance(tree, dict):
        return {k: _as_torch(v, as_t) for k, v in tree.items()}
    if isinstance(tree, list):
        return [_as_torch(v, as_t) for v in tree]
    return as_t(tree) if isinstance(tree, np.ndarray) else tree


@pytest.mark.parametrize(
    "name", ["dpa1_concat_f64", "dpa1_strip_f64", "dpa1_concatsmoothtos_f64", "se_atten_v2_f64"]
)
def test_rows_grouped_by_neighbor_count_give_full_width_numbers(name):
    """Eager torch computes rows of similar neighbor counts together, each group cut to its own
    width plus an empty stand-in: the numbers of the full list, on four frames with holes."""
    from dpa.dpmodel.array_api import neighbor_groups

    torch = pytest.importorskip("torch")
    import dpa.backends.torch.backend  # noqa: F401

    desc = _with_random_stats(name)
    spec = neighbor_spec(desc)
    ref = np.load(FIXTURES / f"{name}.npz")
    coord, atype, box = ref["water_coord"], ref["water_atype"], ref["water_box"]
    rng = np.random.default_rng(5)
    coord = np.concatenate([coord, coord + rng.normal(scale=0.05, size=coord.shape)])  # 4 frames
    box = np.concatenate([box, box])
    nl = build_neighbor_list(coord, atype, box, spec.rcut, spec.sel, spec.mixed_types)
    nlist = nl.nlist.copy()
    nlist[0, 3, 1] = nlist[1, 7, 0] = -1  # holes before real slots (model pair exclusion)
    edges = Edges(edge_vectors(coord, box, nlist, nl.shift), nlist, atype, atype)
    extents = dpa1._extents(torch.as_tensor(nlist) >= 0)
    groups = neighbor_groups(extents, nlist.shape[-1])
    assert groups is not None and len(groups) > 1  # grouping really happens
    rows = np.sort(np.concatenate([index for index, _ in groups]))
    np.testing.assert_array_equal(rows, np.arange(nlist.shape[0] * nlist.shape[1]))
    assert max(w for _, w in groups) < nlist.shape[-1]
    full = descriptor_forward(desc, edges)
    grouped = _torch_forward(desc, edges)
    np.testing.assert_allclose(grouped, full, rtol=0, atol=1e-12 * np.abs(full).max())


def test_neighbor_groups_only_where_they_pay():
    """No groups for NumPy (the reference) nor for rows that all need the same width; groups
    cut to one past their widest row otherwise."""
    from dpa.dpmodel.array_api import neighbor_groups

    torch = pytest.importorskip("torch")
    import dpa.backends.torch.backend  # noqa: F401

    spread = np.array([80, 100, 81, 99, 79, 60, 62, 61])
    assert neighbor_groups(spread, 120) is None
    assert neighbor_groups(torch.full((50,), 120), 120) is None
    (same,) = neighbor_groups(torch.full((50,), 90), 120)  # one group, cut to 91 slots
    assert same[1] == 91 and np.array_equal(same[0], np.arange(50))
    groups = neighbor_groups(torch.as_tensor(spread), 120)
    assert groups is not None
    for index, width in groups:
        assert width == spread[index].max() + 1
    assert neighbor_groups(torch.as_tensor([119, 120, 3, 4]), 120)[-1][1] == 120


@pytest.mark.parametrize("name", ["dpa1_concat_f64", "se_atten_v2_f64"])
def test_atom_without_neighbors_gets_finite_rows(name):
    """An atom alone (all keys of its attention empty) gets the descriptor it has by itself,
    NaN-free, and leaves the other atoms' rows as they were."""
    desc = _with_random_stats(name)
    spec = neighbor_spec(desc)
    ref = np.load(FIXTURES / f"{name}.npz")
    coord, atype = ref["water_coord"][:1], ref["water_atype"]

    def descriptor(c, t):
        return descriptor_forward(
            desc, neighbor_edges(c, t, None, spec.rcut, spec.sel, spec.mixed_types)[0]
        )

    far = coord[:, :1] + 100.0
    both = descriptor(np.concatenate([coord, far], axis=1), np.concatenate([atype, atype[:1]]))
    assert np.isfinite(both).all()
    alone = descriptor(far, atype[:1])
    np.testing.assert_allclose(both[:, -1], alone[:, 0], rtol=0, atol=1e-14)
    np.testing.assert_allclose(both[:, :-1], descriptor(coord, atype), rtol=0, atol=1e-12)
