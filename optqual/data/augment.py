"""The `data.augment` option: a dataset's own augmentation as a few batched tensor ops on the
training device, drawn per image from one seeded generator; and the standard normalization.

`CropFlip`: random crop with zero padding and a random horizontal flip (CIFAR's recipe; with
padding 0 and no flip, no augmentation). For the same offsets and flips the result equals
torchvision's pad/crop/hflip/to_tensor/normalize bit for bit.
`ResizedCropFlip`: torchvision's RandomResizedCrop (scale, ratio, ten tries then the whole
image) and a flip, each crop resized back with bilinear interpolation; for the same box the
result is within one grey level of torchvision's resized_crop (tests/test_model_and_augment.py).
These keep no state: what they draw comes from the generator, so resume is exact. A policy of
the `augment` group (optqual/components/augment.py) runs after them, on the uint8 images.
"""

import math
from typing import Protocol, Sequence

import torch
import torch.nn.functional as F


class Augmentation(Protocol):
    def __call__(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """uint8 NHWC batch -> augmented uint8 NHWC batch of the same shape."""


def draw_crops_and_flips(batch_size: int, padding: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-image crop offsets (batch, 2) in [0, 2*padding] and horizontal flips (batch,)."""
    device = generator.device
    offsets = torch.randint(0, 2 * padding + 1, (batch_size, 2), generator=generator, device=device)
    flips = torch.randint(0, 2, (batch_size,), generator=generator, device=device).bool()
    return offsets, flips


def crop_and_flip(images: torch.Tensor, offsets: torch.Tensor, flips: torch.Tensor, padding: int = 4) -> torch.Tensor:
    """Zero-pad uint8 NHWC images, crop each at its (top, left) offset, mirror the flipped ones.

    One gather of whole pixels: the flat index of every output pixel in the padded batch is
    computed for the whole batch, so no per-image Python and no host synchronisation
    (index_select over (pixels, channels) rows runs about 3x faster than indexing with three
    broadcast index tensors).
    """
    n, h, w, c = images.shape
    padded = F.pad(images, (0, 0, padding, padding, padding, padding))
    padded_h, padded_w = h + 2 * padding, w + 2 * padding
    ar_h = torch.arange(h, device=images.device)
    ar_w = torch.arange(w, device=images.device)
    rows = torch.arange(n, device=images.device)[:, None] * padded_h + offsets[:, 0, None] + ar_h  # (N, H)
    cols = offsets[:, 1, None] + torch.where(flips[:, None], w - 1 - ar_w, ar_w)  # (N, W)
    pixels = rows[:, :, None] * padded_w + cols[:, None, :]  # (N, H, W)
    return padded.reshape(-1, c).index_select(0, pixels.reshape(-1)).view(n, h, w, c)


class CropFlip:
    def __init__(self, padding: int = 4, flip: bool = True):
        if padding < 0:
            raise ValueError(f"padding {padding}: must be >= 0")
        self.padding, self.flip = padding, flip

    def __call__(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        if self.padding == 0 and not self.flip:
            return images
        offsets, flips = draw_crops_and_flips(len(images), self.padding, generator)
        return crop_and_flip(images, offsets, flips & self.flip, self.padding)


def box_shapes(batch_size: int, size: int, scale: Sequence[float], ratio: Sequence[float], generator: torch.Generator,
               tries: int = 10) -> tuple[torch.Tensor, torch.Tensor]:
    """(batch, tries) candidate box sides as torchvision draws them: area share uniform in `scale`,
    log aspect uniform in log `ratio`; `long` = round(sqrt(area * aspect)), `short` = round(sqrt(area / aspect))."""
    device = generator.device
    area = size * size * (scale[0] + (scale[1] - scale[0]) * torch.rand(batch_size, tries, generator=generator, device=device))
    log_ratio = math.log(ratio[0]) + (math.log(ratio[1]) - math.log(ratio[0])) * torch.rand(batch_size, tries, generator=generator, device=device)
    aspect = log_ratio.exp()
    return (area * aspect).sqrt().round().long(), (area / aspect).sqrt().round().long()


def first_fitting(heights: torch.Tensor, widths: torch.Tensor, fits: torch.Tensor, size: int,
                  generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Per image the first candidate that `fits`, placed uniformly: (batch, 4) boxes top, left,
    height, width (the whole image where none fits) and whether one fitted."""
    first = torch.where(fits.any(dim=1), fits.long().argmax(dim=1), -1)
    pick = first.clamp_min(0)[:, None]
    found = first >= 0
    height = torch.where(found, heights.gather(1, pick)[:, 0], size)
    width = torch.where(found, widths.gather(1, pick)[:, 0], size)
    corner = torch.rand(len(first), 2, generator=generator, device=generator.device)
    top = (corner[:, 0] * (size - height + 1)).floor().long()
    left = (corner[:, 1] * (size - width + 1)).floor().long()
    return torch.stack([top, left, height, width], dim=1), found


def draw_resized_crops(batch_size: int, size: int, scale: Sequence[float], ratio: Sequence[float],
                       generator: torch.Generator, tries: int = 10) -> torch.Tensor:
    """(batch, 4) boxes top, left, height, width in a size x size image, as RandomResizedCrop.get_params
    chooses them: the first of `tries` that fits (width = the long side), else the whole image (the
    fallback for a square image whose ratio range holds 1)."""
    width, height = box_shapes(batch_size, size, scale, ratio, generator, tries)
    fits = (width > 0) & (width <= size) & (height > 0) & (height <= size)
    return first_fitting(height, width, fits, size, generator)[0]


def bilinear_taps(start: torch.Tensor, length: torch.Tensor, size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """For `size` outputs over each window [start, start+length): the two source indices and the
    second one's weight, as torch's bilinear interpolation (align_corners=False) samples them."""
    position = ((torch.arange(size, device=start.device) + 0.5) * (length[:, None] / size) - 0.5).clamp_min(0)
    low = position.floor().long()
    high = torch.minimum(low + 1, length[:, None] - 1)
    return start[:, None] + low, start[:, None] + high, position - low


def resized_crop(images: torch.Tensor, boxes: torch.Tensor, flips: torch.Tensor) -> torch.Tensor:
    """Each image's box resized bilinearly to the full size (rounded back to uint8), mirrored where flipped."""
    n, size, _, _ = images.shape
    row_low, row_high, row_weight = bilinear_taps(boxes[:, 0], boxes[:, 2], size)
    col_low, col_high, col_weight = bilinear_taps(boxes[:, 1], boxes[:, 3], size)
    mirrored = torch.arange(size - 1, -1, -1, device=images.device)
    col_low, col_high, col_weight = (torch.where(flips[:, None], t[:, mirrored], t) for t in (col_low, col_high, col_weight))
    batch = torch.arange(n, device=images.device)[:, None, None]

    def taps(rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
        return images[batch, rows[:, :, None], cols[:, None, :]].float()

    row_w, col_w = row_weight[:, :, None, None], col_weight[:, None, :, None]
    top = taps(row_low, col_low) * (1 - col_w) + taps(row_low, col_high) * col_w
    bottom = taps(row_high, col_low) * (1 - col_w) + taps(row_high, col_high) * col_w
    return (top * (1 - row_w) + bottom * row_w).round().clamp(0, 255).to(torch.uint8)


class ResizedCropFlip:
    def __init__(self, scale: Sequence[float] = (0.35, 1.0), ratio: Sequence[float] = (3 / 4, 4 / 3), flip: bool = True):
        if not 0 < scale[0] <= scale[1] <= 1 or not 0 < ratio[0] <= ratio[1]:
            raise ValueError(f"scale {list(scale)} and ratio {list(ratio)}: need 0 < low <= high (and scale <= 1)")
        self.scale, self.ratio, self.flip = tuple(scale), tuple(ratio), flip

    def __call__(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        boxes = draw_resized_crops(len(images), images.shape[1], self.scale, self.ratio, generator)
        flips = torch.randint(0, 2, (len(images),), generator=generator, device=generator.device).bool() & self.flip
        return resized_crop(images, boxes, flips)


def normalize(images: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """uint8 NHWC -> float32 NCHW in channels_last memory, scaled to [0, 1] and standardized.

    The same operations in the same order as torchvision's to_tensor + normalize, so the
    floats match exactly; channels_last is the layout the convolutions run fastest in.
    `mean` and `std` broadcast against HWC: per channel, or repeated to every pixel (faster).
    """
    # in place after the first op: one float buffer, not four, stays warm in the cache
    return images.float().div_(255).sub_(mean).div_(std).permute(0, 3, 1, 2)
