"""`python -m optqual resume RUN_DIR | SWEEP_DIR`: finish what was stopped.

A run is continued by training with the optqual that started it (the one whose conf/ is its
Hydra config source: the code and configs it was made with, whatever optqual this command
runs from: a checkout's launch.py, or an installed package's `python -m optqual train`), in
the directory it was started from, with its own command-line overrides and `hydra.run.dir`
pointing at the run: the job finds its checkpoint.pt, checks that the config is the one the
checkpoint was written with (optqual/train.py), and continues from it.
`hydra.output_subdir=null` keeps the run's original .hydra/ files as they were; a default that
changed since the run started is pinned to the value it got (optqual/config/upgrade.py). A sweep is resumed job by job: completed and
diverged jobs are skipped, stopped ones continue, jobs that never started are started in
the directory the sweep would have given them, and a job whose record cannot be read (a
truncated metrics.json) is run again: from its checkpoint when it has a sound one; the
summary is rewritten at the end.
"""

import os
import subprocess
import sys
from pathlib import Path

from omegaconf import DictConfig

from optqual.config.upgrade import pinned_defaults
from optqual.errors import ConfigError
from optqual.files.layout import MULTIRUN, is_run_dir
from optqual.runs.reader import Job, RunDirError, read_job, read_sweep, read_yaml
from optqual.tools.summary import terminal_text, write_summary

STOPPED_BY_SIGNAL = {130, 143}  # 128 + SIGINT, 128 + SIGTERM: the user wants everything to stop


def quoted(value: str) -> str:
    """A value as a Hydra override literal: paths of sweep jobs hold ',' and '='."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def training_command(hydra_cfg: DictConfig) -> tuple[list[str], dict[str, str]]:
    """How to train with the optqual that made a run or sweep, and the environment to do it in: the
    launch.py of the checkout whose conf/ was its config source, or `python -m optqual train` of the
    installed package whose optqual/conf/ it was (found first on the path)."""
    (main,) = [source for source in hydra_cfg.runtime.config_sources if source.provider == "main"]
    conf = Path(main.path)
    if not conf.is_dir():
        raise ConfigError(f"{conf} is gone: resume trains with the optqual that started the run")
    if (conf.parent / "launch.py").is_file():  # a checkout
        return [sys.executable, str(conf.parent / "launch.py")], dict(os.environ)
    path = os.pathsep.join([str(conf.parents[1]), *filter(None, [os.environ.get("PYTHONPATH")])])  # optqual/conf -> its site
    return [sys.executable, "-m", "optqual", "train"], {**os.environ, "PYTHONPATH": path}


def launch(hydra_cfg: DictConfig, overrides: list[str], run_dir: Path, keep_hydra_files: bool) -> int:
    """Train with the optqual that made `hydra_cfg`'s run or sweep, where it was run, on `run_dir`."""
    entry, environment = training_command(hydra_cfg)
    command = [*entry, *overrides, f"hydra.run.dir={quoted(str(run_dir.resolve()))}"]
    if keep_hydra_files:
        command.append("hydra.output_subdir=null")
    return subprocess.run(command, cwd=hydra_cfg.runtime.cwd, env=environment).returncode


def resume_job(job: Job, sweep_dir: Path | None) -> int:
    """Continue (or start) one job; its exit code. Done jobs are left alone."""
    if job.status.final:  # rerunning it would only repeat it
        print(f"{job.name}: {job.status}, skipped", flush=True)
        return 0
    if job.path is None:  # never started: start it where the sweep would have put it
        print(f"{job.name}: not started, starting it", flush=True)
        sweep = read_yaml(sweep_dir / MULTIRUN)
        return launch(sweep.hydra, job.overrides + pinned_defaults(sweep, job.overrides), sweep_dir / job.name, keep_hydra_files=False)
    try:
        hydra_cfg = job.hydra
    except RunDirError as err:
        print(f"{job.name}: cannot resume it: {err}", flush=True)
        return 1
    if job.unreadable is not None:  # training checks its checkpoint (or starts it again) and writes its record anew
        print(f"{job.name}: unreadable ({job.unreadable}), running it again", flush=True)
    else:
        print(f"{job.name}: {job.status}, resuming", flush=True)
    overrides = list(hydra_cfg.overrides.task)
    return launch(hydra_cfg, overrides + pinned_defaults(job.config, overrides), job.path, keep_hydra_files=True)


def resume(directory: str | Path) -> int:
    """Resume a run, or every unfinished job of a sweep; 0 when everything ended well."""
    directory = Path(directory)
    if is_run_dir(directory):
        return resume_job(read_job(directory, []), None)
    failures = 0
    for job in read_sweep(directory):
        code = resume_job(job, directory)
        if code in STOPPED_BY_SIGNAL:
            return code
        failures += code != 0
    print(terminal_text(write_summary(directory)), flush=True)
    return 1 if failures else 0
