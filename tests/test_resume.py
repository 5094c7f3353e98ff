"""Nothing lost: checkpoints, bit-identical resume of runs and sweeps, signals, divergence. Checkpoints of
earlier versions of optqual: tests/test_legacy_runs.py."""

import csv
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import TRAIN, assert_same_run, cli, history, launch, launch_here, launch_ok, launched, tiny_overrides
from optqual.engine.checkpoint import CheckpointError, load_checkpoint

pytestmark = pytest.mark.slow  # `make test-fast` leaves these out


def run_overrides(npz: Path) -> list[str]:
    return [*tiny_overrides(npz), "epochs=8"]


def saved_history(run: Path) -> list[dict]:
    """The history inside checkpoint.pt."""
    return load_checkpoint(run)["state"]["record"]["history"]


def metrics(run: Path) -> dict:
    return json.loads((run / "metrics.json").read_text())


def start(workdir: Path, *overrides: str) -> subprocess.Popen:
    command = [*TRAIN, *overrides]
    return subprocess.Popen(command, cwd=workdir, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def wait_for_epochs(run: Path, epochs: int, process: subprocess.Popen) -> None:
    """Until metrics.json (rewritten after every epoch) counts `epochs`."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        try:
            if metrics(run)["epochs"] >= epochs:
                return
        except (FileNotFoundError, json.JSONDecodeError, KeyError):
            pass
        time.sleep(0.02)
    raise AssertionError(f"{run} never reached epoch {epochs}")


def refuse(constant: str) -> None:
    raise ValueError(f"metrics.json must be strict JSON, found {constant}")


def resume(directory: Path) -> subprocess.CompletedProcess:
    return cli("resume", str(directory))


# training in a process with a fault: SIGKILL after its Nth checkpoint is on disk (`checkpoint N`),
# or at a step of an epoch, after waiting for Trackio's writer to catch up (`step EPOCH STEP`);
# or Trackio's database refusing every write after the Nth (`store N`: a full disk, injected into its storage)
FAULTY_LAUNCH = """
import os, signal, sys, time
mode, *when = sys.argv[1].split()
sys.argv = ["optqual train", *sys.argv[2:]]
os.environ["TRACKIO_DIR"] = os.path.abspath("outputs/trackio")  # trackio.dir: Trackio reads it once, when imported
from optqual import train
from optqual.engine.loop import Training
from trackio.sqlite_storage import SQLiteStorage

save, step, saved = train.save_training_state, Training.step, []
store, stored = SQLiteStorage.bulk_log, []
def store_until_full(*args, **kwargs):
    stored.append(1)
    if mode == "store" and len(stored) > int(when[0]):
        raise OSError(28, "No space left on device")
    return store(*args, **kwargs)
SQLiteStorage.bulk_log = staticmethod(store_until_full)
def save_then_die(*args):
    save(*args)
    saved.append(1)
    if mode == "checkpoint" and len(saved) == int(when[0]):
        os.kill(os.getpid(), signal.SIGKILL)
def step_then_die(self, images, labels, progress):
    step(self, images, labels, progress)
    if mode == "step" and (progress.epoch, progress.step + 1) == tuple(map(int, when)):
        time.sleep(1.5)
        os.kill(os.getpid(), signal.SIGKILL)
train.save_training_state, Training.step = save_then_die, step_then_die
train.main()
"""


def faulty_run(workdir: Path, fault: str, *overrides: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", FAULTY_LAUNCH, fault, *overrides], cwd=workdir, capture_output=True, text=True, timeout=600)


def trackio_logs(trackio_dir: Path, project: str, run: str) -> list[dict]:
    """The run's rows, read back through Trackio's own storage (optqual/compat.py), in a fresh process."""
    read = ("import json, sys; from optqual.compat import trackio_logged; "
            "print(json.dumps(trackio_logged(sys.argv[1], sys.argv[2])))")
    result = subprocess.run([sys.executable, "-c", read, project, run], env={**os.environ, "TRACKIO_DIR": str(trackio_dir)},
                            capture_output=True, text=True, check=True)
    return json.loads(result.stdout)


@pytest.fixture(scope="module")
def reference(tmp_path_factory, tiny_npz) -> Path:
    """The run never interrupted."""
    work = tmp_path_factory.mktemp("reference")
    launch_ok(work, *run_overrides(tiny_npz), "hydra.run.dir=run", "trackio.enabled=false")
    return work / "run"


def test_sigkill_after_the_second_checkpoint_then_resume_is_bit_identical(tmp_path, tiny_npz, reference):
    process = start(tmp_path, *run_overrides(tiny_npz), "hydra.run.dir=run", "trackio.enabled=false")
    wait_for_epochs(tmp_path / "run", 3, process)  # the checkpoint after epoch 2 precedes epoch 3
    process.kill()
    process.wait()
    run = tmp_path / "run"
    assert metrics(run)["status"] == "running" and not (run / "final_model.pt").exists()
    assert len(saved_history(run)) >= 2

    result = resume(run)
    assert result.returncode == 0, result.stderr[-3000:]
    assert metrics(run)["status"] == "completed"
    assert_same_run(reference, run)
    # one checkpoint per epoch, counted over both processes, as in the uninterrupted run
    assert metrics(run)["checkpoints"] == metrics(reference)["checkpoints"] == metrics(reference)["epochs"]


@pytest.mark.parametrize("when, every", [
    ("checkpoint 3", 1),  # killed as checkpoint 3 is on disk: Trackio's writer had not caught up with epoch 3
    ("step 5 2", 3),  # killed in epoch 5, Trackio up to date: epoch 4 is in it but not in checkpoint 3, and is trained again
])
def test_trackio_holds_every_epoch_exactly_once_after_sigkill_and_resume(tmp_path, tiny_npz, reference, when, every):
    killed = faulty_run(tmp_path, when, *run_overrides(tiny_npz), "hydra.run.dir=run", f"checkpoint_every={every}")
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    run, trackio_dir = tmp_path / "run", tmp_path / "outputs" / "trackio"
    before = {row["step"] for row in trackio_logs(trackio_dir, "resnet8_npz", "run")}

    result = resume(run)
    assert result.returncode == 0, result.stderr[-3000:]
    assert_same_run(reference, run)
    rows = trackio_logs(trackio_dir, "resnet8_npz", "run")
    charts = {chart: [row["step"] for row in rows if chart in row] for chart in ("accuracy/train", "loss/train", "accuracy/val", "accuracy/test")}
    assert charts == {"accuracy/train": list(range(1, 9)), "loss/train": list(range(1, 9)), "accuracy/val": list(range(1, 9)),
                      "accuracy/test": [8]}, f"Trackio held epochs {sorted(before)} when the run was killed"
    assert [row["accuracy/train"] for row in rows if "accuracy/train" in row] == [float(r["train_acc"]) for r in history(run)]
    assert metrics(run)["dashboard_data_lost"] == {}


def test_a_dashboard_that_fails_to_store_is_recorded_as_lost_data(tmp_path, tiny_npz):
    """Trackio only warns when its database refuses a write; the run reads back what it logged."""
    result = faulty_run(tmp_path, "store 1", *run_overrides(tiny_npz), "hydra.run.dir=run")
    assert result.returncode == 0, result.stderr[-3000:]
    recorded = metrics(tmp_path / "run")
    assert recorded["status"] == "completed"
    assert re.match(r"\d+ of \d+ values logged are not in .*trackio \(project resnet8_npz, run run; the first: epoch \d+ ",
                    recorded["dashboard_data_lost"]["trackio"]), recorded["dashboard_data_lost"]
    assert "Trackio lost data: " in (tmp_path / "run" / "launch.log").read_text()


def test_sigterm_mid_epoch_checkpoints_and_resume_completes(tmp_path, tiny_npz, reference):
    process = start(tmp_path, *run_overrides(tiny_npz), "hydra.run.dir=run")
    wait_for_epochs(tmp_path / "run", 2, process)
    time.sleep(0.1)  # into epoch 3
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    run = tmp_path / "run"
    assert process.returncode == 128 + signal.SIGTERM, stderr
    recorded = metrics(run)
    assert recorded["status"] == "interrupted" and "SIGTERM" in recorded["error"] and "resume" in recorded["error"]
    saved = saved_history(run)
    assert len(saved) == recorded["epochs"] < 8
    assert history(run) == [{k: str(v) for k, v in r.items() if k != "seconds"} for r in saved]

    result = resume(run)
    assert result.returncode == 0, result.stderr[-3000:]
    assert_same_run(reference, run)
    with sqlite3.connect(tmp_path / "outputs" / "trackio" / "resnet8_npz.db") as db:
        steps = [step for (step,) in db.execute("select step from metrics order by id")]
        runs = db.execute("select count(*) from configs").fetchone()[0]
    assert runs == 1, "the resumed run appends to its Trackio run"
    assert sorted(set(steps)) == list(range(1, 9))


def test_a_damaged_checkpoint_is_refused(tmp_path, tiny_npz):
    overrides = [*tiny_overrides(tiny_npz), "hydra.run.dir=run", "trackio.enabled=false"]
    launched(tmp_path, *overrides)
    checkpoint = tmp_path / "run" / "checkpoint.pt"
    whole = checkpoint.read_bytes()

    checkpoint.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(CheckpointError, match="torn or truncated"):
        load_checkpoint(tmp_path / "run")
    before = {p.name: p.read_bytes() for p in (tmp_path / "run").iterdir() if p.is_file()}
    result = launch_here(tmp_path, *overrides)
    assert result.returncode == 1 and result.stderr.strip().splitlines() == [
        f"optqual: error: {checkpoint}: torn or truncated checkpoint, refusing to load it (RuntimeError)"]
    assert {p.name: p.read_bytes() for p in (tmp_path / "run").iterdir() if p.is_file()} == before

    flipped = bytearray(whole)
    flipped[len(whole) // 2] ^= 0xFF
    checkpoint.write_bytes(bytes(flipped))
    with pytest.raises(CheckpointError):
        load_checkpoint(tmp_path / "run")


def test_resume_finishes_a_sweep_without_rerunning_finished_jobs(tmp_path, tiny_npz):
    """Killed during its second job: the first is done, the second stopped, the third never started."""
    overrides = ["-m", *run_overrides(tiny_npz), "seed=0,1,2", "trackio.enabled=false"]
    launch_ok(tmp_path, *overrides, "hydra.sweep.dir=reference")
    process = start(tmp_path, *overrides, "hydra.sweep.dir=sweep")
    sweep = tmp_path / "sweep"
    wait_for_epochs(sweep / "seed=1", 3, process)
    process.kill()
    process.wait()
    assert metrics(sweep / "seed=0")["status"] == "completed" and metrics(sweep / "seed=1")["status"] == "running"
    assert not (sweep / "seed=2").exists()
    finished = (sweep / "seed=0" / "final_model.pt").stat().st_mtime_ns

    result = resume(sweep)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "seed=0: completed, skipped" in result.stdout and "seed=2: not started, starting it" in result.stdout
    assert (sweep / "seed=0" / "final_model.pt").stat().st_mtime_ns == finished
    for job in ("seed=0", "seed=1", "seed=2"):
        assert_same_run(tmp_path / "reference" / job, sweep / job)
    with open(sweep / "summary.csv") as file:
        assert [row["status"] for row in csv.DictReader(file)] == ["completed"] * 3
    assert "3 jobs: 3 completed" in result.stdout


def test_a_diverging_job_is_recorded_and_the_sweep_goes_on(tmp_path, tiny_npz):
    result = launched(tmp_path, "-m", *tiny_overrides(tiny_npz), "optimizer.lr=0.1,1e4", "hydra.sweep.dir=sweep", "trackio.enabled=false")
    diverged = json.loads((tmp_path / "sweep" / "optimizer.lr=10000.0" / "metrics.json").read_text(), parse_constant=refuse)
    assert diverged["status"] == "diverged" and diverged["diverged_epoch"] == 1 and diverged["train_loss"] is None
    assert not (tmp_path / "sweep" / "optimizer.lr=10000.0" / "final_model.pt").exists()
    assert metrics(tmp_path / "sweep" / "optimizer.lr=0.1")["status"] == "completed"
    assert "1 diverged" in result.stdout and "1 diverged" in (tmp_path / "sweep" / "summary.md").read_text()


def test_a_run_directory_is_trained_by_one_process_at_a_time(tmp_path, tiny_npz):
    """`resume` of a sweep that is still running must not race the job that runs."""
    overrides = [*tiny_overrides(tiny_npz), "epochs=1000", "hydra.run.dir=run", "trackio.enabled=false"]
    process = start(tmp_path, *overrides)
    try:
        wait_for_epochs(tmp_path / "run", 1, process)
        second = launch(tmp_path, *overrides)
        assert second.returncode == 1
        assert second.stderr.strip() == f"optqual: error: {tmp_path / 'run'} is being trained by another process (it holds .lock)"
    finally:
        process.kill()
        process.wait()
    assert metrics(tmp_path / "run")["status"] == "running"
