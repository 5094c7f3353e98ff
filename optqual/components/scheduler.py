"""The `scheduler` group: the learning rate over the run, built from torch's schedulers.

Every schedule counts optimizer updates (optqual/components/timeline.py), so a cosine is smooth
within an epoch and a resumed run continues at the exact update (the schedulers' state is in
the checkpoint). Milestones and step sizes are given in `unit`s: `epoch` (default), `step`
(updates: He et al.'s 32k/48k iterations) or `fraction` of the run (0.5, 0.75), and always
count from the start of the run, warmup included. `warmup_epochs` > 0 puts torch's `LinearLR`
(from `warmup_start_factor` x lr, torchvision's reference recipe, to lr) in front of any
schedule with `SequentialLR`; cosine and onecycle then span the updates after the warmup.
`plateau` (`ReduceLROnPlateau`) is stepped with a validation metric after each validation past
the warmup; the others after every update.
"""

from dataclasses import dataclass
from typing import List

import torch
from hydra.utils import instantiate
from omegaconf import MISSING, DictConfig, OmegaConf
from torch.optim import Optimizer
from torch.optim.lr_scheduler import (CosineAnnealingLR, LinearLR, LRScheduler, MultiStepLR, OneCycleLR, ReduceLROnPlateau,
                                      SequentialLR)

from optqual.components.extension import VALIDATION_METRICS, Extension, better_when
from optqual.components.registry import Component, register
from optqual.components.timeline import UNITS, Timeline
from optqual.data.images import EpochSteps
from optqual.errors import ConfigError, require
from optqual.ranges import within

@dataclass
class ScheduleSchema:
    _target_: str = MISSING
    _partial_: bool = True
    warmup_epochs: float = within(0.0, "[0, inf)")
    warmup_start_factor: float = within(0.01, "(0, 1]")


@dataclass
class ConstantSchema(ScheduleSchema):
    _target_: str = "optqual.components.scheduler.constant"


@dataclass
class CosineSchema(ScheduleSchema):
    _target_: str = "optqual.components.scheduler.cosine"
    eta_min: float = within(0.0, "[0, inf)")


@dataclass
class StepSchema(ScheduleSchema):
    _target_: str = "optqual.components.scheduler.step"
    step_size: float = within(MISSING, "(0, inf)")
    gamma: float = within(0.1, "(0, 1]")
    unit: str = "epoch"


@dataclass
class MultiStepSchema(ScheduleSchema):
    _target_: str = "optqual.components.scheduler.multistep"
    milestones: List[float] = within([], "(0, inf)")
    gamma: float = within(0.1, "(0, 1]")
    unit: str = "epoch"


@dataclass
class PlateauSchema(ScheduleSchema):
    _target_: str = "optqual.components.scheduler.plateau"
    monitor: str = "val_loss"
    mode: str = "auto"
    factor: float = within(0.1, "(0, 1)")
    patience: int = within(10, "[0, inf)")  # validations without improvement
    threshold: float = within(1e-4, "[0, inf)")
    min_lr: float = within(0.0, "[0, inf)")


@dataclass
class OneCycleSchema(ScheduleSchema):
    _target_: str = "optqual.components.scheduler.onecycle"
    pct_start: float = within(0.3, "(0, 1)")
    div_factor: float = within(25.0, "(0, inf)")
    final_div_factor: float = within(1e4, "(0, inf)")
    anneal_strategy: str = "cos"
    three_phase: bool = False
    cycle_momentum: bool = False  # True cycles momentum / beta1 as fast.ai does; off keeps the optimizer's


SCHEMAS = {"none": ConstantSchema, "cosine": CosineSchema, "step": StepSchema, "multistep": MultiStepSchema,
           "plateau": PlateauSchema, "onecycle": OneCycleSchema}


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


def build_schedule(node: DictConfig, optimizer: Optimizer, epoch_steps: EpochSteps) -> LRSchedule:
    timeline = Timeline(epoch_steps, node.warmup_epochs)
    options = {key: value for key, value in OmegaConf.to_container(node, resolve=True).items() if key not in WARMUP_KEYS}
    main = instantiate(options, _convert_="all")(optimizer, timeline)
    per_update, on_validation = (None, main) if isinstance(main, ReduceLROnPlateau) else (main, None)
    if timeline.warmup_steps:
        warmup = LinearLR(optimizer, start_factor=node.warmup_start_factor, total_iters=timeline.warmup_steps)
        per_update = SequentialLR(optimizer, [warmup, per_update], milestones=[timeline.warmup_steps]) if per_update else warmup
    return LRSchedule(optimizer, per_update, on_validation, timeline, node.get("monitor"))


def check(cfg: DictConfig) -> None:
    node = cfg.scheduler
    require(node.warmup_epochs < cfg.epochs, "scheduler.warmup_epochs", node.warmup_epochs, f"must be shorter than the run (epochs={cfg.epochs})")
    if "unit" in node:
        require(node.unit in UNITS, "scheduler.unit", node.unit, f"must be one of {', '.join(UNITS)}")
    if "milestones" in node:
        require(list(node.milestones) == sorted(node.milestones), "scheduler.milestones", list(node.milestones), "must be increasing")
    if "monitor" in node:
        require(node.monitor in VALIDATION_METRICS, "scheduler.monitor", node.monitor, f"must be one of {', '.join(VALIDATION_METRICS)}")
        require(cfg.eval_every is not None, "scheduler", "plateau", "steps on a validation metric, but validation is off (eval_every=null)")
    if node._target_ == f"{onecycle.__module__}.{onecycle.__qualname__}":
        require(node.warmup_epochs == 0, "scheduler.warmup_epochs", node.warmup_epochs, "onecycle warms up by itself: set scheduler.pct_start")
    if "mode" in node:
        require(node.mode in ("auto", "min", "max"), "scheduler.mode", node.mode, "must be auto, min or max")
    stand_in = torch.optim.SGD([{"params": [torch.zeros(1, requires_grad=True)], "name": "all"}], lr=0.1, momentum=0.9)
    try:  # torch's own checks (pct_start, anneal_strategy, ...)
        build_schedule(node, stand_in, EpochSteps(cfg.epochs, ((1, 10),)))
    except (ValueError, TypeError) as err:
        raise ConfigError(f"scheduler: {err}") from err


register(Component(
    name="scheduler",
    summary="the learning rate per update, from torch's schedulers, with an optional linear warmup",
    order=60,
    schemas=SCHEMAS,
    default="none",
    check=check,
    build=lambda node, context: build_schedule(node, context.optimizer, context.epoch_steps),  # told every update
    extension=LRSchedule,
    examples={"cosine_warmup": ["scheduler=cosine", "scheduler.warmup_epochs=1.5", "scheduler.eta_min=0.001"],
              "step": ["scheduler=step", "scheduler.step_size=4", "scheduler.unit=step"],
              "multistep": ["scheduler=multistep", "scheduler.milestones=[1.5,2.5]"],
              "plateau_warmup": ["scheduler=plateau", "scheduler.patience=0", "scheduler.warmup_epochs=0.5"],
              "onecycle": ["scheduler=onecycle", "scheduler.cycle_momentum=true"]},
))
