"""Features to look at: the first layer's filters as an image grid, and for a few channels of the
last convolutional stage the probe images that excite them most (the start of the feature
visualization pipeline).

Filters are shown each scaled to [0, 1] on its own (so a faint filter is as visible as a
strong one), RGB when the input has three channels. The channels shown are the `channels`
of the last four-dimensional stage output with the largest mean activation over the probe
set; for each, the `images` probe images with the largest spatially averaged activation,
as the raw test images.
"""

from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F
from omegaconf import DictConfig
from torch import nn

from optqual.analysis.measures import Measure, register
from optqual.analysis.measures.activations import stage_outputs
from optqual.analysis.solution import Solution
from optqual.errors import require
from optqual.files.figures import pyplot


@dataclass
class FeaturesSchema:
    _target_: str = "optqual.analysis.measures.features.measure"
    _partial_: bool = True
    probe_size: Optional[int] = None  # null: set when the runs are loaded (optqual/analysis/analyze.py)
    channels: int = 8
    images: int = 8


def check(node: DictConfig) -> None:
    for name in ("channels", "images"):
        require(node[name] > 0, f"analysis.features.{name}", node[name], "must be positive")
    require(node.probe_size is None or node.images <= node.probe_size, "analysis.features.images", node.images, f"must not exceed the probe ({node.probe_size})")


def first_conv(model: nn.Module) -> tuple[str, nn.Conv2d]:
    return next((name, module) for name, module in model.named_modules() if isinstance(module, nn.Conv2d))


def measure(solution: Solution, probe_size: int, channels: int, images: int) -> dict:
    probe, _ = solution.probe(probe_size)
    maps = [(name, output) for name, output in stage_outputs(solution.model, probe).items() if output.ndim == 4]
    stage, output = maps[-1]
    response = output.mean(dim=(2, 3))  # (images, channels): each channel's mean activation per image
    shown = response.mean(dim=0).argsort(descending=True)[:channels]
    top = {int(channel): response[:, channel].argsort(descending=True)[:images].tolist() for channel in shown}
    name, conv = first_conv(solution.model)
    return {"stage": stage, "channels": list(top), "top_images": top, "first_layer": {"name": name, "filters": conv.out_channels}}


def figures(result: dict, solution: Solution) -> dict:
    """filters.png (the first layer's filters) and top_images.png (a row per channel)."""
    plt = pyplot()
    from torchvision.utils import make_grid

    weight = first_conv(solution.model)[1].weight.detach().cpu().float()
    if weight.shape[1] not in (1, 3):
        weight = weight[:, :1]
    low, high = weight.amin(dim=(1, 2, 3), keepdim=True), weight.amax(dim=(1, 2, 3), keepdim=True)
    scaled = F.interpolate((weight - low) / (high - low).clamp_min(1e-12), scale_factor=8, mode="nearest")
    filters, axis = plt.subplots(figsize=(6, 6), layout="constrained")
    axis.imshow(make_grid(scaled, nrow=8, padding=2, pad_value=1).permute(1, 2, 0).numpy())
    axis.set(title=f"{solution.name}: {result['first_layer']['name']} filters (each scaled to [0, 1])")
    axis.axis("off")

    rows = [solution.data.test_images[indices].cpu() for indices in result["top_images"].values()]  # uint8 NHWC
    grid = make_grid(torch.cat(rows).permute(0, 3, 1, 2), nrow=len(rows[0]), padding=2, pad_value=255)
    top, axis = plt.subplots(figsize=(1.2 * len(rows[0]), 1.2 * len(rows)), layout="constrained")
    axis.imshow(grid.permute(1, 2, 0).numpy())
    side = rows[0].shape[1] + 2  # an image and its padding
    axis.set_yticks([2 + side * i + side // 2 for i in range(len(rows))], [f"ch {c}" for c in result["channels"]])
    axis.set_xticks([])
    axis.set(title=f"{solution.name}: probe images that excite {result['stage']} channels most")
    return {"filters.png": filters, "top_images.png": top}


register(Measure(name="features", schema=FeaturesSchema, check=check, figures=figures))
