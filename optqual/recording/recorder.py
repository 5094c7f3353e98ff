"""What a run leaves in its directory while it trains and when it ends: history.csv, metrics.json,
the weight files and the data split, each written atomically (optqual/files/atomic.py)."""

import platform
import resource
import sys
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import numpy as np
import torch

from optqual.files.atomic import atomic_write, write_csv, write_json
from optqual.files.layout import HISTORY, METRICS, SPLIT
from optqual.status import RunStatus


def write_history(run_dir: Path, history: list[dict]) -> None:
    """history.csv: one row per epoch; validation columns stay empty on epochs without validation."""
    write_csv(run_dir / HISTORY, history)


def save_weights(path: Path, weights: dict[str, torch.Tensor]) -> None:
    """A model's state_dict, loadable with `model.load_state_dict(torch.load(path))`."""
    atomic_write(path, lambda file: torch.save(weights, file))


def save_split(run_dir: Path, train_indices: np.ndarray, val_indices: np.ndarray) -> None:
    """The exact rows of the source training set used for training and for validation."""
    atomic_write(run_dir / SPLIT, lambda file: np.savez(file, train=train_indices, val=val_indices))


def installed(package: str) -> str | None:
    """`package`'s version; None where it is not installed (Trackio is needed only with trackio.enabled)."""
    try:
        return version(package)
    except PackageNotFoundError:
        return None


def library_versions() -> dict[str, str | None]:
    packages = ("torch", "torchvision", "numpy", "hydra-core", "omegaconf", "trackio")
    return {"python": platform.python_version(), **{name: installed(name) for name in packages}}


def peak_memory_mb(device: torch.device) -> dict[str, float | None]:
    """Peak resident memory of this process and, on a GPU, peak memory allocated on it."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # bytes on macOS, KiB on Linux
    rss_mb = rss / 2**20 if sys.platform == "darwin" else rss / 2**10
    gpu_mb = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None
    return {"peak_rss_mb": rss_mb, "peak_gpu_mb": gpu_mb}


class RunRecorder:
    """Keeps history.csv and metrics.json current after every epoch; metrics.json's status is
    `running` until `write_metrics` records how the run ended. Its history and wall time are
    part of the training state, so a resumed run continues both."""

    def __init__(self, run_dir: Path, facts: dict[str, Any], started: float):
        self.run_dir = run_dir
        self.facts = facts  # seed, optimizer, device, params, train_images, ...
        self.started = started  # time.perf_counter() when the run began: wall time includes loading
        self.history: list[dict] = []
        # checkpoints written by every process of the run; a checkpoint's seconds are known only
        # once it is written, so a resumed run lacks those of the one it continued from
        self.checkpoints, self.checkpoint_seconds = 0, 0.0

    def start(self) -> None:
        if self.history:
            write_history(self.run_dir, self.history)  # epochs past the checkpoint are trained again
        self.write_metrics(RunStatus.RUNNING)

    def wall_seconds(self) -> float:
        return time.perf_counter() - self.started

    def add_epoch(self, record: dict) -> None:
        self.history.append(record)
        write_history(self.run_dir, self.history)
        self.write_metrics(RunStatus.RUNNING)

    def write_metrics(self, status: RunStatus, **extra: Any) -> dict:
        """metrics.json: the last epoch's train metrics, the last validation, timings, peak
        memory, `extra`, `status`."""
        metrics: dict[str, Any] = {key: None for key in ("train_loss", "train_acc", "val_loss", "val_acc", "test_loss", "test_acc")}
        for record in self.history:  # later epochs overwrite earlier ones; val only where it ran
            metrics.update({key: value for key, value in record.items() if key in metrics})
        train_seconds = sum(record["seconds"] for record in self.history)
        timed = self.history[1:] or self.history  # the first epoch pays for compilation and warm-up: the rest say the speed
        timed_seconds = sum(record["seconds"] for record in timed)
        metrics.update(
            epochs=len(self.history),
            train_seconds=train_seconds,
            train_images_per_s=self.facts["train_images"] * len(timed) / timed_seconds if timed_seconds else None,
            wall_seconds=self.wall_seconds(),
            **self.facts,
            **peak_memory_mb(torch.device(self.facts.get("device", "cpu"))),
            versions=library_versions(),
            **extra,
            status=status,
        )
        write_json(self.run_dir / METRICS, metrics)
        return metrics

    def state_dict(self) -> dict:
        return {"history": self.history, "wall_seconds": self.wall_seconds(), "checkpoints": self.checkpoints,
                "checkpoint_seconds": self.checkpoint_seconds}

    def load_state_dict(self, state: dict) -> None:
        self.history = list(state["history"])
        self.started = time.perf_counter() - state["wall_seconds"]
        # a checkpoint from before the counts were kept: its process's checkpoints, one per finished epoch at most
        self.checkpoints = state.get("checkpoints", 0)
        self.checkpoint_seconds = state.get("checkpoint_seconds", 0.0)
