"""The `loss` group: what training minimizes, as a function of a batch's logits and targets.

- `cross_entropy` (default): torch's cross-entropy, with its label smoothing.
- `mse`: the square loss of the edge-of-stability papers (Cohen et al. 2021, their
  `SquaredLoss`): half the squared distance between the logits and the one-hot target, summed
  over the classes and averaged over the images. Its Hessian is what their `2 / eta` is
  measured against, so the factor 1/2 and the sum over classes are theirs.

Targets are class indices, or class probabilities when a batch was mixed (MixUp/CutMix);
the square loss takes probabilities as its target vector. Validation and test losses are
the plain loss (no label smoothing), the training history also records the plain
cross-entropy (`train_ce`) whatever the loss, so runs with different losses still compare.
"""

import functools
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from omegaconf import DictConfig

from optqual.ranges import within

LossFunction = Callable[..., torch.Tensor]  # (logits, targets, reduction="mean"|"sum"|"none") -> loss


@dataclass
class CrossEntropySchema:
    name: str = "cross_entropy"
    label_smoothing: float = within(0.0, "[0, 1)")  # of the training loss; validation and test losses are plain


@dataclass
class SquaredErrorSchema:
    name: str = "mse"


SCHEMAS = {"cross_entropy": CrossEntropySchema, "mse": SquaredErrorSchema}


def squared_error(logits: torch.Tensor, targets: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """0.5 * ||logits - target||^2 per image (the target one-hot, or the mixed probabilities), reduced over images."""
    if targets.ndim == 1:
        targets = F.one_hot(targets, logits.shape[1])
    per_image = 0.5 * (logits - targets.to(logits.dtype)).square().sum(1)
    if reduction == "none":
        return per_image
    return per_image.sum() if reduction == "sum" else per_image.mean()


LOSSES: dict[str, LossFunction] = {"cross_entropy": F.cross_entropy, "mse": squared_error}


def training_loss(node: DictConfig) -> LossFunction:
    """The loss training differentiates (label smoothing included)."""
    smoothing = node.get("label_smoothing", 0.0)
    return functools.partial(F.cross_entropy, label_smoothing=smoothing) if smoothing else LOSSES[node.name]


def plain_loss(node: DictConfig) -> LossFunction:
    """The loss that validation, test and the analysis report: the training loss without label smoothing."""
    return LOSSES[node.name]
