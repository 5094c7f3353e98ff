"""The `batch_mix` config group: MixUp (Zhang et al. 2018) and CutMix (Yun et al. 2019) on the
training device, timm's conventions (`mixup_alpha`, `cutmix_alpha`, `prob`, `switch_prob`).

With probability `prob` a batch is mixed with a pairing of itself: MixUp blends whole images
with weight lam ~ Beta(mixup_alpha, mixup_alpha); CutMix pastes a box of the partner image
whose side is sqrt(1 - lam) of the image's (lam ~ Beta(cutmix_alpha, cutmix_alpha), the
box centred uniformly and clipped at the border), and then sets lam to the share of the
image that is its own. With both alphas given, CutMix is chosen with probability
`switch_prob`. The targets become lam * one_hot(label) + (1 - lam) * one_hot(partner's label).

Every draw (apply or not, which of the two, lam, the box, the pairing) comes from the
extension's own CPU generator, seeded from the run's seed and saved in its state: the host
needs lam and the box to slice, so drawing them there costs the device no synchronisation,
and a repeat or a resume draws the same numbers. torchvision's v2 MixUp/CutMix draw from
torch's global generator and are not used.
"""

import math
from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F
from omegaconf import DictConfig
from scipy.special import betaincinv

from optqual.components.extension import Extension
from optqual.components.registry import Component, register
from optqual.ranges import within
from optqual.system.devices import host_to_device


@dataclass
class BatchMixSchema:
    mixup_alpha: Optional[float] = within(None, "(0, inf)")  # null: no MixUp
    cutmix_alpha: Optional[float] = within(None, "(0, inf)")  # null: no CutMix
    prob: float = within(1.0, "[0, 1]")  # the chance that a batch is mixed at all
    switch_prob: float = within(0.5, "[0, 1]")  # with both: the chance of CutMix rather than MixUp


SCHEMAS = {"batch_mix": BatchMixSchema}


def beta(alpha: float, generator: torch.Generator) -> float:
    """One draw of Beta(alpha, alpha), by the inverse of its CDF at a uniform draw of `generator`."""
    return float(betaincinv(alpha, alpha, torch.rand((), generator=generator, dtype=torch.float64).item()))


def cutmix_box(lam: float, height: int, width: int, generator: torch.Generator) -> tuple[int, int, int, int]:
    """(top, bottom, left, right) of the pasted box: sides sqrt(1 - lam) of the image's, centre uniform, clipped."""
    ratio = math.sqrt(1 - lam)
    box_h, box_w = int(height * ratio), int(width * ratio)
    cy = int(torch.randint(height, (), generator=generator))
    cx = int(torch.randint(width, (), generator=generator))
    top, bottom = max(cy - box_h // 2, 0), min(cy + box_h // 2, height)
    left, right = max(cx - box_w // 2, 0), min(cx + box_w // 2, width)
    return top, bottom, left, right


class BatchMix(Extension):
    """Mixes a batch (float NCHW images and int labels) into images and soft targets, in `on_batch`."""

    def __init__(self, num_classes: int, generator: torch.Generator, mixup_alpha: Optional[float] = None,
                 cutmix_alpha: Optional[float] = None, prob: float = 1.0, switch_prob: float = 0.5):
        self.num_classes, self.generator = num_classes, generator
        self.mixup_alpha, self.cutmix_alpha, self.prob, self.switch_prob = mixup_alpha, cutmix_alpha, prob, switch_prob

    def on_batch(self, images: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if torch.rand((), generator=self.generator).item() >= self.prob:
            return images, targets
        cutmix = self.mixup_alpha is None or (self.cutmix_alpha is not None and torch.rand((), generator=self.generator).item() < self.switch_prob)
        lam = beta(self.cutmix_alpha if cutmix else self.mixup_alpha, self.generator)
        pairing = host_to_device(torch.randperm(len(targets), generator=self.generator), images.device)
        if cutmix:
            height, width = images.shape[2:]
            top, bottom, left, right = cutmix_box(lam, height, width, self.generator)
            mixed = images.clone()
            mixed[:, :, top:bottom, left:right] = images[:, :, top:bottom, left:right][pairing]
            lam = 1 - (bottom - top) * (right - left) / (height * width)  # the exact share of the image that is its own
        else:
            mixed = images.lerp(images[pairing], 1 - lam)
        soft = F.one_hot(targets, self.num_classes).float()
        return mixed, soft.lerp(soft[pairing], 1 - lam)

    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])


def build_batch_mix(node: DictConfig, num_classes: int, generator: torch.Generator) -> Optional[BatchMix]:
    """The run's BatchMix, or None when the option mixes nothing (`batch_mix=none`)."""
    if node.mixup_alpha is None and node.cutmix_alpha is None:
        return None
    return BatchMix(num_classes, generator, node.mixup_alpha, node.cutmix_alpha, node.prob, node.switch_prob)


register(Component(
    name="batch_mix",
    summary="MixUp and CutMix of each training batch",
    order=30,
    schemas=SCHEMAS,
    default="none",
    build=lambda node, context: build_batch_mix(node, context.data.num_classes, context.generator()),
    extension=BatchMix,
    stream="batch_mix",
    examples={"cutmix": ["batch_mix=cutmix"],  # prob 0.5: batches mixed and not
              "mixup_cutmix_smoothed": ["batch_mix=mixup_cutmix", "batch_mix.prob=0.8", "loss.label_smoothing=0.1"]},
))
