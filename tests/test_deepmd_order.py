"""dpa's "deepmd" batch order draws what `dp --pt train` (DeePMD-kit 3.2.0) drew for the same
input: the training batches of every step, the validation batches of every display step and
the frames of the statistics (fixtures recorded by
tests/fixtures/order/make_order_fixtures.py), and a restart continues the same order."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
from builders import DATA, water_section, write_small_input
from builders import FIXTURES as FIXTURE_ROOT

from dpa.data.deepmd_order import DeepmdOrder, deepmd_workers
from dpa.dpmodel.torch_rng import TorchCpuGenerator
from dpa.model import build_model
from dpa.train.batches import DataSource, follow_deepmd_order
from dpa.train.config import parse_train_input

FIXTURES = FIXTURE_ROOT / "order"
CASES = sorted(p.stem for p in FIXTURES.glob("*.json"))


def _fixture(name: str) -> dict:
    if not DATA.is_dir():
        pytest.skip(f"shared data not found at {DATA}")
    fixture = json.loads((FIXTURES / f"{name}.json").read_text())
    config = copy.deepcopy(fixture["input"])
    for key in ("training_data", "validation_data"):
        if key in config["training"]:
            section = config["training"][key]
            section["systems"] = [str(DATA / s) for s in section["systems"]]
    fixture["input"] = config
    return fixture


def _order(fixture: dict, monkeypatch: pytest.MonkeyPatch) -> tuple[DataSource, int]:
    """The training DataSource of the fixture's input, drawing in DeePMD-kit's order with the
    fixture's worker count (set as DeePMD-kit reads it, through NUM_WORKERS)."""
    monkeypatch.setenv("NUM_WORKERS", str(fixture["workers"]))
    cfg = parse_train_input(fixture["input"])
    tcfg = cfg.training
    model = build_model(cfg.raw["model"], seed=tcfg.seed)
    train = DataSource(tcfg.training_data, model.type_map, tcfg.seed, "training_data")
    valid = None
    numb_btch = 1
    if tcfg.validation_data is not None:
        valid = DataSource(tcfg.validation_data, model.type_map, tcfg.seed, "validation_data")
        numb_btch = tcfg.validation_data.numb_btch
    workers = follow_deepmd_order(
        train, valid, tcfg.seed, model.tree, 10, tcfg.disp_freq, numb_btch
    )
    return train, workers


def test_fixtures_cover_the_descriptors_and_loader_shapes() -> None:
    assert len(CASES) >= 7
    kinds = {json.loads((FIXTURES / f"{c}.json").read_text())["workers"] for c in CASES}
    assert kinds == {0, 1, 2, 4}


@pytest.mark.parametrize("case", CASES)
def test_training_batches_and_statistics_frames_equal_deepmd(
    case: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    fixture = _fixture(case)
    source, workers = _order(fixture, monkeypatch)
    assert workers == fixture["workers"]
    order = source.sampler
    assert isinstance(order, DeepmdOrder)
    stat = [int(f) for frames in order.stat_frames for f in frames]
    assert stat == fixture["stat_frames"]
    drawn, shown = [], []
    for step in range(1, len(fixture["batches"]) + 1):
        system, frames = order.next()
        drawn.append([system, frames.tolist()])
        for system, frames in order.validation_batches(step) or []:
            shown.append([system, frames.tolist()])
    assert drawn == fixture["batches"]
    assert shown == fixture["validation"]
    has_validation = "validation_data" in fixture["input"]["training"]
    assert bool(shown) == has_validation


def test_restart_continues_the_same_order(monkeypatch: pytest.MonkeyPatch) -> None:
    fixture = _fixture("se_e2_a_passes_w2")
    source, _ = _order(fixture, monkeypatch)
    for _ in range(150):
        source.sampler.next()
    saved = source.state()
    expected = [source.sampler.next() for _ in range(40)]
    monkeypatch.setenv("NUM_WORKERS", "3")  # another machine: the saved run's count wins
    again, _ = _order(fixture, monkeypatch)
    again.set_state(saved)
    assert again.sampler.workers == 2
    resumed = [again.sampler.next() for _ in range(40)]
    for (s1, f1), (s2, f2) in zip(expected, resumed, strict=True):
        assert s1 == s2 and f1.tolist() == f2.tolist()


def test_worker_count_follows_deepmd(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NUM_WORKERS", "0")
    assert deepmd_workers() == 0
    monkeypatch.delenv("NUM_WORKERS")
    assert 1 <= deepmd_workers() <= 4


def test_generator_draws_equal_torch() -> None:
    torch = pytest.importorskip("torch")
    for n in (1, 2, 7, 80, 333):
        gen = torch.Generator()
        gen.manual_seed(1234 + n)
        assert torch.randperm(n, generator=gen).tolist() == (
            TorchCpuGenerator(1234 + n).randperm(n).tolist()
        )
    weights = np.array([0.2, 0.0, 0.5, 0.3])
    gen = torch.Generator()
    gen.manual_seed(99)
    drawn = torch.multinomial(torch.as_tensor(weights), 500, True, generator=gen)
    assert drawn.tolist() == TorchCpuGenerator(99).multinomial(weights, 500).tolist()
    mine = TorchCpuGenerator(5)
    gen = torch.Generator()
    gen.manual_seed(5)
    for size, dtype in ((1, torch.float64), (3, torch.float64), (40, torch.float64),
                        (17, torch.float32), (64, torch.float32)):  # fmt: skip
        torch.empty(size, dtype=dtype).normal_(generator=gen)
        mine.skip_normal(size, float32=dtype == torch.float32)
        value = torch.empty((), dtype=torch.int64).random_(generator=gen).item()
        assert value == mine.random_int64()


def _small_run(tmp_path: Path, order: str, seeded: bool = True) -> Path:
    data = {
        "training_data": water_section(),
        "validation_data": water_section(),
        "batch_order": order,
    }
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = write_small_input(tmp_path, ["O", "H"], data, 6, disp_freq=2, save_freq=6)
    if not seeded:
        config = json.loads(path.read_text())
        del config["model"]["descriptor"]["seed"]
        path.write_text(json.dumps(config))
    return path


def test_train_follows_the_order_it_was_given(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    pytest.importorskip("torch")
    from dpa import io
    from dpa.train.loop import train

    monkeypatch.setenv("NUM_WORKERS", "2")
    states = {}
    for order in ("deepmd", "dpa"):
        with caplog.at_level("INFO", logger="dpa"):
            caplog.clear()
            final = train(_small_run(tmp_path / order, order), "torch", tmp_path / order / "out")
        ckpt = io.load(final.parent / "model.ckpt-6.pth")
        states[order] = json.loads(ckpt.data["training"]["samplers"]["training"])
        said = "DeePMD-kit's (dp --pt train with 2 loader workers)" in caplog.text
        assert said == (order == "deepmd")
    assert states["deepmd"]["order"] == "deepmd" and states["deepmd"]["drawn"] == 6
    assert states["deepmd"]["workers"] == 2
    assert "order" not in states["dpa"]


def test_train_warns_when_deepmd_would_start_unseeded(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    pytest.importorskip("torch")
    from dpa.train.loop import train

    with caplog.at_level("WARNING", logger="dpa"):
        train(_small_run(tmp_path, "deepmd", seeded=False), "torch", tmp_path / "out")
    assert "model.descriptor.seed not set" in caplog.text
    assert "fitting_net.seed not set" not in caplog.text
