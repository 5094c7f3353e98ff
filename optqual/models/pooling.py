"""Global average pooling that keeps CUDA runs deterministic."""

import torch
from torch import nn


class GlobalAvgPool(nn.Module):
    """Mean over height and width: (N, C, H, W) -> (N, C), or (N, C, 1, 1) with keepdim.

    Not nn.AdaptiveAvgPool2d: its CUDA backward has no deterministic implementation and
    raises under torch.use_deterministic_algorithms(True).
    """

    def __init__(self, keepdim: bool = False):
        super().__init__()
        self.keepdim = keepdim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(2, 3), keepdim=self.keepdim)


def replace_global_pools(model: nn.Module) -> nn.Module:
    """Swap every nn.AdaptiveAvgPool2d to 1x1 in `model` (torchvision's, timm's) for GlobalAvgPool."""
    for name, module in list(model.named_modules()):
        if isinstance(module, nn.AdaptiveAvgPool2d) and module.output_size in (1, (1, 1)):
            parent, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent), child, GlobalAvgPool(keepdim=True))
    return model
