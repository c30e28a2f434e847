"""The same models on every installed backend: numpy, torch, jax and array-api-strict agree.

One table of configs (descriptor type x options) built with dpa.build_model, with random
statistics (davg != 0, drawn independently per type, slot and component), times three systems:
periodic water, a small skewed triclinic cell where an atom sees images of itself and several
images of the same neighbor, and a molecule without box. All use the type map ["O", "H", "C"].

numpy, torch and jax must agree on energy and atom energy; torch and jax on force, virial and
atom virial (float64: 1e-10 absolute; float32: 1e-5 relative to max(1, max|value|)). The numpy
reference and the same functions run on array_api_strict arrays agree to 1e-12 (float64).
"""

from __future__ import annotations

import functools

import numpy as np
import pytest
from builders import EVAL_BACKENDS as BACKENDS
from builders import SYSTEM_NAMES as SYSTEMS
from builders import installed

import dpa
from dpa.dpmodel.descriptor.common import Edges
from dpa.dpmodel.model import atomic_energy, edge_vectors, parse_model
from dpa.tree import map_variables

RCUT = 4.0
SE_A = {"type": "se_e2_a", "sel": [20, 28, 12], "rcut": RCUT, "neuron": [4, 8], "axis_neuron": 4}
DPA1 = {"type": "dpa1", "sel": 56, "rcut": RCUT, "neuron": [4, 8], "axis_neuron": 4, "attn": 8}
REPINIT = {"rcut": RCUT, "rcut_smth": 0.5, "nsel": 56, "neuron": [4, 8], "axis_neuron": 4}
REPFORMER = {
    "rcut": 3.0,
    "rcut_smth": 2.5,
    "nsel": 28,
    "nlayers": 2,
    "g1_dim": 16,
    "g2_dim": 8,
    "axis_neuron": 4,
    "attn1_hidden": 8,
    "attn1_nhead": 2,
    "attn2_hidden": 4,
    "attn2_nhead": 2,
}
REPFLOW = {
    "n_dim": 16,
    "e_dim": 8,
    "a_dim": 8,
    "nlayers": 2,
    "e_rcut": RCUT,
    "e_rcut_smth": 3.0,
    "e_sel": 56,
    "a_rcut": 3.0,
    "a_rcut_smth": 2.5,
    "a_sel": 28,
}
FIT = {"neuron": [8, 8]}
F32 = {"precision": "float32"}


def _case(descriptor: dict, fitting: dict | None = None, **model: object) -> dict:
    return {"descriptor": descriptor, "fitting_net": {**FIT, **(fitting or {})}, **model}


def _dpa2(repinit: dict, repformer: dict, **top: object) -> dict:
    return {
        "type": "dpa2",
        "repinit": {**REPINIT, **repinit},
        "repformer": {**REPFORMER, **repformer},
        **top,
    }


def _dpa3(repflow: dict, **top: object) -> dict:
    return {"type": "dpa3", "repflow": {**REPFLOW, **repflow}, **top}


THREE_BODY = {
    "use_three_body": True,
    "three_body_rcut": 3.0,
    "three_body_rcut_smth": 2.0,
    "three_body_sel": 28,
    "three_body_neuron": [2, 4],
}
DPA31 = {
    "a_compress_rate": 1,
    "a_compress_e_rate": 2,
    "a_compress_use_split": True,
    "smooth_edge_update": True,
    "edge_init_use_dist": True,
    "use_exp_switch": True,
}


TABLE = {
    "se_e2_a-tos-excl": _case(
        {**SE_A, "type_one_side": True, "exclude_types": [[0, 1]], "rcut_smth": 0.5}
    ),
    "se_e2_a-twoside-excl-modelexcl": _case(
        {
            **SE_A,
            "type_one_side": False,
            "exclude_types": [[1, 2], [0, 0]],
            "rcut_smth": 1.5,
            "resnet_dt": True,
        },
        atom_exclude_types=[2],
        pair_exclude_types=[[0, 1]],
    ),
    "dpa1-concat-l2-nonormalize": _case(
        {**DPA1, "tebd_input_mode": "concat", "attn_layer": 2, "normalize": False},
        {"activation_function": "gelu"},
    ),
    "dpa1-concat-smooth-tos-temperature": _case(
        {
            **DPA1,
            "tebd_input_mode": "concat",
            "smooth_type_embedding": True,
            "type_one_side": True,
            "temperature": 0.7,
            "attn_layer": 1,
            "concat_output_tebd": False,
            "exclude_types": [[0, 2]],
        }
    ),
    "dpa1-strip-l0-tebdskip": _case(
        {**DPA1, "tebd_input_mode": "strip", "attn_layer": 0, "tebd_dim": 3, "rcut_smth": 2.0}
    ),
    "dpa1-strip-smooth-econf-params-modelexcl": _case(
        {
            **DPA1,
            "tebd_input_mode": "strip",
            "smooth_type_embedding": True,
            "use_econf_tebd": True,
            "use_tebd_bias": True,
            "attn_layer": 1,
            "attn_dotr": False,
        },
        {"numb_fparam": 2, "numb_aparam": 1},
        atom_exclude_types=[0],
        pair_exclude_types=[[1, 1]],
    ),
    "se_atten_v2-excl": _case(
        {**DPA1, "type": "se_atten_v2", "attn_layer": 2, "exclude_types": [[1, 1]]}
    ),
    # DPA-2: repformer defaults (res_avg, every update on), smooth, repinit concat
    "dpa2-small": _case(_dpa2({}, {})),
    # the options of DeePMD-kit's water "medium" example at small size
    "dpa2-medium": _case(
        _dpa2(
            {"axis_neuron": 6, **THREE_BODY},
            {
                "nlayers": 3,
                "update_g1_has_attn": False,
                "update_g2_has_g1g1": False,
                "attn2_has_gate": True,
                "update_style": "res_residual",
                "update_residual": 0.01,
                "update_residual_init": "norm",
            },
        )
    ),
    "dpa2-strip3b-nosmooth-h2-incr-modelexcl": _case(
        _dpa2(
            {"tebd_input_mode": "strip", "resnet_dt": True, **THREE_BODY},
            {
                "update_style": "res_incr",
                "update_h2": True,
                "direct_dist": True,
                "use_sqrt_nnei": False,
                "g1_out_conv": False,
                "g1_out_mlp": False,
                "update_g1_has_drrd": False,
                "activation_function": "gelu",
            },
            smooth=False,
            add_tebd_to_repinit_out=True,
            exclude_types=[[0, 2]],
        ),
        atom_exclude_types=[2],
        pair_exclude_types=[[1, 1]],
    ),
    "dpa2-tos-const-noconv-lnfixed": _case(
        _dpa2(
            {"type_one_side": True, "activation_function": "silu"},
            {
                "update_style": "res_residual",
                "update_residual_init": "const",
                "update_residual": 0.1,
                "update_g1_has_conv": False,
                "update_g1_has_grrg": False,
                "update_g2_has_attn": False,
                "update_h2": True,
                "trainable_ln": False,
                "ln_eps": 1e-3,
            },
            concat_output_tebd=False,
            use_econf_tebd=True,
            use_tebd_bias=True,
        )
    ),
    # DPA-3: the water example's options (DPA-3.1: split compression, smooth edge update,
    # distance edge init, exponential switch, silut)
    "dpa3-water-example": _case(
        _dpa3(DPA31, activation_function="silut:10.0"), {"activation_function": "silut:10.0"}
    ),
    "dpa3-linear-multihead-sequential-modelexcl": _case(
        _dpa3(
            {
                "a_compress_rate": 2,
                "a_compress_e_rate": 1,
                "n_multi_edge_message": 2,
                "sequential_update": True,
                "update_residual_init": "norm",
                "optim_update": False,
                "fix_stat_std": 0.2,
            },
            activation_function="tanh",
            exclude_types=[[0, 1]],
            env_protection=0.1,
        ),
        pair_exclude_types=[[2, 2]],
        atom_exclude_types=[1],
    ),
    "dpa3-dynsel-avg-concat": _case(
        _dpa3(
            {
                "e_sel": 200,
                "a_sel": 100,
                "use_dynamic_sel": True,
                "sel_reduce_factor": 4.0,
                "smooth_edge_update": True,
                "update_style": "res_avg",
            },
            concat_output_tebd=True,
            use_tebd_bias=True,
        )
    ),
    "dpa3-dynsel-incr-noangle-econf": _case(
        _dpa3(
            {
                "e_sel": 200,
                "a_sel": 100,
                "use_dynamic_sel": True,
                "smooth_edge_update": True,
                "update_angle": False,
                "update_style": "res_incr",
                "edge_init_use_dist": True,
            },
            use_econf_tebd=True,
        )
    ),
    "se_e2_a-f32": _case({**SE_A, **F32, "rcut_smth": 1.0}, F32),
    "dpa1-f32": _case({**DPA1, **F32, "smooth_type_embedding": True, "attn_layer": 1}, F32),
    "dpa2-f32": _case(_dpa2({**THREE_BODY}, {"update_h2": True}, **F32), F32),
    "dpa3-f32": _case(_dpa3({**DPA31, "use_dynamic_sel": True}, **F32), F32),
}
GRID = [pytest.param(c, s, id=f"{c}-{s}") for c in TABLE for s in SYSTEMS]
ENERGY_KEYS = ("energy", "atom_energy")
DERIVATIVE_KEYS = ("force", "virial", "atom_virial")


def is_float32(case: str) -> bool:
    return TABLE[case]["descriptor"].get("precision") == "float32"


@pytest.fixture(scope="module")
def potential(make_model, env_statistics):
    """potential(case, backend) -> Potential, cached: models with random per-slot statistics."""

    @functools.cache
    def model(case: str) -> dpa.Model:
        built = make_model(TABLE[case], seed=list(TABLE).index(case), physical=False)
        assert all(np.any(s["davg"] != 0) for s in env_statistics(built.tree["descriptor"]))
        return built

    @functools.cache
    def get(case: str, backend: str) -> dpa.Potential:
        return dpa.load_model(model(case), backend=backend)

    return get


def params(case: str, system) -> dict:
    """fparam / aparam arrays for the cases that need them (random, fixed per system)."""
    fit = TABLE[case]["fitting_net"]
    nf, nat = system.coord.shape[:2]
    rng = np.random.default_rng(nat)
    out = {}
    if fit.get("numb_fparam"):
        out["fparam"] = rng.normal(size=(nf, fit["numb_fparam"]))
    if fit.get("numb_aparam"):
        out["aparam"] = rng.normal(size=(nf, nat, fit["numb_aparam"]))
    return out


def evaluate(pot: dpa.Potential, case: str, system) -> dict[str, np.ndarray]:
    return pot.evaluate(system.coord, system.atype, system.box, atomic=True, **params(case, system))


def mismatches(case: str, what: str, ref: np.ndarray, got: np.ndarray) -> list[str]:
    """[] if `got` matches `ref` within the case's tolerance, else one line describing the gap."""
    ref, got = np.asarray(ref), np.asarray(got)
    if ref.shape != got.shape:
        return [f"{what}: shape {got.shape} != {ref.shape}"]
    diff = float(np.max(np.abs(got - ref), initial=0.0))
    tol = 1e-5 * max(1.0, float(np.max(np.abs(ref), initial=0.0))) if is_float32(case) else 1e-10
    if not diff <= tol:  # also catches NaN
        return [f"{what}: max |diff| {diff:.3e} > {tol:.1e}"]
    return []


@pytest.mark.parametrize(("case", "system_name"), GRID)
def test_backends_agree(case, system_name, get_system, potential):
    system = get_system(system_name)
    outs = {b: evaluate(potential(case, b), case, system) for b in BACKENDS if installed(b)}
    if len(outs) < 2:
        pytest.skip("fewer than two backends installed")
    ref_name = next(iter(outs))
    ref = outs[ref_name]
    assert np.all(np.isfinite(ref["energy"]))
    assert ref["atom_energy"].shape == system.coord.shape[:2]
    np.testing.assert_allclose(ref["atom_energy"].sum(axis=1), ref["energy"], rtol=1e-12)
    problems = []
    for name, out in outs.items():
        for key in ENERGY_KEYS:
            problems += mismatches(case, f"{key} {name} vs {ref_name}", ref[key], out[key])
    if "torch" in outs and "jax" in outs:
        nf, nat = system.coord.shape[:2]
        assert outs["torch"]["atom_virial"].shape == (nf, nat, 3, 3)
        for key in DERIVATIVE_KEYS:
            problems += mismatches(
                case, f"{key} jax vs torch", outs["torch"][key], outs["jax"][key]
            )
    assert not problems, "\n".join(problems)


def strict_atom_energy(pot: dpa.Potential, case: str, system) -> np.ndarray:
    """Atomic energies from dpa.dpmodel run on array_api_strict arrays."""
    xps = pytest.importorskip("array_api_strict")
    nlist, shift = pot.neighbor_list(system.coord, system.atype, system.box)
    tree = map_variables(pot.model.tree, xps.asarray)
    box = None if system.box is None else xps.asarray(system.box)
    rij = edge_vectors(xps.asarray(system.coord), box, xps.asarray(nlist), xps.asarray(shift))
    assert isinstance(rij, type(xps.asarray(0.0)))
    edges = Edges(rij, xps.asarray(nlist), xps.asarray(system.atype), system.atype)
    extra = {k: xps.asarray(v) for k, v in params(case, system).items()}
    energy = atomic_energy(parse_model(tree), tree, edges, extra.get("fparam"), extra.get("aparam"))
    assert energy.dtype == xps.float64
    return np.asarray(energy)


@pytest.mark.parametrize(("case", "system_name"), GRID)
def test_array_api_strict_matches_numpy(case, system_name, get_system, potential):
    system = get_system(system_name)
    pot = potential(case, "numpy")
    got = strict_atom_energy(pot, case, system)
    ref = evaluate(pot, case, system)["atom_energy"]
    assert got.shape == ref.shape
    tol = 1e-5 * max(1.0, float(np.max(np.abs(ref)))) if is_float32(case) else 1e-12
    np.testing.assert_allclose(got, ref, rtol=0, atol=tol)


DEFAULT_FPARAM = [0.7, -0.4]
DEFAULT_FPARAM_CASE = _case(
    {**SE_A, "type_one_side": True},
    {"numb_fparam": 2, "default_fparam": DEFAULT_FPARAM},
)


def test_default_fparam_equals_explicit_fparam(backend, make_model, get_system):
    system = get_system("molecule")
    pot = dpa.load_model(make_model(DEFAULT_FPARAM_CASE, seed=11), backend=backend)
    args = (system.coord, system.atype, None)
    explicit = pot.evaluate(*args, fparam=np.array(DEFAULT_FPARAM))
    other = pot.evaluate(*args, fparam=np.array(DEFAULT_FPARAM) + 0.5)
    assert np.max(np.abs(other["energy"] - explicit["energy"])) > 1e-8  # fparam matters
    implicit = pot.evaluate(*args)
    for key in explicit:
        np.testing.assert_allclose(implicit[key], explicit[key], rtol=0, atol=1e-12, err_msg=key)


@pytest.mark.skipif(not installed("torch"), reason="torch not installed")
def test_torch_compile_matches_eager(potential, get_system):
    """torch.compile (opt-in) gives the eager numbers: one smooth DPA-1 case, skewed cell."""
    case = "dpa1-concat-smooth-tos-temperature"
    system = get_system("skewed")
    eager = evaluate(potential(case, "torch"), case, system)
    model = potential(case, "torch").model
    compiled = evaluate(dpa.load_model(model, backend="torch", compile=True), case, system)
    for key in (*ENERGY_KEYS, *DERIVATIVE_KEYS):
        np.testing.assert_allclose(compiled[key], eager[key], rtol=0, atol=1e-10, err_msg=key)
