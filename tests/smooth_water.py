"""A smooth, physically bounded water model built without training, for MD tests.

A float64 se_e2_a model with the water data's env-matrix statistics, constant embedding nets and
a linear fitting: each atomic energy is a positive quadratic form of the atom's summed,
normalized environment matrix (a smooth many-body repulsion around the data's density, bounded
below), scaled to an RMS force of 0.3 eV/Å on the data, with the energy bias fitted to the data.
Energy conservation needs a smooth model whose forces are exactly -dE/dx, not an accurate one.
"""

from __future__ import annotations

import numpy as np

import dpa
from dpa.data import System
from dpa.train.stat import compute_env_statistics, fit_energy_bias, set_energy_bias

CONFIG = {
    "type_map": ["O", "H"],
    "descriptor": {
        "type": "se_e2_a",
        "sel": [46, 92],
        "rcut": 6.0,
        "rcut_smth": 0.5,
        "neuron": [2, 4],
        "axis_neuron": 2,
        "precision": "float64",
    },
    "fitting_net": {"neuron": [], "precision": "float64"},
}


def smooth_water_model(water: System) -> dpa.Model:
    """The model described above, its statistics taken from `water`."""
    model = dpa.build_model(CONFIG, seed=0)
    tree = compute_env_statistics(model.tree, [water], nbatch=None)
    for net in tree["descriptor"]["embeddings"]["networks"]:  # G(s) = tanh(1): constant
        for k, layer in enumerate(net["layers"]):
            layer["@variables"]["w"][:] = 0.0
            layer["@variables"]["b"][:] = 1.0 if k == 0 else 0.0
    for net in tree["fitting"]["nets"]["networks"]:  # E_i = sum of the descriptor's entries
        layer = net["layers"][-1]["@variables"]
        layer["w"][:] = 1.0
        layer["b"][:] = 0.0
    tree["fitting"]["@variables"]["bias_atom_e"][:] = 0.0
    model = dpa.Model({**model.data, "model": tree})
    atype = water.remap_types(model.type_map)
    pot = dpa.load_model(model, backend="jax")
    force = pot.evaluate(water.coord[:1], atype, water.box[:1])["force"]
    for net in tree["fitting"]["nets"]["networks"]:  # energy is linear in w: scale the forces
        net["layers"][-1]["@variables"]["w"] *= 0.3 / np.sqrt(np.mean(force**2))
    predicted = dpa.load_model(model, backend="numpy").evaluate(water.coord, atype, water.box)
    bias = fit_energy_bias(tree, [water], nbatch=None, predicted=[predicted["energy"]])
    return dpa.Model({**model.data, "model": set_energy_bias(tree, bias)})
