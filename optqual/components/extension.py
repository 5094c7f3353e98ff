"""The points where a component takes part in training, and what an epoch's record holds.

A component (an LR schedule, gradient clipping, early stopping, ...) subclasses `Extension`
and overrides the points it needs; the step and the epoch call each point of every component
that overrides it, in the order of the registry (optqual/components/registry.py), and only
those (optqual/engine/hooks.py). A component that keeps sums over an epoch keeps them on the
device and in its `state_dict`, so a run stopped mid-epoch continues them exactly; every
component's state is part of the training state (optqual/engine/state.py) under its name.
When training ends, a component may hand over weights it kept (`solutions`: saved as
`<name>_model.pt` and tested like the last weights) and numbers for metrics.json (`results`).
"""

import torch
from torch import nn

POINTS = ("on_images", "on_batch", "loss_terms", "after_backward", "after_step", "on_epoch_end")
VALIDATION_METRICS = ("val_loss", "val_acc")  # what a validation adds to an epoch's record


def better_when(monitor: str, mode: str) -> str:
    """`min` or `max` for a validation metric; `auto` follows its name (losses fall, accuracies rise)."""
    return ("max" if monitor.endswith("acc") else "min") if mode == "auto" else mode


class Extension:
    """Override what you need; the defaults do nothing."""

    def on_images(self, images: torch.Tensor) -> torch.Tensor:
        """A training batch's uint8 NHWC images after the dataset's own augmentation, before normalization."""
        return images

    def on_batch(self, images: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """After the batch is drawn, augmented and normalized, before the forward pass."""
        return images, targets

    def loss_terms(self, model: nn.Module) -> list[torch.Tensor]:
        """Terms added to the loss that is differentiated (in fp32, outside autocast)."""
        return []

    def after_backward(self) -> None:
        """After every backward pass, before the optimizer uses the gradient (SAM: both passes)."""

    def after_step(self) -> None:
        """After every optimizer step."""

    def on_epoch_end(self, record: dict) -> bool:
        """After the epoch and its validation, if any; add columns to `record`. True stops training."""
        return False

    def solutions(self) -> dict[str, dict[str, torch.Tensor]]:
        """When training ends: weights this component kept (a state dict of the run's model), by name."""
        return {}

    def results(self) -> dict:
        """When training ends: what this component adds to metrics.json."""
        return {}

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


def uses(extension: type[Extension], point: str) -> bool:
    """Whether the class overrides `point` (the hooks call only those that do)."""
    return getattr(extension, point) is not getattr(Extension, point)
