"""The Hydra callback of every run and sweep (conf/config.yaml: hydra.callbacks).

A run's or sweep's directory is claimed, created and checked writable when it starts, not
when its name is resolved, so `--cfg hydra --resolve` writes nothing. Before a sweep's first
job starts, the sweep is expanded into its jobs as Hydra's basic sweeper expands them (lists,
range, choice, glob) and every job's config is composed and checked, so a bad value in job
37 of 50 stops the sweep at once, with one line and before anything is written, instead of
hours in. The jobs are saved in the sweep directory for `summarize`, `diff` and `resume`
(optqual/runs/jobs.py). Hydra skips `on_multirun_end` when any job fails, so the summary
is rewritten at the end of every job instead, in the job's own process (joblib worker or
cluster node too). A file lock serialises jobs that end together, so the last writer has
seen every finished job."""

import logging
import sys
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.core.utils import JobReturn
from hydra.errors import HydraException
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf, open_dict
from omegaconf.errors import OmegaConfBaseException
import torch
import yaml

from optqual.config.checks import check_config
from optqual.errors import ConfigError
from optqual.files.atomic import check_writable, write_text
from optqual.files.layout import MULTIRUN, SUMMARY_LOCK, SWEEP_LOCK
from optqual.launch.directories import make_dirs, start_claiming
from optqual.launch.placement import check_local_launcher
from optqual.launch.overrides import explain
from optqual.runs.jobs import command_line, job_overrides, knows_jobs_up_front, override_values, save_jobs
from optqual.status import RunStatus
from optqual.tools.summary import Summary, terminal_text, write_summary

log = logging.getLogger(__name__)


def one_line(err: Exception) -> str:
    """Hydra's and OmegaConf's messages go on with the search path and the full key: their first line says it."""
    return str(err).strip().splitlines()[0]


def output_dir(config: DictConfig, key: str) -> Path:
    """`hydra.run.dir` or `hydra.sweep.dir`, claimed (optqual_fresh_dir) and created now that a
    run or sweep really starts; one line and exit when it cannot be written."""
    start_claiming()
    HydraConfig.instance().set_config(config)  # for ${hydra:...} in the name; Hydra sets it only for the job
    try:
        path = Path(str(OmegaConf.select(config, f"hydra.{key}")))
        check_writable(path, f"hydra.{key}")
        make_dirs(path)
    except (ConfigError, OSError) as err:
        sys.exit(f"optqual: error: {err}")
    return path


def checked_jobs(config: DictConfig) -> list[list[str]]:
    """Every job's overrides, each composed as the launcher will compose it and checked."""
    loader = GlobalHydra.instance().config_loader()
    try:
        jobs = job_overrides(config.hydra, loader)
    except (ConfigError, HydraException) as err:  # interval(), a glob of a group that does not exist, ...
        sys.exit(f"optqual: error: {one_line(err)}")
    if not jobs:  # range(3,3), a glob that matches no option: Hydra would run nothing and exit 0
        swept = " ".join(str(o.input_line) for o in command_line(config.hydra) if o.is_sweep_override())
        sys.exit(f"optqual: error: {swept or 'the sweep'} gives the sweep no job")
    for num, overrides in enumerate(jobs):
        try:
            job = loader.load_sweep_config(config, overrides)  # a preset's hydra.searchpath and sweeper.params too
            with open_dict(job):
                del job["hydra"]  # as the job gets it
            check_config(job)
        except HydraException as err:
            sys.exit(f"optqual: error: job #{num} ({' '.join(overrides)}): {explain(err, overrides, loader, RunMode.RUN)}")
        except (ConfigError, OmegaConfBaseException) as err:
            sys.exit(f"optqual: error: job #{num} ({' '.join(overrides)}): {one_line(err)}")
    values = [override_values(overrides) for overrides in jobs]
    for key in config.summary.tune:  # a summary that cannot be written would surface only at the first job's end
        if len({job.get(key) for job in values}) < 2:
            sys.exit(f"optqual: error: summary.tune: {key} does not vary across the sweep's jobs, so nothing selects it")
    return jobs


_sweeping: list[FileLock] = []  # the lock of the sweep this process runs, held until it ends (or the process does)


def claim_sweep(sweep_dir: Path, config: DictConfig) -> None:
    """A sweep directory belongs to one sweep: this process holds its lock while the sweep runs, and a
    directory that holds another sweep's jobs is refused before anything is written to it."""
    sweep_dir = sweep_dir.absolute()  # as the messages of its runs name them
    lock = FileLock(sweep_dir / SWEEP_LOCK)
    try:
        lock.acquire(timeout=0)
    except Timeout:
        sys.exit(f"optqual: error: {sweep_dir} is being swept by another process (it holds {SWEEP_LOCK}): "
                 "wait for it, or sweep into another hydra.sweep.dir")
    if (sweep_dir / MULTIRUN).is_file():
        try:
            before = [str(o.input_line) for o in command_line(OmegaConf.load(sweep_dir / MULTIRUN).hydra)]
        except (OSError, OmegaConfBaseException, ValueError, yaml.YAMLError) as err:
            lock.release()
            sys.exit(f"optqual: error: {sweep_dir / MULTIRUN} cannot be read ({one_line(err)}): sweep into another hydra.sweep.dir")
        now = [str(o.input_line) for o in command_line(config.hydra)]
        if before != now:
            lock.release()
            sys.exit(f"optqual: error: {sweep_dir} holds another sweep ({' '.join(before)}): continue it with "
                     f"python -m optqual resume {sweep_dir}, or sweep into another hydra.sweep.dir")
    _sweeping.append(lock)


def refresh(sweep_dir: Path) -> Summary:
    with FileLock(sweep_dir / SUMMARY_LOCK):
        return write_summary(sweep_dir)


class LaunchCallback(Callback):
    # Hydra turns an exception raised by a callback into a warning and goes on: every error exits here

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        output_dir(config, "run.dir")

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        jobs = checked_jobs(config) if knows_jobs_up_front(config.hydra) else None
        try:
            check_local_launcher(config.hydra.launcher, config.device, torch.cuda.device_count())
        except ConfigError as err:
            sys.exit(f"optqual: error: {err}")
        sweep_dir = output_dir(config, "sweep.dir")
        claim_sweep(sweep_dir, config)
        if jobs is not None:
            save_jobs(sweep_dir, jobs)
        # the sweep's start is committed by its multirun.yaml (read_sweep: a jobs.yaml alone never started);
        # the basic sweeper saves it too, Optuna's does not: job names, summary.tune and resume read it
        write_text(sweep_dir / MULTIRUN, OmegaConf.to_yaml(config))

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        if config.hydra.mode != RunMode.MULTIRUN:
            return
        try:
            summary = refresh(Path(config.hydra.sweep.dir))
        except Exception as err:  # a summary must never turn a finished job into a failed one
            log.warning("sweep summary not written: %r (python -m optqual summarize SWEEP_DIR retries)", err)
            return
        # on_multirun_end will not run when a job failed: the job that ends the sweep prints instead
        if summary.finished and any(job.status == RunStatus.FAILED for job in summary.jobs):
            print(terminal_text(summary), flush=True)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        print(terminal_text(refresh(Path(config.hydra.sweep.dir))), flush=True)
        while _sweeping:
            _sweeping.pop().release()
