"""A run's planned size, from what it was built of and before its first step: its updates, and the
disk its weights and checkpoints need at the least; a plan the disk cannot hold is refused in one
line. (Whether the data fits on its device is checked as it moves there: optqual/data/images.py.)"""

import shutil
from pathlib import Path

from optqual.build import Run
from optqual.errors import ConfigError


def mib(size: int) -> str:
    return f"{size / 2**20:.1f} MiB"


def check_plan(run: Run, run_dir: Path, resumed: bool) -> str:
    """Refuse a run whose files cannot fit under `run_dir`; the plan in one line, for the log.

    At the least a run holds three copies of its weights at once: the initial weights, checkpoint.pt,
    and the next checkpoint while it is written beside it (a resumed run: that next one). Its
    optimizer's state only adds to them, so a run refused here could never finish."""
    weights = sum(tensor.numel() * tensor.element_size() for tensor in run.training.model.state_dict().values())
    needed = weights if resumed else 3 * weights
    free = shutil.disk_usage(run_dir).free
    if needed > free:
        raise ConfigError(f"{run_dir}: the run needs at least {mib(needed)} of disk for its weights and checkpoints, "
                          f"and {mib(free)} are free there")
    steps = run.training.data.epoch_steps(run.training.epochs)
    return f"plan: {len(steps)} epochs, {steps.total} updates, at least {mib(3 * weights)} of disk for weights and checkpoints"
