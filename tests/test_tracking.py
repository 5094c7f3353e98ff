"""Trackio and TensorBoard get the same per-epoch scalars, named in sections that sort with what a
researcher reads first on top; a resumed run logs no epoch twice; files keep their flat keys."""

import json
import sqlite3

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import pytest
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.initialize import initialize_config_dir
from hydra.types import RunMode
from omegaconf import OmegaConf

from conftest import REPO, history, launch, launch_here, launched, stopped_after, tiny_overrides
from optqual.launch.directories import register_resolvers
from optqual.recording.dashboards import dashboard_name, run_name
from optqual.tools.dashboard import dashboard_of, unsmoothed


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
    with sqlite3.connect(workdir / "outputs" / "trackio" / "resnet8_npz.db") as db:
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


@pytest.mark.slow
def test_a_sweeps_dashboard_reads_at_a_glance_and_its_command_works_here(tmp_path, tiny_npz, capsys):
    """Runs named by what varies (the optimizer and the seed first), grouped by optimizer, with the
    optimizer a config key one can group by; a project per experiment; the command each run
    prints opens this project's data wherever the launch ran (TRACKIO_DIR unset)."""
    sweep = tmp_path / "outputs" / "multirun" / "2026-12-07" / "10-00-00_resnet8_npz"
    result = launch(tmp_path, "-m", *tiny_overrides(tiny_npz), "epochs=1", "optimizer=sgd,adamw", "seed=0,1",
                    f"hydra.sweep.dir={sweep}")  # a process of its own: Trackio takes one data directory per process
    assert result.returncode == 0, result.stderr
    with sqlite3.connect(tmp_path / "outputs" / "trackio" / "resnet8_npz.db") as db:
        configs = {name: json.loads(config) for name, config in db.execute("select run_name, config from configs")}
    assert sorted(configs) == [f"{optimizer},seed={seed} @ 2026-12-07/10-00-00" for optimizer in ("adamw", "sgd") for seed in (0, 1)]
    for name, config in configs.items():
        assert config["optimizer"] == config["_Group"] == name.split(",")[0]  # a scalar key: Trackio offers it in "Group by"
        assert config["optimizer.lr"] == (0.1 if config["optimizer"] == "sgd" else 1e-3) and config["sweep"] == sweep.name
    assert f"dashboard: python -m optqual dashboard {sweep}" in result.stdout + result.stderr
    assert dashboard_of(sweep) == ("resnet8_npz", tmp_path / "outputs" / "trackio")
    assert unsmoothed("http://127.0.0.1:7860?project=resnet8_npz&write_token=x") == \
        "http://127.0.0.1:7860?project=resnet8_npz&write_token=x&smoothing=0"


def test_runs_are_named_by_what_ran_and_unrelated_runs_never_share_a_project(tmp_path):
    """<time>_<experiment>_<optimizer>_seed<seed>: the experiment is the preset's, or the model and data."""
    register_resolvers()
    names = {}
    for overrides in (["data=mnist", "model=mlp"], [], ["experiment=he2016"], ["experiment_name=mine", "optimizer=adamw", "seed=3"]):
        with initialize_config_dir(str(REPO / "conf"), version_base="1.3"):
            config = GlobalHydra.instance().config_loader().load_configuration("config", overrides, RunMode.RUN)
            HydraConfig.instance().set_config(config)
            names[" ".join(overrides)] = OmegaConf.select(config, "hydra.run.dir").split("/")[-1].split("_", 1)[1]
    assert names == {"data=mnist model=mlp": "mlp_mnist_sgd_seed42", "": "resnet8_cifar10_sgd_seed42",
                     "experiment=he2016": "he2016_sgd_seed42", "experiment_name=mine optimizer=adamw seed=3": "mine_adamw_seed3"}
    assert run_name(tmp_path / "2026-12-07" / "10-00-00_mlp_mnist_sgd_seed42", "mlp_mnist", {}) == "sgd_seed42 @ 2026-12-07/10-00-00"
