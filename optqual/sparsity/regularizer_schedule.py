"""The `regularizer/schedule` group: the penalty's coefficient over the updates.

The shapes are closed-form factors of the update about to be taken, on the run's Timeline
(optqual/components/timeline.py: epochs mean the same updates under a batch-size schedule):
`constant(value)`, `linear_warmup(delay, ramp)` and `cosine_anneal(delay)`, in [0, 1] but for
constant's value. Where a coefficient shape and an LR shape coincide they are the same curve:
cosine_anneal is CosineAnnealingLR's cosine run from 0 up to 1, linear_warmup's ramp is
LinearLR's line (tests/test_sparsity.py compares them with torch's schedulers update by update).
"""

import math
from dataclasses import dataclass
from typing import Callable

from hydra.utils import instantiate
from omegaconf import MISSING, DictConfig

from optqual.components.timeline import Timeline
from optqual.data.images import EpochSteps
from optqual.errors import require
from optqual.ranges import within


@dataclass
class CoefficientSchema:
    _target_: str = MISSING
    _partial_: bool = True


@dataclass
class ConstantSchema(CoefficientSchema):
    _target_: str = "optqual.sparsity.regularizer_schedule.constant"
    value: float = within(1.0, "[0, inf)")


@dataclass
class LinearWarmupSchema(CoefficientSchema):
    _target_: str = "optqual.sparsity.regularizer_schedule.linear_warmup"
    delay: float = within(0.0, "[0, inf)")  # epochs at 0
    ramp: float = within(1.0, "(0, inf)")  # epochs from 0 to 1, then 1


@dataclass
class CosineAnnealSchema(CoefficientSchema):
    _target_: str = "optqual.sparsity.regularizer_schedule.cosine_anneal"
    delay: float = within(0.0, "[0, inf)")  # epochs at 0, then a cosine from 0 to 1 over the rest of the run


SCHEMAS = {"constant": ConstantSchema, "linear_warmup": LinearWarmupSchema, "cosine_anneal": CosineAnnealSchema}


def constant(update: int, timeline: Timeline, value: float) -> float:
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


def build_coefficient(node: DictConfig, epoch_steps: EpochSteps) -> Callable[[int], float]:
    """The factor that `node` gives to each update, counted from 0."""
    shape = instantiate(node)
    timeline = Timeline(epoch_steps)
    return lambda update: shape(update, timeline)


def check_coefficient(node: DictConfig, key: str, epochs: int) -> None:
    if "delay" in node:
        require(node.delay < epochs, f"{key}.delay", node.delay, f"must lie in [0, epochs={epochs})")
