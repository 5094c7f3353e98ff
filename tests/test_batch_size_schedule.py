"""data.batch_size_schedule: each epoch trains at its batch size, the LR schedule counts the
updates that really happen, the history records the size; bad schedules are one-line errors.
Repeats and resumes with a schedule on: tests/test_components_resume.py."""

import math

import pytest

from conftest import compose_run, history, launch_here, launched, tiny_overrides, tiny_training
from optqual.components.timeline import Timeline
from optqual.config.checks import check_config
from optqual.data.images import EpochSteps


def test_each_epoch_trains_at_its_size_and_the_cosine_spans_the_real_updates(tmp_path, tiny_npz):
    # 160 training images (tiny_npz, val_fraction 0.2): 5 batches of 32, then 10 of 16, then 4 of 48
    launched(tmp_path, *tiny_overrides(tiny_npz), "data.val_fraction=0.2", "epochs=3", "trackio.enabled=false",
             "data.batch_size_schedule={0:32,1:16,2:48}", "scheduler=cosine", "optimizer.lr=0.1", "hydra.run.dir=run")
    rows = history(tmp_path / "run")
    assert [int(row["batch_size"]) for row in rows] == [32, 16, 48]
    updates = 5 + 10 + 4
    last_lr = 0.05 * (1 + math.cos(math.pi * (updates - 1) / updates))  # the cosine at the run's last update
    assert float(rows[-1]["lr.all"]) == pytest.approx(last_lr, rel=1e-6)
    after_first = 0.05 * (1 + math.cos(math.pi * 4 / updates))  # epoch 1's last update is update 4 of 19
    assert float(rows[0]["lr.all"]) == pytest.approx(after_first, rel=1e-6)


def test_epoch_milestones_and_fractions_fall_on_the_updates_of_uneven_epochs():
    timeline = Timeline(EpochSteps(3, ((1, 5), (2, 10), (3, 4))), warmup_epochs=1.5)
    assert timeline.total_steps == 19 and timeline.warmup_steps == 5 + 5
    assert [timeline.updates(e, "epoch") for e in (0, 1, 2, 2.25, 3)] == [0, 5, 15, 16, 19]
    assert timeline.updates(0.5, "fraction") == 10 and timeline.updates(7, "step") == 7


@pytest.mark.parametrize("schedule, message", [
    ("{1:32,2:64}", "data.batch_size_schedule={1: 32, 2: 64}: must start at epoch 0"),
    ("{0:32,3:0}", "data.batch_size_schedule={0: 32, 3: 0}: needs epochs >= 0 and positive batch sizes"),
    ("{0:32,1:500}", "data.batch_size_schedule={0: 32, 1: 500}: a batch of 500 is larger than the training set (180 images)"),
])
def test_bad_schedules_fail_cleanly_before_any_work(tmp_path, tiny_npz, schedule, message):
    result = launch_here(tmp_path, *tiny_overrides(tiny_npz), "trackio.enabled=false", f"data.batch_size_schedule={schedule}")
    assert result.returncode != 0 and result.stderr.strip() == f"optqual: error: {message}", result.stderr
    assert not [p for p in tmp_path.rglob("*") if p.is_file()], "a rejected run left files behind"


@pytest.mark.parametrize("epochs, sizes", [(1, {0: 32}), (7, {0: 32}), (7, {0: 32, 2: 16, 5: 48}), (3, {0: 16, 5: 48}), (2, {0: 8, 1: 160})])
def test_the_updates_of_each_epoch_are_those_of_a_list_written_out(tiny_npz, epochs, sizes):
    """EpochSteps (the schedule's segments) against the list of every epoch's ceil(images / batch size)."""
    data = tiny_training(tiny_npz).data
    data.batch_sizes = sizes
    images = len(data.train_labels)
    written = [-(-images // sizes[max(start for start in sizes if start < epoch)]) for epoch in range(1, epochs + 1)]
    steps = data.epoch_steps(epochs)
    assert len(steps) == epochs and list(steps) == written and steps.total == sum(written)
    assert [steps.before(index) for index in range(epochs + 1)] == [sum(written[:index]) for index in range(epochs + 1)]


def test_a_billion_epochs_cost_nothing_before_the_first_step(tiny_npz):
    """The run's length is held as segments: 10^9 epochs are checked and built as fast as 2."""
    overrides = ["epochs=1000000000", "scheduler=cosine", "data.batch_size_schedule={0:32,500000000:64}"]
    check_config(compose_run(*tiny_overrides(tiny_npz), *overrides))
    steps = tiny_training(tiny_npz, *overrides).data.epoch_steps(10**9)
    assert steps.total == 500_000_000 * 6 + 500_000_000 * 3  # 180 training images: 6 batches of 32, then 3 of 64
