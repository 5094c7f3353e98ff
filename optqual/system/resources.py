"""How much of the machine one job may use when a launcher runs several jobs on it at once."""

import os
from pathlib import Path

import joblib
import torch
from hydra.types import RunMode
from omegaconf import DictConfig

from optqual.runs.naming import expected_overrides


def jobs_at_once(hydra_cfg: DictConfig) -> int:
    """Jobs running on this machine at the same time: the joblib launcher's n_jobs (-1 = one per
    core), never more than the sweep has jobs. Other launchers run one job per process or node."""
    n_jobs = hydra_cfg.launcher.get("n_jobs")
    if hydra_cfg.mode != RunMode.MULTIRUN or n_jobs is None:
        return 1
    sweep_size = len(expected_overrides(Path(hydra_cfg.sweep.dir))) or 1
    return max(1, min(joblib.effective_n_jobs(n_jobs), sweep_size))


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
