"""The `ema` group: an exponential moving average of the weights, timm's ModelEmaV3.

After every `every`-th optimizer update u, every floating-point tensor of the model's state
(weights and, unless `exclude_buffers`, batch-norm statistics) is averaged into a copy of the
model: ema <- decay_u * ema + (1 - decay_u) * weights, other tensors (batch counters) copied.
decay_u is `decay` (0 until `update_after_step` updates have passed, so the average starts at
the weights); with `warmup`, 1 - (1 + t / warmup_gamma) ** -warmup_power for the t-th update
after the start, kept within [min_decay, decay] (crowsonkb's warmup: early weights, far from
the solution, fade out fast). timm computes the update (`timm.utils.ModelEmaV3`, foreach
kernels); tests/test_ema.py checks it against the recurrence written out. Turned on with
`ema.decay=0.999`: the EMA is validated beside the weights at every validation (`ema_val_loss`,
`ema_val_acc`), saved as ema_model.pt and tested (`ema_test_loss`, `ema_test_acc`) when training
ends, and `python -m optqual analyze RUN weights=ema` analyzes it.
"""

from dataclasses import dataclass
from typing import Optional

import torch
from omegaconf import DictConfig
from torch import nn

from optqual.components.extension import Extension
from optqual.components.registry import BuildContext, Component, register
from optqual.errors import require
from optqual.ranges import within


@dataclass
class EmaSchema:
    decay: Optional[float] = within(None, "(0, 1)")  # null: off
    every: int = within(1, "[1, inf)")
    update_after_step: int = within(0, "[0, inf)")
    warmup: bool = False
    warmup_gamma: float = within(1.0, "(0, inf)")
    warmup_power: float = within(2 / 3, "(0, inf)")
    min_decay: float = within(0.0, "[0, 1)")
    exclude_buffers: bool = False


SCHEMAS = {"ema": EmaSchema}


class ModelEMA(Extension):
    """The average of the model's weights over the updates, validated beside them."""

    def __init__(self, model: nn.Module, evaluate, decay: float, every: int, update_after_step: int, warmup: bool,
                 warmup_gamma: float, warmup_power: float, min_decay: float, exclude_buffers: bool):
        from timm.utils import ModelEmaV3

        self.model, self.evaluate, self.every = model, evaluate, every
        self.average = ModelEmaV3(model, decay=decay, min_decay=min_decay, update_after_step=update_after_step, use_warmup=warmup,
                                  warmup_gamma=warmup_gamma, warmup_power=warmup_power, exclude_buffers=exclude_buffers)
        self.updates = 0  # optimizer updates so far: the average's clock

    def after_step(self) -> None:
        self.updates += 1
        if self.updates % self.every == 0:
            self.average.update(self.model, step=self.updates)

    def on_epoch_end(self, record: dict) -> bool:
        if "val_acc" in record:  # validated when the weights are
            scores = self.evaluate(self.average.module, "val")
            record.update(ema_val_loss=scores["loss"], ema_val_acc=scores["acc"])
        return False

    def solutions(self) -> dict[str, dict[str, torch.Tensor]]:
        """ema_model.pt, tested beside the last weights (ema_test_loss, ema_test_acc)."""
        return {"ema": self.average.module.state_dict()}

    def state_dict(self) -> dict:
        return {"average": self.average.module.state_dict(), "updates": self.updates}

    def load_state_dict(self, state: dict) -> None:
        self.average.module.load_state_dict(state["average"])
        self.updates = state["updates"]


def build_ema(node: DictConfig, context: BuildContext) -> ModelEMA | None:
    """The run's average, or None when `decay` is null."""
    if node.decay is None:
        return None
    return ModelEMA(context.model, context.evaluate, **node)


def check(cfg: DictConfig) -> None:
    node = cfg.ema
    if node.decay is None:
        return
    require(node.min_decay <= node.decay, "ema.min_decay", node.min_decay, f"must lie in [0, decay={node.decay}]")


register(Component(
    name="ema",
    summary="an exponential moving average of the weights (timm's ModelEmaV3), validated, saved as ema_model.pt and tested",
    order=70,
    schemas=SCHEMAS,
    default="default",
    check=check,
    build=build_ema,
    extension=ModelEMA,
    examples={"ema": ["ema.decay=0.9"], "ema_warmup_every": ["ema.decay=0.99", "ema.warmup=true", "ema.every=2", "ema.update_after_step=3"]},
))
