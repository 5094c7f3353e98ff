"""Every value of a run config checked before any work: every numeric value against the range its
schema declares (optqual/ranges.py), then the run-level values, the core groups' and every
registered component's own checks (each beside its code): names, and what relates two values.

It runs for every job before a sweep starts (optqual/launch/callbacks.py) and first thing in a
job (optqual/train.py). Whether the device exists is a question for the machine the job runs
on (optqual/system/devices.py): a SLURM sweep is checked on a login node without a GPU.
"""

from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from optqual import models
from optqual.components.registry import components
from optqual.errors import ConfigError, require
from optqual.files.atomic import check_writable
from optqual.optim import build as optim
from optqual.ranges import check_ranges

PRECISIONS = ("fp32", "bf16")


def check_run(cfg: DictConfig) -> None:
    """The run-level values: counts, ranges, names."""
    every = cfg.grad_norm_every
    require(every == "auto" or (type(every) is int and every > 0), "grad_norm_every", every, "must be a positive integer or auto")
    require(cfg.precision in PRECISIONS, "precision", cfg.precision, f"must be one of {', '.join(PRECISIONS)}")
    schedule = cfg.data.get("batch_size_schedule")
    if schedule:
        shown = dict(schedule)
        require(0 in schedule, "data.batch_size_schedule", shown, "must start at epoch 0")
        require(all(epoch >= 0 and size > 0 for epoch, size in schedule.items()), "data.batch_size_schedule", shown,
                "needs epochs >= 0 and positive batch sizes")
    require(bool(cfg.experiment_name.strip()), "experiment_name", "''", "must not be empty")
    require("/" not in cfg.experiment_name and "\\" not in cfg.experiment_name, "experiment_name", cfg.experiment_name,
            "must not hold '/' or '\\': it names the sweep directory and the Trackio project")
    if cfg.trackio.enabled:  # Trackio would only warn, and lose every metric
        check_writable(Path(cfg.trackio.dir), "trackio.dir")


def check_config(cfg: DictConfig) -> None:
    """Refuse values that would fail (or silently misbehave) later, with one line naming the key."""
    missing = sorted(OmegaConf.missing_keys(cfg))
    if missing:
        raise ConfigError(f"{missing[0]} is required: set it on the command line, e.g. {missing[0]}=...")
    check_ranges(cfg)  # every numeric value against the range its schema declares (optqual/ranges.py)
    checks = {"run": check_run, "model": models.check, "optimizer": optim.check}
    checks.update({component.name: component.check for component in components()})
    for name, check in checks.items():
        try:
            check(cfg)
        except ConfigError:
            raise
        except (TypeError, ValueError) as err:  # a schema-less option's value of the wrong type meets a range check
            raise ConfigError(f"{name}: a value of the wrong kind ({err}); an option with a schema is checked by key") from err
