"""What a run leaves in its directory, and how a fresh directory is claimed.

Every file is written atomically (temporary file, fsync, rename): a crash leaves the
previous version or none, never half a file.
"""

import contextlib
import csv
import errno
import io
import itertools
import json
import math
import os
import platform
import resource
import shutil
import sys
import tempfile
import time
from importlib.metadata import version
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch
from filelock import FileLock, Timeout

from optqual.errors import ConfigError
from optqual.status import RunStatus

HISTORY = "history.csv"
METRICS = "metrics.json"
INITIAL_MODEL = "initial_model.pt"  # the weights training started from (optqual/analysis: distance from init)
FINAL_MODEL = "final_model.pt"  # the last weights
BEST_MODEL = "best_model.pt"  # the weights at the best validation (optqual/early_stopping.py)
SPLIT = "split_indices.npz"
SPARSITY_DIR = "sparsity"  # the pruning report's per-layer tables and pictures (optqual/sparsity/report.py)
LOCK = ".lock"
HYDRA_FILES = {".hydra", "launch.log"}  # what Hydra writes before the job's code starts
_UMASK = os.umask(0o022)  # read once: mkstemp creates 0600 files, run files should be as readable as any
os.umask(_UMASK)


_claimed: dict[str, str] = {}  # this process's claims: Hydra resolves the same dir more than once
_claiming = False  # until a run or sweep starts, names are only shown (`--cfg hydra --resolve`)
_made: list[Path] = []  # the folders made for them, in the order made: a run refused at once takes them back


def make_dirs(path: Path) -> None:
    """`mkdir -p path`, remembering the folders it made (`discard_unstarted` removes them when empty)."""
    missing = [folder for folder in (path, *path.parents) if not folder.exists()]
    path.mkdir(parents=True, exist_ok=True)
    _made.extend(reversed(missing))


def start_claiming() -> None:
    """From now on `fresh_dir` creates the directories it names (optqual/runs/callbacks.py)."""
    global _claiming
    _claiming = True


def fresh_dir(path: str) -> str:
    """`path`, or `path_2`, `path_3`, ...: the first that does not exist yet, created at once.

    mkdir is atomic (on NFS too), so two runs or sweeps started in the same second
    never share a directory. Before `start_claiming`, `path` itself, and nothing is created.
    """
    key = os.path.abspath(path)  # the same relative path is another directory in another working directory
    if not _claiming:
        return path
    if key not in _claimed:
        base = Path(path)
        try:
            make_dirs(base.parent)
            for n in itertools.count(1):
                candidate = base if n == 1 else base.with_name(f"{base.name}_{n}")
                try:
                    candidate.mkdir()
                except FileExistsError:
                    continue
                _made.append(candidate)
                _claimed[key] = str(candidate)
                break
        except OSError:  # it cannot be created: check_writable says why, naming the key
            return path
    return _claimed[key]


def check_writable(path: Path, key: str) -> None:
    """Fail now, with one line naming `key`, unless `path` is (or can be made) a directory this
    process writes to: a run must not train for hours and then lose what it writes there.
    Probes with a temporary file that vanishes: nothing is left behind."""
    probed = path
    try:
        probed = next(folder for folder in (path, *path.parents) if folder.exists())  # the folder mkdir would write in
        if not probed.is_dir():
            raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR))
        with tempfile.TemporaryFile(dir=probed):
            pass
    except OSError as err:
        where = f" ({probed})" if probed != path else ""
        raise ConfigError(f"{key}={path}: cannot write there: {err.strerror or err}{where}") from None


def atomic_write(path: Path, write: Callable[[io.BufferedWriter], Any]) -> None:
    """Write through `write(file)` into a temporary file beside `path`, then rename it into place."""
    handle, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(handle, 0o666 & ~_UMASK)
        with os.fdopen(handle, "wb") as file:
            write(file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


def write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda file: file.write(text.encode()))


def finite_or_none(value: Any) -> Any:
    """NaN and infinity as null: strict JSON has no such numbers (a diverged run's loss)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: finite_or_none(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite_or_none(item) for item in value]
    return value


def write_json(path: Path, payload: dict) -> None:
    write_text(path, json.dumps(finite_or_none(payload), indent=2, allow_nan=False) + "\n")


def write_history(run_dir: Path, history: list[dict]) -> None:
    """history.csv: one row per epoch; validation columns stay empty on epochs without validation."""
    columns = list(dict.fromkeys(key for record in history for key in record))
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(history)
    write_text(run_dir / HISTORY, text.getvalue())


def save_weights(path: Path, weights: dict[str, torch.Tensor]) -> None:
    """A model's state_dict, loadable with `model.load_state_dict(torch.load(path))`."""
    atomic_write(path, lambda file: torch.save(weights, file))


def save_split(run_dir: Path, train_indices: np.ndarray, val_indices: np.ndarray) -> None:
    """The exact rows of the source training set used for training and for validation."""
    atomic_write(run_dir / SPLIT, lambda file: np.savez(file, train=train_indices, val=val_indices))


@contextlib.contextmanager
def claimed(run_dir: Path) -> Iterator[None]:
    """Hold `run_dir`'s lock while training it, or fail at once if another process trains in it.

    The OS releases the lock of a process that is killed, so a run killed by SIGKILL can be resumed.
    """
    lock = FileLock(run_dir / LOCK)
    try:
        lock.acquire(timeout=0)
    except Timeout:
        raise ConfigError(f"{run_dir} is being trained by another process (it holds {LOCK})") from None
    try:
        yield
    finally:
        lock.release()


def trained_now(run_dir: Path) -> bool:
    """Whether a process holds `run_dir`'s lock (a killed one holds nothing: the OS released it)."""
    if not (run_dir / LOCK).is_file():
        return False
    probe = FileLock(run_dir / LOCK)
    try:
        probe.acquire(timeout=0)
    except Timeout:
        return True
    probe.release()
    return False


def discard_unstarted(run_dir: Path) -> None:
    """Remove a run directory that holds nothing but what Hydra wrote before the job began, and
    the folders made for it that are empty now (outputs/runs/<date>/)."""
    if run_dir.is_dir() and {entry.name for entry in run_dir.iterdir()} <= HYDRA_FILES:
        shutil.rmtree(run_dir)
        for folder in reversed(_made):
            if folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()


def library_versions() -> dict[str, str]:
    packages = ("torch", "torchvision", "numpy", "hydra-core", "omegaconf", "trackio")
    return {"python": platform.python_version(), **{name: version(name) for name in packages}}


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
        metrics.update(
            epochs=len(self.history),
            train_seconds=train_seconds,
            train_images_per_s=self.facts["train_images"] * len(self.history) / train_seconds if train_seconds else None,
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
