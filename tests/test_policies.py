"""The batched per-image policies equal torchvision's public ops applied to each single image with the
same op and magnitude, bit for bit; each image draws its own op from the run's augment stream; bad
values are one-line errors. Repeats and resumes with a policy on: tests/test_components_resume.py."""

import math
import re

import pytest
import torch
import torchvision.transforms.functional as TF
from scipy import stats
from torchvision.transforms import InterpolationMode

from conftest import REPO, compose_run, tiny_training
from optqual.components import augment
from optqual.components.augment import AutoAugment, RandAugment, TrivialAugmentWide, apply_op, build_policy, op_parameters
from optqual.config.checks import check_config
from optqual.errors import ConfigError
from optqual.system.reproducibility import stream_generator

# the 14 ops of RandAugment and TrivialAugment (Cubuk et al. 2020, Mueller & Hutter 2021), each with
# magnitudes across its range as torchvision's tables span it (signed ops get both signs below)
OPS = {"Identity": None, "ShearX": 0.99, "ShearY": 0.99, "TranslateX": 32.0, "TranslateY": 32.0, "Rotate": 135.0,
       "Brightness": 0.99, "Color": 0.99, "Contrast": 0.99, "Sharpness": 0.99, "Posterize": (2, 8), "Solarize": 255.0,
       "AutoContrast": None, "Equalize": None}
NEAREST = InterpolationMode.NEAREST


def torchvision_op(image: torch.Tensor, name: str, magnitude: float) -> torch.Tensor:
    """One CHW uint8 image through op `name` at `magnitude`, with torchvision's public functions as its
    policies define each op (shears about the top-left corner, by atan of the magnitude in degrees;
    enhancements by a factor 1 + magnitude; nearest interpolation, black fill)."""
    shear = math.degrees(math.atan(magnitude))
    return {
        "Identity": lambda: image,
        "ShearX": lambda: TF.affine(image, 0.0, [0, 0], 1.0, [shear, 0.0], NEAREST, None, center=[0, 0]),
        "ShearY": lambda: TF.affine(image, 0.0, [0, 0], 1.0, [0.0, shear], NEAREST, None, center=[0, 0]),
        "TranslateX": lambda: TF.affine(image, 0.0, [int(magnitude), 0], 1.0, [0.0, 0.0], NEAREST, None),
        "TranslateY": lambda: TF.affine(image, 0.0, [0, int(magnitude)], 1.0, [0.0, 0.0], NEAREST, None),
        "Rotate": lambda: TF.rotate(image, magnitude, NEAREST, fill=None),
        "Brightness": lambda: TF.adjust_brightness(image, 1.0 + magnitude),
        "Color": lambda: TF.adjust_saturation(image, 1.0 + magnitude),
        "Contrast": lambda: TF.adjust_contrast(image, 1.0 + magnitude),
        "Sharpness": lambda: TF.adjust_sharpness(image, 1.0 + magnitude),
        "Posterize": lambda: TF.posterize(image, int(magnitude)),
        "Solarize": lambda: TF.solarize(image, magnitude),
        "AutoContrast": lambda: TF.autocontrast(image),
        "Equalize": lambda: TF.equalize(image),
        "Invert": lambda: TF.invert(image),
    }[name]()


def images(n: int, channels: int = 3, size: int = 32, seed: int = 0) -> torch.Tensor:
    """Random images with some flat and some low-contrast ones (autocontrast's and equalize's edge cases)."""
    generator = torch.Generator().manual_seed(seed)
    batch = torch.randint(0, 256, (n, channels, size, size), dtype=torch.uint8, generator=generator)
    batch[0] = 77  # one grey level only
    batch[1] = batch[1] // 8 + 100  # a narrow range
    return batch


def magnitudes_for(name: str, n: int) -> torch.Tensor:
    """`n` magnitudes of op `name` across its range, every other one negated for a signed op."""
    top = OPS[name]
    if top is None:
        return torch.zeros(n, dtype=torch.float64)
    if isinstance(top, tuple):  # posterize: whole bits
        return torch.tensor([top[0] + i % (top[1] - top[0] + 1) for i in range(n)], dtype=torch.float64)
    values = torch.linspace(0, top, n, dtype=torch.float64)
    if name != "Solarize":
        values[::2] *= -1
    return values


@pytest.mark.parametrize("channels", [3, 1])
@pytest.mark.parametrize("name", [*OPS, "Invert"])
def test_every_op_equals_torchvisions_on_each_image(name, channels):
    batch = images(24, channels)
    magnitudes = magnitudes_for(name if name in OPS else "Identity", 24)
    parameters = op_parameters(name, magnitudes, *batch.shape[-2:])  # the numbers the device gets, computed on the host
    ours = batch if name == "Identity" else apply_op(batch, name, parameters)  # a policy runs no op for Identity
    theirs = torch.stack([torchvision_op(batch[i], name, magnitudes[i].item()) for i in range(24)])
    assert torch.equal(ours, theirs)


@pytest.mark.parametrize("policy", [RandAugment(torch.Generator().manual_seed(1), num_ops=3, magnitude=20),
                                    TrivialAugmentWide(torch.Generator().manual_seed(2)), AutoAugment(torch.Generator().manual_seed(3))],
                         ids=["randaugment", "trivialaugment", "autoaugment"])
def test_a_policy_applies_each_images_own_draws_as_torchvision_would(policy):
    batch = images(64).permute(0, 2, 3, 1).contiguous()  # uint8 NHWC, as the data holds it
    state = policy.generator.get_state()
    rounds = policy.rounds(64, 32)
    policy.generator.set_state(state)
    ours = policy.on_images(batch)
    expected = batch.permute(0, 3, 1, 2)
    for names, magnitudes in rounds:
        expected = torch.stack([image if names[i] is None else torchvision_op(image, names[i], magnitudes[i].item())
                                for i, image in enumerate(expected)])
    assert torch.equal(ours, expected.permute(0, 2, 3, 1))
    assert len({name for names, _ in rounds for name in names}) >= 8, "images of one batch draw different ops"


def test_randaugment_draws_ops_uniformly_and_signs_evenly():
    policy = RandAugment(torch.Generator().manual_seed(0), num_ops=1)
    names, magnitudes = policy.rounds(14_000, 32)[0]
    counts = [names.count(name) for name in OPS]
    assert stats.chisquare(counts).pvalue > 0.001
    shear = magnitudes[[i for i, n in enumerate(names) if n == "ShearX"]]
    assert torch.allclose(shear.abs(), torch.full_like(shear, 0.09))  # bin 9 of 31 over 0..0.3 (Cubuk et al.'s ranges)
    assert 0.4 < (shear < 0).double().mean() < 0.6


def test_the_default_adds_no_policy_and_every_option_draws_from_the_runs_augment_stream(tiny_npz):
    assert build_policy(compose_run().augment, torch.Generator()) is None
    for option in sorted(p.stem for p in (REPO / "conf" / "augment").glob("*.yaml")):
        cfg = compose_run(f"augment={option}", "seed=5")
        check_config(cfg)
        policy = tiny_training(tiny_npz, f"augment={option}", "seed=5").hooks.extensions.get("augment")
        assert (policy is None) == (option == "crop_flip")
        if policy is not None:
            assert policy.generator.get_state().equal(stream_generator(5, "augment").get_state())


@pytest.mark.parametrize("override, message", [
    ("augment=randaugment augment.magnitude=31", "augment.magnitude=31: must be a bin in [0, num_magnitude_bins=31)"),
    ("augment=randaugment augment.num_ops=0", "augment.num_ops=0: must lie in [1, inf)"),
    ("augment=trivialaugment augment.num_magnitude_bins=1", "augment.num_magnitude_bins=1: must lie in [2, inf)"),
    ("augment=autoaugment augment.policy=mnist", "augment.policy=mnist: must be one of imagenet, cifar10, svhn"),
])
def test_bad_values_are_one_line_errors(override, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        check_config(compose_run(*override.split()))


@pytest.mark.parametrize("policy", [RandAugment(torch.Generator().manual_seed(1)), TrivialAugmentWide(torch.Generator().manual_seed(2)),
                                    AutoAugment(torch.Generator().manual_seed(3))], ids=["randaugment", "trivialaugment", "autoaugment"])
def test_a_batchs_draws_reach_the_device_in_one_copy(policy, monkeypatch):
    """Every number the ops read (rows, factors, masks, thresholds, matrices) travels in one host-to-device
    copy per batch (from pinned memory on a GPU): no op makes the host wait for the device."""
    copies = []
    monkeypatch.setattr(augment, "host_to_device", lambda tensor, device: copies.append(tensor.numel()) or tensor.to(device))
    batch = images(64).permute(0, 2, 3, 1).contiguous()
    policy.on_images(batch)
    assert len(copies) == 1 and copies[0] > 64  # the images' rows and their numbers, together
