"""The Python API for results (optqual.load_run, optqual.load_sweep), on real run and sweep
directories: a 2x2 sweep, a diverged and a failed job, and a model of every family rebuilt
from its run and evaluated to the run's own test accuracy."""

import csv
import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
import torch

import optqual
from conftest import HEAD_NPZ, cli, launch_here, launched, tiny_overrides
from optqual.runs.reader import RunDirError

pytestmark = pytest.mark.slow  # `make test-fast` leaves these out

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(scope="module")
def sweep(tmp_path_factory, tiny_npz) -> Path:
    work = tmp_path_factory.mktemp("sweep")
    launched(work, "-m", *tiny_overrides(tiny_npz), "model=mlp", "optimizer=sgd,adamw", "seed=0,1", "threads=1",
             "trackio.enabled=false", "hydra.sweep.dir=sweep")
    return work / "sweep"


def test_a_sweep_loads_as_one_row_per_run_with_its_varying_keys(sweep):
    frame = optqual.load_sweep(sweep)
    assert len(frame) == 4
    assert list(frame.columns[:4]) == ["job", "path", "optimizer", "seed"]
    assert sorted(zip(frame.optimizer, frame.seed)) == [("adamw", 0), ("adamw", 1), ("sgd", 0), ("sgd", 1)]
    for row in frame.itertuples():
        metrics = json.loads((Path(row.path) / "metrics.json").read_text())
        assert (row.status, row.test_acc, row.train_loss, row.epochs) == ("completed", metrics["test_acc"], metrics["train_loss"], 2)
    means = frame.groupby("optimizer").test_acc.mean()
    assert means["sgd"] == pytest.approx((frame.test_acc[frame.optimizer == "sgd"]).sum() / 2)

    with open(sweep / "summary.csv") as file:
        rows = {row["job"]: row for row in csv.DictReader(file)}
    assert list(rows[frame.job[0]])[:3] == ["job", "optimizer", "seed"], "summary.csv has the same key columns"
    for row in frame.itertuples():
        assert (rows[row.job]["optimizer"], int(rows[row.job]["seed"])) == (row.optimizer, row.seed)


def test_a_run_loads_with_its_config_history_and_analysis(sweep):
    run = optqual.load_run(sweep / "optimizer=adamw,seed=1")
    assert run.status == "completed" and run.config.optimizer._target_ == "torch.optim.AdamW" and run.config.seed == 1
    with open(run.path / "history.csv") as file:
        rows = list(csv.DictReader(file))
    assert isinstance(run.history, pd.DataFrame) and list(run.history.columns) == list(rows[0])
    assert run.history.epoch.tolist() == [1, 2]
    assert run.history.train_loss.tolist() == [float(row["train_loss"]) for row in rows]
    assert run.weights() == ["best", "final", "initial"]

    result = cli("analyze", str(run.path), "analysis=[weights]", "effort=quick")
    assert result.returncode == 0, result.stderr
    saved = json.loads((run.path / "analysis" / "weights.json").read_text())["result"]
    assert run.analysis()["weights"] == saved
    row = optqual.load_sweep(sweep).set_index("job").loc[run.name]
    distance = next(key for key, value in saved.items() if isinstance(value, float))
    assert row[f"weights.{distance}"] == saved[distance], "analysis results are joined to their run's row"

    (run.path / "analysis" / "weights.json").write_text('{"result": ')  # damaged outside optqual
    frame = optqual.load_sweep(sweep).set_index("job")
    assert "weights.json: cannot read it" in frame.analysis_error[run.name] and len(frame) == 4


def test_diverged_failed_and_pending_jobs_load_with_their_status(tmp_path, tiny_npz):
    (tmp_path / "sweep" / "optimizer.lr=0.01" / "history.csv").mkdir(parents=True)  # a directory in the way: that job fails
    result = launch_here(tmp_path, "-m", *tiny_overrides(tiny_npz), "model=mlp", "optimizer.lr=0.1,1e4,0.01",
                         "hydra.sweep.dir=sweep", "trackio.enabled=false")
    assert result.returncode != 0, "the sweep exits non-zero for its failed job"
    frame = optqual.load_sweep(tmp_path / "sweep").set_index("optimizer.lr")
    assert frame.status.to_dict() == {0.1: "completed", 10000.0: "diverged", 0.01: "failed"}
    assert frame.seed.tolist() == [42, 42, 42] and frame.optimizer.tolist() == ["sgd"] * 3
    assert pd.isna(frame.test_acc[10000.0]) and "Is a directory" in frame.error[0.01]

    diverged = optqual.load_run(frame.path[10000.0])
    assert diverged.status == "diverged" and diverged.metrics["diverged_epoch"] == 1
    with pytest.raises(RunDirError, match="no final_model.pt .its weights: initial"):
        diverged.model("final")
    assert isinstance(diverged.model("initial"), torch.nn.Module)
    failed = optqual.load_run(frame.path[0.01])
    assert failed.status == "failed" and failed.history.empty

    shutil.rmtree(frame.path[0.1])  # as if it had not started yet
    pending = optqual.load_sweep(tmp_path / "sweep").set_index("optimizer.lr").loc[0.1]
    assert pending.status == "pending" and pd.isna(pending.path) and pd.isna(pending.test_acc)


def own_test_accuracy(work: Path, *overrides: str) -> None:
    launched(work, *overrides, "epochs=1", "trackio.enabled=false", "hydra.run.dir=run")
    run = optqual.load_run(work / "run")
    model = run.model("final")
    assert next(model.parameters()).device.type == "cpu" and not model.training
    evaluated = run.evaluate("final")
    assert evaluated == {"loss": pytest.approx(run.metrics["test_loss"], rel=1e-5), "acc": run.metrics["test_acc"]}


@pytest.mark.skipif(not (SHARED / "MNIST" / "raw").is_dir(), reason="the shared MNIST files are not beside this checkout")
def test_an_mlp_on_mnist_gives_its_own_test_accuracy(tmp_path):
    own_test_accuracy(tmp_path, "model=mlp", "data=mnist", f"data.root={SHARED}", "data.download=false")


@pytest.mark.skipif(not HEAD_NPZ.is_file(), reason="the shared CIFAR-10 images are not beside this checkout")
def test_a_resnet20_on_real_cifar_images_gives_its_own_test_accuracy(tmp_path):
    own_test_accuracy(tmp_path, "model=resnet20", "data=npz", f"data.path={HEAD_NPZ}")


@pytest.mark.parametrize("model", [["model=resnet18_cifar"], ["model=timm", "model.name=resnet10t"]], ids=lambda words: words[-1])
def test_the_other_families_give_their_own_test_accuracy(tmp_path, tiny_npz, model):
    own_test_accuracy(tmp_path, *tiny_overrides(tiny_npz), *model)


def test_what_is_not_a_run_is_named(tmp_path):
    with pytest.raises(RunDirError, match="is not a run directory"):
        optqual.load_run(tmp_path)
    with pytest.raises(RunDirError, match="neither a sweep directory"):
        optqual.load_sweep(tmp_path)
