"""A descriptor added through the protocol alone (`DescriptorKind` + `register`, all in this
file) builds, saves, loads, evaluates on NumPy, torch and jax alike, and trains on both
backends: nothing else in dpa names it."""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import pytest
from builders import FORCE_BACKENDS, TRAIN_BACKENDS, water_frames, water_section
from pydantic import Field

import dpa
import dpa.data
import dpa.io
from dpa.dpmodel.array_api import Array, xp_of
from dpa.dpmodel.check.nodes import Node, cutoffs, fail
from dpa.dpmodel.descriptor.common import Edges
from dpa.dpmodel.descriptor.protocol import (
    DescriptorKind,
    EnvBlock,
    NeighborSpec,
    SelKey,
    sel_list,
)
from dpa.dpmodel.descriptor.registry import register, unregister
from dpa.dpmodel.env_mat import environment_matrix, normalize
from dpa.dpmodel.network import embedding_net, make_embedding_net
from dpa.errors import ConfigError
from dpa.schema import Section


class RadialConfig(Section):
    """The toy's input section."""

    type: str
    sel: list[int] | int | str = "auto"
    rcut: float = Field(4.0, gt=0)
    rcut_smth: float = Field(0.5, ge=0)
    neuron: list[int] = [4, 8]
    precision: str = "float64"
    seed: int | None = None


def _finish(section: dict, ntypes: int) -> None:
    if isinstance(section["sel"], str):
        raise ConfigError("model.descriptor.sel needs numbers")
    section["sel"] = [int(sum(sel_list(section["sel"])))]


def _build(config: dict, type_map: list[str], rng: np.random.Generator) -> dict:
    nsel = sum(config["sel"])
    return {
        "type": "toy_radial",
        "rcut": config["rcut"],
        "rcut_smth": config["rcut_smth"],
        "sel": list(config["sel"]),
        "precision": "float64",
        "embedding": make_embedding_net(rng, 1, config["neuron"]),
        "@variables": {
            "davg": np.zeros((len(type_map), nsel, 4)),
            "dstd": np.ones((len(type_map), nsel, 4)),
        },
    }


@dataclass(frozen=True)
class RadialSettings:
    """The toy's hyperparameters, parsed once from a stored tree."""

    rcut: float
    rcut_smth: float

    @classmethod
    def from_tree(cls, desc: dict) -> RadialSettings:
        return cls(float(desc["rcut"]), float(desc["rcut_smth"]))


def _forward(cfg: RadialSettings, desc: dict, edges: Edges) -> Array:
    """D_i = Σ_j s̃_ij G(s̃_ij): a radial sum of one embedding net (no types)."""
    xp = xp_of(edges.rij)
    env, _ = environment_matrix(edges.rij, edges.mask, cfg.rcut, cfg.rcut_smth)
    width = edges.nlist.shape[-1]
    var = desc["@variables"]
    env = normalize(env, var["davg"][:, :width, :], var["dstd"][:, :width, :], edges.atype)
    s = env[..., :1]
    g = embedding_net(desc["embedding"], s)
    keep = xp.astype(edges.mask, s.dtype)[..., None]
    return xp.sum(s * g * keep, axis=2)


def _neighbor_spec(desc: dict) -> NeighborSpec:
    return NeighborSpec(float(desc["rcut"]), float(desc["rcut_smth"]), sel_list(desc["sel"]), True)


def _stat_blocks(desc: dict) -> list[EnvBlock]:
    rcut, smth, sel = float(desc["rcut"]), float(desc["rcut_smth"]), tuple(sel_list(desc["sel"]))
    return [EnvBlock(("@variables",), rcut, smth, sel, True, False, 0.0)]


def _sel_keys(section: dict) -> list[SelKey]:
    return [SelKey((), "sel", float(section.get("rcut", 4.0)))]


def _check_tree(desc: Node, ntypes: int) -> None:
    cutoffs(desc["rcut"], desc["rcut_smth"])
    if desc["@variables"]["davg"].value.shape[0] != ntypes:
        fail(desc["@variables"]["davg"], f"needs one row per type ({ntypes})")


TOY = DescriptorKind(
    name="toy_radial",
    aliases=("toy",),
    config=RadialConfig,
    finish=_finish,
    build=_build,
    settings=RadialSettings.from_tree,
    forward=_forward,
    dim_out=lambda desc: int(desc["embedding"]["neuron"][-1]),
    neighbor_spec=_neighbor_spec,
    stat_blocks=_stat_blocks,
    sel_keys=_sel_keys,
    check_tree=_check_tree,
)

CONFIG = {
    "type_map": ["O", "H"],
    "descriptor": {"type": "toy", "sel": 40, "rcut": 4.0, "rcut_smth": 0.5, "neuron": [4, 8]},
    "fitting_net": {"neuron": [8, 8]},
}


@pytest.fixture
def toy():
    register(TOY)
    yield TOY
    unregister(TOY)


def test_a_registered_descriptor_evaluates_on_every_backend(toy, tmp_path):
    model = dpa.build_model(CONFIG, seed=3)
    assert model.descriptor_type == "toy_radial"
    path = tmp_path / "toy.dp"
    model.save(path)
    frame = water_frames(2)
    ref = dpa.load_model(path, backend="numpy").evaluate(*frame)
    assert np.all(np.abs(ref["energy"]) > 0)
    forces = []
    for backend in FORCE_BACKENDS:
        pytest.importorskip(backend)
        out = dpa.load_model(path, backend=backend).evaluate(*frame)
        np.testing.assert_allclose(out["energy"], ref["energy"], rtol=1e-12, atol=0)
        forces.append(out["force"])
    np.testing.assert_allclose(forces[0], forces[1], rtol=0, atol=1e-10)
    assert np.abs(forces[0]).max() > 1e-3  # the descriptor really depends on the positions


def test_a_registered_descriptor_trains_on_both_backends(toy, tmp_path):
    from dpa.train.loop import train

    inp = {
        "model": {**CONFIG, "descriptor": {**CONFIG["descriptor"], "sel": "auto"}},
        "learning_rate": {"type": "exp", "start_lr": 1e-3, "stop_lr": 1e-4, "decay_steps": 5},
        "loss": {"type": "ener", "start_pref_e": 0.02, "limit_pref_e": 1, "start_pref_f": 1000,
                 "limit_pref_f": 1},
        "training": {
            "training_data": water_section(),
            "numb_steps": 4,
            "seed": 1,
            "disp_freq": 2,
            "save_freq": 4,
        },
    }  # fmt: skip
    path = tmp_path / "input.json"
    path.write_text(json.dumps(inp))
    first = {}
    for backend in TRAIN_BACKENDS:
        pytest.importorskip(backend)
        out = train(str(path), backend, tmp_path / backend)
        model = dpa.io.load(out)
        assert model.descriptor_type == "toy_radial"
        dstd = model.tree["descriptor"]["@variables"]["dstd"]
        assert not np.allclose(dstd, 1.0)  # statistics were taken through stat_blocks
        assert model.tree["descriptor"]["sel"][0] % 4 == 0  # "auto" resolved via sel_keys
        lines = (tmp_path / backend / "lcurve.out").read_text().splitlines()
        rows = [line.split() for line in lines if not line.startswith("#")]
        assert [int(row[0]) for row in rows] == [1, 2, 4]
        first[backend] = [float(x) for x in rows[0][1:]]
    np.testing.assert_allclose(first["torch"], first["jax"], rtol=1e-9)
