"""The `augment` config group: per-image augmentation policies, batched. AutoAugment (the CIFAR-10
policy), RandAugment and TrivialAugment Wide run on the uint8 images after the dataset's own
crop and flip (`data.augment`, optqual/data/augment.py), as torchvision's CIFAR recipes order
them; `crop_flip` adds no policy.

torchvision's policies applied to a batched tensor draw one op and one magnitude for the whole
batch; the papers draw them per image. Here every image draws its own (from the policy's CPU
generator: the host picks the ops, so a GPU is never asked for a number), and each op then
runs once on the images that drew it, with a magnitude per image:

- Brightness, Color, Contrast, Sharpness: torchvision's blend of the image with its degenerate
  image (black, greyscale, grey mean, blurred: torchvision's own functions at factor 0), with
  a factor per image;
- Posterize and Solarize with a bit mask and a threshold per image; AutoContrast, Equalize,
  Invert: torchvision's functions on the batch (they work per image);
- ShearX/Y, TranslateX/Y, Rotate: torchvision's affine warp (its matrix, optqual/compat.py, and
  its grid), every image with its own matrix, in one grid_sample per op.

The host draws and computes every number an op reads (factors, masks, thresholds, matrices);
they reach the device in one copy per batch from pinned memory, so these numbers never make the
host wait for a GPU (torchvision's own functions are counted by benchmarks/sync_check.py on one).

The op tables (magnitude bins, the AutoAugment sub-policies) are torchvision's (optqual/compat.py). For the same
per-image draws, the result equals torchvision's transform of each single image bit for bit
(tests/test_policies.py). Interpolation is nearest and the fill black, torchvision's defaults.
"""

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F
from omegaconf import DictConfig
import torchvision.transforms.functional as TF
import torchvision.transforms.v2.functional as TF2
from torchvision.transforms import autoaugment as tv

from optqual.compat import augmentation_ops, geometric_matrix
from optqual.components.extension import Extension
from optqual.components.registry import Component, register
from optqual.errors import build, require
from optqual.ranges import within
from optqual.system.devices import host_to_device

GEOMETRIC = ("ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate")


def op_parameters(name: str, magnitudes: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Op `name`'s numbers for each image, computed on the host from its magnitude (float64) exactly as
    torchvision computes them: float32, a row per image (none for an op that takes no number)."""
    if name in ("Brightness", "Color", "Contrast", "Sharpness"):  # the blend's ratio, and 1 - ratio taken in float64 first
        factor = 1.0 + magnitudes
        return torch.stack([factor.float(), (1.0 - factor).float()], 1)
    if name == "Posterize":  # keep the top `bits` bits: posterize's mask -2**(8 - bits), as uint8
        return (256 - 2 ** (8 - magnitudes.long())).clamp(max=255).float()[:, None]
    if name == "Solarize":
        return magnitudes.float()[:, None]
    if name in GEOMETRIC:  # torchvision's inverse affine matrix, transposed and scaled to the grid as _gen_affine_grid does
        distinct, each = magnitudes.unique(return_inverse=True)  # RandAugment's op has two magnitudes (its sign)
        theta = torch.tensor([geometric_matrix(name, m, width, height) for m in distinct.tolist()], dtype=torch.float32).view(-1, 2, 3)
        return (theta.transpose(1, 2) / torch.tensor([0.5 * width, 0.5 * height], dtype=torch.float32)).flatten(1)[each]
    return torch.empty(len(magnitudes), 0)


def blend(images: torch.Tensor, degenerate: torch.Tensor, parameters: torch.Tensor) -> torch.Tensor:
    """torchvision's _blend with a factor per image: ratio * image + (1 - ratio) * degenerate, clamped, truncated."""
    ratio, rest = parameters[:, 0].view(-1, 1, 1, 1), parameters[:, 1].view(-1, 1, 1, 1)
    return (ratio * images + rest * degenerate).clamp(0, 255).to(torch.uint8)


def grey_mean(images: torch.Tensor) -> torch.Tensor:
    """Each image's mean grey level, as adjust_contrast computes it (before its truncation)."""
    grey = TF.rgb_to_grayscale(images) if images.shape[1] == 3 else images
    return grey.float().mean(dim=(-3, -2, -1), keepdim=True)


def warp(images: torch.Tensor, grid_theta: torch.Tensor) -> torch.Tensor:
    """torchvision's affine warp (nearest, black fill) with a matrix per image, all images in one
    grid_sample: the grid as torchvision's _gen_affine_grid builds it, from `grid_theta`
    (op_parameters' scaled transpose, (images, 3, 2))."""
    height, width = images.shape[-2:]
    base = torch.empty(1, height, width, 3, device=images.device)
    base[..., 0].copy_(torch.linspace(-width * 0.5 + 0.5, width * 0.5 - 0.5, steps=width, device=images.device))
    base[..., 1].copy_(torch.linspace(-height * 0.5 + 0.5, height * 0.5 - 0.5, steps=height, device=images.device).unsqueeze_(-1))
    base[..., 2].fill_(1)
    grid = base.view(1, height * width, 3).expand(len(images), -1, -1).bmm(grid_theta).view(-1, height, width, 2)
    warped = F.grid_sample(images.float(), grid, mode="nearest", padding_mode="zeros", align_corners=False)
    return warped.round().to(torch.uint8)


def apply_op(images: torch.Tensor, name: str, parameters: torch.Tensor) -> torch.Tensor:
    """Op `name` on uint8 NCHW `images`, image i with parameters[i] (op_parameters', on the device)."""
    if name == "Brightness":
        return blend(images, torch.zeros_like(images), parameters)
    if name == "Color":  # greyscale images have no saturation (torchvision returns them unchanged)
        return images if images.shape[1] == 1 else blend(images, TF.adjust_saturation(images, 0.0), parameters)
    if name == "Contrast":
        return blend(images, grey_mean(images), parameters)
    if name == "Sharpness":
        return blend(images, TF.adjust_sharpness(images, 0.0), parameters)
    if name == "Posterize":
        return images & parameters.to(torch.uint8).view(-1, 1, 1, 1)
    if name == "Solarize":
        return torch.where(images >= parameters.view(-1, 1, 1, 1), TF.invert(images), images)
    if name == "AutoContrast":
        return TF.autocontrast(images)
    if name == "Equalize":
        return TF2.equalize(images)  # vectorized over the batch; equal to v1's per-image loop
    if name == "Invert":
        return TF.invert(images)
    return warp(images, parameters.view(-1, 3, 2))


class Policy(Extension, ABC):
    """A policy's ops, each image with its own draws from the policy's CPU generator (its stream of
    the run's seed, saved in the checkpoint); uint8 NHWC in and out.

    The host draws every image's ops and computes their numbers; they reach the device in one
    copy per batch, from pinned memory, so the GPU never waits for the host nor the host for it."""

    def __init__(self, generator: torch.Generator):
        self.generator = generator

    @abstractmethod
    def rounds(self, n: int, size: int) -> list[tuple[list[Optional[str]], torch.Tensor]]:
        """Per round of ops: each image's op name (None: none) and its magnitude (float64)."""

    def on_images(self, images: torch.Tensor) -> torch.Tensor:
        images = images.permute(0, 3, 1, 2)  # torchvision's ops take NCHW
        rounds, numbers = [], []  # each round's ops (name, numbers per image); the rows and numbers they read, in order
        for names, magnitudes in self.rounds(len(images), images.shape[-1]):
            ops = []
            for name in dict.fromkeys(n for n in names if n not in (None, "Identity")):
                picked = [i for i, n in enumerate(names) if n == name]
                parameters = op_parameters(name, magnitudes[picked], *images.shape[-2:])
                ops.append((name, parameters.shape[1]))
                numbers += [torch.tensor(picked, dtype=torch.float32), parameters.flatten()]
            rounds.append(ops)
        pieces = iter(host_to_device(torch.cat(numbers), images.device).split([n.numel() for n in numbers]) if numbers else ())
        for ops in rounds:  # each round reads the images the previous one left
            out = images.clone()
            for name, width in ops:
                rows = next(pieces).long()
                out[rows] = apply_op(images[rows], name, next(pieces).view(len(rows), width))
            images = out
        return images.permute(0, 2, 3, 1).contiguous()

    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])


def signed(magnitudes: torch.Tensor, ops: list[str], space: dict, negate: torch.Tensor) -> torch.Tensor:
    """Magnitudes with the sign drawn for the images whose op (in the op table `space`) has a signed magnitude."""
    return torch.where(torch.tensor([space[op][1] for op in ops]) & negate, -magnitudes, magnitudes)


class RandAugment(Policy):
    """`num_ops` ops per image, each uniform over torchvision's 14, at the fixed `magnitude` bin."""

    def __init__(self, generator: torch.Generator, num_ops: int = 2, magnitude: int = 9, num_magnitude_bins: int = 31):
        super().__init__(generator)
        self.num_ops, self.magnitude, self.bins = num_ops, magnitude, num_magnitude_bins

    def rounds(self, n: int, size: int) -> list[tuple[list[str], torch.Tensor]]:
        space = augmentation_ops("randaugment", self.bins, size)
        names = list(space)
        values = torch.tensor([float(m[self.magnitude]) if m.ndim > 0 else 0.0 for m, _ in space.values()], dtype=torch.float64)
        out = []
        for _ in range(self.num_ops):
            ops = torch.randint(len(names), (n,), generator=self.generator)
            negate = torch.randint(2, (n,), generator=self.generator).bool()
            picked = [names[k] for k in ops.tolist()]
            out.append((picked, signed(values[ops], picked, space, negate)))
        return out


class TrivialAugmentWide(Policy):
    """One op per image, uniform over torchvision's 14, at a bin drawn uniformly per image."""

    def __init__(self, generator: torch.Generator, num_magnitude_bins: int = 31):
        super().__init__(generator)
        self.bins = num_magnitude_bins

    def rounds(self, n: int, size: int) -> list[tuple[list[str], torch.Tensor]]:
        space = augmentation_ops("trivialaugment", self.bins, size)
        names = list(space)
        ops = torch.randint(len(names), (n,), generator=self.generator)
        bins = torch.randint(self.bins, (n,), generator=self.generator)
        negate = torch.randint(2, (n,), generator=self.generator).bool()
        picked = [names[k] for k in ops.tolist()]
        magnitudes = torch.tensor([float(space[op][0][b]) if space[op][0].ndim > 0 else 0.0 for op, b in zip(picked, bins.tolist())],
                                  dtype=torch.float64)
        return [(picked, signed(magnitudes, picked, space, negate))]


class AutoAugment(Policy):
    """One of the policy's 25 sub-policies per image; each of its two ops applied with its probability."""

    def __init__(self, generator: torch.Generator, policy: str = "cifar10"):
        super().__init__(generator)
        self.subpolicies = tv.AutoAugment(tv.AutoAugmentPolicy(policy)).policies

    def rounds(self, n: int, size: int) -> list[tuple[list[Optional[str]], torch.Tensor]]:
        space = augmentation_ops("autoaugment", 10, size)
        chosen = torch.randint(len(self.subpolicies), (n,), generator=self.generator).tolist()
        probs = torch.rand(n, 2, generator=self.generator)
        negate = torch.randint(2, (n, 2), generator=self.generator).bool()
        out = []
        for slot in range(2):
            ops = [self.subpolicies[c][slot] for c in chosen]
            names = [name if probs[i, slot] <= p else None for i, (name, p, _) in enumerate(ops)]
            magnitudes = torch.tensor([float(space[name][0][b]) if b is not None else 0.0 for name, _, b in ops], dtype=torch.float64)
            out.append((names, signed(magnitudes, [name for name, _, _ in ops], space, negate[:, slot])))
        return out


@dataclass
class PolicySchema:
    _target_: Optional[str] = None  # null: no policy (augment=crop_flip)


@dataclass
class RandAugmentSchema(PolicySchema):
    num_ops: int = within(2, "[1, inf)")
    magnitude: int = within(9, "[0, inf)")
    num_magnitude_bins: int = within(31, "[2, inf)")


@dataclass
class TrivialAugmentSchema(PolicySchema):
    num_magnitude_bins: int = within(31, "[2, inf)")


@dataclass
class AutoAugmentSchema(PolicySchema):
    policy: str = "cifar10"


SCHEMAS = {"none": PolicySchema, "randaugment": RandAugmentSchema, "trivialaugment": TrivialAugmentSchema,
           "autoaugment": AutoAugmentSchema}
POLICIES = tuple(p.value for p in tv.AutoAugmentPolicy)


def build_policy(node: DictConfig, generator: torch.Generator) -> Optional[Policy]:
    """The option's policy drawing from `generator`, or None for `augment=crop_flip`."""
    return None if node._target_ is None else build(node, "augment", generator=generator)


def check(cfg: DictConfig) -> None:
    node = cfg.augment
    if "magnitude" in node:
        require(node.magnitude < node.num_magnitude_bins, "augment.magnitude", node.magnitude,
                f"must be a bin in [0, num_magnitude_bins={node.num_magnitude_bins})")
    if "policy" in node:
        require(node.policy in POLICIES, "augment.policy", node.policy, f"must be one of {', '.join(POLICIES)}")


register(Component(
    name="augment",
    summary="a per-image augmentation policy after the dataset's own crop and flip (crop_flip: none)",
    order=10,
    schemas=SCHEMAS,
    default="crop_flip",
    check=check,
    build=lambda node, context: build_policy(node, context.generator()),
    extension=Policy,
    stream="augment",
    examples={"randaugment": ["augment=randaugment"], "autoaugment": ["augment=autoaugment"],
              "trivialaugment": ["augment=trivialaugment"]},
))
