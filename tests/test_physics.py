"""Physics of the models (torch backend, float64, small random models with random davg):

forces = -dE/dx and virial = -dE/dε by central finite differences (spec §9); sums of atomic
energies and virials; invariance under rotation, translation and permutation; smoothness when a
neighbor crosses rcut; periodic images (shifting atoms by lattice vectors, 2x1x1 supercells).
"""

from __future__ import annotations

import functools

import numpy as np
import pytest
from builders import dpa1, se_e2_a

import dpa

pytest.importorskip("torch")

RCUT = 4.0
FIT = {"neuron": [8, 8]}
MODELS = {
    "se_e2_a": {"descriptor": se_e2_a([24, 32, 16], RCUT, rcut_smth=1.0), "fitting_net": FIT},
    # strip + smooth: smooth at rcut even with davg != 0 (empty slots do not depend on types)
    "dpa1_strip_smooth": {
        "descriptor": dpa1(
            64,
            RCUT,
            rcut_smth=1.0,
            attn_layer=2,
            tebd_input_mode="strip",
            smooth_type_embedding=True,
        ),
        "fitting_net": FIT,
    },
    # concat, not smooth: exact derivatives and invariances, but not smooth at rcut
    "dpa1_concat": {"descriptor": dpa1(64, RCUT), "fitting_net": FIT},
    # DPA-2 with three-body, smooth attention, every repformer update; davg on the radial part
    # only (physical statistics) keeps it smooth at every cutoff
    "dpa2": {
        "descriptor": {
            "type": "dpa2",
            "repinit": {
                "rcut": RCUT,
                "rcut_smth": 1.0,
                "nsel": 64,
                "neuron": [4, 8],
                "axis_neuron": 4,
                "tebd_dim": 4,
                "use_three_body": True,
                "three_body_rcut": 3.5,
                "three_body_rcut_smth": 2.5,
                "three_body_sel": 48,
                "three_body_neuron": [2, 4],
            },
            "repformer": {
                "rcut": 3.0,
                "rcut_smth": 2.0,
                "nsel": 32,
                "nlayers": 2,
                "g1_dim": 16,
                "g2_dim": 8,
                "attn1_hidden": 8,
                "attn1_nhead": 2,
                "attn2_hidden": 4,
                "attn2_nhead": 2,
                "update_h2": True,
                "attn2_has_gate": True,
            },
        },
        "fitting_net": FIT,
    },
    # DPA-3 with the water example's options (polynomial switch: the exponential one is not
    # exactly 0 at the cutoffs) and three layers, so messages pass between neighbors' neighbors
    "dpa3": {
        "descriptor": {
            "type": "dpa3",
            "repflow": {
                "n_dim": 16,
                "e_dim": 8,
                "a_dim": 8,
                "nlayers": 3,
                "e_rcut": RCUT,
                "e_rcut_smth": 3.0,
                "e_sel": 64,
                "a_rcut": 3.0,
                "a_rcut_smth": 2.5,
                "a_sel": 32,
                "a_compress_rate": 1,
                "a_compress_e_rate": 2,
                "a_compress_use_split": True,
                "smooth_edge_update": True,
                "edge_init_use_dist": True,
            },
            "activation_function": "silut:3.0",
        },
        "fitting_net": FIT,
    },
}
SMOOTH_MODELS = ("se_e2_a", "dpa1_strip_smooth", "dpa2", "dpa3")
# E_i depends on other atoms' edges: the split of the virial over atoms then uses the wrapped
# positions of the atoms (spec §9, as DeePMD-kit), so it changes when a translation re-wraps
# atoms or a supercell turns images into atoms; the total virial does not.
MESSAGE_PASSING = ("dpa2", "dpa3")


@pytest.fixture(scope="module")
def potential(make_model, env_statistics):
    """potential(name) -> torch Potential with random, physically structured statistics."""

    @functools.cache
    def get(name: str) -> dpa.Potential:
        model = make_model(MODELS[name], seed=7 + list(MODELS).index(name), physical=True)
        desc = model.tree["descriptor"]
        if desc["type"] == "dpa2":
            # repinit keeps davg = 0 (set_davg_zero, its default): its empty slots take the
            # type of atom 0 (spec §11.1-2), so a phantom row -davg/dstd would jump at rcut
            desc["repinit_variable"]["@variables"]["davg"][...] = 0.0
        stats = env_statistics(desc)
        assert stats and any(np.any(v["davg"] != 0) for v in stats)
        for net in model.tree["fitting"]["nets"]["networks"]:
            if net is not None:  # a stiffer model: forces of order 0.1 eV/Å, not 1e-3
                net["layers"][-1]["@variables"]["w"] *= 50.0
        return dpa.load_model(model, backend="torch")

    return get


def frame(system, f: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """(coord (nat, 3), atype, box (3, 3) or None) of one frame."""
    box = None if system.box is None else system.box[f]
    return system.coord[f], system.atype, box


def energies(pot, frames: np.ndarray, atype: np.ndarray, box: np.ndarray | None) -> np.ndarray:
    """Energies of many frames (nf, nat, 3) sharing one box (or per-frame boxes (nf, 3, 3))."""
    if box is not None and box.ndim == 2:
        box = np.broadcast_to(box, (len(frames), 3, 3))
    return pot.evaluate(frames, atype, box)["energy"]


def rotation(seed: int) -> np.ndarray:
    q, r = np.linalg.qr(np.random.default_rng(seed).normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    return q if np.linalg.det(q) > 0 else -q


def assert_close(got, want, atol, what):
    got, want = np.asarray(got), np.asarray(want)
    assert got.shape == want.shape, what
    diff = float(np.max(np.abs(got - want)))
    assert diff <= atol, f"{what}: max |diff| {diff:.3e} > {atol:.1e}"


# ---------------------------------------------------------------------------------------------
# Derivatives


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("system_name", ["skewed", "molecule"])
def test_force_is_minus_energy_gradient(name, system_name, potential, get_system):
    pot, (coord, atype, box) = potential(name), frame(get_system(system_name))
    h = 1e-5
    nat = len(coord)
    steps = (np.eye(nat * 3) * h).reshape(nat * 3, nat, 3)
    e = energies(pot, np.concatenate([coord + steps, coord - steps]), atype, box)
    fd = -(e[: nat * 3] - e[nat * 3 :]).reshape(nat, 3) / (2 * h)
    force = pot.evaluate(coord, atype, box)["force"][0]
    assert np.max(np.abs(force)) > 1e-2
    assert_close(force, fd, 1e-7, "force vs -dE/dx")


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("system_name", ["skewed", "molecule"])
def test_virial_is_minus_strain_derivative(name, system_name, potential, get_system):
    pot, (coord, atype, box) = potential(name), frame(get_system(system_name))
    h = 1e-5
    strains = []
    for sign in (1.0, -1.0):
        for k in range(3):
            for m in range(3):
                eps = np.zeros((3, 3))
                eps[k, m] = sign * h
                strains.append(np.eye(3) + eps)
    frames = np.stack([coord @ s.T for s in strains])
    boxes = None if box is None else np.stack([box @ s.T for s in strains])
    e = energies(pot, frames, atype, boxes)
    fd = -(e[:9] - e[9:]).reshape(3, 3) / (2 * h)
    virial = pot.evaluate(coord, atype, box)["virial"][0]
    assert np.max(np.abs(virial)) > 1e-2
    assert_close(virial, fd, 1e-7, "virial vs -dE/dε")


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("system_name", ["skewed", "molecule"])
def test_atomic_sums(name, system_name, potential, get_system):
    system = get_system(system_name)
    out = potential(name).evaluate(system.coord, system.atype, system.box, atomic=True)
    assert out["atom_energy"].shape == system.coord.shape[:2]
    assert_close(out["atom_energy"].sum(axis=1), out["energy"], 1e-11, "sum of atom_energy")
    assert_close(out["atom_virial"].sum(axis=1), out["virial"], 1e-11, "sum of atom_virial")
    assert np.ptp(out["atom_energy"]) > 1e-6  # atoms differ: not a constant model


# ---------------------------------------------------------------------------------------------
# Invariances


def _compare(ref: dict, got: dict, atol: float = 1e-10) -> None:
    for key in ref:
        assert_close(got[key], ref[key], atol, key)


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("system_name", ["skewed", "molecule"])
def test_rotation(name, system_name, potential, get_system):
    pot, (coord, atype, box) = potential(name), frame(get_system(system_name))
    rot = rotation(3)
    ref = pot.evaluate(coord, atype, box, atomic=True)
    out = pot.evaluate(coord @ rot.T, atype, None if box is None else box @ rot.T, atomic=True)
    expected = {
        "energy": ref["energy"],
        "atom_energy": ref["atom_energy"],
        "force": ref["force"] @ rot.T,
        "virial": rot @ ref["virial"] @ rot.T,
        "atom_virial": rot @ ref["atom_virial"] @ rot.T,
    }
    assert np.max(np.abs(expected["force"] - ref["force"])) > 1e-3  # the rotation matters
    _compare(expected, out)


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("system_name", ["skewed", "molecule"])
def test_translation(name, system_name, potential, get_system):
    pot, (coord, atype, box) = potential(name), frame(get_system(system_name))
    ref = pot.evaluate(coord, atype, box, atomic=True)
    out = pot.evaluate(coord + np.array([1.3, -2.1, 0.7]), atype, box, atomic=True)
    if name in MESSAGE_PASSING and box is not None:
        del ref["atom_virial"]
    _compare(ref, out)


def _permutation(atype: np.ndarray, seed: int) -> np.ndarray:
    """A random permutation that keeps the type of atom 0 (empty neighbor slots take the type
    of atom 0, spec §5.2, so that type is part of the model's input)."""
    rng = np.random.default_rng(seed)
    while True:
        perm = rng.permutation(len(atype))
        if atype[perm[0]] == atype[0] and np.any(perm != np.arange(len(atype))):
            return perm


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("system_name", ["skewed", "molecule"])
def test_permutation(name, system_name, potential, get_system):
    pot, (coord, atype, box) = potential(name), frame(get_system(system_name))
    perm = _permutation(atype, 5)
    ref = pot.evaluate(coord, atype, box, atomic=True)
    out = pot.evaluate(coord[perm], atype[perm], box, atomic=True)
    expected = {
        "energy": ref["energy"],
        "virial": ref["virial"],
        "force": ref["force"][:, perm],
        "atom_energy": ref["atom_energy"][:, perm],
        "atom_virial": ref["atom_virial"][:, perm],
    }
    _compare(expected, out)


# ---------------------------------------------------------------------------------------------
# Smoothness at the cutoff

# a compact cluster below the xy plane (atom 0 at the origin) and a probe H atom on the +z axis:
# every other distance of the probe stays > rcut + 0.3 while it crosses rcut of atom 0.
CLUSTER = np.array(
    [[0.0, 0.0, 0.0], [0.95, 0.0, -0.9], [-0.6, 0.7, -0.9], [0.1, -1.1, -1.0], [0.9, 0.9, -1.9]]
)
CLUSTER_TYPES = np.array([0, 1, 1, 2, 0, 1])  # the last one is the probe


def _with_probe(distances: list[float]) -> np.ndarray:
    probes = np.array([[0.0, 0.0, d] for d in distances])
    frames = np.repeat(CLUSTER[None], len(distances), axis=0)
    return np.concatenate([frames, probes[:, None, :]], axis=1)


def test_probe_geometry_only_crosses_rcut_of_atom_0():
    coords = _with_probe([RCUT - 0.5, RCUT + 0.1])
    d = np.linalg.norm(coords[:, -1:, :] - coords[:, 1:-1, :], axis=-1)
    assert np.all(d > RCUT + 0.3)
    pairs = np.linalg.norm(CLUSTER[:, None] - CLUSTER[None], axis=-1)
    assert np.all(pairs[np.triu_indices(len(CLUSTER), 1)] > 0.9)


@pytest.mark.parametrize("name", SMOOTH_MODELS)
def test_smooth_when_neighbor_crosses_rcut(name, potential):
    pot = potential(name)
    delta = 1e-6
    out = pot.evaluate(_with_probe([RCUT - delta, RCUT + delta, RCUT - 0.5]), CLUSTER_TYPES)
    e, f = out["energy"], out["force"]
    assert abs(e[2] - e[1]) > 1e-6  # the probe does interact inside rcut
    assert np.max(np.abs(f[2] - f[1])) > 1e-6
    assert abs(e[0] - e[1]) < 1e-8
    assert np.max(np.abs(f[0] - f[1])) < 1e-8


@pytest.mark.parametrize("name", SMOOTH_MODELS)
def test_continuity_converges(name, potential):
    """|E(rcut - δ) - E(rcut + δ)| shrinks with δ (at least as fast as δ³ up to round-off)."""
    pot = potential(name)
    deltas = [1e-2, 1e-3]
    e = pot.evaluate(_with_probe([RCUT + s * d for d in deltas for s in (-1, 1)]), CLUSTER_TYPES)
    gaps = np.abs(e["energy"][0::2] - e["energy"][1::2])
    assert gaps[0] > 0
    assert gaps[1] <= max(gaps[0] * 1e-2, 1e-12)


# ---------------------------------------------------------------------------------------------
# Periodic images


@pytest.mark.parametrize("name", MODELS)
def test_lattice_shift_of_atoms(name, potential, get_system):
    pot, (coord, atype, box) = potential(name), frame(get_system("skewed"), 1)
    shifted = coord.copy()
    shifted[1] += box[0] - 2 * box[2]
    shifted[4] -= box[1]
    shifted[5] += box[0] + box[1] + box[2]
    ref = pot.evaluate(coord, atype, box, atomic=True)
    out = pot.evaluate(shifted, atype, box, atomic=True)
    _compare(ref, out)


@pytest.mark.parametrize("name", MODELS)
def test_supercell_doubles_energy(name, potential, get_system):
    pot, (coord, atype, box) = potential(name), frame(get_system("skewed"))
    big_box = box * np.array([[2.0], [1.0], [1.0]])
    big = np.concatenate([coord, coord + box[0]])
    ref = pot.evaluate(coord, atype, box, atomic=True)
    out = pot.evaluate(big, np.tile(atype, 2), big_box, atomic=True)
    assert_close(out["energy"], 2 * ref["energy"], 1e-10, "energy")
    assert_close(out["virial"], 2 * ref["virial"], 1e-10, "virial")
    assert_close(out["force"], np.tile(ref["force"], (1, 2, 1)), 1e-10, "force")
    assert_close(out["atom_energy"], np.tile(ref["atom_energy"], (1, 2)), 1e-10, "atom_energy")
    if name in MESSAGE_PASSING:
        return
    assert_close(
        out["atom_virial"], np.tile(ref["atom_virial"], (1, 2, 1, 1)), 1e-10, "atom_virial"
    )
