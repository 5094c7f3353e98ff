"""Which GPU a job of a local sweep trains on: every visible GPU used, several small jobs packed on each.

Under the joblib and submitit_local launchers the jobs of a sweep start on one machine, and
`device=auto` alone would put every one on cuda:0. Each job instead claims a *slot*, one of
`jobs_per_gpu` per GPU, by taking its lock file; slots are tried spread first (slot 0 of every
GPU, then slot 1, ...), so the first jobs go one per GPU and the rest pack evenly. A job that
finds every slot taken waits for one. The OS releases a lock when its process ends, killed or
not, so a dead job never holds a GPU. The locks live in one directory per user and machine,
named by the GPU's entry in CUDA_VISIBLE_DEVICES, so two sweeps started side by side share
the GPUs too. Where a job ran is recorded (metrics.json: device, hardware) but is not part of
its config: resume and the summaries are unaffected. SLURM places its jobs itself.
"""

import contextlib
import logging
import math
import os
import tempfile
import time
from pathlib import Path
from typing import Iterator

import torch
from filelock import FileLock, Timeout
from omegaconf import DictConfig

from optqual.errors import require
from optqual.launch.resources import SUBMITIT_LOCAL

log = logging.getLogger(__name__)
POLL_SECONDS = 2.0  # how often a job waiting for a slot tries again


def lock_dir() -> Path:
    """The machine's GPU slot locks, this user's."""
    return Path(tempfile.gettempdir()) / f"optqual-gpu-slots-{os.getuid()}"


def visible_gpus() -> list[str]:
    """The visible GPUs by the name CUDA_VISIBLE_DEVICES gives them (an index or a UUID), so that
    processes with the same GPUs visible name them alike; cuda:i is the i-th. Asks the driver
    without starting CUDA in this process."""
    count = torch.cuda.device_count()
    listed = [entry.strip() for entry in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if entry.strip()]
    return listed[:count] if "CUDA_VISIBLE_DEVICES" in os.environ else [str(index) for index in range(count)]


def slots_per_gpu(jobs_per_gpu: int | None, jobs: int, gpus: int) -> int:
    """`jobs_per_gpu` when set, else the jobs running at once spread evenly over the GPUs."""
    return jobs_per_gpu or max(1, math.ceil(jobs / gpus))


def slot_order(gpus: int, per_gpu: int) -> list[tuple[int, int]]:
    """(GPU index, slot) pairs in the order jobs take them: one job per GPU first, then packed."""
    return [(index, slot) for slot in range(per_gpu) for index in range(gpus)]


@contextlib.contextmanager
def claimed_gpu(gpus: list[str], per_gpu: int, locks: Path) -> Iterator[int]:
    """Hold a free slot of one of `gpus` while the job runs, waiting for one when all are taken;
    yields the GPU's index (cuda:index)."""
    locks.mkdir(parents=True, exist_ok=True)
    waited = False
    while True:
        for index, slot in slot_order(len(gpus), per_gpu):
            lock = FileLock(locks / f"gpu-{gpus[index]}.slot{slot}.lock")
            try:
                lock.acquire(timeout=0)
            except Timeout:
                continue
            try:
                yield index
            finally:
                lock.release()
            return
        if not waited:
            log.info("every GPU slot is taken (%d GPUs x %d jobs): waiting for one to end", len(gpus), per_gpu)
            waited = True
        time.sleep(POLL_SECONDS)


@contextlib.contextmanager
def placed(device: torch.device, jobs: int, jobs_per_gpu: int | None) -> Iterator[tuple[torch.device, int]]:
    """The device a job trains on and how many jobs share it. A job of a local parallel sweep
    (`jobs` > 1) on CUDA named without an index claims a GPU slot; any other job keeps `device`."""
    gpus = visible_gpus() if device.type == "cuda" and device.index is None and jobs > 1 else []
    if not gpus:
        yield device, jobs
        return
    per_gpu = slots_per_gpu(jobs_per_gpu, jobs, len(gpus))
    with claimed_gpu(gpus, per_gpu, lock_dir()) as index:
        log.info("on GPU %s (cuda:%d), sharing it with up to %d jobs", gpus[index], index, per_gpu - 1)
        yield torch.device("cuda", index), per_gpu


def check_local_launcher(launcher: DictConfig, device: str, gpu_count: int) -> None:
    """submitit_local gives each job the first `gpus_per_node` GPUs, and none when it is unset (its
    CUDA_VISIBLE_DEVICES is then empty): a sweep meant for this machine's GPUs would train on the CPU."""
    hides_gpus = launcher.get("_target_") == SUBMITIT_LOCAL and not launcher.get("gpus_per_node")
    require(not (hides_gpus and gpu_count and (device == "auto" or device.startswith("cuda"))), "hydra/launcher", "submitit_local",
            f"its jobs see no GPU unless hydra.launcher.gpus_per_node is set: add hydra.launcher.gpus_per_node={gpu_count} "
            "(every GPU here; the jobs spread over them), or device=cpu")
