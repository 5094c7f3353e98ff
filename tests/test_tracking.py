"""Trackio and TensorBoard get the same per-epoch scalars, named in sections that sort with what a
researcher reads first on top; a resumed run logs no epoch twice; files keep their flat keys."""

import json
import sqlite3

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import pytest

from conftest import history, launch_here, launched, stopped_after, tiny_overrides
from optqual.recording.dashboards import dashboard_name


def test_names_put_accuracy_and_loss_first_and_grad_norms_last():
    keys = ["epoch", "batch_size", "train_loss", "train_ce", "train_acc", "grad_norm.stage1.0.conv1", "seconds", "val_loss",
            "val_acc", "lr.decay", "lr.no_decay", "clipped_fraction", "test_loss", "test_acc", "best_test_acc", "best_epoch"]
    names = {key: dashboard_name(key) for key in keys if key != "epoch"}
    assert names["val_acc"] == "accuracy/val" and names["test_loss"] == "loss/test" and names["train_ce"] == "loss/train_ce"
    assert names["grad_norm.stage1.0.conv1"] == "per_layer_grad_norm/stage1.0.conv1" and names["lr.decay"] == "lr/decay"
    assert names["best_test_acc"] == "accuracy/best_test" and names["batch_size"] == "run/batch_size"
    sections = sorted({name.split("/")[0] for name in names.values()})  # both dashboards sort sections by name
    assert sections == ["accuracy", "loss", "lr", "per_layer_grad_norm", "run"]
    assert [dashboard_name(key) for key in ("reg_loss", "reg.penalty", "sparsity.test_acc", "sparsity.mac_ratio_structured")] == [
        "loss/reg", "regularizer/penalty", "sparsity/test_acc", "sparsity/mac_ratio_structured"]


def tensorboard_scalars(run_dir, kind: str = "scalars") -> dict[int, dict[str, float]]:
    events = EventAccumulator(str(run_dir / "tensorboard"))
    events.Reload()
    steps: dict[int, dict[str, float]] = {}
    for tag in events.Tags()[kind]:
        for event in getattr(events, kind.capitalize())(tag):
            assert tag not in steps.setdefault(event.step, {}), f"{tag} logged twice at step {event.step}"
            steps[event.step][tag] = getattr(event, "value", None)
    return steps


def trackio_scalars(workdir, run_name: str) -> dict[int, dict[str, float]]:
    steps: dict[int, dict[str, float]] = {}
    with sqlite3.connect(workdir / "outputs" / "trackio" / "resnet8_cifar10_baseline.db") as db:
        for step, metrics in db.execute("select step, metrics from metrics where run_name = ? order by id", (run_name,)):
            steps.setdefault(step, {}).update(json.loads(metrics))
    return steps


@pytest.mark.slow
def test_both_dashboards_get_the_same_scalars_and_a_resume_logs_no_epoch_twice(tmp_path, tiny_npz):
    overrides = [*tiny_overrides(tiny_npz), "epochs=3", "tensorboard.enabled=true", "quantizer=deadzone"]  # with the pruning report
    with stopped_after(epoch=3, steps=2, how="kill"):
        assert launch_here(tmp_path, *overrides, "hydra.run.dir=run").returncode == -9
    launched(tmp_path, *overrides, "hydra.run.dir=run", "hydra.output_subdir=null")  # what `resume` runs
    board, trackio = tensorboard_scalars(tmp_path / "run"), trackio_scalars(tmp_path, "run")
    pictures = {"sparsity/liveness", "sparsity/layer_sparsity", "sparsity/bits"}
    images = {step: {name for name, value in charts.items() if isinstance(value, dict)} for step, charts in trackio.items()}
    assert images == {step: pictures for step in (1, 2, 3)}  # the report's pictures as Trackio images, once an epoch
    assert {step: set(charts) for step, charts in tensorboard_scalars(tmp_path / "run", "images").items()} == images
    trackio = {step: {name: value for name, value in charts.items() if name not in pictures} for step, charts in trackio.items()}
    assert sorted(board) == [1, 2, 3]
    assert board.keys() == trackio.keys()
    for step in board:  # the same names and values (TensorBoard stores float32)
        assert board[step].keys() == trackio[step].keys()
        assert all(abs(board[step][name] - trackio[step][name]) <= 1e-6 * max(1, abs(trackio[step][name])) for name in board[step])
    assert {"accuracy/train", "loss/train", "lr/all", "run/batch_size", "sparsity/mac_ratio_nonzero", "lr/quantizer.dz"} <= board[1].keys()
    assert {"accuracy/test", "loss/test"} <= board[3].keys()
    assert abs(float(history(tmp_path / "run")[0]["train_loss"]) - board[1]["loss/train"]) < 1e-6  # history keeps flat keys
    assert "test_acc" in json.loads((tmp_path / "run" / "metrics.json").read_text())


def test_neither_dashboard_writes_nothing_of_theirs(tmp_path, tiny_npz):
    launched(tmp_path, *tiny_overrides(tiny_npz), "epochs=1", "trackio.enabled=false", "hydra.run.dir=run")
    assert not (tmp_path / "run" / "tensorboard").exists() and not (tmp_path / "outputs" / "trackio").exists()
