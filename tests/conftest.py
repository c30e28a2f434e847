"""Shared fixtures (nothing here is a test); the builders they hand out are in builders.py.
Under pytest-xdist each worker's torch gets its share of the cores (OMP_NUM_THREADS).

* ``backend``: each evaluation backend (numpy, torch, jax), ``train_backend``: each training
  backend (torch, jax); a test that takes one runs once per backend and skips a backend that is
  not installed;
* ``get_system``: the systems of builders.py (water, skewed, molecule), cached per session;
* ``make_model``: small models with random statistics; ``env_statistics``.
"""

from __future__ import annotations

import os
import sys

import pytest
from builders import (
    EVAL_BACKENDS,
    SYSTEM_MAKERS,
    TRAIN_BACKENDS,
    System,
    env_statistics,
    random_model,
    skip_unless_installed,
)

import dpa


def _share_the_cores_between_workers() -> None:
    """Under pytest-xdist, each worker's torch (and the processes it starts) gets its share of
    the cores: torch's OpenMP otherwise runs as many threads as there are cores in every worker,
    and with `-n 2` on 2 cores the threads of one parallel loop wait for each other (a small
    training step took 10 to 40 times as long here). An OMP_NUM_THREADS set by the user is kept.
    A test and the processes it starts use the same thread count, so runs they compare bitwise
    (a killed run and its restart) stay comparable."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "0"))
    if workers < 1:
        return
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (cores or 1) // workers)))
    if "torch" in sys.modules:  # imported before this file: set its thread count directly
        sys.modules["torch"].set_num_threads(int(os.environ["OMP_NUM_THREADS"]))


_share_the_cores_between_workers()


@pytest.fixture(params=EVAL_BACKENDS)
def backend(request) -> str:
    """Each backend that evaluates models (numpy, torch, jax); skips one not installed."""
    skip_unless_installed(request.param)
    return request.param


@pytest.fixture(params=TRAIN_BACKENDS)
def train_backend(request) -> str:
    """Each backend that trains (torch, jax); skips one not installed (jax: optax too)."""
    skip_unless_installed(request.param, training=True)
    return request.param


@pytest.fixture(scope="session")
def get_system():
    """get_system(name) -> System, cached per session (skips if the shared data is missing)."""
    cache: dict[str, System] = {}

    def get(name: str) -> System:
        if name not in cache:
            cache[name] = SYSTEM_MAKERS[name]()
        return cache[name]

    return get


@pytest.fixture(name="env_statistics", scope="session")
def env_statistics_fixture():
    """env_statistics(descriptor_tree) -> the davg/dstd `@variables` dicts of every block."""
    return env_statistics


@pytest.fixture(scope="session")
def make_model():
    """make_model(config_without_type_map, seed, physical) -> Model with random statistics."""

    def make(config: dict, seed: int = 0, physical: bool = True) -> dpa.Model:
        return random_model(config, seed, physical)

    return make
