"""How many jobs a launcher runs on this machine at once: each job's share of it follows
(optqual/system/machine.py)."""

from pathlib import Path

import joblib
from hydra.types import RunMode
from omegaconf import DictConfig

from optqual.runs.jobs import expected_overrides


SUBMITIT_LOCAL = "hydra_plugins.hydra_submitit_launcher.submitit_launcher.LocalLauncher"


def jobs_at_once(hydra_cfg: DictConfig) -> int:
    """Jobs running on this machine at the same time, never more than the sweep has: the joblib
    launcher's n_jobs (-1 = one per core); every job for submitit_local, which starts them all
    together. The basic launcher runs one job at a time, a cluster launcher one per node."""
    if hydra_cfg.mode != RunMode.MULTIRUN:
        return 1
    sweep_size = len(expected_overrides(Path(hydra_cfg.sweep.dir))) or 1
    n_jobs = hydra_cfg.launcher.get("n_jobs")
    if n_jobs is not None:
        return max(1, min(joblib.effective_n_jobs(n_jobs), sweep_size))
    return sweep_size if hydra_cfg.launcher.get("_target_") == SUBMITIT_LOCAL else 1
