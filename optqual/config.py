"""The run config: typed schemas for every group option, the value checks Hydra cannot express,
and the comparison of two configs.

The dataclasses are registered in Hydra's ConfigStore under `schema/<group>/<option>`;
each YAML option pulls its schema in through its defaults list, so `epochs=abc` or
`optimizer.lrr=0.1` is refused by Hydra itself before a run directory exists. Each
component's schemas and range checks live beside its code (optqual/optim/build.py,
optqual/schedule.py, ...); `check_config` runs the run-level checks and then every
component's. It runs for every job before a sweep starts and first thing in a job,
followed by `resolve_device`.
"""

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, List, Optional

import torch
from hydra.core.config_store import ConfigStore
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import MISSING, DictConfig, ListConfig, OmegaConf

from optqual import batch_mix, clipping, early_stopping, erasing, models, policies, schedule
from optqual.data import sources
from optqual.early_stopping import EarlyStoppingSchema
from optqual.erasing import RandomErasingSchema
from optqual.errors import ConfigError, require
from optqual.optim import build as optim
from optqual.runs.rundir import check_writable
from optqual.sparsity import penalties, quantizer, report
from optqual.sparsity.report import SparsityReportSchema

PRECISIONS = ("fp32", "bf16")


@dataclass
class TrackioSchema:
    enabled: bool = True
    dir: str = "outputs/trackio"


@dataclass
class TensorBoardSchema:
    enabled: bool = False


@dataclass
class LossSchema:
    label_smoothing: float = 0.0  # torch's cross_entropy option; validation and test losses are plain


@dataclass
class SummarySchema:
    tune: List[str] = field(default_factory=list)  # keys a sweep's summary tunes on validation (optqual/runs/summary.py)


@dataclass
class RunSchema:
    seed: int = 42
    epochs: int = 200
    eval_every: Optional[int] = 10  # null: never validate
    checkpoint_every: int = 1
    grad_norm_every: Any = "auto"  # per-layer gradient norms on steps 0, N, 2N, ... of each epoch; auto: 1, or 8 for a fully connected model
    experiment_name: str = "resnet8_cifar10_baseline"
    device: str = "auto"
    threads: Optional[int] = None
    precision: str = "fp32"
    compile: bool = False
    clip_grad_norm: Optional[float] = None
    lr_scale: float = 1.0
    optimizer: Any = MISSING
    scheduler: Any = MISSING
    model: Any = MISSING
    data: Any = MISSING
    batch_mix: Any = MISSING
    augment: Any = MISSING
    regularizer: Any = MISSING
    quantizer: Any = MISSING
    sparsity: SparsityReportSchema = field(default_factory=SparsityReportSchema)
    loss: LossSchema = field(default_factory=LossSchema)
    random_erasing: RandomErasingSchema = field(default_factory=RandomErasingSchema)
    early_stopping: EarlyStoppingSchema = field(default_factory=EarlyStoppingSchema)
    trackio: TrackioSchema = field(default_factory=TrackioSchema)
    tensorboard: TensorBoardSchema = field(default_factory=TensorBoardSchema)
    summary: SummarySchema = field(default_factory=SummarySchema)


def config_groups() -> str:
    """The groups a run composes, each with its options, for `--help`: not the schema groups they
    build on, nor the analysis groups of conf/analyze.yaml, which Hydra's own list shows too."""
    loader = GlobalHydra.instance().config_loader()
    groups = sorted(group for group in HydraConfig.get().runtime.choices if not group.startswith(("schema/", "hydra/")))
    return "\n".join(f"{group}: {', '.join(sorted(loader.get_group_options(group)))}" for group in groups)


def register_with_hydra() -> None:
    """The schemas, in Hydra's config store; the resolver `--help` lists the groups with."""
    if not OmegaConf.has_resolver("optqual_config_groups"):
        OmegaConf.register_new_resolver("optqual_config_groups", config_groups)
    store = ConfigStore.instance()
    store.store(name="run_schema", node=RunSchema)
    groups = {
        "optimizer": optim.SCHEMAS,
        "scheduler": schedule.SCHEMAS,
        "model": models.SCHEMAS,
        "data": sources.SCHEMAS,
        "batch_mix": batch_mix.SCHEMAS,
        "augment": policies.SCHEMAS,
        "regularizer": penalties.SCHEMAS,
        "regularizer/schedule": schedule.COEFFICIENT_SCHEMAS,
        "quantizer": quantizer.SCHEMAS,
    }
    for group, schemas in groups.items():
        for name, schema in schemas.items():
            store.store(group=f"schema/{group}", name=name, node=schema)


def resolve_device(name: str) -> torch.device:
    """`auto` is cuda when present, else cpu; anything else must exist on this machine."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"device={name}: unknown device (use auto, cpu, cuda or cuda:N)") from None
    if device.type == "cuda":
        require(torch.cuda.is_available(), "device", name, "CUDA is not available on this machine")
        index = device.index or 0
        require(index < torch.cuda.device_count(), "device", name, "no such CUDA device")
    elif device.type == "mps":
        require(torch.backends.mps.is_available(), "device", name, "MPS is not available")
    else:
        require(device.type == "cpu", "device", name, "unsupported device type")
    return device


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
    """Refuse values that would fail (or silently misbehave) later. Whether the device exists
    is `resolve_device`'s question: a SLURM sweep is checked on a login node without a GPU."""
    missing = sorted(OmegaConf.missing_keys(cfg))
    if missing:
        raise ConfigError(f"{missing[0]} is required: set it on the command line, e.g. {missing[0]}=...")
    checks = {"run": check_run, "data": lambda c: sources.check(c.data), "model": models.check}
    checks.update({name: module.check for name, module in (("optimizer", optim), ("scheduler", schedule),
                   ("early_stopping", early_stopping), ("clip_grad_norm", clipping), ("batch_mix", batch_mix),
                   ("augment", policies), ("random_erasing", erasing), ("regularizer", penalties), ("quantizer", quantizer),
                   ("sparsity", report))})
    for name, check in checks.items():
        try:
            check(cfg)
        except ConfigError:
            raise
        except (TypeError, ValueError) as err:  # a schema-less option's value of the wrong type meets a range check
            raise ConfigError(f"{name}: a value of the wrong kind ({err}); an option with a schema is checked by key") from err


class _Absent:
    """Stands for a key that one of two configs does not have."""

    def __repr__(self) -> str:
        return "<absent>"


ABSENT = _Absent()


def flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    """Dotted keys to leaf values; lists count as one value."""
    if not isinstance(node, DictConfig):
        value = OmegaConf.to_container(node) if isinstance(node, ListConfig) else node
        return {prefix: value}
    leaves = {}
    for key in node:
        leaves.update(flatten(node._get_node(key), f"{prefix}.{key}" if prefix else str(key)))
    return leaves


def config_diff(a: DictConfig, b: DictConfig) -> list[tuple[str, Any, Any]]:
    """(dotted key, value in a, value in b) for every key whose value differs, sorted by key."""
    flat_a, flat_b = flatten(a), flatten(b)
    keys = sorted(flat_a.keys() | flat_b.keys())
    return [(k, flat_a.get(k, ABSENT), flat_b.get(k, ABSENT)) for k in keys if flat_a.get(k, ABSENT) != flat_b.get(k, ABSENT)]
