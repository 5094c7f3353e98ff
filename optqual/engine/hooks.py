"""The components of a run at the points of training (optqual/components/extension.py).

Each point calls, in the components' order, only those that override it, so the hot loop pays
nothing for a point no component uses.
"""

import torch
from torch import nn

from optqual.components.extension import POINTS, Extension, uses


class Hooks:
    """The extensions of a run by name, and the ones each point calls."""

    def __init__(self, extensions: dict[str, Extension]):
        self.extensions = extensions
        self._at = {point: [e for e in extensions.values() if uses(type(e), point)] for point in POINTS}

    def on_images(self, images: torch.Tensor) -> torch.Tensor:
        for extension in self._at["on_images"]:
            images = extension.on_images(images)
        return images

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
