"""Typed schemas for the config groups, and the value checks Hydra cannot express.

The dataclasses are registered in Hydra's ConfigStore under `schema/...`; each YAML
option pulls its schema in through its defaults list, so `epochs=abc` or
`optimizer.lrr=0.1` is refused by Hydra itself before a run directory exists.
`check_config` adds the range checks (lr > 0, 0 < val_fraction < 1, ...); it runs for
every job before a sweep starts and first thing in a job, followed by `resolve_device`.
"""

from dataclasses import dataclass, field
from typing import Any, List, Optional

import torch
from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf


PRECISIONS = ("fp32", "bf16")


class ConfigError(ValueError):
    """A config value that cannot work; the message names the key and the value."""


@dataclass
class OptimizerSchema:
    _target_: str = MISSING
    _partial_: bool = True
    lr: float = MISSING
    weight_decay: float = 0.0


@dataclass
class SGDSchema(OptimizerSchema):
    _target_: str = "torch.optim.SGD"
    momentum: float = 0.0
    dampening: float = 0.0
    nesterov: bool = False


@dataclass
class AdamWSchema(OptimizerSchema):
    _target_: str = "torch.optim.AdamW"
    betas: List[float] = field(default_factory=lambda: [0.9, 0.999])
    eps: float = 1e-8
    amsgrad: bool = False


@dataclass
class ModelSchema:
    _target_: str = "optqual.models.CifarResNet"
    blocks_per_stage: int = 1
    widths: List[int] = field(default_factory=lambda: [16, 32, 64])
    num_classes: int = 10


@dataclass
class DataSchema:
    _target_: str = MISSING
    batch_size: int = 128
    val_fraction: float = 0.1
    split_seed: int = 0


@dataclass
class Cifar10Schema(DataSchema):
    _target_: str = "optqual.data.cifar10"
    root: str = "./data"
    download: bool = True


@dataclass
class NpzSchema(DataSchema):
    _target_: str = "optqual.data.npz"
    path: str = MISSING


@dataclass
class TrackioSchema:
    enabled: bool = True
    dir: str = "outputs/trackio"


@dataclass
class RunSchema:
    seed: int = 42
    epochs: int = 200
    eval_every: int = 10
    checkpoint_every: int = 1
    experiment_name: str = "resnet8_cifar10_baseline"
    device: str = "auto"
    threads: Optional[int] = None
    precision: str = "fp32"
    compile: bool = False
    optimizer: Any = MISSING
    model: Any = MISSING
    data: Any = MISSING
    trackio: TrackioSchema = field(default_factory=TrackioSchema)


def register_schemas() -> None:
    store = ConfigStore.instance()
    store.store(name="run_schema", node=RunSchema)
    store.store(group="schema/optimizer", name="sgd", node=SGDSchema)
    store.store(group="schema/optimizer", name="adamw", node=AdamWSchema)
    store.store(group="schema/model", name="resnet", node=ModelSchema)
    store.store(group="schema/data", name="cifar10", node=Cifar10Schema)
    store.store(group="schema/data", name="npz", node=NpzSchema)


def _require(ok: bool, key: str, value: Any, why: str) -> None:
    if not ok:
        raise ConfigError(f"{key}={value}: {why}")


def resolve_device(name: str) -> torch.device:
    """`auto` is cuda when present, else cpu; anything else must exist on this machine."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"device={name}: unknown device (use auto, cpu, cuda or cuda:N)") from None
    if device.type == "cuda":
        _require(torch.cuda.is_available(), "device", name, "CUDA is not available on this machine")
        index = device.index or 0
        _require(index < torch.cuda.device_count(), "device", name, "no such CUDA device")
    elif device.type == "mps":
        _require(torch.backends.mps.is_available(), "device", name, "MPS is not available")
    else:
        _require(device.type == "cpu", "device", name, "unsupported device type")
    return device


def check_config(cfg: DictConfig) -> None:
    """Refuse values that would fail (or silently misbehave) later. Whether the device exists
    is `resolve_device`'s question: a SLURM sweep is checked on a login node without a GPU."""
    missing = sorted(OmegaConf.missing_keys(cfg))
    if missing:
        raise ConfigError(f"{missing[0]} is required: set it on the command line, e.g. {missing[0]}=...")
    for key in ("epochs", "eval_every", "checkpoint_every", "data.batch_size"):
        value = OmegaConf.select(cfg, key)
        _require(value > 0, key, value, "must be a positive integer")
    if cfg.threads is not None:
        _require(cfg.threads > 0, "threads", cfg.threads, "must be a positive integer (or null for torch's default)")
    _require(cfg.precision in PRECISIONS, "precision", cfg.precision, f"must be one of {', '.join(PRECISIONS)}")
    _require(cfg.optimizer.lr > 0, "optimizer.lr", cfg.optimizer.lr, "must be > 0")
    weight_decay = cfg.optimizer.get("weight_decay", 0.0)
    _require(weight_decay >= 0, "optimizer.weight_decay", weight_decay, "must be >= 0")
    fraction = cfg.data.val_fraction
    _require(0 < fraction < 1, "data.val_fraction", fraction, "must lie strictly between 0 and 1")
    _require(bool(cfg.experiment_name.strip()), "experiment_name", "''", "must not be empty")
