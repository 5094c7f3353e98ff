"""Every `scheduler` option, built from its config, against the closed form of its learning rate
at every update, warmup included; and the lr columns a run records."""

import csv
import math
import re

import pytest
import torch

from conftest import compose_run, launched, tiny_overrides
from optqual.config.checks import check_config
from optqual.data.images import EpochSteps
from optqual.errors import ConfigError
from optqual.components.scheduler import build_schedule

STEPS_PER_EPOCH = 7
EPOCHS = 10
TOTAL = STEPS_PER_EPOCH * EPOCHS
BASE = (0.1, 0.02)  # two param groups with their own learning rates, as no_weight_decay or Muon make


def compose_schedule(*overrides: str):
    return compose_run(f"epochs={EPOCHS}", *overrides)


def lr_per_update(*overrides: str) -> list[tuple[float, float]]:
    """The learning rate each of the run's updates uses, per group."""
    cfg = compose_schedule(*overrides)
    check_config(cfg)
    groups = [{"params": [torch.zeros(1, requires_grad=True)], "lr": lr, "name": f"g{i}"} for i, lr in enumerate(BASE)]
    optimizer = torch.optim.SGD(groups, lr=1.0, momentum=0.9)
    schedule = build_schedule(cfg.scheduler, optimizer, EpochSteps(EPOCHS, ((1, STEPS_PER_EPOCH),)))
    used = []
    for _ in range(TOTAL):
        used.append(tuple(group["lr"] for group in optimizer.param_groups))
        optimizer.step()
        schedule.after_step()
    return used


def assert_follows(used: list[tuple[float, float]], factor) -> None:
    """Group g's lr at update t is BASE[g] * factor(t)."""
    for t, lrs in enumerate(used):
        for lr, base in zip(lrs, BASE):
            assert lr == pytest.approx(base * factor(t), rel=1e-9, abs=1e-15), f"update {t}"


def warmup(t: int, steps: int, start: float = 0.01) -> float:
    return start + (1 - start) * t / steps


def test_none_is_constant():
    assert_follows(lr_per_update(), lambda t: 1.0)


def test_cosine_reaches_eta_min_at_the_last_update():
    used = lr_per_update("scheduler=cosine")
    assert_follows(used, lambda t: (1 + math.cos(math.pi * t / TOTAL)) / 2)


def test_cosine_after_a_linear_warmup():
    w = 2 * STEPS_PER_EPOCH
    eta_min = 0.001
    used = lr_per_update("scheduler=cosine", "scheduler.warmup_epochs=2", f"scheduler.eta_min={eta_min}")
    for t, lrs in enumerate(used):
        for lr, base in zip(lrs, BASE):
            expected = base * warmup(t, w) if t < w else eta_min + (base - eta_min) * (1 + math.cos(math.pi * (t - w) / (TOTAL - w))) / 2
            assert lr == pytest.approx(expected, rel=1e-9), f"update {t}"


@pytest.mark.parametrize("overrides, milestones", [
    (["scheduler.milestones=[5,8]"], [35, 56]),  # epochs
    (["scheduler.milestones=[10,40]", "scheduler.unit=step"], [10, 40]),  # He et al.'s iterations
    (["scheduler.milestones=[0.5,0.75]", "scheduler.unit=fraction"], [35, 52]),  # 0.75 * 70 = 52.5 rounds to 52
])
def test_multistep_milestones_in_each_unit(overrides, milestones):
    used = lr_per_update("scheduler=multistep", "scheduler.gamma=0.5", *overrides)
    assert_follows(used, lambda t: 0.5 ** sum(t >= m for m in milestones))


def test_multistep_milestones_count_from_the_start_of_the_run_with_a_warmup():
    used = lr_per_update("scheduler=multistep", "scheduler.milestones=[5,8]", "scheduler.warmup_epochs=1")
    assert_follows(used, lambda t: warmup(t, STEPS_PER_EPOCH) if t < STEPS_PER_EPOCH else 0.1 ** sum(t >= m for m in (35, 56)))


def test_step_decays_every_step_size():
    used = lr_per_update("scheduler=step", "scheduler.step_size=3", "scheduler.gamma=0.5")
    assert_follows(used, lambda t: 0.5 ** (t // (3 * STEPS_PER_EPOCH)))


def test_onecycle_is_two_cosine_phases_around_the_optimizers_lr():
    used = lr_per_update("scheduler=onecycle", "scheduler.pct_start=0.25")
    peak_step = 0.25 * TOTAL - 1  # torch's phase boundary

    def factor(t: int) -> float:
        def anneal(start: float, end: float, pct: float) -> float:
            return end + (start - end) / 2 * (1 + math.cos(math.pi * pct))
        low, final = 1 / 25, 1 / 25 / 1e4
        if t <= peak_step:
            return anneal(low, 1.0, t / peak_step)
        return anneal(1.0, final, (t - peak_step) / (TOTAL - 1 - peak_step))

    assert_follows(used, factor)


def test_plateau_reduces_after_patience_validations_without_improvement():
    cfg = compose_schedule("scheduler=plateau", "scheduler.patience=2", "scheduler.factor=0.5")
    optimizer = torch.optim.SGD([{"params": [torch.zeros(1, requires_grad=True)], "lr": 0.1, "name": "all"}], lr=0.1)
    schedule = build_schedule(cfg.scheduler, optimizer, EpochSteps(EPOCHS, ((1, STEPS_PER_EPOCH),)))
    losses = [1.0, 0.9, 0.9, 0.9, 0.9, 0.95, 0.95, 0.95, 0.95]  # improves twice, then never again
    lrs = []
    for epoch, loss in enumerate(losses, start=1):
        schedule.on_epoch_end({"epoch": epoch, "val_loss": loss, "val_acc": 0.5})
        lrs.append(optimizer.param_groups[0]["lr"])
    # torch reduces once the bad validations exceed patience: at the 3rd and, after its cooldown of 0, the 6th bad one
    assert lrs == pytest.approx([0.1, 0.1, 0.1, 0.1, 0.05, 0.05, 0.05, 0.025, 0.025])


def test_history_records_each_groups_lr_of_the_epochs_last_update(tmp_path, tiny_npz):
    overrides = [*tiny_overrides(tiny_npz), "epochs=3", "trackio.enabled=false", "scheduler=cosine", "optimizer.no_weight_decay=true"]
    launched(tmp_path, *overrides, "hydra.run.dir=run")
    with open(tmp_path / "run" / "history.csv") as file:
        rows = list(csv.DictReader(file))
    steps, total = 6, 18  # 180 training images in batches of 32
    for row in rows:
        last_update = int(row["epoch"]) * steps - 1
        expected = 0.1 * (1 + math.cos(math.pi * last_update / total)) / 2
        assert float(row["lr.decay"]) == pytest.approx(expected) and float(row["lr.no_decay"]) == pytest.approx(expected)


@pytest.mark.parametrize("overrides, message", [
    (["scheduler=cosine", "scheduler.warmup_epochs=10"], "scheduler.warmup_epochs=10.0: must be shorter than the run (epochs=10)"),
    (["scheduler=multistep", "scheduler.unit=iteration"], "scheduler.unit=iteration: must be one of epoch, step, fraction"),
    (["scheduler=multistep", "scheduler.milestones=[8,5]"], "scheduler.milestones=[8.0, 5.0]: must be increasing"),
    (["scheduler=plateau", "eval_every=null"], "scheduler=plateau: steps on a validation metric, but validation is off"),
    (["scheduler=plateau", "scheduler.monitor=train_loss"], "scheduler.monitor=train_loss: must be one of val_loss, val_acc"),
    (["scheduler=onecycle", "scheduler.warmup_epochs=1"], "onecycle warms up by itself"),
    (["scheduler=onecycle", "scheduler.pct_start=1.5"], "scheduler.pct_start=1.5: must lie in (0, 1)"),
    (["scheduler=step", "scheduler.gamma=2"], "scheduler.gamma=2.0: must lie in (0, 1]"),
])
def test_bad_schedules_are_config_errors(overrides, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        check_config(compose_schedule(*overrides))
