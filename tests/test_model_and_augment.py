"""ResNet-8's definition and the batched augmentation's equality with torchvision."""

import pytest
import torch
import torchvision.transforms.functional as TF
from PIL import Image
from torch import nn
from torchvision.models.feature_extraction import create_feature_extractor

from optqual.data.augment import CropFlip, crop_and_flip, draw_crops_and_flips, normalize
from optqual.models.cifar_resnet import CifarResNet


def weighted_layers(model: nn.Module) -> int:
    """Convs and linears on the main path (He et al. do not count projection shortcuts)."""
    return sum(isinstance(m, (nn.Conv2d, nn.Linear)) for name, m in model.named_modules() if "shortcut" not in name)


def test_resnet8_is_the_8_layer_78k_parameter_network():
    model = CifarResNet()
    assert weighted_layers(model) == 8
    assert sum(p.numel() for p in model.parameters()) == 78_042


@pytest.mark.parametrize("n", [2, 3])
def test_depth_is_6n_plus_2(n):
    assert weighted_layers(CifarResNet(blocks_per_stage=n)) == 6 * n + 2


# Modules whose CUDA backward raises under torch.use_deterministic_algorithms(True)
# (torch's own list); CI has no GPU, so the model is checked against the list instead.
REFUSED_ON_CUDA = (nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d, nn.AdaptiveMaxPool2d, nn.AvgPool3d, nn.MaxPool3d,
                   nn.FractionalMaxPool2d, nn.ReflectionPad2d, nn.ReplicationPad2d, nn.Upsample, nn.Embedding, nn.CTCLoss)


@pytest.mark.parametrize("n", [1, 2])
def test_model_has_no_module_that_refuses_determinism_on_cuda(n):
    assert not [name for name, m in CifarResNet(blocks_per_stage=n).named_modules() if isinstance(m, REFUSED_ON_CUDA)]


def test_stages_are_reachable_for_analysis():
    model = CifarResNet().eval()
    extractor = create_feature_extractor(model, {"stage1": "s1", "stage2": "s2", "stage3": "s3", "pool": "embedding", "fc": "logits"})
    x = torch.randn(4, 3, 32, 32)
    features = extractor(x)
    assert features["s1"].shape == (4, 16, 32, 32)
    assert features["s2"].shape == (4, 32, 16, 16)
    assert features["s3"].shape == (4, 64, 8, 8)
    assert features["embedding"].shape == (4, 64)
    assert torch.equal(features["logits"], model(x))

    captured = {}
    model.stage2.register_forward_hook(lambda module, inputs, output: captured.setdefault("s2", output))
    model(torch.randn(4, 3, 32, 32))
    assert captured["s2"].shape == (4, 32, 16, 16)


CIFAR10_MEAN, CIFAR10_STD = (0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)


def augment(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """CIFAR's training batch: crop and flip, then normalization."""
    return normalize(CropFlip(padding=4, flip=True)(images, generator), torch.tensor(CIFAR10_MEAN), torch.tensor(CIFAR10_STD))


def torchvision_reference(image_hwc: torch.Tensor, top: int, left: int, flip: bool, padding: int, mean, std) -> torch.Tensor:
    """The textbook pipeline on a PIL image: pad, crop to the image's size at (top, left), hflip, to_tensor, normalize."""
    size = image_hwc.shape[0]
    pil = Image.fromarray(image_hwc.squeeze(-1).numpy() if image_hwc.shape[-1] == 1 else image_hwc.numpy())
    pil = TF.crop(TF.pad(pil, padding), top, left, size, size)
    if flip:
        pil = TF.hflip(pil)
    return TF.normalize(TF.to_tensor(pil), mean, std)


@pytest.mark.parametrize("size, channels, padding, mean, std", [
    (32, 3, 4, CIFAR10_MEAN, CIFAR10_STD),  # CIFAR's crop and flip
    (28, 1, 2, (0.1307,), (0.3081,)),  # a small pad-and-crop on grey MNIST-type digits
    (20, 3, 0, CIFAR10_MEAN, CIFAR10_STD),  # flips alone
])
def test_batched_augmentation_equals_torchvision_exactly(size, channels, padding, mean, std):
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (64, size, size, channels), dtype=torch.uint8, generator=generator)
    offsets, flips = draw_crops_and_flips(len(images), padding, generator)
    # every corner with and without a flip explicitly, the rest at random
    far = 2 * padding
    offsets[:8] = torch.tensor([[0, 0], [0, far], [far, 0], [far, far]]).repeat(2, 1)
    flips[:8] = torch.arange(8) < 4
    ours = normalize(crop_and_flip(images, offsets, flips, padding), torch.tensor(mean), torch.tensor(std))
    for i in range(len(images)):
        reference = torchvision_reference(images[i], int(offsets[i, 0]), int(offsets[i, 1]), bool(flips[i]), padding, mean, std)
        assert torch.equal(ours[i], reference), f"image {i} differs"


def test_batches_come_out_channels_last():
    """The layout the model runs fastest in, without a copy to convert."""
    batch = augment(torch.randint(0, 256, (16, 32, 32, 3), dtype=torch.uint8), torch.Generator().manual_seed(5))
    assert batch.shape == (16, 3, 32, 32) and batch.dtype == torch.float32
    assert batch.is_contiguous(memory_format=torch.channels_last)


def test_augmentation_is_seeded_and_varies_per_image():
    images = torch.randint(0, 256, (256, 32, 32, 3), dtype=torch.uint8)
    first = augment(images, torch.Generator().manual_seed(1))
    assert torch.equal(first, augment(images, torch.Generator().manual_seed(1)))
    assert not torch.equal(first, augment(images, torch.Generator().manual_seed(2)))
    offsets, flips = draw_crops_and_flips(10_000, 4, torch.Generator().manual_seed(3))
    assert offsets.min() == 0 and offsets.max() == 8 and len(offsets.unique(dim=0)) == 81
    assert 0.45 < flips.float().mean() < 0.55
