"""A sweep directory read back: the jobs it should hold, the jobs it holds, what each recorded.

A sweep's jobs are known before any of them starts: Hydra's sweeper saves the command line
in `multirun.yaml`, and expanding it the way the sweeper does gives every job's overrides.
A job without a directory is `pending`; one whose directory has no metrics.json yet is
`started`; otherwise its status is the one metrics.json records (`running`, `completed`,
`failed`, ...). A single run's directory reads as a sweep of one job. Job directories are named here too,
by the overrides that vary across the sweep.
"""

import csv
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override
from omegaconf import DictConfig, ListConfig, OmegaConf

from optqual.runs.rundir import HISTORY, METRICS, fresh_dir

MULTIRUN = "multirun.yaml"  # the sweep's config, saved by Hydra's sweeper before any job starts
MAX_NAME = 120  # keep job directory names far below file system limits
FINISHED = {"completed", "failed", "diverged", "interrupted"}  # statuses a job ends with


class NotASweepDir(ValueError):
    pass


@dataclass
class Job:
    name: str  # its directory's name (the name it will get, for a pending job)
    path: Path | None  # None while pending
    overrides: list[str]  # the job's command-line overrides, as in .hydra/overrides.yaml
    metrics: dict = field(default_factory=dict)

    @property
    def status(self) -> str:
        if self.path is None:
            return "pending"
        return self.metrics.get("status", "started")

    def history(self) -> list[dict[str, float | None]]:
        """history.csv as numbers; None where a column is empty (epochs without validation)."""
        if self.path is None or not (self.path / HISTORY).is_file():
            return []
        with open(self.path / HISTORY, newline="") as file:
            return [{key: float(value) if value else None for key, value in row.items()} for row in csv.DictReader(file)]


def is_run_dir(path: Path) -> bool:
    return (path / ".hydra" / "config.yaml").is_file()


def command_line(hydra_cfg: DictConfig) -> list[Override]:
    """A sweep's overrides as its sweeper reads them: `hydra.sweeper.params`, then the command line."""
    params = OmegaConf.select(hydra_cfg, "sweeper.params") or {}
    given = [f"{key}={value}" for key, value in params.items()] + list(hydra_cfg.overrides.task)
    return OverridesParser.create().parse_overrides(given)


def job_overrides(hydra_cfg: DictConfig) -> list[list[str]]:
    """Every job's overrides, expanded from a sweep's `hydra` config exactly as Hydra's basic sweeper does."""
    return [job for batch in BasicSweeper.split_arguments(command_line(hydra_cfg), max_batch_size=None) for job in batch]


def expected_overrides(sweep_dir: Path) -> list[list[str]]:
    """Every job's overrides, from the multirun.yaml Hydra saves before the first job starts."""
    saved = sweep_dir / MULTIRUN
    return job_overrides(OmegaConf.load(saved).hydra) if saved.is_file() else []


def swept_keys(sweep_dir: Path) -> set[str]:
    """Keys given several values on the sweep's command line."""
    saved = sweep_dir / MULTIRUN
    if not saved.is_file():
        return set()
    return {o.key_or_group for o in command_line(OmegaConf.load(saved).hydra) if o.is_sweep_override()}


def job_dirname(sweep_dir: str, job_overrides: ListConfig, job_num: int) -> str:
    """A sweep job's directory: the overrides that vary across the sweep, e.g. `optimizer=adamw,seed=1`.

    Overrides shared by every job (data.path=..., epochs=15) are left to .hydra/overrides.yaml.
    Unlike Hydra's `override_dirname` the name is never empty (`job0` for a sweep without
    overrides) and stays one path component even when a value holds '/'.
    """
    overrides = OverridesParser.create().parse_overrides(list(job_overrides))
    varying = swept_keys(Path(sweep_dir))
    shown = [o for o in overrides if o.key_or_group in varying] or overrides
    name = ",".join(sorted(f"{o.get_key_element()}={o.get_value_element_as_str()}" for o in shown))
    name = name.replace("/", "_").replace("\\", "_")
    if not name or name in {".", ".."}:
        return f"job{job_num}"
    if len(name) > MAX_NAME:
        name = f"{name[:MAX_NAME]}-{hashlib.sha1(name.encode()).hexdigest()[:8]}"
    return name


def register_resolvers() -> None:
    """The resolvers conf/config.yaml uses to name run, sweep and job directories."""
    if not OmegaConf.has_resolver("optqual_job_dir"):
        OmegaConf.register_new_resolver("optqual_job_dir", job_dirname)
    if not OmegaConf.has_resolver("optqual_fresh_dir"):
        OmegaConf.register_new_resolver("optqual_fresh_dir", fresh_dir, use_cache=True)


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
