"""The Hydra callback for sweeps (conf/config.yaml: hydra.callbacks).

Before the first job starts, every job's config is checked, so a bad value in job 37 of
50 stops the sweep at once instead of hours in. Hydra skips `on_multirun_end` when any job
fails, so the summary is rewritten at the end of every job instead, in the job's own
process (joblib worker or cluster node too). A file lock serialises jobs that end
together, so the last writer has seen every finished job.
"""

import logging
import sys
from pathlib import Path
from typing import Any

from filelock import FileLock
from hydra import compose
from hydra.core.utils import JobReturn
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig

from optqual.config import check_config
from optqual.errors import ConfigError
from optqual.runs.summary import Summary, terminal_text, write_summary
from optqual.runs.naming import job_overrides
from optqual.status import RunStatus

log = logging.getLogger(__name__)


def refresh(sweep_dir: Path) -> Summary:
    with FileLock(sweep_dir / ".summary.lock"):
        return write_summary(sweep_dir)


class SweepCallback(Callback):
    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        for num, overrides in enumerate(job_overrides(config.hydra)):
            try:
                check_config(compose(config_name=config.hydra.job.config_name, overrides=overrides))
            except ConfigError as err:
                sys.exit(f"optqual: error: job #{num} ({' '.join(overrides)}): {err}")

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
