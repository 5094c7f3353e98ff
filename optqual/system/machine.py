"""Setting up the machine for a run, its own step: building a run changes nothing here.

CPU kernels split their sums by thread, so the thread count is part of a CPU result; glibc's
malloc is told to keep freed memory (optqual/system/allocator.py); kernels are made
deterministic and every global generator seeded (optqual/system/reproducibility.py); TF32 is
set as `precision` says (optqual/system/precision.py).
"""

import os

import torch

from optqual.system.allocator import keep_freed_memory
from optqual.system.precision import set_precision
from optqual.system.reproducibility import make_deterministic


def cores() -> int:
    """Cores this process may run on: the SLURM allocation or taskset mask, not the whole node."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def share_machine(threads: int | None, jobs: int, device: torch.device, jobs_on_device: int) -> None:
    """Give this job its share of the machine when `jobs` run on it at once.

    CPU threads: `threads` when set, else torch's default for a job alone, else cores / jobs
    (at least one), so parallel jobs do not oversubscribe the cores. On a GPU shared by
    `jobs_on_device` jobs, each may use that share of its memory: one that needs more fails with
    a clear out-of-memory error instead of starving its neighbours.
    """
    if threads is not None or jobs > 1:
        torch.set_num_threads(threads or max(1, cores() // jobs))
    if device.type == "cuda" and jobs_on_device > 1:
        torch.cuda.set_per_process_memory_fraction(1 / jobs_on_device, device)


def set_up_machine(seed: int, threads: int | None = None, jobs: int = 1, device: torch.device = torch.device("cpu"),
                   precision: str = "fp32", jobs_on_device: int = 1) -> None:
    """Threads (and GPU memory) for one of `jobs` jobs, `jobs_on_device` of them on `device`, kept
    freed memory, deterministic kernels, seeds, the float32 math of `precision` (the analysis: fp32,
    no TF32)."""
    share_machine(threads, jobs, device, jobs_on_device)
    set_precision(precision)
    keep_freed_memory()  # a CPU step otherwise page-faults its activations back in every time
    make_deterministic(seed)
