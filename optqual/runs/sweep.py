"""A sweep directory read back: the jobs it should hold, the jobs it holds, what each recorded.

A sweep's jobs are known before any of them starts: optqual's sweep callback saves every
job's overrides in `jobs.yaml`, expanded as Hydra's basic sweeper expands them (optqual/runs/naming.py).
A job without a directory is `pending`; one whose directory has no metrics.json yet is
`started`; otherwise its status is the one metrics.json records (`running`, `completed`,
`failed`, ...: optqual/status.py), except that a job recorded `running` whose lock no
process holds was killed: it reads as `stopped`, and `resume` continues it. A single run's directory reads as a sweep of one job.
"""

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path

from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf

from optqual.runs.naming import MULTIRUN, expected_overrides, job_dirname
from optqual.runs.rundir import HISTORY, METRICS, trained_now
from optqual.status import RunStatus


class NotASweepDir(ValueError):
    pass


@dataclass
class Job:
    name: str  # its directory's name (the name it will get, for a pending job)
    path: Path | None  # None while pending
    overrides: list[str]  # the job's command-line overrides, as in .hydra/overrides.yaml
    metrics: dict = field(default_factory=dict)

    @property
    def status(self) -> RunStatus:
        if self.path is None:
            return RunStatus.PENDING
        recorded = RunStatus(self.metrics.get("status", RunStatus.STARTED))
        if recorded == RunStatus.RUNNING and not trained_now(self.path):  # killed: metrics.json never heard
            return RunStatus.STOPPED
        return recorded

    def history(self) -> list[dict[str, float | None]]:
        """history.csv as numbers; None where a column is empty (epochs without validation)."""
        if self.path is None or not (self.path / HISTORY).is_file():
            return []
        with open(self.path / HISTORY, newline="") as file:
            return [{key: float(value) if value else None for key, value in row.items()} for row in csv.DictReader(file)]


def is_run_dir(path: Path) -> bool:
    return (path / ".hydra" / "config.yaml").is_file()


def read_job(path: Path) -> Job:
    overrides_file = path / ".hydra" / "overrides.yaml"
    overrides = [str(o) for o in OmegaConf.load(overrides_file)] if overrides_file.is_file() else []
    metrics_file = path / METRICS
    metrics = json.loads(metrics_file.read_text()) if metrics_file.is_file() else {}
    return Job(path.name, path, overrides, metrics)


def read_jobs(directory: str | Path) -> list[Job]:
    """The jobs of a sweep directory (started ones first, in directory order, then pending ones),
    or the one job of a run directory."""
    directory = Path(directory)
    if is_run_dir(directory):
        return [read_job(directory)]
    if not directory.is_dir() or not ((directory / MULTIRUN).is_file() or any(map(is_run_dir, directory.iterdir()))):
        raise NotASweepDir(f"{directory} is neither a sweep directory (no multirun.yaml) nor a run directory (no .hydra/config.yaml)")
    jobs = [read_job(path) for path in sorted(directory.iterdir()) if is_run_dir(path)]
    started = {tuple(sorted(job.overrides)) for job in jobs}
    for num, overrides in enumerate(expected_overrides(directory)):
        if tuple(sorted(overrides)) not in started:
            jobs.append(Job(job_dirname(str(directory), overrides, num), None, overrides))
    return jobs


def override_values(overrides: list[str]) -> dict[str, str]:
    """`key` (with its +/~ prefix) to value, as Hydra parses the overrides."""
    return {o.get_key_element(): o.get_value_element_as_str() for o in OverridesParser.create().parse_overrides(overrides)}


def varying_keys(jobs: list[Job]) -> list[str]:
    """Override keys whose value is not the same in every job (a key a job lacks counts as a value)."""
    values = [override_values(job.overrides) for job in jobs]
    keys = sorted({key for job_values in values for key in job_values})
    return [key for key in keys if len({job_values.get(key) for job_values in values}) > 1]
