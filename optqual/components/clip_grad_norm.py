"""`clip_grad_norm`, a run-level key: the gradient's global L2 norm capped before every update (torch's clip_grad_norm_).

The share of updates whose gradient was clipped is `clipped_fraction` in the history,
counted on the device. Under SAM both passes are clipped; the one that counts is the
second, whose gradient the update uses (clipping the first does not change SAM's
perturbation, which is normalized).
"""

import torch
from torch.nn.utils import clip_grad_norm_

from optqual.components.extension import Extension
from optqual.components.registry import Component, register


class GradClipping(Extension):
    def __init__(self, params: list[torch.nn.Parameter], max_norm: float):
        self.params, self.max_norm = params, max_norm
        self.clipped = torch.zeros((), device=params[0].device)  # updates clipped in this epoch
        self.steps = 0
        self.last_clipped = self.clipped

    def after_backward(self) -> None:
        self.last_clipped = clip_grad_norm_(self.params, self.max_norm, foreach=True) > self.max_norm

    def after_step(self) -> None:
        self.clipped += self.last_clipped
        self.steps += 1

    def on_epoch_end(self, record: dict) -> bool:
        record["clipped_fraction"] = self.clipped.item() / self.steps
        self.clipped.zero_()
        self.steps = 0
        return False

    def state_dict(self) -> dict:
        return {"clipped": self.clipped.clone(), "steps": self.steps}

    def load_state_dict(self, state: dict) -> None:
        self.clipped.copy_(state["clipped"])
        self.steps = state["steps"]


def build_clipping(max_norm: float | None, model: torch.nn.Module) -> GradClipping | None:
    return None if max_norm is None else GradClipping([p for p in model.parameters() if p.requires_grad], max_norm)


register(Component(
    name="clip_grad_norm",
    summary="cap the gradient's global L2 norm before every update (null: no clipping)",
    order=40,
    build=lambda max_norm, context: build_clipping(max_norm, context.model),
    extension=GradClipping,
    examples={"clip_grad_norm": ["clip_grad_norm=0.5"]},
))
