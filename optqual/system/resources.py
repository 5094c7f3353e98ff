"""How much of the machine one job may use when a launcher runs several jobs on it at once."""

import os
from pathlib import Path

import joblib
import torch
from hydra.types import RunMode
from omegaconf import DictConfig

from optqual.runs.naming import expected_overrides


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


def cores() -> int:
    """Cores this process may run on: the SLURM allocation or taskset mask, not the whole node."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def share_machine(threads: int | None, jobs: int, device: torch.device) -> None:
    """Give this job its share of the machine.

    CPU threads: `threads` when set, else torch's default for a job alone, else cores / jobs
    (at least one), so parallel jobs do not oversubscribe the cores. On a GPU shared by several
    jobs, each may use 1/jobs of its memory: one that needs more fails with a clear
    out-of-memory error instead of starving its neighbours.
    """
    if threads is not None or jobs > 1:
        torch.set_num_threads(threads or max(1, cores() // jobs))
    if device.type == "cuda" and jobs > 1:
        torch.cuda.set_per_process_memory_fraction(1 / jobs, device)
