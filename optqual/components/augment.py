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
- ShearX/Y, TranslateX/Y, Rotate: torchvision's own op (what its policies call,
  optqual/compat.py) once per distinct magnitude among the images that drew the op. RandAugment and AutoAugment
  have two magnitudes per op (the sign); TrivialAugment up to 62, so its geometric ops cost
  about one call per image that drew one.

The op tables (magnitude bins, the AutoAugment sub-policies) are torchvision's (optqual/compat.py). For the same
per-image draws, the result equals torchvision's transform of each single image bit for bit
(tests/test_policies.py). Interpolation is nearest and the fill black, torchvision's defaults.
"""

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Optional

import torch
from omegaconf import DictConfig
import torchvision.transforms.functional as TF
import torchvision.transforms.v2.functional as TF2
from torchvision.transforms import autoaugment as tv

from optqual.compat import augmentation_ops, geometric_op
from optqual.components.extension import Extension
from optqual.components.registry import Component, register
from optqual.errors import build, require
from optqual.ranges import within

GEOMETRIC = ("ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate")


def blend(images: torch.Tensor, degenerate: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """torchvision's _blend with a factor per image: ratio * image + (1 - ratio) * degenerate, in
    float32 with 1 - ratio taken in float64 first (as Python computes it), clamped, truncated."""
    shape = (-1, 1, 1, 1)
    ratio = factor.float().to(images.device).view(shape)
    rest = (1.0 - factor).float().to(images.device).view(shape)
    return (ratio * images + rest * degenerate).clamp(0, 255).to(torch.uint8)


def grey_mean(images: torch.Tensor) -> torch.Tensor:
    """Each image's mean grey level, as adjust_contrast computes it (before its truncation)."""
    grey = TF.rgb_to_grayscale(images) if images.shape[1] == 3 else images
    return grey.float().mean(dim=(-3, -2, -1), keepdim=True)


def apply_op(images: torch.Tensor, name: str, magnitudes: torch.Tensor) -> torch.Tensor:
    """Op `name` on uint8 NCHW `images`, image i with magnitudes[i] (float64, on the host)."""
    if name == "Identity":
        return images
    if name == "Brightness":
        return blend(images, torch.zeros_like(images), 1.0 + magnitudes)
    if name == "Color":  # greyscale images have no saturation (torchvision returns them unchanged)
        return images if images.shape[1] == 1 else blend(images, TF.adjust_saturation(images, 0.0), 1.0 + magnitudes)
    if name == "Contrast":
        return blend(images, grey_mean(images), 1.0 + magnitudes)
    if name == "Sharpness":
        return blend(images, TF.adjust_sharpness(images, 0.0), 1.0 + magnitudes)
    if name == "Posterize":  # keep the top `bits` bits: posterize's mask -2**(8 - bits), as uint8
        masks = (256 - 2 ** (8 - magnitudes.long())).clamp(max=255).to(torch.uint8)
        return images & masks.to(images.device).view(-1, 1, 1, 1)
    if name == "Solarize":
        threshold = magnitudes.float().to(images.device).view(-1, 1, 1, 1)
        return torch.where(images >= threshold, TF.invert(images), images)
    if name == "AutoContrast":
        return TF.autocontrast(images)
    if name == "Equalize":
        return TF2.equalize(images)  # vectorized over the batch; equal to v1's per-image loop
    if name == "Invert":
        return TF.invert(images)
    out = images.clone()  # a geometric op: torchvision's own, once per distinct magnitude
    for magnitude in magnitudes.unique().tolist():
        rows = (magnitudes == magnitude).nonzero()[:, 0].to(images.device)
        out[rows] = geometric_op(images[rows], name, magnitude)
    return out


class Policy(Extension, ABC):
    """A policy's ops, each image with its own draws from the policy's CPU generator (its stream of
    the run's seed, saved in the checkpoint); uint8 NHWC in and out."""

    def __init__(self, generator: torch.Generator):
        self.generator = generator

    @abstractmethod
    def rounds(self, n: int, size: int) -> list[tuple[list[Optional[str]], torch.Tensor]]:
        """Per round of ops: each image's op name (None: none) and its magnitude (float64)."""

    def on_images(self, images: torch.Tensor) -> torch.Tensor:
        images = images.permute(0, 3, 1, 2)  # torchvision's ops take NCHW
        for names, magnitudes in self.rounds(len(images), images.shape[-1]):
            images = apply_ops(images, names, magnitudes)
        return images.permute(0, 2, 3, 1).contiguous()

    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])


def apply_ops(images: torch.Tensor, names: list[Optional[str]], magnitudes: torch.Tensor) -> torch.Tensor:
    """Image i through op names[i] with magnitudes[i]; each op runs once, on the images that drew it."""
    out = images.clone()
    for name in dict.fromkeys(n for n in names if n not in (None, "Identity")):
        picked = [i for i, n in enumerate(names) if n == name]
        rows = torch.tensor(picked).to(images.device, non_blocking=True)
        out[rows] = apply_op(images[rows], name, magnitudes[picked])
    return out


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
