"""The CIFAR ResNet family of He et al. (2016, section 4.2): depth 6n+2.

A 3x3 conv with 16 channels, three stages of n BasicBlocks at 16/32/64 channels with
strides 1/2/2, global average pooling and a linear classifier. Where a block changes
shape, its shortcut is either the paper's CIFAR choice, option A (the identity, subsampled
and zero-padded with the missing channels: no parameters), or option B (a 1x1 conv + batch
norm). ResNet-20/32/44/56/110 with option A are the paper's networks (0.27M to 1.7M
parameters); ResNet-8 (n=1) has used option B since this project began: 78,042 parameters.

Submodules carry readable names (stem, stage1..3, pool, fc) so intermediate activations
are one call away: torchvision's `create_feature_extractor(model, {"stage2": "s2"})` or a
forward hook on `model.stage2`.
"""

from collections import OrderedDict
from dataclasses import dataclass
from typing import List, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from optqual.models.pooling import GlobalAvgPool
from optqual.ranges import within

SHORTCUTS = ("A", "B")


@dataclass
class CifarResNetSchema:
    _target_: str = "optqual.models.cifar_resnet.CifarResNet"
    blocks_per_stage: int = within(1, "[1, inf)")
    widths: List[int] = within([16, 32, 64], "[1, inf)")
    shortcut: str = "B"
    in_channels: Optional[int] = within(3, "[1, inf)")  # null: the data's
    num_classes: Optional[int] = within(10, "[2, inf)")  # null: the data's


SCHEMAS = {"cifar_resnet": CifarResNetSchema}


def conv_bn(in_channels: int, out_channels: int, kernel_size: int, stride: int) -> list[tuple[str, nn.Module]]:
    conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding=kernel_size // 2, bias=False)
    return [("conv", conv), ("bn", nn.BatchNorm2d(out_channels))]


class ZeroPadShortcut(nn.Module):
    """Option A: every `stride`-th pixel, the new channels zeros, split evenly on both sides (as in
    the reference implementations of the paper's CIFAR networks)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int):
        super().__init__()
        self.stride = stride
        self.pad = (out_channels - in_channels) // 2, out_channels - in_channels - (out_channels - in_channels) // 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.pad(x[:, :, :: self.stride, :: self.stride], (0, 0, 0, 0, *self.pad))


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers with a residual connection, ReLU after the sum."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, shortcut: str = "B"):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        if stride == 1 and in_channels == out_channels:
            self.shortcut = nn.Identity()
        elif shortcut == "A":
            self.shortcut = ZeroPadShortcut(in_channels, out_channels, stride)
        else:
            self.shortcut = nn.Sequential(OrderedDict(conv_bn(in_channels, out_channels, 1, stride)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    def __init__(self, blocks_per_stage: int = 1, widths: Sequence[int] = (16, 32, 64), shortcut: str = "B",
                 in_channels: int = 3, num_classes: int = 10):
        super().__init__()
        if blocks_per_stage < 1 or len(widths) != 3 or min(widths) < 1:
            raise ValueError(f"need blocks_per_stage >= 1 and three positive widths, got {blocks_per_stage}, {list(widths)}")
        if shortcut not in SHORTCUTS:
            raise ValueError(f"shortcut {shortcut!r}: must be A (zero-padded identity) or B (1x1 conv + batch norm)")
        if shortcut == "A" and list(widths) != sorted(widths):
            raise ValueError(f"shortcut A pads channels, so widths must not shrink, got {list(widths)}")
        self.stem = nn.Sequential(OrderedDict(conv_bn(in_channels, widths[0], 3, 1) + [("relu", nn.ReLU(inplace=True))]))
        channels = widths[0]
        for index, (width, stride) in enumerate(zip(widths, (1, 2, 2)), start=1):
            blocks = [BasicBlock(channels if b == 0 else width, width, stride if b == 0 else 1, shortcut) for b in range(blocks_per_stage)]
            self.add_module(f"stage{index}", nn.Sequential(*blocks))
            channels = width
        self.pool = GlobalAvgPool()
        self.fc = nn.Linear(widths[-1], num_classes)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        x = self.stage1(x)
        x = self.stage2(x)
        x = self.stage3(x)
        return self.fc(self.pool(x))
