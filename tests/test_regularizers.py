"""Label smoothing, MixUp, CutMix and Random Erasing do what their papers define, checked against
independent computations (scipy's Beta distribution, pixel counts, torch's own cross-entropy,
torchvision's RandomErasing draws and erase); bad values are one-line errors. Repeats and resumes with them on: tests/test_components_resume.py."""

import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision.transforms as T
import torchvision.transforms.functional as TF
from omegaconf import OmegaConf
from scipy import stats

from conftest import REPO, compose_run
from optqual.components.batch_mix import BatchMix, beta, build_batch_mix
from optqual.config.checks import check_config
from optqual.data.images import to_device
from optqual.engine.hooks import Hooks
from optqual.engine.loop import EpochProgress, Training
from optqual.components.random_erasing import RandomErasing
from optqual.errors import ConfigError
from optqual.losses import training_loss
from optqual.system.reproducibility import stream_generator


def constant_images(n: int, size: int = 8) -> torch.Tensor:
    """Image i is filled with the value i + 1: every pixel says which image it came from."""
    return (torch.arange(n, dtype=torch.float32) + 1)[:, None, None, None].expand(n, 3, size, size).contiguous(
        memory_format=torch.channels_last)


@pytest.mark.parametrize("alpha", [0.2, 1.0])
def test_lam_follows_the_beta_distribution(alpha):
    generator = torch.Generator().manual_seed(0)
    draws = [beta(alpha, generator) for _ in range(3000)]
    assert stats.kstest(draws, stats.beta(alpha, alpha).cdf).pvalue > 0.01


def test_mixup_blends_images_and_targets_with_one_lam():
    mix = BatchMix(num_classes=16, generator=torch.Generator().manual_seed(1), mixup_alpha=1.0)
    images, labels = constant_images(16), torch.arange(16)  # image i has label i
    mixed, targets = mix.on_batch(images, labels)
    assert torch.allclose(targets.sum(1), torch.ones(16))
    others = targets.clone().fill_diagonal_(0)
    partners = torch.where(others.sum(1) > 0, others.argmax(1), labels)  # a self-paired image keeps weight 1
    assert sorted(partners.tolist()) == list(range(16))  # a pairing: every image is somebody's partner once
    lam = targets.diagonal()[partners != labels]
    assert torch.allclose(lam, lam[0].expand_as(lam))  # one lam for the batch
    expected = lam[0] * images + (1 - lam[0]) * images[partners]
    assert torch.allclose(mixed[partners != labels], expected[partners != labels])
    assert torch.equal(mixed[partners == labels], images[partners == labels])


def test_cutmix_pastes_one_box_and_weights_targets_by_its_exact_area():
    mix = BatchMix(num_classes=32, generator=torch.Generator().manual_seed(3), cutmix_alpha=1.0)
    areas = set()
    for _ in range(20):
        images, labels = constant_images(32), torch.arange(32)
        mixed, targets = mix.on_batch(images, labels)
        own_share = (mixed == images).float().mean(dim=(1, 2, 3))  # pixels still the image's own
        pasted = mixed != images
        rows, cols = pasted.any(dim=(1, 3)), pasted.any(dim=(1, 2))
        for i in range(32):
            if own_share[i] < 1:  # one rectangle: its rows times its columns
                assert pasted[i].sum() == 3 * rows[i].sum() * cols[i].sum()
            partner = int(mixed[i][pasted[i]][0].item()) - 1 if own_share[i] < 1 else i
            expected = own_share[i] if partner != i else torch.tensor(1.0)
            assert torch.isclose(targets[i, i], expected), "the own label's weight is the exact own area"
        areas.add(round(float(own_share.mean()), 4))
    assert len(areas) > 10  # lam varies from batch to batch


def test_prob_leaves_that_share_of_batches_unmixed():
    mix = BatchMix(num_classes=10, generator=torch.Generator().manual_seed(0), cutmix_alpha=1.0, prob=0.3)
    labels = torch.arange(8)
    mixed = [mix.on_batch(constant_images(8), labels)[1].ndim == 2 for _ in range(2000)]
    assert abs(np.mean(mixed) - 0.3) < 0.04


def test_the_mixing_stream_is_the_runs_and_not_torchs_global_one():
    cfg = compose_run("batch_mix=mixup_cutmix")
    first = build_batch_mix(cfg.batch_mix, 10, stream_generator(7, "batch_mix"))
    torch.manual_seed(123)
    a = first.on_batch(constant_images(8), torch.arange(8))
    second = build_batch_mix(cfg.batch_mix, 10, stream_generator(7, "batch_mix"))
    torch.manual_seed(456)  # the global generator does not matter
    b = second.on_batch(constant_images(8), torch.arange(8))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert build_batch_mix(compose_run().batch_mix, 10, stream_generator(7, "batch_mix")) is None  # batch_mix=none


def test_the_epoch_records_the_smoothed_loss_and_the_plain_cross_entropy():
    rng = np.random.default_rng(0)
    arrays = {"x_train": rng.integers(0, 256, (40, 8, 8, 3), dtype=np.uint8), "y_train": rng.integers(0, 10, 40),
              "x_test": rng.integers(0, 256, (4, 8, 8, 3), dtype=np.uint8), "y_test": rng.integers(0, 10, 4)}
    # 32 training images in batches of 6: the last batch holds 2, and the means are still per image
    data = to_device(arrays, torch.device("cpu"), batch_size=6, val_fraction=0.2, num_classes=10)
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(192, 10))
    frozen = torch.optim.SGD(model.parameters(), lr=0.0)  # the weights stay put, so the epoch's loss is one model's
    training = Training(model, frozen, data, torch.Generator().manual_seed(0), Hooks({}), epochs=1, eval_every=None,
                        loss=training_loss(OmegaConf.create({"name": "cross_entropy", "label_smoothing": 0.3})))
    progress = EpochProgress.begin(1, data, training.generator)
    training.train_epoch(progress, on_step=lambda: None, should_stop=lambda: False)
    record = training.epoch_record(progress)
    with torch.no_grad():
        logits = model(data.normalize(data.train_images))
    log_p = F.log_softmax(logits, 1)
    plain = F.nll_loss(log_p, data.train_labels)  # by hand: eps spreads over all classes, torch's definition
    smoothed = 0.7 * plain + 0.3 * (-log_p.mean(1)).mean()
    assert record["train_ce"] == pytest.approx(plain.item(), rel=1e-5)
    assert record["train_loss"] == pytest.approx(smoothed.item(), rel=1e-5)
    assert record["train_acc"] == (logits.argmax(1) == data.train_labels).float().mean().item()


def test_accuracy_under_mixing_counts_the_label_with_the_larger_weight():
    rng = np.random.default_rng(1)
    arrays = {"x_train": rng.integers(0, 256, (64, 8, 8, 3), dtype=np.uint8), "y_train": rng.integers(0, 10, 64),
              "x_test": rng.integers(0, 256, (4, 8, 8, 3), dtype=np.uint8), "y_test": rng.integers(0, 10, 4)}
    data = to_device(arrays, torch.device("cpu"), batch_size=48, val_fraction=0.25, num_classes=10)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(192, 10))
    seen = {}

    class Capture(BatchMix):  # the same draws, and a look at what the step was given
        def on_batch(self, images, targets):
            seen["mixed"], seen["targets"] = super().on_batch(images, targets)
            return seen["mixed"], seen["targets"]

    capture = Capture(10, torch.Generator().manual_seed(5), mixup_alpha=1.0)
    training = Training(model, torch.optim.SGD(model.parameters(), lr=0.0), data, torch.Generator().manual_seed(0),
                        Hooks({"batch_mix": capture}), epochs=1, eval_every=None)
    progress = EpochProgress.begin(1, data, training.generator)
    training.train_epoch(progress, on_step=lambda: None, should_stop=lambda: False)
    with torch.no_grad():
        predicted = model(seen["mixed"]).argmax(1)
    heavier = seen["targets"].argmax(1)
    assert seen["targets"].ndim == 2
    assert torch.stack(progress.correct).sum().item() == (predicted == heavier).sum().item()


@pytest.mark.parametrize("override, message", [
    ("batch_mix=mixup batch_mix.mixup_alpha=0", "batch_mix.mixup_alpha=0.0: must lie in (0, inf)"),
    ("batch_mix=cutmix batch_mix.cutmix_alpha=-1", "batch_mix.cutmix_alpha=-1.0: must lie in (0, inf)"),
    ("batch_mix=cutmix batch_mix.prob=1.5", "batch_mix.prob=1.5: must lie in [0, 1]"),
    ("batch_mix=mixup_cutmix batch_mix.switch_prob=-0.1", "batch_mix.switch_prob=-0.1: must lie in [0, 1]"),
    ("loss.label_smoothing=1", "loss.label_smoothing=1.0: must lie in [0, 1)"),
    ("loss.label_smoothing=-0.1", "loss.label_smoothing=-0.1: must lie in [0, 1)"),
])
def test_bad_values_are_one_line_errors(override, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        check_config(compose_run(*override.split()))


@pytest.mark.parametrize("option", sorted(p.stem for p in (REPO / "conf" / "batch_mix").glob("*.yaml")))
def test_every_batch_mix_option_composes_checks_and_builds(option):
    cfg = compose_run(f"batch_mix={option}")
    check_config(cfg)
    built = build_batch_mix(cfg.batch_mix, 10, stream_generator(0, "batch_mix"))
    assert (built is None) == (option == "none")


def test_random_erasing_draws_boxes_as_torchvision_and_erases_them_as_its_erase():
    size, n = 32, 4000
    erasing = RandomErasing(torch.Generator().manual_seed(0), p=1.0, scale=[0.02, 0.33], ratio=[0.3, 3.3], value=0.0)
    boxes, erased = erasing.boxes(n, size, size)
    torch.manual_seed(0)  # torchvision draws from the global generator
    theirs = [T.RandomErasing.get_params(torch.zeros(3, size, size), scale=(0.02, 0.33), ratio=(0.3, 3.3), value=[0.0])
              for _ in range(n)]
    their_areas = [h * w / size**2 for _, _, h, w, _ in theirs if (h, w) != (size, size)]  # (size, size): none fitted
    our_areas = (boxes[erased, 2] * boxes[erased, 3]).double() / size**2
    assert stats.ks_2samp(our_areas.numpy(), their_areas).pvalue > 0.001
    assert abs(erased.double().mean().item() - len(their_areas) / n) < 0.02  # the share where a box fitted
    assert (boxes[erased, 0] + boxes[erased, 2] <= size).all() and (boxes[erased, 1] + boxes[erased, 3] <= size).all()

    images = torch.randn(16, 3, size, size)
    erasing.generator.manual_seed(1)
    boxes, erased = erasing.boxes(16, size, size)
    erasing.generator.manual_seed(1)
    ours, _ = erasing.on_batch(images, torch.zeros(16))
    for i in range(16):
        top, left, h, w = boxes[i].tolist()
        expected = TF.erase(images[i], top, left, h, w, torch.tensor([0.0])[:, None, None]) if erased[i] else images[i]
        assert torch.equal(ours[i], expected)


def test_random_erasing_erases_a_p_share_of_images():
    erasing = RandomErasing(torch.Generator().manual_seed(2), p=0.25, scale=[0.02, 0.33], ratio=[0.3, 3.3], value=0.0)
    images = torch.randn(4000, 1, 8, 8) + 10  # never 0 before erasing
    erased, _ = erasing.on_batch(images, torch.zeros(4000))
    share = (erased == 0).flatten(1).any(1).double().mean().item()
    torch.manual_seed(0)
    fits = sum(T.RandomErasing.get_params(images[0], scale=(0.02, 0.33), ratio=(0.3, 3.3), value=[0.0])[2] < 8
               for _ in range(4000)) / 4000  # torchvision's share of images where a box fits an 8x8 image
    assert abs(share - 0.25 * fits) < 0.02


@pytest.mark.parametrize("override, message", [
    ("random_erasing.p=1.5", "random_erasing.p=1.5: must lie in [0, 1]"),
    ("random_erasing.scale=[0.5,0.2]", "random_erasing.scale=[0.5, 0.2]: needs [low, high] with low <= high"),
    ("random_erasing.ratio=[0,3]", "random_erasing.ratio=[0.0, 3.0]: each must lie in (0, inf)"),
])
def test_bad_erasing_values_are_one_line_errors(override, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        check_config(compose_run(override))
