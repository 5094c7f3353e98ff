"""`python -m optqual resume RUN_DIR | SWEEP_DIR`: finish what was stopped.

A run is continued by running the launch.py that started it (the checkout whose conf/ is
its Hydra config source: the code and configs it was made with, whatever optqual this
command runs from), in the directory it was started from, with
its own command-line overrides and `hydra.run.dir` pointing at the run: the job finds its
checkpoint.pt, checks that the config is the one the checkpoint was written with, and
continues from it (optqual/checkpoint.py). `hydra.output_subdir=null` keeps the run's
original .hydra/ files as they were. A sweep is resumed job by job: completed and
diverged jobs are skipped, stopped ones continue, jobs that never started are started in
the directory the sweep would have given them; the summary is rewritten at the end.
"""

import subprocess
import sys
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from optqual.errors import ConfigError
from optqual.runs.summary import terminal_text, write_summary
from optqual.runs.naming import MULTIRUN
from optqual.runs.sweep import Job, is_run_dir, read_jobs

STOPPED_BY_SIGNAL = {130, 143}  # 128 + SIGINT, 128 + SIGTERM: the user wants everything to stop


def quoted(value: str) -> str:
    """A value as a Hydra override literal: paths of sweep jobs hold ',' and '='."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def launch_script(hydra_cfg: DictConfig) -> Path:
    """The launch.py that made a run or sweep: the one beside its main config source (conf/)."""
    (main,) = [source for source in hydra_cfg.runtime.config_sources if source.provider == "main"]
    script = Path(main.path).parent / "launch.py"
    if not script.is_file():
        raise ConfigError(f"{script} is gone: resume trains with the checkout that started the run ({main.path})")
    return script


def launch(hydra_cfg: DictConfig, overrides: list[str], run_dir: Path, keep_hydra_files: bool) -> int:
    """Run the launch.py that made `hydra_cfg`'s run or sweep, where it was run, on `run_dir`."""
    command = [sys.executable, str(launch_script(hydra_cfg)), *overrides, f"hydra.run.dir={quoted(str(run_dir.resolve()))}"]
    if keep_hydra_files:
        command.append("hydra.output_subdir=null")
    return subprocess.run(command, cwd=hydra_cfg.runtime.cwd).returncode


def resume_job(job: Job, sweep_dir: Path | None) -> int:
    """Continue (or start) one job; its exit code. Done jobs are left alone."""
    if job.status.final:  # rerunning it would only repeat it
        print(f"{job.name}: {job.status}, skipped", flush=True)
        return 0
    if job.path is None:  # never started: start it where the sweep would have put it
        print(f"{job.name}: not started, starting it", flush=True)
        return launch(OmegaConf.load(sweep_dir / MULTIRUN).hydra, job.overrides, sweep_dir / job.name, keep_hydra_files=False)
    print(f"{job.name}: {job.status}, resuming", flush=True)
    hydra_cfg = OmegaConf.load(job.path / ".hydra" / "hydra.yaml").hydra
    return launch(hydra_cfg, list(hydra_cfg.overrides.task), job.path, keep_hydra_files=True)


def resume(directory: str | Path) -> int:
    """Resume a run, or every unfinished job of a sweep; 0 when everything ended well."""
    directory = Path(directory)
    if is_run_dir(directory):
        return resume_job(read_jobs(directory)[0], None)
    failures = 0
    for job in read_jobs(directory):
        code = resume_job(job, directory)
        if code in STOPPED_BY_SIGNAL:
            return code
        failures += code != 0
    print(terminal_text(write_summary(directory)), flush=True)
    return 1 if failures else 0
