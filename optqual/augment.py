"""CIFAR augmentation as a few batched tensor ops on the training device.

Random crop 32 with 4-pixel zero padding and a random horizontal flip, drawn per image
for a whole batch from one seeded generator, then the standard normalization. For the
same offsets and flips the result equals torchvision's pad/crop/hflip/to_tensor/normalize
bit for bit (tests/test_augment.py).
"""

import functools

import torch
import torch.nn.functional as F

CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2023, 0.1994, 0.2010)


def draw_crops_and_flips(batch_size: int, padding: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-image crop offsets (batch, 2) in [0, 2*padding] and horizontal flips (batch,)."""
    device = generator.device
    offsets = torch.randint(0, 2 * padding + 1, (batch_size, 2), generator=generator, device=device)
    flips = torch.randint(0, 2, (batch_size,), generator=generator, device=device).bool()
    return offsets, flips


def crop_and_flip(images: torch.Tensor, offsets: torch.Tensor, flips: torch.Tensor, padding: int = 4) -> torch.Tensor:
    """Zero-pad uint8 NHWC images, crop each at its (top, left) offset, mirror the flipped ones.

    One gather: the row and column indices of every output pixel are computed for the whole
    batch, so no per-image Python and no host synchronisation.
    """
    n, h, w, _ = images.shape
    padded = F.pad(images, (0, 0, padding, padding, padding, padding))
    ar_h = torch.arange(h, device=images.device)
    ar_w = torch.arange(w, device=images.device)
    rows = offsets[:, 0, None] + ar_h  # (N, H)
    cols = offsets[:, 1, None] + torch.where(flips[:, None], w - 1 - ar_w, ar_w)  # (N, W)
    batch = torch.arange(n, device=images.device)[:, None, None]
    return padded[batch, rows[:, :, None], cols[:, None, :]]  # (N, H, W, C)


@functools.lru_cache
def channel_stats(device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and std on the device, made once: a per-batch host-to-device copy would stall a GPU."""
    return torch.tensor(CIFAR10_MEAN, device=device), torch.tensor(CIFAR10_STD, device=device)


def normalize(images: torch.Tensor) -> torch.Tensor:
    """uint8 NHWC -> float32 NCHW in channels_last memory, scaled to [0, 1] and standardized.

    The same operations in the same order as torchvision's to_tensor + normalize, so the
    floats match exactly; channels_last is the layout the convolutions run fastest in.
    """
    mean, std = channel_stats(images.device)
    return images.float().div(255).sub(mean).div(std).permute(0, 3, 1, 2)


def augment(images: torch.Tensor, generator: torch.Generator, padding: int = 4) -> torch.Tensor:
    """uint8 NHWC batch -> augmented, normalized float32 NCHW (channels_last memory)."""
    offsets, flips = draw_crops_and_flips(len(images), padding, generator)
    return normalize(crop_and_flip(images, offsets, flips, padding))
