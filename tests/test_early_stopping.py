"""Best and last weights, early stopping, gradient clipping, and the status a stopped run gets."""

import csv
import json
import re

import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from conftest import cli, compose_run, launch_here, launched, tiny_overrides
from optqual.components.clip_grad_norm import GradClipping
from optqual.components.early_stopping import EarlyStopping
from optqual.config.checks import check_config
from optqual.engine.loop import EVAL_BATCH_SIZE, evaluate
from optqual.errors import ConfigError, build
from optqual.models.cifar_resnet import CifarResNet
from optqual.runs.reader import read_run


def metrics(run) -> dict:
    return json.loads((run / "metrics.json").read_text())


def feed(stopping: EarlyStopping, model: nn.Module, values: list[float]) -> int | None:
    """Validations with these monitored values, the weights set to the epoch number; the epoch it stops at."""
    for epoch, value in enumerate(values, start=1):
        with torch.no_grad():
            model.weight.fill_(epoch)
        if stopping.on_epoch_end({"epoch": epoch, "val_acc": value, "val_loss": -value}):
            return epoch
    return None


def test_patience_counts_validations_without_enough_improvement_and_respects_the_floor():
    model = nn.Linear(1, 1, bias=False)
    values = [0.50, 0.60, 0.605, 0.61, 0.70, 0.70, 0.69, 0.71, 0.70, 0.70]
    # improvements above min_delta=0.02 at epochs 1, 2 and 5; none after
    assert feed(EarlyStopping(model, "val_acc", "auto", patience=2, min_delta=0.02, min_epochs=0), model, values) == 4
    assert feed(EarlyStopping(model, "val_acc", "auto", patience=2, min_delta=0.02, min_epochs=8), model, values) == 8
    never = EarlyStopping(model, "val_acc", "auto", patience=None, min_delta=0.0, min_epochs=0)
    assert feed(never, model, values) is None
    # the best weights are those of the strictly best validation (epoch 8: 0.71), min_delta or not
    assert never.best["epoch"] == 8 and never.best_weights["weight"].item() == 8
    assert never.results() == {"best_epoch": 8, "best_val_loss": -0.71, "best_val_acc": 0.71}


def test_a_loss_is_monitored_downwards():
    model = nn.Linear(1, 1, bias=False)
    stopping = EarlyStopping(model, "val_loss", "auto", patience=1, min_delta=0.0, min_epochs=0)
    # val_loss -0.5, -0.6 (better), -0.4 (worse): patience 1 runs out at epoch 3; the best loss is epoch 2's
    assert feed(stopping, model, [0.5, 0.6, 0.4]) == 3
    assert stopping.best["epoch"] == 2 and stopping.best["val_loss"] == -0.6


@pytest.mark.slow
def test_best_weights_are_the_weights_of_the_best_epoch_and_are_tested(tmp_path, tiny_npz):
    """best_model.pt equals the last weights of the same run trained for exactly best_epoch epochs
    (constant lr: nothing depends on the run's length); best_test_acc and test_acc are the test
    accuracies of best_model.pt and final_model.pt, evaluated here again."""
    overrides = [*tiny_overrides(tiny_npz), "trackio.enabled=false", "optimizer.lr=0.05"]
    launched(tmp_path, *overrides, "epochs=6", "hydra.run.dir=long")
    recorded = metrics(tmp_path / "long")
    best_epoch = recorded["best_epoch"]
    with open(tmp_path / "long" / "history.csv") as file:
        val_acc = [float(row["val_acc"]) for row in csv.DictReader(file)]
    assert val_acc.index(max(val_acc)) + 1 == best_epoch and recorded["best_val_acc"] == max(val_acc)

    launched(tmp_path, *overrides, f"epochs={best_epoch}", "hydra.run.dir=short")
    best = torch.load(tmp_path / "long" / "best_model.pt", weights_only=True)
    short = torch.load(tmp_path / "short" / "final_model.pt", weights_only=True)
    assert all(torch.equal(best[key], short[key]) for key in best)

    data = build(read_run(tmp_path / "long").config.data, "data", device=torch.device("cpu"))
    for weights, prefix in (("best_model.pt", "best_"), ("final_model.pt", "")):
        model = CifarResNet()
        model.load_state_dict(torch.load(tmp_path / "long" / weights, weights_only=True))
        test = evaluate(model.to(memory_format=torch.channels_last), data.eval_batches("test", EVAL_BATCH_SIZE))
        assert recorded[f"{prefix}test_acc"] == test["acc"] and recorded[f"{prefix}test_loss"] == pytest.approx(test["loss"], rel=1e-6)



@pytest.mark.slow
def test_an_early_stopped_run_is_a_result_and_stays_stopped(tmp_path, tiny_npz):
    overrides = [*tiny_overrides(tiny_npz), "trackio.enabled=false", "epochs=8", "early_stopping.patience=1", "early_stopping.min_delta=1.0"]
    launched(tmp_path, *overrides, "hydra.run.dir=run")
    recorded = metrics(tmp_path / "run")
    assert recorded["status"] == "stopped_early" and recorded["stopped_epoch"] == recorded["epochs"] == 2
    assert recorded["best_epoch"] == 1 and recorded["test_acc"] is not None and recorded["best_test_acc"] is not None
    assert (tmp_path / "run" / "final_model.pt").is_file() and (tmp_path / "run" / "best_model.pt").is_file()

    again = cli("resume", str(tmp_path / "run"))
    assert again.returncode == 0 and "stopped_early, skipped" in again.stdout
    summary = cli("summarize", str(tmp_path / "run"))
    assert "1 jobs: 1 stopped_early" in summary.stdout and "| all jobs | 1 |" in summary.stdout  # its results count
    launched(tmp_path, *overrides, "hydra.run.dir=run", "hydra.output_subdir=null")  # even launched again: no further epoch
    assert metrics(tmp_path / "run")["epochs"] == 2


def test_summary_ranks_by_the_best_weights_on_request(tmp_path):
    """SGD has the better last weights, AdamW the better best weights: the ranking follows --metric."""
    OmegaConf.save({"hydra": {"overrides": {"task": ["optimizer=sgd,adamw"]}}}, tmp_path / "multirun.yaml")
    for name, test_acc, best_test_acc in (("sgd", 0.60, 0.61), ("adamw", 0.55, 0.65)):
        job = tmp_path / f"optimizer={name}"
        (job / ".hydra").mkdir(parents=True)
        OmegaConf.save({"optimizer": name}, job / ".hydra" / "config.yaml")
        OmegaConf.save([f"optimizer={name}"], job / ".hydra" / "overrides.yaml")
        (job / "metrics.json").write_text(json.dumps({"status": "completed", "epochs": 3, "test_acc": test_acc, "best_test_acc": best_test_acc,
                                                      "val_acc": 0.5, "train_loss": 1.0, "wall_seconds": 1.0}))

    def first_group(*metric: str) -> str:
        result = cli("summarize", str(tmp_path), *metric)
        assert result.returncode == 0, result.stderr
        return re.search(r"\| optimizer=(\w+) ", result.stdout).group(1), result.stdout

    assert first_group()[0] == "sgd"
    best_first, text = first_group("--metric", "best_test_acc")
    assert best_first == "adamw" and "best-weights test acc % mean ± std" in text
    assert "leads **optimizer=sgd** by 4.00 points of mean test accuracy of the best weights" in text
    with open(tmp_path / "summary.csv") as file:
        assert {row["job"]: row["best_test_acc"] for row in csv.DictReader(file)} == {"optimizer=adamw": "0.65", "optimizer=sgd": "0.61"}


def test_clipping_caps_the_gradient_norm_and_counts_clipped_updates():
    params = [nn.Parameter(torch.zeros(3)), nn.Parameter(torch.zeros(4))]
    clipping = GradClipping(params, max_norm=1.0)
    for scale in (10.0, 0.1, 3.0, 0.3):  # norms 26.5, 0.26, 7.9, 0.79: two of four updates clipped
        params[0].grad, params[1].grad = torch.full((3,), scale), torch.full((4,), scale)
        clipping.after_backward()
        total = torch.sqrt(sum((p.grad ** 2).sum() for p in params))
        assert total.item() == pytest.approx(min(1.0, scale * 7 ** 0.5), rel=1e-5)
        clipping.after_step()
    record = {}
    clipping.on_epoch_end(record)
    assert record == {"clipped_fraction": 0.5}


@pytest.mark.slow
def test_the_history_has_the_clipped_fraction(tmp_path, tiny_npz):
    overrides = [*tiny_overrides(tiny_npz), "trackio.enabled=false"]
    launched(tmp_path, *overrides, "clip_grad_norm=1e-6", "hydra.run.dir=tight")
    launched(tmp_path, *overrides, "clip_grad_norm=1e6", "hydra.run.dir=loose")
    for run, fraction in (("tight", 1.0), ("loose", 0.0)):
        with open(tmp_path / run / "history.csv") as file:
            assert [float(row["clipped_fraction"]) for row in csv.DictReader(file)] == [fraction, fraction]


@pytest.mark.parametrize("overrides, message", [
    (["early_stopping.monitor=test_acc"], "early_stopping.monitor=test_acc: no such validation metric (choose val_loss or val_acc)"),
    (["early_stopping.patience=0"], "early_stopping.patience=0: must lie in [1, inf)"),
    (["early_stopping.patience=5", "eval_every=null"], "early_stopping.patience=5: needs validation, which is off (eval_every=null)"),
    (["early_stopping.mode=up"], "early_stopping.mode=up: must be auto, min or max"),
    (["clip_grad_norm=-1"], "clip_grad_norm=-1.0: must lie in (0, inf)"),
])
def test_bad_values_are_config_errors(overrides, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        check_config(compose_run(*overrides))


def test_bad_values_fail_before_any_work(tmp_path):
    result = launch_here(tmp_path, "scheduler=cosine", "scheduler.warmup_epochs=500", "trackio.enabled=false")
    assert result.returncode == 1
    assert result.stderr.splitlines() == ["optqual: error: scheduler.warmup_epochs=500.0: must be shorter than the run (epochs=200)"]
    assert not [p for p in tmp_path.rglob("*") if p.is_file()]
