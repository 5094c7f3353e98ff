"""Every value of a run config checked before any work: every numeric value against the range its
schema declares (optqual/ranges.py), then the run-level values, the core groups' and every
registered component's own checks (each beside its code): names, and what relates two values.

It runs for every job before a sweep starts (optqual/launch/callbacks.py) and first thing in a
job (optqual/train.py). Whether the device exists is a question for the machine the job runs
on (optqual/system/devices.py): a SLURM sweep is checked on a login node without a GPU.
"""

import dataclasses
import inspect
import re
from pathlib import Path

from hydra.utils import get_object
from omegaconf import DictConfig, OmegaConf

from optqual import models
from optqual.components.registry import components
from optqual.errors import ConfigError, did_you_mean, require
from optqual.files.atomic import check_writable
from optqual.optim import build as optim
from optqual.ranges import check_ranges
from optqual.system.precision import PRECISIONS

COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")  # torch.compile's
HYDRA_KEY = re.compile(r"_\w+_")  # _target_, _partial_, ...: read by Hydra's instantiate
WHERE_KEYS_ARE = "python launch.py --help lists the groups, --cfg job the keys"
WHERE_ANALYSIS_KEYS_ARE = "python -m optqual analyze --help lists the measures and keys"


def check_run(cfg: DictConfig) -> None:
    """The run-level values: counts, ranges, names."""
    every = cfg.grad_norm_every
    require(every == "auto" or (type(every) is int and every > 0), "grad_norm_every", every, "must be a positive integer or auto")
    require(cfg.precision in PRECISIONS, "precision", cfg.precision, f"must be one of {', '.join(PRECISIONS)}")
    require(cfg.compile_mode in COMPILE_MODES, "compile_mode", cfg.compile_mode, f"must be one of {', '.join(COMPILE_MODES)}")
    schedule = cfg.data.get("batch_size_schedule")
    require(not (schedule and cfg.data.get("full_batch")), "data.full_batch", True,
            "every batch is then the whole training set: drop data.batch_size_schedule, or data.full_batch")
    if schedule:
        shown = dict(schedule)
        require(0 in schedule, "data.batch_size_schedule", shown, "must start at epoch 0")
        require(all(epoch >= 0 and size > 0 for epoch, size in schedule.items()), "data.batch_size_schedule", shown,
                "needs epochs >= 0 and positive batch sizes")
    name = cfg.experiment_name
    if name is not None:  # null: <model>_<data> (config/schema.py: experiment_title)
        require(bool(name.strip()), "experiment_name", "''", "must not be empty (null: <model>_<data>)")
        require("/" not in name and "\\" not in name, "experiment_name", name,
                "must not hold '/' or '\\': it names the sweep directory and the Trackio project")
    if cfg.trackio.enabled:  # Trackio would only warn, and lose every metric
        check_writable(Path(cfg.trackio.dir), "trackio.dir")


def dotted_keys(node: DictConfig, key: str = "") -> list[str]:
    """Every key of `node` and of the nodes within it, written as on the command line (optimizer.lr)."""
    keys = []
    for name in node:
        child = f"{key}.{name}" if key else str(name)
        keys.append(child)
        if not OmegaConf.is_interpolation(node, name) and isinstance(node._get_node(name), DictConfig) \
                and isinstance(node[name], DictConfig):  # not a node set to None
            keys += dotted_keys(node[name], child)
    return keys


def allowed_keys(node: DictConfig) -> set[str] | None:
    """The keys a node may hold: its schema's fields and, for a node with a `_target_`, the
    arguments its constructor takes by name (`+optimizer.maximize=true`; those a constructor passes
    on through **kwargs are its schema's fields); None (any) for a node with neither a schema nor
    a constructor that names its arguments (a dict of layer weights)."""
    schema = OmegaConf.get_type(node)
    fields = {field.name for field in dataclasses.fields(schema)} if dataclasses.is_dataclass(schema) else None
    if not node.get("_target_"):
        return fields
    try:
        parameters = inspect.signature(get_object(node._target_)).parameters.values()
    except (ImportError, ValueError):  # a target that cannot be found: the group's own check names it
        return None
    if fields is None and any(p.kind == p.VAR_KEYWORD for p in parameters):
        return None
    return (fields or set()) | {p.name for p in parameters if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}


def added_keys(node: DictConfig, key: str = "") -> list[str]:
    """The keys given to a node that nothing reads (`+epoch=3`, `+data.batch_sizee=64`)."""
    allowed = allowed_keys(node)
    added = []
    for name in node:
        child = f"{key}.{name}" if key else str(name)
        value = node._get_node(name)
        if allowed is not None and name not in allowed and not HYDRA_KEY.fullmatch(str(name)):
            added += dotted_keys(node[name], child) if isinstance(value, DictConfig) and len(value) else [child]
        elif isinstance(value, DictConfig) and isinstance(node[name], DictConfig):
            added += added_keys(node[name], child)
    return added


def check_known_keys(cfg: DictConfig, what: str = "run", where: str = WHERE_KEYS_ARE) -> None:
    """Refuse a key that no part of the `what` reads, with the closest key that one does; saved in
    a run's config it would claim a setting that was never used."""
    added = [key for key in added_keys(cfg) if not isinstance(OmegaConf.select(cfg, key), DictConfig)]
    if added:
        known = [key for key in dotted_keys(cfg) if key not in added]
        value = OmegaConf.select(cfg, added[0])
        hint = did_you_mean(added[0], known).replace("?)", f"={value}?)")
        raise ConfigError(f"{added[0]}={value}: the {what} has no key {added[0]}{hint}; {where}")


def check_config(cfg: DictConfig) -> None:
    """Refuse values that would fail (or silently misbehave) later, with one line naming the key."""
    missing = sorted(OmegaConf.missing_keys(cfg))
    if missing:
        raise ConfigError(f"{missing[0]} is required: set it on the command line, e.g. {missing[0]}=...")
    check_known_keys(cfg)
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
