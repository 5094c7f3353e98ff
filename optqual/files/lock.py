"""The run lock: one process trains a run directory at a time, and anyone can ask whether one does.

The OS releases the lock of a process that is killed, so a run killed by SIGKILL can be resumed.
Asking takes the lock for an instant (`trained_now`: what `summarize` and `resume` do), so a run
starting at that instant waits for it (PATIENCE) instead of taking the asker for a trainer.
"""

import contextlib
from pathlib import Path
from typing import Iterator

from filelock import FileLock, Timeout

from optqual.errors import ConfigError
from optqual.files.layout import LOCK

PATIENCE = 2.0  # seconds a run waits for the lock: a probe holds it for microseconds, a trainer for its whole run


@contextlib.contextmanager
def claimed(run_dir: Path) -> Iterator[None]:
    """Hold `run_dir`'s lock while training it, or fail at once if another process trains in it."""
    lock = FileLock(run_dir / LOCK)
    try:
        lock.acquire(timeout=PATIENCE)
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
