"""The memory layout a model trains in: channels_last, the layout convolutions run fastest in, with
one workaround for a crash of the CPU math library.

oneDNN 3.13 (torch 2.15) corrupts the heap ("double free or corruption", or a segfault in
backward) computing the weight gradient of a 1x1 convolution with stride 2 and fewer than 8 input
channels in channels_last on CPUs whose torch kernels dispatch to AVX2 (no AVX-512): a ResNet's
option-B shortcut at widths [4, 8, 8] is one. On such a CPU, such a layer convolves the subsampled
input with stride 1 instead: the same outputs (tests/test_models.py), through a kernel that does
not crash. Elsewhere every layer runs as it always did, so no recorded result changes.
"""

import types

import torch
import torch.nn.functional as F
from torch import nn

FEWEST_SAFE_CHANNELS = 8


def crashes_onednn(module: nn.Module) -> bool:
    """Whether `module` is a convolution whose weight gradient oneDNN miscomputes into a crash on AVX2."""
    return (isinstance(module, nn.Conv2d) and module.kernel_size == (1, 1) and module.stride != (1, 1)
            and module.padding == (0, 0) and module.dilation == (1, 1) and module.in_channels < FEWEST_SAFE_CHANNELS)


def subsampled_pointwise(self: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    """A strided 1x1 convolution as a 1x1 convolution of every stride-th pixel."""
    rows, cols = self.stride
    return F.conv2d(x[:, :, ::rows, ::cols], self.weight, self.bias, 1, 0, 1, self.groups)


def to_training_layout(model: nn.Module, device: torch.device) -> list[str]:
    """Move `model` to `device` in channels_last, working around oneDNN's crash where it would occur;
    returns the names of the layers worked around."""
    model.to(device, memory_format=torch.channels_last)
    if device.type != "cpu" or torch.backends.cpu.get_cpu_capability() != "AVX2":
        return []
    patched = [name for name, module in model.named_modules() if crashes_onednn(module)]
    for name in patched:
        module = model.get_submodule(name)
        module.forward = types.MethodType(subsampled_pointwise, module)
    return patched
