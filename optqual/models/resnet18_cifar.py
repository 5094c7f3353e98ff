"""ResNet-18 for CIFAR, the reproducibility sheet's network: torchvision's ResNet-18 with a 3x3
stride-1 stem (padding 1) and no max-pool, so 32x32 images keep their resolution into layer1.
11,173,962 parameters at 10 classes.

Built from torchvision.models.resnet18 (the blocks, widths and initialization are
torchvision's), with its adaptive average pool swapped for an equal mean that has a
deterministic CUDA backward. Stages: conv1, bn1, relu, layer1..layer4, avgpool, fc.
"""

from dataclasses import dataclass
from typing import Optional

from torch import nn
from torchvision.models import resnet18

from optqual.models.pooling import replace_global_pools
from optqual.ranges import within


@dataclass
class ResNet18CifarSchema:
    _target_: str = "optqual.models.resnet18_cifar.resnet18_cifar"
    in_channels: Optional[int] = within(3, "[1, inf)")  # null: the data's
    num_classes: Optional[int] = within(10, "[2, inf)")  # null: the data's


SCHEMAS = {"resnet18_cifar": ResNet18CifarSchema}


def resnet18_cifar(in_channels: int = 3, num_classes: int = 10) -> nn.Module:
    model = resnet18(num_classes=num_classes)
    model.conv1 = nn.Conv2d(in_channels, 64, kernel_size=3, stride=1, padding=1, bias=False)
    nn.init.kaiming_normal_(model.conv1.weight, mode="fan_out", nonlinearity="relu")  # as torchvision initializes its stem
    model.maxpool = nn.Identity()
    return replace_global_pools(model)
