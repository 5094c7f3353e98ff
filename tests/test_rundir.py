"""Run and sweep directory naming, and files that are never left half-written."""

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from optqual.files.atomic import atomic_write, write_json
from optqual.launch.directories import discard_unstarted
from optqual.recording.recorder import RunRecorder
from optqual.runs.jobs import job_dirname


def sweep_with(tmp_path: Path, *command_line: str) -> Path:
    OmegaConf.save({"hydra": {"overrides": {"task": list(command_line)}}}, tmp_path / "multirun.yaml")
    return tmp_path


def test_job_is_named_by_the_overrides_that_vary(tmp_path):
    sweep = sweep_with(tmp_path, "data=npz", "data.path=/x/y.npz", "optimizer=sgd,adamw", "seed=range(0,3)")
    job = ["data=npz", "data.path=/x/y.npz", "optimizer=adamw", "seed=1"]
    assert job_dirname(str(sweep), job, 4) == "optimizer=adamw,seed=1"


def test_job_name_is_never_empty_nested_or_too_long(tmp_path):
    sweep = sweep_with(tmp_path, "data.path=../a/b.npz,c.npz", "model.widths=[1],[2]")
    assert job_dirname(str(sweep), [], 7) == "job7"
    (tmp_path / "one").mkdir()
    assert job_dirname(str(sweep_with(tmp_path / "one", "seed=3")), ["seed=3"], 2) == "job2"  # nothing varies
    assert job_dirname(str(sweep), ["data.path=../a/b.npz"], 0) == "data.path=.._a_b.npz"
    long = job_dirname(str(sweep), [f"model.widths=[{','.join(['16'] * 100)}]"], 0)
    assert len(long) < 140 and "/" not in long
    assert long != job_dirname(str(sweep), [f"model.widths=[{','.join(['16'] * 101)}]"], 0)


def test_atomic_write_keeps_the_old_file_when_writing_fails(tmp_path):
    target = tmp_path / "metrics.json"
    write_json(target, {"status": "running"})

    def crash(file):
        file.write(b'{"status": "compl')
        raise RuntimeError("killed mid-write")

    with pytest.raises(RuntimeError):
        atomic_write(target, crash)
    assert target.read_text() == '{\n  "status": "running"\n}\n'
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]


def test_metrics_json_stays_strict_json_when_a_loss_is_not_finite(tmp_path):
    write_json(tmp_path / "metrics.json", {"train_loss": float("nan"), "val_loss": float("inf"), "epochs": 1})
    assert json.loads((tmp_path / "metrics.json").read_text()) == {"train_loss": None, "val_loss": None, "epochs": 1}


def test_recorder_keeps_history_current_and_records_status(tmp_path):
    recorder = RunRecorder(tmp_path, {"train_images": 100, "seed": 0}, started=time.perf_counter())
    recorder.start()
    assert json.loads((tmp_path / "metrics.json").read_text())["status"] == "running"
    recorder.add_epoch({"epoch": 1, "train_loss": 2.0, "train_acc": 0.1, "seconds": 2.0})
    assert (tmp_path / "history.csv").read_text().splitlines() == ["epoch,train_loss,train_acc,seconds", "1,2.0,0.1,2.0"]
    running = json.loads((tmp_path / "metrics.json").read_text())
    assert running["status"] == "running" and running["epochs"] == 1 and running["train_loss"] == 2.0
    metrics = recorder.write_metrics("failed", error="RuntimeError('boom')")
    assert metrics["status"] == "failed" and metrics["epochs"] == 1 and metrics["val_acc"] is None
    assert metrics["train_images_per_s"] == 50.0


def test_only_an_empty_run_directory_is_discarded(tmp_path):
    """A launch writes its record only once accepted: a directory refused before holds nothing."""
    unstarted = tmp_path / "a"
    unstarted.mkdir()
    discard_unstarted(unstarted)
    assert not unstarted.exists()
    started = tmp_path / "b"
    (started / ".hydra").mkdir(parents=True)
    discard_unstarted(started)
    assert (started / ".hydra").is_dir()


def test_fresh_dir_claims_a_new_name_once_per_process(tmp_path):
    """Claimed only once a run or sweep starts: until then (`--cfg hydra --resolve`) the name is only
    shown. Each claim in a process of its own, as each run has one."""
    wanted = str(tmp_path / "07-00-00_sgd_seed0")

    def names_given(start: bool) -> list[str]:
        claim = (f"from optqual.launch import directories; {'directories.start_claiming(); ' if start else ''}"
                 f"print(directories.fresh_dir({wanted!r})); print(directories.fresh_dir({wanted!r}))")  # Hydra resolves it twice
        return subprocess.run([sys.executable, "-c", claim], capture_output=True, text=True, check=True).stdout.split()

    assert names_given(start=False) == [wanted, wanted] and not list(tmp_path.iterdir())
    assert names_given(start=True) == [wanted, wanted] and Path(wanted).is_dir()
    assert names_given(start=True) == [wanted + "_2", wanted + "_2"] and Path(wanted + "_2").is_dir()