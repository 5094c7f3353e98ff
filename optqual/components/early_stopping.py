"""The `early_stopping` group: the best weights on validation, and stopping early.

Every validation compares the monitored metric (`val_acc` by default) with the best so far.
The weights at the best value (strictly better than every earlier validation) are kept on
the device and in the training state, whether or not early stopping is on, and become
best_model.pt when the run ends (tested like the last weights: best_test_acc): chosen on
validation, never on the test set. With
`patience` set, training stops once `patience` validations in a row improved on the
reference value by no more than `min_delta` (the reference moves only on such
improvements), but never before epoch `min_epochs`.
"""

from dataclasses import dataclass
from typing import Optional

import torch
from omegaconf import DictConfig
from torch import nn

from optqual.components.extension import VALIDATION_METRICS, Extension, better_when
from optqual.components.registry import Component, register
from optqual.errors import require
from optqual.ranges import within


@dataclass
class EarlyStoppingSchema:
    monitor: str = "val_acc"
    mode: str = "auto"  # auto: max for accuracies, min for losses
    patience: Optional[int] = within(None, "[1, inf)")  # validations without improvement; null: never stop early
    min_delta: float = within(0.0, "[0, inf)")
    min_epochs: int = within(0, "[0, inf)")  # never stop before this epoch


class EarlyStopping(Extension):
    def __init__(self, model: nn.Module, monitor: str, mode: str, patience: int | None, min_delta: float, min_epochs: int):
        self.model = model
        self.monitor, self.patience, self.min_delta, self.min_epochs = monitor, patience, min_delta, min_epochs
        self.sign = 1.0 if better_when(monitor, mode) == "max" else -1.0  # sign * value: larger is better
        self.best: dict | None = None  # the best validation's epoch and metrics
        self.best_weights: dict[str, torch.Tensor] | None = None
        self.reference: float | None = None  # what the next validation must beat by min_delta
        self.stale = 0  # validations in a row that did not

    def on_epoch_end(self, record: dict) -> bool:
        if self.monitor not in record:
            return False
        value = record[self.monitor]
        if self.best is None or self.sign * (value - self.best[self.monitor]) > 0:
            self.best = {"epoch": record["epoch"], **{key: record[key] for key in VALIDATION_METRICS}}
            self.best_weights = {key: tensor.detach().clone() for key, tensor in self.model.state_dict().items()}
        if self.reference is None or self.sign * (value - self.reference) > self.min_delta:
            self.reference, self.stale = value, 0
        else:
            self.stale += 1
        return self.patience is not None and self.stale >= self.patience and record["epoch"] >= self.min_epochs

    def solutions(self) -> dict[str, dict[str, torch.Tensor]]:
        """best_model.pt: the weights of the best validation (none without validation)."""
        return {"best": self.best_weights} if self.best_weights is not None else {}

    def results(self) -> dict:
        """metrics.json's best_epoch, best_val_loss and best_val_acc (empty without validation)."""
        return {f"best_{key}": value for key, value in self.best.items()} if self.best else {}

    def state_dict(self) -> dict:
        return {"best": self.best, "best_weights": self.best_weights, "reference": self.reference, "stale": self.stale}

    def load_state_dict(self, state: dict) -> None:
        self.best, self.best_weights, self.reference, self.stale = state["best"], state["best_weights"], state["reference"], state["stale"]


SCHEMAS = {"early_stopping": EarlyStoppingSchema}


def check(cfg: DictConfig) -> None:
    node = cfg.early_stopping
    require(node.monitor in VALIDATION_METRICS, "early_stopping.monitor", node.monitor,
            f"no such validation metric (choose {' or '.join(VALIDATION_METRICS)})")
    require(node.mode in ("auto", "min", "max"), "early_stopping.mode", node.mode, "must be auto, min or max")
    if node.patience is not None:
        require(cfg.eval_every is not None, "early_stopping.patience", node.patience, "needs validation, which is off (eval_every=null)")


register(Component(
    name="early_stopping",
    summary="the best weights on validation (best_model.pt), and stopping after `patience` validations without improvement",
    order=80,
    schemas=SCHEMAS,
    default="default",
    check=check,
    build=lambda node, context: EarlyStopping(context.model, **node),
    extension=EarlyStopping,
    examples={"early_stopping": ["early_stopping.patience=1", "early_stopping.min_delta=1.0", "epochs=4"]},
))
