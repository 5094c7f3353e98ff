"""The `random_erasing` group: Random Erasing (Zhong et al. 2020) as torchvision's RandomErasing does it,
batched on the training device, after normalization (torchvision's recipe order: the erased
box is set to `value` in normalized units, 0 being the dataset's mean colour).

Each image is erased with probability `p`; its box is the first of ten draws (area share
uniform in `scale`, log aspect uniform in log `ratio`) strictly smaller than the image, placed
uniformly; with none fitting the image stays whole, as torchvision's. The draws come from the
extension's own generator on the device (a stream of the run's seed, in its saved state).
"""

from dataclasses import dataclass
from typing import List

import torch
from omegaconf import DictConfig

from optqual.components.extension import Extension
from optqual.components.registry import Component, register
from optqual.data.augment import box_shapes, first_fitting
from optqual.errors import require
from optqual.ranges import within


@dataclass
class RandomErasingSchema:
    p: float = within(0.0, "[0, 1]")  # 0: off; torchvision's reference recipes use 0.1 to 0.25
    scale: List[float] = within([0.02, 0.33], "(0, 1)")
    ratio: List[float] = within([0.3, 3.3], "(0, inf)")
    value: float = within(0.0, "(-inf, inf)")


class RandomErasing(Extension):
    def __init__(self, generator: torch.Generator, p: float, scale: list[float], ratio: list[float], value: float):
        self.generator, self.p, self.scale, self.ratio, self.value = generator, p, scale, ratio, value

    def boxes(self, n: int, height: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(n, 4) boxes top, left, height, width and which images are erased."""
        erased = torch.rand(n, generator=self.generator, device=self.generator.device) < self.p
        # torchvision: h = round(sqrt(area * aspect)), w = round(sqrt(area / aspect)), both < the side
        heights, widths = box_shapes(n, height, self.scale, self.ratio, self.generator)
        boxes, found = first_fitting(heights, widths, (heights < height) & (widths < width), height, self.generator)
        return boxes, erased & found

    def on_batch(self, images: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        n, _, height, width = images.shape
        boxes, erased = self.boxes(n, height, width)
        top, left, box_h, box_w = boxes.unbind(1)
        rows = torch.arange(height, device=images.device)
        cols = torch.arange(width, device=images.device)
        in_rows = (rows >= top[:, None]) & (rows < (top + box_h)[:, None])
        in_cols = (cols >= left[:, None]) & (cols < (left + box_w)[:, None])
        mask = in_rows[:, None, :, None] & in_cols[:, None, None, :] & erased[:, None, None, None]
        return images.masked_fill(mask, self.value), targets

    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])


SCHEMAS = {"random_erasing": RandomErasingSchema}


def build_random_erasing(node: DictConfig, generator: torch.Generator) -> RandomErasing | None:
    """The run's RandomErasing, or None when it erases nothing (p=0)."""
    return RandomErasing(generator, **node) if node.p > 0 else None


def check(cfg: DictConfig) -> None:
    node = cfg.random_erasing
    for key in ("scale", "ratio"):
        require(len(node[key]) == 2 and node[key][0] <= node[key][1], f"random_erasing.{key}", list(node[key]), "needs [low, high] with low <= high")


register(Component(
    name="random_erasing",
    summary="torchvision's Random Erasing per image, after normalization (p=0: off)",
    order=20,
    schemas=SCHEMAS,
    default="default",
    check=check,
    build=lambda node, context: build_random_erasing(node, context.generator(context.data.train_labels.device)),
    extension=RandomErasing,
    stream="random_erasing",
    examples={"random_erasing": ["random_erasing.p=0.5"]},
))
