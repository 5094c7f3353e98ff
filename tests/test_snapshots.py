"""Snapshots of the weights during training, and the measures over them: when they are taken,
that a resumed run takes them again bit for bit, and `analyze --snapshots` per run and per group."""

import csv
import json
import re

import pytest
import torch

from conftest import cli, compose_run, launch_here, launched, stopped_after, tiny_overrides
from optqual.components.snapshots import points
from optqual.config.checks import check_config
from optqual.errors import ConfigError


@pytest.mark.parametrize("at, total, expected", [
    ([5, 1, 5, 20], 20, [1, 5, 20]),
    ("every:4", 10, [4, 8]),
    ("log:4", 1000, [1, 10, 100, 1000]),
    ("log:12", 5, [1, 2, 3, 4, 5]),  # where log-spaced points round to the same epoch, fewer
    ("log:3", 1, [1]),
])
def test_snapshot_points(at, total, expected):
    assert points(at, total) == expected


@pytest.mark.parametrize("overrides, message", [
    (["snapshots.at=log:x"], "snapshots.at=log:x: must be a list ([1,5,20]), every:N or log:K with N, K >= 1"),
    (["snapshots.at=[1,500]", "epochs=20"], "snapshots.at=[1, 500]: must be whole numbers from 1 to the run's 20"),
    (["snapshots.at=log:3", "snapshots.unit=step"], "snapshots.unit=step: must be epoch or update"),
])
def test_bad_snapshot_settings_are_one_line_errors(overrides, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        check_config(compose_run(*overrides))


def snapshots(run_dir) -> dict:
    index = json.loads((run_dir / "snapshots" / "snapshots.json").read_text())
    return {row["label"]: (row, torch.load(run_dir / "snapshots" / f"{row['label']}_model.pt", weights_only=True))
            for row in index["snapshots"]}


@pytest.mark.slow
def test_a_killed_run_takes_its_snapshots_again_bit_for_bit(tmp_path, tiny_npz):
    overrides = [*tiny_overrides(tiny_npz), "epochs=3", "trackio.enabled=false", "snapshots.at=every:4", "snapshots.unit=update"]
    launched(tmp_path, *overrides, "hydra.run.dir=reference")
    with stopped_after(epoch=2, steps=4, how="kill"):
        assert launch_here(tmp_path, *overrides, "hydra.run.dir=killed").returncode == -9
    assert sorted(snapshots(tmp_path / "killed")) == ["update_000004", "update_000008"]  # update 12, in epoch 2, came after the kill
    launched(tmp_path, *overrides, "hydra.run.dir=killed", "hydra.output_subdir=null")
    reference, resumed = snapshots(tmp_path / "reference"), snapshots(tmp_path / "killed")
    assert list(reference) == list(resumed) == ["update_000004", "update_000008", "update_000012", "update_000016"]
    for label, (row, weights) in reference.items():
        assert resumed[label][0] == row and row["epoch"] == (row["update"] - 1) // 6 + 1  # 6 updates an epoch
        assert all(torch.equal(weights[key], resumed[label][1][key]) for key in weights)
        states = [torch.load(run / "snapshots" / f"{label}_optimizer.pt", weights_only=True)["state"] for run in (tmp_path / "reference",
                                                                                                              tmp_path / "killed")]
        assert states[0].keys() == states[1].keys() and all(torch.equal(states[0][p]["momentum_buffer"], states[1][p]["momentum_buffer"])
                                                            for p in states[0])  # SGD's state at the snapshot, for the regulated sharpness


@pytest.mark.slow
def test_analyze_snapshots_draws_trajectories_per_run_and_per_group(tmp_path, tiny_npz):
    launched(tmp_path, "-m", *tiny_overrides(tiny_npz), "epochs=3", "optimizer=sgd,adamw", "seed=0,1", "trackio.enabled=false",
             "snapshots.at=[1,3]", "hydra.sweep.dir=sweep")
    measures = ["analysis=[weights,calibration,sharpness]", "train_subset=64", "analysis.sharpness.max_products=4",
                "analysis.sharpness.directions=1", "analysis.sharpness.radii=[0.1]"]
    result = cli("analyze", str(tmp_path / "sweep"), "--snapshots", *measures, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    for run in ("optimizer=sgd,seed=0", "optimizer=adamw,seed=1"):
        analysis = tmp_path / "sweep" / run / "analysis"
        with open(analysis / "trajectories.csv") as file:
            rows = list(csv.DictReader(file))
        assert [row["label"] for row in rows] == ["epoch_000001", "epoch_000003"]
        assert all(float(row["sharpness.ratio"]) > 0 for row in rows)  # against the threshold of the optimizer's state then
        assert (analysis / "snapshots" / "epoch_000003" / "calibration.json").is_file() and (analysis / "trajectories.png").is_file()
        final = json.loads((analysis / "snapshots" / "epoch_000003" / "calibration.json").read_text())["result"]["accuracy"]
        assert final == pytest.approx(json.loads((analysis.parent / "metrics.json").read_text())["test_acc"])  # the last snapshot is the run's end
    with open(tmp_path / "sweep" / "analysis" / "trajectories.csv") as file:
        rows = list(csv.DictReader(file))
    assert len(rows) == 8 and {row["group"] for row in rows} == {"optimizer=sgd", "optimizer=adamw"}
    assert (tmp_path / "sweep" / "analysis" / "trajectories.png").is_file()
    results = sorted((tmp_path / "sweep").glob("*/analysis/snapshots/*/*.json"))
    written = [path.stat().st_mtime_ns for path in results]
    assert len(results) == 4 * 2 * 3  # runs x snapshots x measures
    assert cli("analyze", str(tmp_path / "sweep"), "--snapshots", *measures, cwd=tmp_path).returncode == 0
    assert [path.stat().st_mtime_ns for path in results] == written  # each result kept: cached per snapshot
