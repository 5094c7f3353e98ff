"""A record nothing can corrupt: a refused launch leaves every file as it was, a sweep directory
belongs to one sweep, a job that cannot run is recorded as failed while the sweep goes on, a
probe of the run lock never refuses the run that takes it, one unreadable file stops no tool, and
a full disk is one line after which resume continues bit for bit."""

import concurrent.futures
import contextlib
import hashlib
import json
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest
import torch

from conftest import TRAIN, assert_same_run, cli, launch_here, launched, tiny_overrides
from optqual import train
from optqual.data import images
from optqual.data.sources import npz
from optqual.errors import ConfigError
from optqual.system.devices import free_memory
from optqual.engine.checkpoint import load_checkpoint
from optqual.files.layout import is_run_dir
from optqual.runs.reader import RunDirError, read_run, read_sweep
from optqual.status import RunStatus
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


@pytest.mark.slow
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
        refused = launch_here(tmp_path, *overrides, "optimizer.lr=0.2", "hydra.run.dir=run")
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


@pytest.mark.slow
def test_two_sweeps_into_one_directory_at_once_the_second_is_refused(tmp_path, tiny_npz):
    sweep = [*tiny_overrides(tiny_npz), "seed=0,1", "epochs=1000", "trackio.enabled=false", "hydra.sweep.dir=sweep"]
    first = subprocess.Popen([*TRAIN, "-m", *sweep], cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while not list((tmp_path / "sweep").glob("*/checkpoint.pt")) and time.monotonic() < deadline:
            time.sleep(0.05)
        second = launch_here(tmp_path, "-m", *sweep)
        assert second.returncode == 1
        assert second.stderr.strip() == (f"optqual: error: {tmp_path / 'sweep'} is being swept by another process (it holds "
                                         ".sweep.lock): wait for it, or sweep into another hydra.sweep.dir")
    finally:
        first.send_signal(signal.SIGTERM)
        first.wait()


@pytest.mark.slow
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
    result = launch_here(tmp_path, *tiny_overrides(tiny_npz), "trackio.enabled=false")
    assert result.returncode == 130 and result.stderr.splitlines() == ["optqual: interrupted before training started: nothing was written"]
    assert not (tmp_path / "outputs").exists()


@pytest.mark.slow
def test_one_unreadable_metrics_json_stops_no_tool_and_resume_runs_its_job_again(tmp_path, tiny_npz):
    """A truncated metrics.json in one job of a sweep: summarize, diff and analyze name the file and
    go on with the other job; resume runs the job again from its checkpoint, to the same weights."""
    launched(tmp_path, "-m", *tiny_overrides(tiny_npz), "seed=0,1", "epochs=1", "trackio.enabled=false", "hydra.sweep.dir=sweep")
    sweep, bad = tmp_path / "sweep", tmp_path / "sweep" / "seed=1"
    weights = checksums(bad)["final_model.pt"]
    text = (bad / "metrics.json").read_text()
    (bad / "metrics.json").write_text(text[: len(text) // 2])
    named = f"{bad / 'metrics.json'}: cannot read it (JSONDecodeError"

    summarized = cli("summarize", str(sweep))
    assert summarized.returncode == 0 and "2 jobs: 1 completed, 1 unreadable" in summarized.stdout and named in summarized.stdout
    differed = cli("diff", str(sweep))
    assert differed.returncode == 0 and f"left out, unreadable: {named}" in differed.stdout
    analyzed = cli("analyze", str(sweep), "analysis=[weights]", "probe_size=16", "train_subset=16")
    assert analyzed.returncode == 0 and f"skipped seed=1: {named}" in analyzed.stdout
    assert (sweep / "seed=0" / "analysis" / "weights.json").is_file()

    resumed = cli("resume", str(sweep), cwd=tmp_path)
    assert resumed.returncode == 0 and "seed=1: unreadable (" in resumed.stdout
    assert metrics(bad)["status"] == "completed" and checksums(bad)["final_model.pt"] == weights


@contextlib.contextmanager
def small_filesystem(path: Path, size: int) -> Iterator[None]:
    """A tmpfs of `size` bytes at `path`; the test is skipped where this machine cannot mount one."""
    path.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"a full disk needs a small filesystem, and mounting a tmpfs failed here: {mounted.stderr.strip()}")
    try:
        yield
    finally:
        subprocess.run(["umount", "-l", str(path)], check=True)


@pytest.mark.slow
def test_a_full_disk_is_one_line_naming_the_file_and_resume_then_continues_bit_for_bit(tmp_path, tiny_npz):
    """A filesystem with room for the first checkpoint but not for the second (the new one is written
    beside the old): the run stops with one line naming checkpoint.pt and the space it needs,
    checkpoint.pt stays whole, and once there is room `resume` ends where a run on a roomy disk ends."""
    overrides = [*tiny_overrides(tiny_npz), "epochs=3", "trackio.enabled=false"]
    launched(tmp_path, *overrides, "hydra.run.dir=reference")
    reference = tmp_path / "reference"
    page = 4096
    checkpoint = (reference / "checkpoint.pt").stat().st_size
    present = sum(-(-path.stat().st_size // page) * page for path in reference.rglob("*") if path.is_file() and path.name != "final_model.pt")
    disk, run = tmp_path / "disk", tmp_path / "disk" / "run"
    with small_filesystem(disk, present + checkpoint // 2):
        failed = launch_here(tmp_path, *overrides, f"hydra.run.dir={run}")
        assert failed.returncode == 1
        (line,) = failed.stderr.splitlines()
        assert line.startswith(f"optqual: error: {run / 'checkpoint.pt'}: no space left on device: it needs at least ")
        assert line.endswith(f"MiB are free there; free some space, then python -m optqual resume {run}")
        assert not list(run.glob(".*.tmp"))
        load_checkpoint(run)  # whole: its checksum holds
        subprocess.run(["mount", "-o", "remount,size=64m", str(disk)], check=True)
        assert cli("resume", str(run), cwd=tmp_path).returncode == 0
        assert_same_run(reference, run)


KILLER = Path(__file__).parent / "kill_at_commit.py"


@pytest.mark.slow
def test_a_kill_at_any_write_leaves_a_run_that_a_relaunch_finishes_bit_for_bit(tmp_path, tiny_npz):
    """SIGKILL just before each commit of a file a run makes (its record, its split, its weights,
    every checkpoint, history and metrics), one run per commit: each killed run reads as never
    started or as stopped, and launching it again finishes it as a run never killed."""
    overrides = [*tiny_overrides(tiny_npz), "trackio.enabled=false"]
    counted = subprocess.run([sys.executable, str(KILLER), "-1", *overrides, "hydra.run.dir=reference"], cwd=tmp_path,
                             capture_output=True, text=True, check=True)
    commits = int(counted.stderr.rsplit("commits: ", 1)[1])  # and a line "commit: FILE" for each
    assert commits >= 10
    def killed_at(kill_at: int) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, str(KILLER), str(kill_at), *overrides, f"hydra.run.dir=killed_at_{kill_at}"],
                              cwd=tmp_path, capture_output=True, text=True)

    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:  # the kills are independent: two at a time
        kills = list(pool.map(killed_at, range(commits)))
    for kill_at, killed in enumerate(kills):
        run = tmp_path / f"killed_at_{kill_at}"
        assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
        if is_run_dir(run):
            assert read_run(run).status in (RunStatus.STARTED, RunStatus.STOPPED), kill_at
        else:  # killed before its record: a folder the tools call never started
            with pytest.raises(RunDirError, match="holds a launch that never started"):
                read_sweep(run)
        relaunched = launch_here(tmp_path, *overrides, f"hydra.run.dir={run}")
        assert relaunched.returncode == 0, (kill_at, relaunched.stderr[-2000:])
        assert_same_run(tmp_path / "reference", run)
        assert not list(run.glob(".*.tmp")), kill_at


def test_a_truncated_history_of_a_finished_run_is_said_and_plotted_as_far_as_it_goes(tmp_path, tiny_npz):
    launched(tmp_path, *tiny_overrides(tiny_npz), "epochs=3", "trackio.enabled=false", "hydra.run.dir=run")
    history = tmp_path / "run" / "history.csv"
    lines = history.read_text().splitlines(keepends=True)
    history.write_text("".join(lines[:2]) + lines[2][:10])  # the header, epoch 1, and a torn row of epoch 2
    summarized = cli("summarize", str(tmp_path / "run"))
    assert summarized.returncode == 0
    assert f"Warning: {history} holds 1 of the 3 epochs the run trained (truncated?): its curve in curves.png ends early." \
        in summarized.stdout
    assert "ends early" in (tmp_path / "run" / "summary.md").read_text()


def test_a_run_the_disk_cannot_hold_is_refused_before_any_work(tmp_path, tiny_npz):
    """A filesystem smaller than three copies of the weights (the initial ones, a checkpoint and the
    next one while it is written): refused in one line, leaving nothing."""
    disk = tmp_path / "disk"
    with small_filesystem(disk, 256 * 1024):  # ResNet-8's weights are about 310 KiB
        refused = launch_here(tmp_path, *tiny_overrides(tiny_npz), "trackio.enabled=false", f"hydra.run.dir={disk / 'run'}")
        assert refused.returncode == 1
        (line,) = refused.stderr.splitlines()
        assert line.startswith(f"optqual: error: {disk / 'run'}: the run needs at least 0.9 MiB of disk for its weights and checkpoints")
        assert not any(disk.iterdir())


def test_data_larger_than_its_device_can_take_is_refused_before_it_moves(tmp_path, monkeypatch):
    np.savez(tmp_path / "d.npz", x_train=np.zeros((40, 8, 8, 3), np.uint8), y_train=np.arange(40) % 4,
             x_test=np.zeros((10, 8, 8, 3), np.uint8), y_test=np.arange(10) % 4)
    monkeypatch.setattr(images, "free_memory", lambda device: 1000)  # bytes
    with pytest.raises(ConfigError, match=rf"^data.path={tmp_path / 'd.npz'}: its images take 0.00 GiB on cpu, and 0.00 GiB are free there$"):
        npz(str(tmp_path / "d.npz"), torch.device("cpu"), batch_size=4)
    assert images.free_memory is not free_memory and free_memory(torch.device("cpu")) > 0  # the real one reads this machine


@pytest.mark.slow
def test_a_kill_at_a_sweeps_own_writes_leaves_a_sweep_that_resume_or_its_command_finishes(tmp_path, tiny_npz):
    """SIGKILL at the writes of the sweep itself (jobs.yaml, multirun.yaml, the summary after the
    first job and at the end) and at the second job's record: a sweep killed before it started
    says so and its command runs it; any other is finished by resume, each job bit for bit."""
    sweep = ["-m", *tiny_overrides(tiny_npz), "epochs=1", "seed=0,1", "trackio.enabled=false"]
    counted = subprocess.run([sys.executable, str(KILLER), "-1", *sweep, "hydra.sweep.dir=reference"], cwd=tmp_path,
                             capture_output=True, text=True, check=True)
    files = [line.removeprefix("commit: ") for line in counted.stderr.splitlines() if line.startswith("commit: ")]
    kills = [files.index("reference/jobs.yaml"), files.index("reference/multirun.yaml"), files.index("reference/summary.csv"),
             files.index(str(tmp_path / "reference" / "seed=1" / ".hydra")), len(files) - 2]

    def killed_at(kill_at: int) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, str(KILLER), str(kill_at), *sweep, f"hydra.sweep.dir=killed_at_{kill_at}"],
                              cwd=tmp_path, capture_output=True, text=True)

    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
        outcomes = list(pool.map(killed_at, kills))
    for kill_at, killed in zip(kills, outcomes):
        assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
        directory = tmp_path / f"killed_at_{kill_at}"
        if kill_at < 2:
            with pytest.raises(RunDirError, match="holds a sweep that never started"):
                read_sweep(directory)
            assert launch_here(tmp_path, *sweep, f"hydra.sweep.dir={directory.name}").returncode == 0
        else:
            assert cli("resume", str(directory), cwd=tmp_path).returncode == 0
        for job in ("seed=0", "seed=1"):
            assert_same_run(tmp_path / "reference" / job, directory / job)
        assert "2 jobs: 2 completed" in (directory / "summary.md").read_text(), kill_at


def test_a_sweep_whose_multirun_yaml_cannot_be_parsed_is_named_by_every_tool(tmp_path, tiny_npz):
    sweep = tmp_path / "sweep"
    launched(tmp_path, "-m", *tiny_overrides(tiny_npz), "epochs=1", "seed=0,1", "trackio.enabled=false", "hydra.sweep.dir=sweep")
    (sweep / "multirun.yaml").write_text('hydra:\n  run:\n    dir: "unterminated\n')
    for tool in ("summarize", "diff", "resume"):
        result = cli(tool, str(sweep))
        assert result.returncode == 2 and result.stderr.startswith(f"optqual {tool}: error: {sweep / 'multirun.yaml'}: cannot read it"), tool
    refused = launch_here(tmp_path, "-m", *tiny_overrides(tiny_npz), "epochs=1", "seed=0,1", "trackio.enabled=false", "hydra.sweep.dir=sweep")
    assert refused.returncode == 1
    assert refused.stderr.splitlines()[0].startswith(f"optqual: error: {sweep / 'multirun.yaml'} cannot be read (")
