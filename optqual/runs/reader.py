"""The one reader of a run directory and of a sweep directory, used by every tool.

A run directory holds Hydra's record of its launch (.hydra/: the composed config, hydra.yaml,
the command-line overrides), what the run wrote (resolved_config.yaml, metrics.json,
history.csv, weight files, checkpoint.pt) and its lock. `read_run` reads it as a `Job`: its
overrides, metrics and status, and on demand its config (the one it was built with, which
rebuilds its model: resolved_config.yaml, or for a run of an optqual before 2026-12-06 the
composed config with the data's facts from metrics.json; either read in this version's form,
optqual/config/upgrade.py), its history and the paths of its weights.

A sweep's jobs are known before any of them starts: optqual's sweep callback saves every
job's overrides in jobs.yaml, expanded as Hydra's basic sweeper expands them
(optqual/runs/jobs.py). `read_sweep` reads them all: a job without a directory is `pending`;
one whose directory has no metrics.json yet is `started`; otherwise its status is the one
metrics.json records (`running`, `completed`, `failed`, ...: optqual/status.py), except that
a job recorded `running` whose lock no process holds was killed: it reads as `stopped`, and
`resume` continues it. A job of a sweep whose files cannot be read (a truncated metrics.json)
is `unreadable`, with the reason, and every tool goes on with the others. A single run's
directory reads as a sweep of one job. Anything else that cannot be read is a `RunDirError`
naming the path.
"""

import csv
import functools
import itertools
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException
import yaml

from optqual.config.resolved import resolved_config
from optqual.config.upgrade import upgrade
from optqual.files.layout import HISTORY, HYDRA_DIR, JOBS, LOCK, METRICS, MULTIRUN, RESOLVED_CONFIG, SWEEP_LOCK, is_run_dir, weights_file
from optqual.files.lock import trained_now
from optqual.runs.jobs import expected_overrides, job_dirname, override_values
from optqual.status import RunStatus


class RunDirError(ValueError):
    """A directory that is not a run or sweep directory, or a file of one that cannot be read; names the path."""


def read_yaml(path: Path) -> DictConfig:
    try:
        return OmegaConf.load(path)
    except (OSError, OmegaConfBaseException, ValueError, yaml.YAMLError) as err:
        raise RunDirError(f"{path}: cannot read it ({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''})") from None


@dataclass
class Job:
    """A run, on its own or as a job of a sweep; a pending job has no directory yet."""

    name: str  # its directory's name (the name it will get, for a pending job)
    path: Path | None  # None while pending
    overrides: list[str]  # the job's command-line overrides, as in .hydra/overrides.yaml
    metrics: dict = field(default_factory=dict)
    unreadable: str | None = None  # why a file of the job cannot be read (its status is then `unreadable`)

    @property
    def status(self) -> RunStatus:
        if self.path is None:
            return RunStatus.PENDING
        if self.unreadable is not None:
            return RunStatus.UNREADABLE
        recorded = RunStatus(self.metrics.get("status", RunStatus.STARTED))
        if recorded == RunStatus.RUNNING and not trained_now(self.path):  # killed: metrics.json never heard
            return RunStatus.STOPPED
        return recorded

    @functools.cached_property
    def config(self) -> DictConfig:
        """The config the run was built with, resolved, with the facts its data decided."""
        if self.path is None:
            raise RunDirError(f"{self.name} has not started: it has no config yet")
        if (self.path / RESOLVED_CONFIG).is_file():
            return OmegaConf.create(upgrade(OmegaConf.to_container(read_yaml(self.path / RESOLVED_CONFIG))))
        composed = read_yaml(self.path / HYDRA_DIR / "config.yaml")  # a run of an optqual before 2026-12-06
        upgraded = OmegaConf.create(upgrade(OmegaConf.to_container(composed, resolve=False)))
        return OmegaConf.create(resolved_config(upgraded, self.metrics.get("data") or {}))

    @functools.cached_property
    def hydra(self) -> DictConfig:
        """The `hydra` node Hydra saved when the run was launched (where, from which conf/, with what)."""
        return read_yaml(self.path / HYDRA_DIR / "hydra.yaml").hydra

    def history(self) -> list[dict[str, float | None]]:
        """history.csv as numbers; None where a column is empty (epochs without validation). A row cut
        short (a file truncated outside optqual, which writes it whole) ends it."""
        if self.path is None or not (self.path / HISTORY).is_file():
            return []
        with open(self.path / HISTORY, newline="") as file:
            rows = list(itertools.takewhile(lambda row: None not in row.values(), csv.DictReader(file)))
        return [{key: float(value) if value else None for key, value in row.items()} for row in rows]

    def weights(self, name: str) -> Path:
        """The file of the weights called `name` (final, best, initial, ema, ...), whether or not it exists."""
        return self.path / weights_file(name)


def read_run(path: str | Path) -> Job:
    """The run in `path`."""
    path = Path(path)
    if not is_run_dir(path):
        raise RunDirError(f"{path} is not a run directory (no {HYDRA_DIR}/config.yaml)")
    overrides_file = path / HYDRA_DIR / "overrides.yaml"
    overrides = [str(o) for o in read_yaml(overrides_file)] if overrides_file.is_file() else []
    metrics_file = path / METRICS
    try:
        metrics = json.loads(metrics_file.read_text()) if metrics_file.is_file() else {}
    except (OSError, ValueError) as err:
        raise RunDirError(f"{metrics_file}: cannot read it ({type(err).__name__}: {err})") from None
    return Job(path.name, path, overrides, metrics)


def read_sweep(directory: str | Path) -> list[Job]:
    """The jobs of a sweep directory (started ones first, in directory order, then pending ones),
    or the one job of a run directory."""
    directory = Path(directory)
    if is_run_dir(directory):
        return [read_run(directory)]
    names = {entry.name for entry in directory.iterdir()} if directory.is_dir() else set()
    if LOCK in names and all(name == LOCK or name.endswith(".tmp") for name in names):  # its lock, and what a kill left
        raise RunDirError(f"{directory} holds a launch that never started (no record was written): launch it again, or remove it")
    if SWEEP_LOCK in names and MULTIRUN not in names:  # killed before the sweep's start was committed
        raise RunDirError(f"{directory} holds a sweep that never started (no {MULTIRUN}): run its command again, or remove it")
    if not directory.is_dir() or not ((directory / MULTIRUN).is_file() or any(map(is_run_dir, directory.iterdir()))):
        raise RunDirError(f"{directory} is neither a sweep directory (no {MULTIRUN}) nor a run directory (no {HYDRA_DIR}/config.yaml)")
    if MULTIRUN in names:
        read_yaml(directory / MULTIRUN)  # the job names come from it: one that cannot be read is named
    try:
        expected = [(job_dirname(str(directory), overrides, num), overrides) for num, overrides in enumerate(expected_overrides(directory))]
    except (OSError, OmegaConfBaseException, ValueError, yaml.YAMLError) as err:
        raise RunDirError(f"{directory / JOBS}: cannot read it ({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''})") from None
    by_name = dict(reversed(expected))  # the first job of a name
    jobs = [read_job(path, by_name.get(path.name, [])) for path in sorted(directory.iterdir()) if is_run_dir(path)]
    started = {tuple(sorted(job.overrides)) for job in jobs}
    unreadable = {job.name for job in jobs if job.unreadable is not None}  # started, whatever overrides it lost
    for name, overrides in expected:
        if tuple(sorted(overrides)) not in started and name not in unreadable:
            jobs.append(Job(name, None, overrides))
    return jobs


def read_job(path: Path, expected_overrides: list[str]) -> Job:
    """A job of a sweep; one whose files cannot be read is `unreadable`, with the reason (and the
    overrides the sweep gave it), so that one bad file stops no tool from reading the others."""
    try:
        return read_run(path)
    except RunDirError as err:
        return Job(path.name, path, expected_overrides, {"error": str(err)}, unreadable=str(err))


def varying_keys(jobs: list[Job]) -> list[str]:
    """Override keys whose value is not the same in every job (a key a job lacks counts as a value)."""
    values = [override_values(job.overrides) for job in jobs]
    keys = sorted({key for job_values in values for key in job_values})
    return [key for key in keys if len({job_values.get(key) for job_values in values}) > 1]


def config_columns(jobs: list[Job]) -> list[dict[str, Any]]:
    """Each job's optimizer and seed, and its value of each override key that varies across `jobs`
    (`optimizer.lr`, `scheduler`, ...; the key without its +/~ prefix, the value as Hydra parses it)."""
    varying = set(varying_keys(jobs))
    columns = []
    for job in jobs:
        swept = {o.get_key_element().lstrip("+~"): o.value() for o in OverridesParser.create().parse_overrides(job.overrides)
                 if o.get_key_element() in varying}
        columns.append({"optimizer": job.metrics.get("optimizer"), "seed": job.metrics.get("seed")} | dict(sorted(swept.items())))
    return columns
