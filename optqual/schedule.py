"""The `scheduler` config group: the learning rate over the run, built from torch's schedulers.

Every schedule counts optimizer updates, so a cosine is smooth within an epoch and a
resumed run continues at the exact update (the schedulers' state is in the checkpoint).
Milestones and step sizes are given in `unit`s: `epoch` (default), `step` (updates: He et
al.'s 32k/48k iterations) or `fraction` of the run (0.5, 0.75), and always count from the
start of the run, warmup included. `warmup_epochs` > 0 puts torch's `LinearLR` (from
`warmup_start_factor` x lr, torchvision's reference recipe, to lr) in front of any schedule
with `SequentialLR`; cosine and onecycle then span the updates after the warmup. `plateau`
(`ReduceLROnPlateau`) is stepped with a validation metric after each validation past the
warmup; the others after every update.

The same file holds the shapes of a *coefficient* that follows the update count (the
regularizer's weight, `regularizer/schedule`): `constant(value)`, `linear_warmup(delay,
ramp)` and `cosine_anneal(delay)`, closed-form factors in [0, 1] of the update about to be
taken, on the same `Timeline` (so epochs mean the same updates under a batch-size schedule).
Where a coefficient shape and an LR shape coincide they are the same curve: cosine_anneal
is CosineAnnealingLR's cosine run from 0 up to 1, linear_warmup's ramp is LinearLR's line
(tests/test_sparsity.py compares them with torch's schedulers update by update).
"""

import math

from dataclasses import dataclass, field
from typing import Callable, List

import torch
from hydra.utils import instantiate
from omegaconf import MISSING, DictConfig, OmegaConf
from torch.optim import Optimizer
from torch.optim.lr_scheduler import (CosineAnnealingLR, LinearLR, LRScheduler, MultiStepLR, OneCycleLR, ReduceLROnPlateau,
                                      SequentialLR)

from optqual.engine.hooks import Extension
from optqual.engine.loop import VALIDATION_METRICS, better_when
from optqual.errors import ConfigError, require

UNITS = ("epoch", "step", "fraction")


@dataclass
class ScheduleSchema:
    _target_: str = MISSING
    _partial_: bool = True
    warmup_epochs: float = 0.0
    warmup_start_factor: float = 0.01


@dataclass
class ConstantSchema(ScheduleSchema):
    _target_: str = "optqual.schedule.constant"


@dataclass
class CosineSchema(ScheduleSchema):
    _target_: str = "optqual.schedule.cosine"
    eta_min: float = 0.0


@dataclass
class StepSchema(ScheduleSchema):
    _target_: str = "optqual.schedule.step"
    step_size: float = MISSING
    gamma: float = 0.1
    unit: str = "epoch"


@dataclass
class MultiStepSchema(ScheduleSchema):
    _target_: str = "optqual.schedule.multistep"
    milestones: List[float] = field(default_factory=list)
    gamma: float = 0.1
    unit: str = "epoch"


@dataclass
class PlateauSchema(ScheduleSchema):
    _target_: str = "optqual.schedule.plateau"
    monitor: str = "val_loss"
    mode: str = "auto"
    factor: float = 0.1
    patience: int = 10  # validations without improvement
    threshold: float = 1e-4
    min_lr: float = 0.0


@dataclass
class OneCycleSchema(ScheduleSchema):
    _target_: str = "optqual.schedule.onecycle"
    pct_start: float = 0.3
    div_factor: float = 25.0
    final_div_factor: float = 1e4
    anneal_strategy: str = "cos"
    three_phase: bool = False
    cycle_momentum: bool = False  # True cycles momentum / beta1 as fast.ai does; off keeps the optimizer's


SCHEMAS = {"none": ConstantSchema, "cosine": CosineSchema, "step": StepSchema, "multistep": MultiStepSchema,
           "plateau": PlateauSchema, "onecycle": OneCycleSchema}


@dataclass(frozen=True)
class Timeline:
    """The run's length in optimizer updates, and the update at which a milestone falls."""

    epoch_steps: tuple[int, ...]  # the updates of each epoch (they differ under a batch-size schedule)
    warmup_epochs: float = 0.0

    @property
    def total_steps(self) -> int:
        return sum(self.epoch_steps)

    @property
    def warmup_steps(self) -> int:
        return self.updates(self.warmup_epochs, "epoch")

    def updates(self, amount: float, unit: str) -> int:
        """The update at which `amount` `unit`s from the start fall (a fraction of an epoch: of its updates)."""
        if unit == "epoch":
            whole = int(amount)
            partial = round((amount - whole) * self.epoch_steps[whole]) if whole < len(self.epoch_steps) else 0
            return sum(self.epoch_steps[:whole]) + partial
        return round(amount * {"step": 1, "fraction": self.total_steps}[unit])


def after_warmup(milestones: list[int], timeline: Timeline) -> list[int]:
    """Milestones counted from the start of the run, as the scheduler after the warmup counts them."""
    return [m - timeline.warmup_steps for m in milestones if timeline.warmup_steps < m < timeline.total_steps]


def constant(optimizer: Optimizer, timeline: Timeline) -> None:
    return None


def cosine(optimizer: Optimizer, timeline: Timeline, eta_min: float) -> LRScheduler:
    return CosineAnnealingLR(optimizer, T_max=timeline.total_steps - timeline.warmup_steps, eta_min=eta_min)


def step(optimizer: Optimizer, timeline: Timeline, step_size: float, gamma: float, unit: str) -> LRScheduler:
    """lr x gamma every `step_size` (torch's StepLR, with its period counted from the run's start)."""
    period = timeline.updates(step_size, unit)
    return MultiStepLR(optimizer, after_warmup(list(range(period, timeline.total_steps, period)), timeline), gamma)


def multistep(optimizer: Optimizer, timeline: Timeline, milestones: list[float], gamma: float, unit: str) -> LRScheduler:
    return MultiStepLR(optimizer, after_warmup([timeline.updates(m, unit) for m in milestones], timeline), gamma)


def plateau(optimizer: Optimizer, timeline: Timeline, monitor: str, mode: str, factor: float, patience: int,
            threshold: float, min_lr: float) -> ReduceLROnPlateau:
    return ReduceLROnPlateau(optimizer, mode=better_when(monitor, mode), factor=factor, patience=patience,
                             threshold=threshold, min_lr=min_lr)


def onecycle(optimizer: Optimizer, timeline: Timeline, **options) -> LRScheduler:
    peaks = [group["lr"] for group in optimizer.param_groups]  # each group's configured lr is its peak
    return OneCycleLR(optimizer, max_lr=peaks, total_steps=timeline.total_steps, **options)


class LRSchedule(Extension):
    """Steps the schedule (after every update, or after validation for plateau) and records each
    param group's learning rate, as used by the epoch's last update, as `lr.<group>`."""

    def __init__(self, optimizer: Optimizer, per_update: LRScheduler | None, on_validation: ReduceLROnPlateau | None,
                 timeline: Timeline, monitor: str | None):
        self.optimizer = optimizer
        self.per_update, self.on_validation, self.monitor = per_update, on_validation, monitor
        self.timeline = timeline
        self.used = [group["lr"] for group in optimizer.param_groups]

    def after_step(self) -> None:
        self.used = [group["lr"] for group in self.optimizer.param_groups]
        if self.per_update is not None:
            self.per_update.step()

    def on_epoch_end(self, record: dict) -> bool:
        record.update({f"lr.{group['name']}": lr for group, lr in zip(self.optimizer.param_groups, self.used)})
        warmed_up = self.timeline.updates(record["epoch"], "epoch") >= self.timeline.warmup_steps
        if self.on_validation is not None and self.monitor in record and warmed_up:
            self.on_validation.step(record[self.monitor])
        return False

    def state_dict(self) -> dict:
        return {name: scheduler.state_dict() if scheduler else None for name, scheduler in
                (("per_update", self.per_update), ("on_validation", self.on_validation))} | {"used": self.used}

    def load_state_dict(self, state: dict) -> None:
        for name in ("per_update", "on_validation"):
            if getattr(self, name) is not None:
                getattr(self, name).load_state_dict(state[name])
        self.used = state["used"]


WARMUP_KEYS = ("warmup_epochs", "warmup_start_factor")  # the warmup in front, not an argument of the schedule


def build_schedule(node: DictConfig, optimizer: Optimizer, epoch_steps: list[int]) -> LRSchedule:
    timeline = Timeline(tuple(epoch_steps), node.warmup_epochs)
    options = {key: value for key, value in OmegaConf.to_container(node, resolve=True).items() if key not in WARMUP_KEYS}
    main = instantiate(options, _convert_="all")(optimizer, timeline)
    per_update, on_validation = (None, main) if isinstance(main, ReduceLROnPlateau) else (main, None)
    if timeline.warmup_steps:
        warmup = LinearLR(optimizer, start_factor=node.warmup_start_factor, total_iters=timeline.warmup_steps)
        per_update = SequentialLR(optimizer, [warmup, per_update], milestones=[timeline.warmup_steps]) if per_update else warmup
    return LRSchedule(optimizer, per_update, on_validation, timeline, node.get("monitor"))


@dataclass
class CoefficientSchema:
    _target_: str = MISSING
    _partial_: bool = True


@dataclass
class ConstantCoefficientSchema(CoefficientSchema):
    _target_: str = "optqual.schedule.constant_coefficient"
    value: float = 1.0


@dataclass
class LinearWarmupSchema(CoefficientSchema):
    _target_: str = "optqual.schedule.linear_warmup"
    delay: float = 0.0  # epochs at 0
    ramp: float = 1.0  # epochs from 0 to 1, then 1


@dataclass
class CosineAnnealSchema(CoefficientSchema):
    _target_: str = "optqual.schedule.cosine_anneal"
    delay: float = 0.0  # epochs at 0, then a cosine from 0 to 1 over the rest of the run


COEFFICIENT_SCHEMAS = {"constant": ConstantCoefficientSchema, "linear_warmup": LinearWarmupSchema, "cosine_anneal": CosineAnnealSchema}


def constant_coefficient(update: int, timeline: Timeline, value: float) -> float:
    return value


def linear_warmup(update: int, timeline: Timeline, delay: float, ramp: float) -> float:
    """0 for `delay` epochs, then a line to 1 over `ramp` epochs, then 1."""
    start, end = timeline.updates(delay, "epoch"), timeline.updates(delay + ramp, "epoch")
    if update >= end:
        return 1.0
    return 0.0 if update <= start else (update - start) / (end - start)


def cosine_anneal(update: int, timeline: Timeline, delay: float) -> float:
    """0 for `delay` epochs, then (1 - cos(pi t)) / 2 with t from 0 to 1 over the rest of the run."""
    start = timeline.updates(delay, "epoch")
    progress = min(max(update - start, 0) / (timeline.total_steps - start), 1.0)
    return (1 - math.cos(math.pi * progress)) / 2


def build_coefficient(node: DictConfig, epoch_steps: list[int]) -> Callable[[int], float]:
    """The factor (in [0, 1] except constant's value) that `node` gives to each update, counted from 0."""
    shape = instantiate(node)
    timeline = Timeline(tuple(epoch_steps))
    return lambda update: shape(update, timeline)


def check_coefficient(node: DictConfig, key: str, epochs: int) -> None:
    if "delay" in node:
        require(0 <= node.delay < epochs, f"{key}.delay", node.delay, f"must lie in [0, epochs={epochs})")
    if "ramp" in node:
        require(node.ramp > 0, f"{key}.ramp", node.ramp, "must be > 0")


def check(cfg: DictConfig) -> None:
    node = cfg.scheduler
    require(0 <= node.warmup_epochs < cfg.epochs, "scheduler.warmup_epochs", node.warmup_epochs,
            f"must be >= 0 and shorter than the run (epochs={cfg.epochs})")
    require(0 < node.warmup_start_factor <= 1, "scheduler.warmup_start_factor", node.warmup_start_factor, "must lie in (0, 1]")
    if "unit" in node:
        require(node.unit in UNITS, "scheduler.unit", node.unit, f"must be one of {', '.join(UNITS)}")
    if "step_size" in node:
        require(node.step_size > 0, "scheduler.step_size", node.step_size, "must be > 0")
    if "milestones" in node:
        require(list(node.milestones) == sorted(node.milestones) and all(m > 0 for m in node.milestones),
                "scheduler.milestones", list(node.milestones), "must be positive and increasing")
    if "monitor" in node:
        require(node.monitor in VALIDATION_METRICS, "scheduler.monitor", node.monitor, f"must be one of {', '.join(VALIDATION_METRICS)}")
        require(cfg.eval_every is not None, "scheduler", "plateau", "steps on a validation metric, but validation is off (eval_every=null)")
    if node._target_ == f"{onecycle.__module__}.{onecycle.__qualname__}":
        require(node.warmup_epochs == 0, "scheduler.warmup_epochs", node.warmup_epochs, "onecycle warms up by itself: set scheduler.pct_start")
    for key in ("gamma", "factor"):
        if key in node:
            require(0 < node[key] <= 1, f"scheduler.{key}", node[key], "must lie in (0, 1]")
    if "mode" in node:
        require(node.mode in ("auto", "min", "max"), "scheduler.mode", node.mode, "must be auto, min or max")
    stand_in = torch.optim.SGD([{"params": [torch.zeros(1, requires_grad=True)], "name": "all"}], lr=0.1, momentum=0.9)
    try:  # torch's own checks (pct_start, anneal_strategy, ...)
        build_schedule(node, stand_in, [10] * cfg.epochs)
    except (ValueError, TypeError) as err:
        raise ConfigError(f"scheduler: {err}") from err
