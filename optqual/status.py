"""How a run ends, as metrics.json records it, and how a sweep reads back jobs that have not ended."""

from enum import Enum


class RunStatus(str, Enum):
    """A run's status; a `str`, so it is written to JSON and compared as its plain value."""

    RUNNING = "running"  # metrics.json while training goes on
    COMPLETED = "completed"  # trained every epoch
    STOPPED_EARLY = "stopped_early"  # early stopping ended it: a result, like completed
    DIVERGED = "diverged"  # the training loss stopped being finite: a result, the sweep goes on
    INTERRUPTED = "interrupted"  # SIGTERM / SIGINT (checkpointed at a step) or Ctrl-C
    FAILED = "failed"  # an exception
    PENDING = "pending"  # a sweep job without a directory yet (read back, never written)
    STARTED = "started"  # a sweep job whose directory has no metrics.json yet (read back)
    STOPPED = "stopped"  # recorded running, but no process holds its lock: killed (read back); `resume` continues it
    UNREADABLE = "unreadable"  # a file of the run cannot be read (read back): reported; `resume` runs it again from its checkpoint

    def __str__(self) -> str:
        return self.value

    @property
    def has_results(self) -> bool:
        """The run reached its test evaluation: its metrics count in a summary."""
        return self in (RunStatus.COMPLETED, RunStatus.STOPPED_EARLY)

    @property
    def ended(self) -> bool:
        """Nothing is training it any more (a sweep with only ended jobs is finished)."""
        return self in (RunStatus.COMPLETED, RunStatus.STOPPED_EARLY, RunStatus.DIVERGED, RunStatus.INTERRUPTED, RunStatus.FAILED,
                        RunStatus.STOPPED)

    @property
    def final(self) -> bool:
        """Running it again would only repeat it: `resume` leaves it alone."""
        return self in (RunStatus.COMPLETED, RunStatus.STOPPED_EARLY, RunStatus.DIVERGED)
