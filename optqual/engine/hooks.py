"""Five fixed points where components take part in training, and the list that calls them.

A component (an LR schedule, gradient clipping, early stopping, ...) subclasses `Extension`
and overrides the points it needs; the step and the epoch call each point of every
component that overrides it, in the order the components were given. A component that
keeps sums over an epoch keeps them on the device and in its `state_dict`, so a run
stopped mid-epoch continues them exactly; every component is registered in the training
state (optqual/engine/state.py) under its name.
"""

import torch
from torch import nn


class Extension:
    """Override what you need; the defaults do nothing."""

    def on_batch(self, images: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """After the batch is drawn and augmented, before the forward pass."""
        return images, targets

    def loss_terms(self, model: nn.Module) -> list[torch.Tensor]:
        """Terms added to the loss that is differentiated (inside autocast)."""
        return []

    def after_backward(self) -> None:
        """After every backward pass, before the optimizer uses the gradient (SAM: both passes)."""

    def after_step(self) -> None:
        """After every optimizer step."""

    def on_epoch_end(self, record: dict) -> bool:
        """After the epoch and its validation, if any; add columns to `record`. True stops training."""
        return False

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


def overrides(extension: Extension, point: str) -> bool:
    return getattr(type(extension), point) is not getattr(Extension, point)


class Hooks:
    """The extensions of a run by name; each point calls only those that override it, so the
    hot loop pays nothing for a point no component uses."""

    def __init__(self, extensions: dict[str, Extension]):
        self.extensions = extensions
        self._at = {point: [e for e in extensions.values() if overrides(e, point)]
                    for point in ("on_batch", "loss_terms", "after_backward", "after_step", "on_epoch_end")}

    def on_batch(self, images: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        for extension in self._at["on_batch"]:
            images, targets = extension.on_batch(images, targets)
        return images, targets

    def loss_terms(self, model: nn.Module) -> list[torch.Tensor]:
        return [term for extension in self._at["loss_terms"] for term in extension.loss_terms(model)]

    def after_backward(self) -> None:
        for extension in self._at["after_backward"]:
            extension.after_backward()

    def after_step(self) -> None:
        for extension in self._at["after_step"]:
            extension.after_step()

    def on_epoch_end(self, record: dict) -> bool:
        stops = [extension.on_epoch_end(record) for extension in self._at["on_epoch_end"]]  # every one sees the epoch
        return any(stops)
