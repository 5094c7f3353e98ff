"""A run's length in optimizer updates, and the update at which a milestone falls.

Schedules count updates, so a milestone given in epochs means the same updates under a
batch-size schedule (whose epochs have different numbers of updates), and a resumed run
continues at the exact update. Milestones are given in `epoch`s (a fraction of an epoch:
of its updates), `step`s (updates) or a `fraction` of the run, always from the start of the run.
"""

from dataclasses import dataclass

from optqual.data.images import EpochSteps

UNITS = ("epoch", "step", "fraction")


@dataclass(frozen=True)
class Timeline:
    epoch_steps: EpochSteps  # the updates of each epoch (they differ under a batch-size schedule)
    warmup_epochs: float = 0.0

    @property
    def total_steps(self) -> int:
        return self.epoch_steps.total

    @property
    def warmup_steps(self) -> int:
        return self.updates(self.warmup_epochs, "epoch")

    def updates(self, amount: float, unit: str) -> int:
        """The update at which `amount` `unit`s from the start fall (a fraction of an epoch: of its updates)."""
        if unit == "epoch":
            whole = int(amount)
            partial = round((amount - whole) * self.epoch_steps[whole]) if whole < len(self.epoch_steps) else 0
            return self.epoch_steps.before(whole) + partial
        return round(amount * {"step": 1, "fraction": self.total_steps}[unit])
