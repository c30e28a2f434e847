"""DPA-1 on a neighbor list cut to its widest row plus one empty slot gives the full-width numbers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from dpa.dpmodel.descriptor import dpa1
from dpa.dpmodel.descriptor.common import Edges
from dpa.dpmodel.model import edge_vectors, neighbor_spec
from dpa.io import dp
from dpa.neighbor import build_neighbor_list
from dpa.potential import slot_plan

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "deepmd"


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


@pytest.mark.parametrize(
    "name", ["dpa1_concat_f64", "dpa1_strip_f64", "dpa1_concatsmoothtos_f64", "se_atten_v2_f64"]
)
def test_trimmed_list_gives_full_width_numbers(name):
    desc = _with_random_stats(name)
    spec = neighbor_spec(desc)
    assert spec.trimmable and spec.keep_empty_slot
    ref = np.load(FIXTURES / f"{name}.npz")
    coord, atype, box = ref["water_coord"], ref["water_atype"], ref["water_box"]
    nl = build_neighbor_list(coord, atype, box, spec.rcut, spec.sel, True)
    full = dpa1.forward(
        desc, Edges(edge_vectors(coord, box, nl.nlist, nl.shift), nl.nlist, atype, atype)
    )
    nlist, shift, _ = slot_plan(spec, coord, box, nl.nlist, nl.shift)
    assert nlist.shape[-1] < nl.nlist.shape[-1]  # really cut
    assert (nlist[..., -1] < 0).all()  # the stand-in slot is empty in every row
    cut = dpa1.forward(desc, Edges(edge_vectors(coord, box, nlist, shift), nlist, atype, atype))
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
