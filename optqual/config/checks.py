"""Every value of a run config checked before any work: the run-level values, then the core groups'
and every registered component's own checks (each beside its code).

It runs for every job before a sweep starts (optqual/launch/callbacks.py) and first thing in a
job (optqual/train.py). Whether the device exists is a question for the machine the job runs
on (optqual/system/devices.py): a SLURM sweep is checked on a login node without a GPU.
"""

from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from optqual import models
from optqual.components.registry import components
from optqual.data import sources
from optqual.errors import ConfigError, require
from optqual.files.atomic import check_writable
from optqual.optim import build as optim

PRECISIONS = ("fp32", "bf16")


def check_run(cfg: DictConfig) -> None:
    """The run-level values: counts, ranges, names."""
    for key in ("epochs", "checkpoint_every", "data.batch_size"):
        value = OmegaConf.select(cfg, key)
        require(value > 0, key, value, "must be a positive integer")
    every = cfg.grad_norm_every
    require(every == "auto" or (type(every) is int and every > 0), "grad_norm_every", every, "must be a positive integer or auto")
    if cfg.eval_every is not None:
        require(cfg.eval_every > 0, "eval_every", cfg.eval_every, "must be a positive integer (or null: never validate)")
    if cfg.threads is not None:
        require(cfg.threads > 0, "threads", cfg.threads, "must be a positive integer (or null for torch's default)")
    require(cfg.precision in PRECISIONS, "precision", cfg.precision, f"must be one of {', '.join(PRECISIONS)}")
    schedule = cfg.data.get("batch_size_schedule")
    if schedule:
        shown = dict(schedule)
        require(0 in schedule, "data.batch_size_schedule", shown, "must start at epoch 0")
        require(all(epoch >= 0 and size > 0 for epoch, size in schedule.items()), "data.batch_size_schedule", shown,
                "needs epochs >= 0 and positive batch sizes")
    fraction = cfg.data.val_fraction
    require(0 < fraction < 1, "data.val_fraction", fraction, "must lie strictly between 0 and 1")
    require(bool(cfg.experiment_name.strip()), "experiment_name", "''", "must not be empty")
    require("/" not in cfg.experiment_name and "\\" not in cfg.experiment_name, "experiment_name", cfg.experiment_name,
            "must not hold '/' or '\\': it names the sweep directory and the Trackio project")
    require(cfg.lr_scale > 0, "lr_scale", cfg.lr_scale, "must be > 0")
    require(0 <= cfg.loss.label_smoothing < 1, "loss.label_smoothing", cfg.loss.label_smoothing, "must lie in [0, 1)")
    # numpy's global generator takes 32-bit seeds (torch's and the derived streams take more)
    require(0 <= cfg.seed < 2**32, "seed", cfg.seed, "must lie in [0, 2**32)")
    if cfg.trackio.enabled:  # Trackio would only warn, and lose every metric
        check_writable(Path(cfg.trackio.dir), "trackio.dir")


def check_config(cfg: DictConfig) -> None:
    """Refuse values that would fail (or silently misbehave) later, with one line naming the key."""
    missing = sorted(OmegaConf.missing_keys(cfg))
    if missing:
        raise ConfigError(f"{missing[0]} is required: set it on the command line, e.g. {missing[0]}=...")
    checks = {"run": check_run, "data": lambda c: sources.check(c.data), "model": models.check, "optimizer": optim.check}
    checks.update({component.name: component.check for component in components()})
    for name, check in checks.items():
        try:
            check(cfg)
        except ConfigError:
            raise
        except (TypeError, ValueError) as err:  # a schema-less option's value of the wrong type meets a range check
            raise ConfigError(f"{name}: a value of the wrong kind ({err}); an option with a schema is checked by key") from err
