"""A small se_e2_a training input shared by the training tests (fast: rcut 4, tiny nets)."""

from __future__ import annotations

import json
from pathlib import Path


def write_small_input(
    tmp: Path, type_map: list[str], training: dict, steps: int, disp_freq: int, save_freq: int
) -> Path:
    """Write input.json in `tmp`: auto sel, exp lr 1e-3 -> 1e-5, energy+force loss, seed 3;
    `training` adds to (or overrides) the training section."""
    config = {
        "model": {
            "type_map": type_map,
            "descriptor": {
                "type": "se_e2_a",
                "sel": "auto",
                "rcut": 4.0,
                "rcut_smth": 0.5,
                "neuron": [4, 8],
                "axis_neuron": 4,
                "seed": 1,
            },
            "fitting_net": {"neuron": [8, 8], "seed": 1},
        },
        "learning_rate": {"start_lr": 1e-3, "stop_lr": 1e-5, "decay_steps": 4},
        "loss": {"start_pref_e": 0.02, "limit_pref_e": 1, "start_pref_f": 1000, "limit_pref_f": 1},
        "training": {
            "numb_steps": steps,
            "seed": 3,
            "disp_freq": disp_freq,
            "save_freq": save_freq,
            **training,
        },
    }
    path = tmp / "input.json"
    path.write_text(json.dumps(config))
    return path
