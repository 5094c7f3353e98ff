"""A record nothing can corrupt: a refused launch leaves every file as it was, a sweep directory
belongs to one sweep, a job that cannot run is recorded as failed while the sweep goes on, and a
probe of the run lock never refuses the run that takes it."""

import hashlib
import json
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest

from conftest import TRAIN, assert_same_run, cli, launch, launch_here, launched, tiny_overrides
from optqual import train
from optqual.files.lock import claimed, trained_now


def checksums(directory: Path) -> dict[str, str]:
    """Every file under `directory`, by relative path: its SHA-256."""
    return {str(path.relative_to(directory)): hashlib.sha256(path.read_bytes()).hexdigest()
            for path in sorted(directory.rglob("*")) if path.is_file()}


def metrics(run: Path) -> dict:
    return json.loads((run / "metrics.json").read_text())


def test_a_launch_refused_for_another_config_leaves_the_finished_run_as_it_was(tmp_path, tiny_npz):
    overrides = [*tiny_overrides(tiny_npz), "trackio.enabled=false", "hydra.run.dir=run"]
    launched(tmp_path, *overrides)
    before = checksums(tmp_path / "run")
    refused = launch_here(tmp_path, *overrides, "optimizer.lr=0.2")
    assert refused.returncode == 1
    assert refused.stderr.splitlines() == [f"optqual: error: {tmp_path / 'run'} holds a run of another config (optimizer.lr: "
                                           f"0.1 -> 0.2): continue it with python -m optqual resume {tmp_path / 'run'}, "
                                           "or launch into another directory"]
    assert checksums(tmp_path / "run") == before
    assert "optimizer.lr=0.2" not in cli("diff", str(tmp_path / "run"), str(tmp_path / "run")).stdout


def test_a_launch_refused_by_the_lock_leaves_the_record_and_resume_continues_the_run_as_started(tmp_path, tiny_npz):
    """Another config launched into a run another process trains (stopped there, holding its lock):
    refused; once that run is killed, `resume` continues it with its own config, bit for bit."""
    overrides = [*tiny_overrides(tiny_npz), "epochs=6", "trackio.enabled=false"]
    launched(tmp_path, *overrides, "hydra.run.dir=reference")
    process = subprocess.Popen([*TRAIN, *overrides, "hydra.run.dir=run"], cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while not (tmp_path / "run" / "checkpoint.pt").is_file() and time.monotonic() < deadline:
            time.sleep(0.01)
        process.send_signal(signal.SIGSTOP)  # mid-run, holding the run's lock
        record = checksums(tmp_path / "run" / ".hydra")
        refused = launch(tmp_path, *overrides, "optimizer.lr=0.2", "hydra.run.dir=run")
        assert refused.returncode == 1 and "is being trained by another process" in refused.stderr
        assert checksums(tmp_path / "run" / ".hydra") == record
    finally:
        process.kill()
        process.wait()
    assert cli("resume", str(tmp_path / "run"), cwd=tmp_path).returncode == 0
    assert_same_run(tmp_path / "reference", tmp_path / "run")


def test_a_sweep_directory_belongs_to_one_sweep(tmp_path, tiny_npz):
    """The same sweep again is that sweep; another into its directory is refused before anything is written."""
    sweep = ["-m", *tiny_overrides(tiny_npz), "seed=0,1", "trackio.enabled=false", "hydra.sweep.dir=sweep"]
    launched(tmp_path, *sweep)
    before = checksums(tmp_path / "sweep")
    refused = launch_here(tmp_path, *[o if o != "epochs=2" else "epochs=3" for o in sweep])
    assert refused.returncode == 1 and refused.stderr.startswith(f"optqual: error: {tmp_path / 'sweep'} holds another sweep (")
    assert "or sweep into another hydra.sweep.dir" in refused.stderr
    assert checksums(tmp_path / "sweep") == before


def test_two_sweeps_into_one_directory_at_once_the_second_is_refused(tmp_path, tiny_npz):
    sweep = [*tiny_overrides(tiny_npz), "seed=0,1", "epochs=1000", "trackio.enabled=false", "hydra.sweep.dir=sweep"]
    first = subprocess.Popen([*TRAIN, "-m", *sweep], cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while not list((tmp_path / "sweep").glob("*/checkpoint.pt")) and time.monotonic() < deadline:
            time.sleep(0.05)
        second = launch(tmp_path, "-m", *sweep)
        assert second.returncode == 1
        assert second.stderr.strip() == (f"optqual: error: {tmp_path / 'sweep'} is being swept by another process (it holds "
                                         ".sweep.lock): wait for it, or sweep into another hydra.sweep.dir")
    finally:
        first.send_signal(signal.SIGTERM)
        first.wait()


def test_a_job_that_cannot_run_is_recorded_failed_and_the_sweep_goes_on(tmp_path, tiny_npz):
    """A data file missing for one job: the other jobs run, the summary shows the failure, and `resume`
    runs the job once the file is there."""
    other = tmp_path / "other.npz"
    result = launch_here(tmp_path, "-m", *tiny_overrides(tiny_npz), f"data.path={tiny_npz},{other}", "trackio.enabled=false",
                         "epochs=1", "hydra.sweep.dir=sweep")
    assert result.returncode == 1
    job = f"data.path={other}".replace("/", "_")
    assert f"optqual: error: job {job}: data.path={other}: no such file" in result.stderr.splitlines()
    assert "Traceback" not in result.stderr
    jobs = {path.name: path for path in (tmp_path / "sweep").iterdir() if path.is_dir()}
    assert metrics(jobs[f"data.path={tiny_npz}".replace("/", "_")])["status"] == "completed"
    failed = jobs[f"data.path={other}".replace("/", "_")]
    assert metrics(failed)["status"] == "failed" and "no such file" in metrics(failed)["error"]
    assert "2 jobs: 1 completed, 1 failed" in (tmp_path / "sweep" / "summary.md").read_text()
    other.write_bytes(tiny_npz.read_bytes())
    assert cli("resume", str(tmp_path / "sweep"), cwd=tmp_path).returncode == 0
    assert metrics(failed)["status"] == "completed"


def test_a_probe_of_the_lock_never_refuses_the_run_that_takes_it(tmp_path):
    """`summarize` asks whether a run trains by taking its lock for an instant: a run that starts in
    that instant waits for it instead of being refused."""
    (tmp_path / "run").mkdir()
    stop = threading.Event()

    def probe() -> None:
        while not stop.is_set():
            trained_now(tmp_path / "run")

    prober = threading.Thread(target=probe)
    prober.start()
    try:
        for _ in range(200):
            with claimed(tmp_path / "run"):
                pass
    finally:
        stop.set()
        prober.join()


def test_ctrl_c_while_a_run_is_set_up_leaves_no_directory(tmp_path, tiny_npz, monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(train, "build_run", interrupted)
    with pytest.raises(KeyboardInterrupt):
        launch_here(tmp_path, *tiny_overrides(tiny_npz), "trackio.enabled=false")
    assert not (tmp_path / "outputs").exists()
