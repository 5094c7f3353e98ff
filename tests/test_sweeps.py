"""Sweeps as a researcher runs them: isolated job directories, the summary, sweep diffs,
parallel (joblib) and cluster-style (submitit) launch, and no collisions."""

import contextlib
import csv
import json
import os
import shutil
import sqlite3
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Iterator

import pytest
import torch
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from conftest import REPO, cli, launch_here, launch_ok, launched, tiny_overrides
from optqual.__main__ import main as optqual_main
from optqual.runs.jobs import job_dirname, save_jobs
from optqual.tools.summary import progress
from optqual.runs.reader import read_sweep
from optqual.status import RunStatus
from optqual.launch.resources import SUBMITIT_LOCAL, jobs_at_once
from optqual.system.machine import cores

pytestmark = pytest.mark.slow  # `make test-fast` leaves these out

GRID = ["optimizer=sgd,adamw", "seed=0,1"]
JOBS = ["optimizer=adamw,seed=0", "optimizer=adamw,seed=1", "optimizer=sgd,seed=0", "optimizer=sgd,seed=1"]


def sweep_jobs(sweep: Path) -> list[Path]:
    return sorted(p for p in sweep.iterdir() if p.is_dir() and not p.name.startswith("."))


def metrics(job: Path) -> dict:
    return json.loads((job / "metrics.json").read_text())


def summary_rows(sweep: Path) -> dict[str, dict]:
    with open(sweep / "summary.csv") as file:
        return {row["job"]: row for row in csv.DictReader(file)}


def group_rows(sweep: Path) -> dict[str, list[str]]:
    """summary.md's group table: group label to its cells."""
    section = (sweep / "summary.md").read_text().split("## Groups")[1].split("## Jobs")[0]
    rows = [[cell.strip() for cell in line.strip("|").split("|")] for line in section.splitlines() if line.startswith("|")]
    return {row[0]: row for row in rows[2:]}


@contextlib.contextmanager
def lock_held(run_dir: Path) -> Iterator[None]:
    """Another process holds the run's lock, as the process training it does."""
    holder = subprocess.Popen([sys.executable, "-c", "import time; from filelock import FileLock; "
                               f"lock = FileLock({str(run_dir / '.lock')!r}); lock.acquire(); print('held', flush=True); time.sleep(120)"],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        yield
    finally:
        holder.kill()
        holder.wait()


@pytest.fixture(scope="session")
def sweep(tmp_path_factory, tiny_npz) -> tuple[Path, subprocess.CompletedProcess]:
    """optimizer=sgd,adamw x seed=0,1 on tiny data, one job after another, one thread each."""
    work = tmp_path_factory.mktemp("sweep")
    result = launched(work, "-m", *tiny_overrides(tiny_npz), *GRID, "threads=1", "trackio.enabled=false")
    (sweep_dir,) = (work / "outputs" / "multirun").glob("*/*")
    return sweep_dir, result


def test_every_job_gets_its_own_readably_named_directory(sweep):
    sweep_dir, _ = sweep
    jobs = sweep_jobs(sweep_dir)
    assert [job.name for job in jobs] == JOBS
    for job in jobs:
        # data.path holds '/': the job directory must still be one level below the sweep
        overrides = dict(o.split("=", 1) for o in OmegaConf.load(job / ".hydra" / "overrides.yaml"))
        assert job.name == f"optimizer={overrides['optimizer']},seed={overrides['seed']}"
        assert metrics(job)["optimizer"] == overrides["optimizer"] and (job / "final_model.pt").is_file()
    assert not (sweep_dir.parents[2] / "runs").exists()


def test_summary_groups_seeds_and_matches_the_runs(sweep):
    sweep_dir, result = sweep
    rows = summary_rows(sweep_dir)
    assert sorted(rows) == JOBS
    for job in sweep_jobs(sweep_dir):
        recorded, row = metrics(job), rows[job.name]
        assert row["status"] == "completed" and int(row["epochs"]) == recorded["epochs"] == 2
        for key in ("train_loss", "train_acc", "val_loss", "val_acc", "test_loss", "test_acc", "wall_seconds"):
            assert float(row[key]) == recorded[key], key
        assert row["group"] == job.name.split(",")[0]

    groups = group_rows(sweep_dir)
    assert sorted(groups) == ["optimizer=adamw", "optimizer=sgd"]
    for group, (_, n, test_mean_std, test_min, test_max, *_) in groups.items():
        tests = [metrics(job)["test_acc"] for job in sweep_jobs(sweep_dir) if job.name.startswith(group + ",")]
        assert n == "2"
        assert test_mean_std == f"{100 * statistics.fmean(tests):.2f} ± {100 * statistics.stdev(tests):.2f}"
        assert (test_min, test_max) == (f"{100 * min(tests):.2f}", f"{100 * max(tests):.2f}")
    means = [float(row[2].split("±")[0]) for row in groups.values()]
    assert means == sorted(means, reverse=True), "groups must be sorted best first"
    text = (sweep_dir / "summary.md").read_text()
    assert " leads " in text and "seed" in text.split(" leads ")[1]
    assert (sweep_dir / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    best = next(line for line in text.splitlines() if line.startswith(f"| {next(iter(groups))} "))
    assert best in result.stdout, "the summary table is printed at the end of the sweep"


def test_summary_of_a_running_sweep_is_partial(sweep, tmp_path):
    copy = tmp_path / "sweep"
    shutil.copytree(sweep[0], copy)
    for name in ("summary.csv", "summary.md", "curves.png"):
        (copy / name).unlink()
    shutil.rmtree(copy / "optimizer=sgd,seed=1")  # not started yet
    running = copy / "optimizer=adamw,seed=1" / "metrics.json"
    running.write_text(json.dumps({**json.loads(running.read_text()), "status": "running", "test_acc": None}))

    with lock_held(running.parent):  # a live process trains it
        result = cli("summarize", str(copy))
    assert result.returncode == 0, result.stderr
    assert "4 jobs: 2 completed, 1 pending, 1 running (partial" in result.stdout
    rows = summary_rows(copy)
    assert rows["optimizer=sgd,seed=1"]["status"] == "pending" and rows["optimizer=adamw,seed=1"]["status"] == "running"
    groups = group_rows(copy)
    assert groups["optimizer=adamw"][1] == "1" and groups["optimizer=adamw"][-1] == "1 running"
    assert groups["optimizer=sgd"][1] == "1" and groups["optimizer=sgd"][-1] == "1 pending"


def test_summarize_works_on_a_single_run_directory(sweep, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(sweep[0] / "optimizer=sgd,seed=0", run)
    result = cli("summarize", str(run))
    assert result.returncode == 0, result.stderr
    assert "1 jobs: 1 completed" in result.stdout and "One group" in result.stdout
    assert summary_rows(run)["run"]["test_acc"] == str(metrics(run)["test_acc"])
    assert (run / "curves.png").is_file()


def test_summarize_refuses_a_directory_without_runs(tmp_path):
    result = cli("summarize", str(tmp_path))
    assert result.returncode == 2 and "neither a sweep directory" in result.stderr
    assert not list(tmp_path.iterdir())


def test_diff_of_a_sweep_lists_the_keys_that_vary(sweep):
    result = cli("diff", str(sweep[0]))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith(f"4 jobs in {sweep[0]}; 10 config keys vary")
    varying = {line.split()[0]: line.split(None, 1)[1] for line in lines[2:]}
    assert varying["seed"] == "0, 1"
    assert varying["optimizer._target_"] == "'torch.optim.AdamW', 'torch.optim.SGD'"
    assert "data.path" not in varying and "epochs" not in varying


def test_a_failing_job_still_leaves_a_summary(tmp_path, tiny_npz):
    """One job cannot write its history: it fails, the other jobs run, the summary shows it."""
    (tmp_path / "sweep" / "optimizer=adamw,seed=1" / "history.csv").mkdir(parents=True)  # a directory in the way
    result = launch_here(tmp_path, "-m", *tiny_overrides(tiny_npz), *GRID, "hydra.sweep.dir=sweep", "trackio.enabled=false")
    assert result.returncode != 0
    sweep_dir = tmp_path / "sweep"
    assert metrics(sweep_dir / "optimizer=adamw,seed=1")["status"] == "failed"
    rows = summary_rows(sweep_dir)
    assert [rows[job]["status"] for job in JOBS] == ["completed", "failed", "completed", "completed"]
    assert "1 failed" in result.stdout, "the table is printed although Hydra skips on_multirun_end"

    for name in ("summary.csv", "summary.md", "curves.png"):
        (sweep_dir / name).unlink()
    again = cli("summarize", str(sweep_dir))
    assert again.returncode == 0 and "4 jobs: 3 completed, 1 failed" in again.stdout
    assert summary_rows(sweep_dir) == rows


def test_joblib_runs_jobs_in_parallel_and_matches_the_sequential_sweep(sweep, tmp_path, tiny_npz):
    """Same jobs, same thread count: bit-identical to the sequential sweep. Trackio takes
    four concurrent writers and records the sweep in each run's config."""
    launch_ok(tmp_path, "-m", *tiny_overrides(tiny_npz), *GRID, "threads=1", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2")
    (parallel,) = (tmp_path / "outputs" / "multirun").glob("*/*")
    assert [job.name for job in sweep_jobs(parallel)] == JOBS
    for job in JOBS:
        a = torch.load(sweep[0] / job / "final_model.pt", weights_only=True)
        b = torch.load(parallel / job / "final_model.pt", weights_only=True)
        assert all(torch.equal(a[k], b[k]) for k in a), job
    assert {k: v["test_acc"] for k, v in summary_rows(parallel).items()} == {k: v["test_acc"] for k, v in summary_rows(sweep[0]).items()}

    with sqlite3.connect(tmp_path / "outputs" / "trackio" / "resnet8_npz.db") as db:
        configs = {name: json.loads(config) for name, config in db.execute("select run_name, config from configs")}
        logged = db.execute("select run_name, count(*) from metrics group by run_name").fetchall()
    started = f"{parallel.parent.name}/{parallel.name.removesuffix('_resnet8_npz')}"
    assert sorted(configs) == [f"{job.replace('optimizer=', '')} @ {started}" for job in JOBS]
    assert all(config["sweep"] == parallel.name and config["run_dir"].startswith(str(parallel)) for config in configs.values())
    assert sorted(count for _, count in logged) == [3, 3, 3, 3]  # two epochs and the test metrics


def test_parallel_jobs_split_the_cores(tmp_path):
    save_jobs(tmp_path, [[f"optimizer={name}", f"seed={seed}"] for name in ("sgd", "adamw") for seed in range(3)])

    def hydra_cfg(mode: RunMode, launcher: dict) -> DictConfig:
        return OmegaConf.create({"mode": mode, "launcher": launcher, "sweep": {"dir": str(tmp_path)}})

    assert jobs_at_once(hydra_cfg(RunMode.MULTIRUN, {"n_jobs": 4})) == 4
    assert jobs_at_once(hydra_cfg(RunMode.MULTIRUN, {"n_jobs": 64})) == 6  # never more than the sweep's 6 jobs
    assert jobs_at_once(hydra_cfg(RunMode.MULTIRUN, {"n_jobs": -1})) == min(6, os.cpu_count())
    assert jobs_at_once(hydra_cfg(RunMode.MULTIRUN, {"_target_": SUBMITIT_LOCAL, "timeout_min": 60})) == 6  # starts them all
    assert jobs_at_once(hydra_cfg(RunMode.MULTIRUN, {"_target_": "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"})) == 1
    assert jobs_at_once(hydra_cfg(RunMode.MULTIRUN, {"_target_": "hydra._internal.core_plugins.basic_launcher.BasicLauncher"})) == 1
    assert jobs_at_once(hydra_cfg(RunMode.RUN, {"n_jobs": 4})) == 1


def test_submitit_local_runs_a_sweep(tmp_path, tiny_npz):
    launch_ok(tmp_path, "-m", *tiny_overrides(tiny_npz), "seed=0,1", "hydra/launcher=submitit_local", "trackio.enabled=false")
    (sweep_dir,) = (tmp_path / "outputs" / "multirun").glob("*/*")
    assert [job.name for job in sweep_jobs(sweep_dir)] == ["seed=0", "seed=1"]
    assert [row["status"] for row in summary_rows(sweep_dir).values()] == ["completed", "completed"]
    # submitit_local starts every job at once: each takes its share of the cores, not all of them
    assert [metrics(job)["threads"] for job in sweep_jobs(sweep_dir)] == [max(1, cores() // 2)] * 2


def test_slurm_launcher_ships_defaults_for_one_gpu_per_job(tmp_path):
    result = launch_ok(tmp_path, "hydra/launcher=slurm", "hydra.launcher.partition=gpu", "--cfg", "hydra", "-p", "hydra.launcher")
    launcher = OmegaConf.create(result.stdout.split("\n", 1)[1])
    assert launcher._target_.endswith("SlurmLauncher") and launcher.partition == "gpu"
    assert (launcher.gpus_per_node, launcher.tasks_per_node, launcher.cpus_per_task, launcher.timeout_min) == (1, 1, 4, 120)


def test_sweeps_started_together_never_share_a_directory(tmp_path, tiny_npz):
    """Both sweeps ask for the same directory name; jobs write nowhere but their own directory."""
    command = [sys.executable, str(REPO / "launch.py"), "-m", *tiny_overrides(tiny_npz), "epochs=1", "seed=0,1",
               "hydra.sweep.dir=${optqual_fresh_dir:sweep}", "trackio.enabled=false"]
    processes = [subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    for process in processes:
        assert process.wait(timeout=300) == 0, process.stderr.read()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sweep", "sweep_2"]
    for sweep_dir in (tmp_path / "sweep", tmp_path / "sweep_2"):
        assert [job.name for job in sweep_jobs(sweep_dir)] == ["seed=0", "seed=1"]
        assert [row["status"] for row in summary_rows(sweep_dir).values()] == ["completed", "completed"]


def test_a_bad_value_in_any_job_stops_the_sweep_before_the_first_job(tmp_path, tiny_npz):
    result = launch_here(tmp_path, "-m", *tiny_overrides(tiny_npz), "optimizer.lr=0.1,-1", "seed=0,1")
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f"optqual: error: job #2 (data=npz data.path={tiny_npz} data.batch_size=32 epochs=2 eval_every=1 optimizer.lr=-1 seed=0):"
        " optimizer.lr=-1.0: must lie in (0, inf)"]
    assert not list(tmp_path.iterdir()), "nothing may be written before the sweep is known to be valid"


def test_a_job_is_named_by_what_varies_and_job_n_when_nothing_does(tmp_path):
    def name(task: list[str], job: list[str], num: int = 0) -> str:
        OmegaConf.save({"hydra": {"overrides": {"task": task}, "sweeper": {"params": None}}}, tmp_path / "multirun.yaml")
        return job_dirname(str(tmp_path), OmegaConf.create(job), num)

    assert name(["seed=0", "optimizer=sgd,adamw"], ["seed=0", "optimizer=adamw"]) == "optimizer=adamw"
    assert name(["seed=0", "loss.label_smoothing=0.1"], ["seed=0", "loss.label_smoothing=0.1"], 3) == "job3"
    assert name(["data.path=/a/b.npz", "seed=0,1"], ["data.path=/a/b.npz", "seed=1"]) == "seed=1"
    assert name(["tag=a/b,c"], ["tag=a/b"]) == "tag=a_b"  # one path component


def test_a_job_killed_while_running_reads_as_stopped_and_resume_is_named(tmp_path):
    """metrics.json says `running` until the end; only the run's lock tells a live process from a killed one."""
    sweep_dir = tmp_path / "sweep"
    job = sweep_dir / "seed=0"
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "config.yaml").write_text("seed: 0\n")
    (job / ".hydra" / "overrides.yaml").write_text("- seed=0\n")
    (job / "metrics.json").write_text(json.dumps({"status": "running", "epochs": 3}))
    with lock_held(job):
        assert read_sweep(sweep_dir)[0].status == RunStatus.RUNNING  # a live process trains it
    (stopped,) = read_sweep(sweep_dir)
    assert stopped.status == RunStatus.STOPPED and stopped.status.ended and not stopped.status.final
    assert "1 stopped; the stopped ones were killed: `python -m optqual resume` continues them" in progress([stopped])


@pytest.mark.parametrize("sweep_syntax, names", [
    (["optimizer=glob(adam*)"], ["optimizer=adam", "optimizer=adamw"]),  # a glob of config group options
    (["seed=range(0,2)"], ["seed=0", "seed=1"]),
    (["seed=choice(0,1)"], ["seed=0", "seed=1"]),
    (["experiment_name='a b','c'"], ["experiment_name='a b'", "experiment_name='c'"]),  # quoted elements keep their quotes
    (["experiment=two_seeds", "hydra.searchpath=[file://presets]"], ["seed=0", "seed=1"]),  # a user's preset sets the sweep
])
def test_every_basic_sweeper_syntax_is_summarized_diffed_and_resumed(tmp_path, tiny_npz, sweep_syntax, names):
    """The jobs are expanded once, by the sweeper's own code, when the sweep starts; the tools read them back."""
    (tmp_path / "presets" / "experiment").mkdir(parents=True)
    (tmp_path / "presets" / "experiment" / "two_seeds.yaml").write_text("# @package _global_\nhydra:\n  sweeper:\n    params:\n      seed: 0,1\n")
    result = launch_here(tmp_path, "-m", *tiny_overrides(tiny_npz), "epochs=1", *sweep_syntax, "hydra.sweep.dir=sweep",
                         "trackio.enabled=false")
    assert result.returncode == 0, result.stderr[-3000:]
    sweep_dir = tmp_path / "sweep"
    assert [job.name for job in sweep_jobs(sweep_dir)] == names
    assert sorted(summary_rows(sweep_dir)) == names and "2 jobs: 2 completed" in result.stdout

    shutil.rmtree(sweep_dir / names[1])  # as if the sweep had been stopped before its last job
    assert [(job.name, job.status) for job in read_sweep(sweep_dir)] == [(names[0], RunStatus.COMPLETED), (names[1], RunStatus.PENDING)]
    assert optqual_main(["diff", str(sweep_dir)]) == 0
    assert optqual_main(["summarize", str(sweep_dir)]) == 0
    assert "2 jobs: 1 completed, 1 pending" in (sweep_dir / "summary.md").read_text()
    if sweep_syntax[0].startswith("optimizer=glob"):  # resume starts the missing job where the sweep would have
        resumed = cli("resume", str(sweep_dir))
        assert resumed.returncode == 0, resumed.stderr[-3000:]
        assert f"{names[1]}: not started, starting it" in resumed.stdout and "2 jobs: 2 completed" in resumed.stdout
        assert metrics(sweep_dir / names[1])["optimizer"] == "adamw"


@pytest.mark.parametrize("sweep_syntax, error", [
    (["optimizer.lr=interval(0.1,1)"], "optqual: error: optimizer.lr=interval(0.1,1): the basic sweeper runs lists, range(), choice() and glob()"),
    (["optimizer=glob(*)", "optimizer.momentum=0.9"], "optqual: error: job #0 (optimizer=adam optimizer.momentum=0.9"),  # adam has no momentum
    (["optimizer=sgd,nope"], "optqual: error: job #1 (optimizer=nope"),
    (["seed=range(0,3)", "optimizer.lr=-1"], "optqual: error: job #0 (seed=0 optimizer.lr=-1"),
    (["model=mlp,resnet8", "++model.hidden=[8]"], "optqual: error: job #1 (model=resnet8 ++model.hidden=[8] trackio.enabled=False): "
     "model.hidden=[8]: the run has no key model.hidden"),  # found without building a model
])
def test_a_sweep_that_cannot_run_is_one_line_before_anything_is_written(tmp_path, sweep_syntax, error):
    result = launch_here(tmp_path, "-m", *sweep_syntax, "trackio.enabled=false")
    assert result.returncode == 1
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith(error), line
    assert not list(tmp_path.iterdir())
