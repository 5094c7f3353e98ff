"""The exponential moving average of the weights (optqual/components/ema.py) against its recurrence
written out in float64: the saved average, with warmup, `every` and a delayed start; its validation
and test scores evaluated again; analyze weights=ema; it changes nothing of the training; its
one-line errors. Repeats and resumes bit for bit: tests/test_components_resume.py."""

import contextlib
import csv
import hashlib
import json
import re
from typing import Iterator

import pytest
import torch

from conftest import compose_run, launched, tiny_overrides
from optqual.__main__ import main as optqual
from optqual.config.checks import check_config
from optqual.engine.loop import EVAL_BATCH_SIZE, Training, evaluate
from optqual.errors import ConfigError, build
from optqual.models import build_model
from optqual.runs.reader import read_run


@contextlib.contextmanager
def weights_after_each_update() -> Iterator[list[dict[str, torch.Tensor]]]:
    """The model's state after every optimizer update of the runs launched inside."""
    seen: list[dict[str, torch.Tensor]] = []
    original = Training.step

    def step(self, images, labels, progress):
        original(self, images, labels, progress)
        seen.append({key: value.detach().clone() for key, value in self.model.state_dict().items()})

    Training.step = step
    try:
        yield seen
    finally:
        Training.step = original


def decay_at(update: int, decay: float, every: int = 1, update_after_step: int = 0, warmup: bool = False,
             gamma: float = 1.0, power: float = 2 / 3, min_decay: float = 0.0) -> float | None:
    """The decay of the average taken after optimizer update `update` (from 1); None: no average then."""
    if update % every:
        return None
    started = update - update_after_step - 1
    if started <= 0:
        return 0.0
    return max(min(1 - (1 + started / gamma) ** -power, decay), min_decay) if warmup else decay


def expected_average(states: list[dict[str, torch.Tensor]], **settings) -> dict[str, torch.Tensor]:
    """ema <- d ema + (1 - d) weights, in float64, after each update that averages; the rest copied."""
    average: dict[str, torch.Tensor] = {}
    for update, state in enumerate(states, start=1):
        d = decay_at(update, **settings)
        if d is None:
            continue
        for key, value in state.items():
            if value.is_floating_point():
                average[key] = d * average.get(key, value.double()) + (1 - d) * value.double()
            else:
                average[key] = value.clone()
    return average


@pytest.mark.parametrize("options, settings", [
    (["ema.decay=0.9"], {"decay": 0.9}),
    (["ema.decay=0.95", "ema.warmup=true", "ema.warmup_gamma=2", "ema.warmup_power=0.75", "ema.min_decay=0.1", "ema.every=3",
      "ema.update_after_step=4"],
     {"decay": 0.95, "warmup": True, "gamma": 2.0, "power": 0.75, "min_decay": 0.1, "every": 3, "update_after_step": 4}),
], ids=["plain", "warmup_every_delayed"])
def test_the_saved_average_is_the_recurrence_over_every_update(options, settings, tmp_path, tiny_npz):
    with weights_after_each_update() as states:
        launched(tmp_path, *tiny_overrides(tiny_npz), "epochs=3", "trackio.enabled=false", *options, "hydra.run.dir=run")
    assert len(states) == 3 * 6  # 180 training images in batches of 32
    saved = torch.load(tmp_path / "run" / "ema_model.pt", weights_only=True)
    expected = expected_average(states, **settings)
    assert saved.keys() == expected.keys()
    for key, value in expected.items():
        assert torch.allclose(saved[key].double(), value, rtol=1e-5, atol=1e-7) if value.is_floating_point() else torch.equal(saved[key], value), key
    final = torch.load(tmp_path / "run" / "final_model.pt", weights_only=True)
    assert any(not torch.equal(saved[key], final[key]) for key in final if final[key].is_floating_point())


def test_the_average_is_validated_tested_and_analyzed_as_the_weights_are(tmp_path, tiny_npz):
    launched(tmp_path, *tiny_overrides(tiny_npz), "epochs=3", "trackio.enabled=false", "ema.decay=0.8", "hydra.run.dir=run")
    run = read_run(tmp_path / "run")
    with open(run.path / "history.csv") as file:
        rows = list(csv.DictReader(file))
    assert all(row["ema_val_acc"] and row["ema_val_loss"] for row in rows)
    model = build_model(run.config.model, {key: run.config.data[key] for key in ("num_classes", "channels", "image_size")})
    model.load_state_dict(torch.load(run.weights("ema"), weights_only=True))
    data = build(run.config.data, "data", device=torch.device("cpu"))
    model = model.to(memory_format=torch.channels_last)
    test, val = (evaluate(model, data.eval_batches(split, EVAL_BATCH_SIZE)) for split in ("test", "val"))
    assert run.metrics["ema_test_acc"] == test["acc"] and run.metrics["ema_test_loss"] == pytest.approx(test["loss"], rel=1e-6)
    assert float(rows[-1]["ema_val_acc"]) == val["acc"]  # the last validation saw the average that was saved

    assert optqual(["analyze", str(run.path), "weights=ema", "analysis=[weights]", "probe_size=32"]) == 0
    analyzed = json.loads((run.path / "analysis" / "weights.json").read_text())
    assert analyzed["weights_sha256"] == {"run": hashlib.sha256(run.weights("ema").read_bytes()).hexdigest()}


def test_the_average_changes_nothing_of_the_training(tmp_path, tiny_npz):
    overrides = [*tiny_overrides(tiny_npz), "epochs=2", "trackio.enabled=false", "batch_mix=cutmix", "random_erasing.p=0.5"]
    launched(tmp_path, *overrides, "hydra.run.dir=without")
    launched(tmp_path, *overrides, "ema.decay=0.9", "hydra.run.dir=with")
    for weights in ("final_model.pt", "best_model.pt"):
        a, b = (torch.load(tmp_path / run / weights, weights_only=True) for run in ("without", "with"))
        assert all(torch.equal(a[key], b[key]) for key in a), weights
    with open(tmp_path / "without" / "history.csv") as without, open(tmp_path / "with" / "history.csv") as with_ema:
        for row, row_ema in zip(csv.DictReader(without), csv.DictReader(with_ema)):
            assert {key: value for key, value in row.items() if key != "seconds"} == {
                key: value for key, value in row_ema.items() if key != "seconds" and not key.startswith("ema_")}
    assert not (tmp_path / "without" / "ema_model.pt").exists()


@pytest.mark.parametrize("override, message", [
    ("ema.decay=1.0", "ema.decay=1.0: must lie in (0, 1)"),
    ("ema.decay=0", "ema.decay=0.0: must lie in (0, 1)"),
    ("ema.every=0", "ema.every=0: must lie in [1, inf)"),
    ("ema.update_after_step=-1", "ema.update_after_step=-1: must lie in [0, inf)"),
    ("ema.min_decay=0.99", "ema.min_decay=0.99: must lie in [0, decay=0.9]"),
    ("ema.warmup_power=0", "ema.warmup_power=0.0: must lie in (0, inf)"),
])
def test_bad_values_are_one_line_errors(override, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        check_config(compose_run("ema.decay=0.9", override))
