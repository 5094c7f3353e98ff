"""The batched per-image policies equal torchvision's transform of each single image with the
same op and magnitude, bit for bit; each image draws its own op; bad values are one-line errors.
Repeats and resumes with a policy on: tests/test_components_resume.py."""

import pytest
import torch
from scipy import stats
from torchvision.transforms import InterpolationMode
from torchvision.transforms import autoaugment as tv

from conftest import REPO, compose_run
from optqual.config import check_config
from optqual.errors import ConfigError
from optqual.policies import AutoAugment, RandAugment, TrivialAugmentWide, apply_op, build_policy

OPS = list(tv.TrivialAugmentWide()._augmentation_space(31))  # torchvision's 14


def torchvision_op(image: torch.Tensor, name: str, magnitude: float) -> torch.Tensor:
    """What torchvision's policies do to one CHW image."""
    return tv._apply_op(image, name, magnitude, InterpolationMode.NEAREST, None)


def images(n: int, channels: int = 3, size: int = 32, seed: int = 0) -> torch.Tensor:
    """Random images with some flat and some low-contrast ones (autocontrast's and equalize's edge cases)."""
    generator = torch.Generator().manual_seed(seed)
    batch = torch.randint(0, 256, (n, channels, size, size), dtype=torch.uint8, generator=generator)
    batch[0] = 77  # one grey level only
    batch[1] = batch[1] // 8 + 100  # a narrow range
    return batch


@pytest.mark.parametrize("channels", [3, 1])
@pytest.mark.parametrize("name", OPS)
def test_every_op_equals_torchvisions_on_each_image(name, channels):
    batch = images(24, channels)
    space = tv.TrivialAugmentWide()._augmentation_space(31)
    magnitudes_of_op, is_signed = space[name]
    bins = torch.arange(24) % 31 if magnitudes_of_op.ndim > 0 else None
    magnitudes = torch.tensor([float(magnitudes_of_op[b]) for b in bins] if bins is not None else [0.0] * 24, dtype=torch.float64)
    if is_signed:
        magnitudes[::2] *= -1
    ours = apply_op(batch, name, magnitudes)
    theirs = torch.stack([torchvision_op(batch[i], name, magnitudes[i].item()) for i in range(24)])
    assert torch.equal(ours, theirs)


@pytest.mark.parametrize("policy", [RandAugment(seed=1, num_ops=3, magnitude=20), TrivialAugmentWide(seed=2), AutoAugment(seed=3)],
                         ids=["randaugment", "trivialaugment", "autoaugment"])
def test_a_policy_applies_each_images_own_draws_as_torchvision_would(policy):
    batch = images(64).permute(0, 2, 3, 1).contiguous()  # uint8 NHWC, as the data holds it
    state = policy.generator.get_state()
    rounds = policy.rounds(64, 32)
    policy.generator.set_state(state)
    ours = policy(batch, torch.Generator())
    expected = batch.permute(0, 3, 1, 2)
    for names, magnitudes in rounds:
        expected = torch.stack([image if names[i] is None else torchvision_op(image, names[i], magnitudes[i].item())
                                for i, image in enumerate(expected)])
    assert torch.equal(ours, expected.permute(0, 2, 3, 1))
    assert len({name for names, _ in rounds for name in names}) >= 8, "images of one batch draw different ops"


def test_randaugment_draws_ops_uniformly_and_signs_evenly():
    policy = RandAugment(seed=0, num_ops=1)
    names, magnitudes = policy.rounds(14_000, 32)[0]
    counts = [names.count(name) for name in OPS]
    assert stats.chisquare(counts).pvalue > 0.001
    shear = magnitudes[[i for i, n in enumerate(names) if n == "ShearX"]]
    assert torch.allclose(shear.abs(), torch.full_like(shear, 0.09))  # bin 9 of torchvision's 31 over 0..0.3
    assert 0.4 < (shear < 0).double().mean() < 0.6


def test_the_default_adds_no_policy_and_every_option_builds():
    assert build_policy(compose_run().augment) is None
    for option in sorted(p.stem for p in (REPO / "conf" / "augment").glob("*.yaml")):
        cfg = compose_run(f"augment={option}", "seed=5")
        check_config(cfg)
        policy = build_policy(cfg.augment)
        assert (policy is None) == (option == "crop_flip")
        if policy is not None:
            assert policy.generator.get_state().equal(build_policy(cfg.augment).generator.get_state())  # seeded by the run


@pytest.mark.parametrize("override, message", [
    ("augment=randaugment augment.magnitude=31", "augment.magnitude=31: must be a bin in [0, num_magnitude_bins=31)"),
    ("augment=randaugment augment.num_ops=0", "augment.num_ops=0: must be >= 1"),
    ("augment=trivialaugment augment.num_magnitude_bins=1", "augment.num_magnitude_bins=1: must be >= 2"),
    ("augment=autoaugment augment.policy=mnist", "augment.policy=mnist: must be one of imagenet, cifar10, svhn"),
])
def test_bad_values_are_one_line_errors(override, message):
    with pytest.raises(ConfigError, match=message.replace(".", r"\.").replace("[", r"\[").replace(")", r"\)")):
        check_config(compose_run(*override.split()))
