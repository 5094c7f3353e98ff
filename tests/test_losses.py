"""The setups of the edge-of-stability experiments: the square loss, the tanh MLP, full-batch
training on the first N images of the split, and no augmentation; each composes, is checked,
and does what it says."""

import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conftest import compose_run, launch_here, tiny_overrides, tiny_training
from optqual.config.checks import check_config
from optqual.errors import ConfigError
from optqual.losses import plain_loss, squared_error, training_loss
from optqual.models import build_model


def test_the_square_loss_is_half_the_summed_squared_error_against_one_hot_targets():
    generator = torch.Generator().manual_seed(0)
    logits, labels = torch.randn(8, 10, generator=generator), torch.randint(0, 10, (8,), generator=generator)
    one_hot = F.one_hot(labels, 10).float()
    assert squared_error(logits, labels) == pytest.approx(float(F.mse_loss(logits, one_hot) * 10 / 2), rel=1e-6)
    assert squared_error(logits, labels, reduction="sum") == pytest.approx(float(0.5 * (logits - one_hot).square().sum()), rel=1e-6)
    mixed = 0.3 * one_hot + 0.7 * F.one_hot(labels.roll(1), 10).float()  # MixUp's targets are probabilities
    assert squared_error(logits, mixed) == pytest.approx(float(0.5 * (logits - mixed).square().sum(1).mean()), rel=1e-6)


def test_the_loss_group_chooses_what_training_differentiates_and_what_evaluation_reports():
    smoothed = compose_run("loss.label_smoothing=0.1").loss
    logits, labels = torch.randn(4, 10), torch.tensor([0, 1, 2, 3])
    assert float(training_loss(smoothed)(logits, labels)) == pytest.approx(float(F.cross_entropy(logits, labels, label_smoothing=0.1)))
    assert plain_loss(smoothed) is F.cross_entropy
    assert training_loss(compose_run().loss) is F.cross_entropy  # history's train_ce is then the loss itself
    assert training_loss(compose_run("loss=mse").loss) is squared_error is plain_loss(compose_run("loss=mse").loss)


@pytest.mark.parametrize("overrides, message", [
    ("model=mlp model.activation=sigmoid", "model.activation=sigmoid: must be one of relu, tanh"),
    ("data.full_batch=true data.batch_size_schedule={0:64}", "data.full_batch=True: every batch is then the whole training set"),
    ("data.train_size=0", "data.train_size=0: must lie in [1, inf)"),
])
def test_bad_setups_are_one_line_errors(overrides, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        check_config(compose_run(*overrides.split()))


def test_label_smoothing_of_the_square_loss_is_refused_in_one_line(tmp_path):
    result = launch_here(tmp_path, "loss=mse", "loss.label_smoothing=0.1")
    assert result.returncode != 0 and not (tmp_path / "outputs").exists()
    assert result.stderr.strip().splitlines()[-1].startswith("optqual: error: loss.label_smoothing=0.1: the run has no key")


def test_tanh_mlp_is_fc_tanh():
    cfg = compose_run("model=mlp", "model.hidden=[200,200]", "model.activation=tanh")
    model = build_model(cfg.model, {"num_classes": 10, "channels": 3, "image_size": 32})
    assert [type(m).__name__ for m in model.modules() if not isinstance(m, torch.nn.Sequential)] == \
           ["Flatten", "Linear", "Tanh", "Linear", "Tanh", "Linear"]
    assert sum(p.numel() for p in model.parameters()) == 3072 * 200 + 200 + 200 * 200 + 200 + 200 * 10 + 10


def test_full_batch_on_the_first_images_of_the_split_without_augmentation(tiny_npz):
    training = tiny_training(tiny_npz, "data.full_batch=true", "data.train_size=100", "data.augment=null")
    data = training.data
    everything = tiny_training(tiny_npz).data
    assert len(data.train_labels) == 100 and data.steps(1) == 1 and data.batch_size(1) == 100
    np.testing.assert_array_equal(data.train_indices, everything.train_indices[:100])  # the first 100 of the same split
    images, _ = data.train_batch(data.epoch_order(training.generator), 0, 100, training.generator)
    assert torch.equal(images.sort(0).values, data.train_images.sort(0).values)  # every image, as it is: no crop, no flip


def test_a_train_size_beyond_the_split_is_refused(tiny_npz):
    with pytest.raises(ConfigError, match=re.escape("data.train_size=500: the training split has 180 images")):
        tiny_training(tiny_npz, "data.train_size=500")


def test_a_square_loss_run_reports_its_loss_and_the_plain_cross_entropy(tiny_npz):
    from optqual.engine.loop import EVAL_BATCH_SIZE, EpochProgress, evaluate

    training = tiny_training(tiny_npz, "loss=mse", *tiny_overrides(tiny_npz)[-1:])
    progress = EpochProgress.begin(1, training.data, training.generator)
    training.train_epoch(progress, on_step=lambda: None, should_stop=lambda: False)
    record = training.epoch_record(progress)
    assert 0 < record["train_loss"] < record["train_ce"]  # the square loss, and the cross-entropy beside it
    val = evaluate(training.model, training.data.eval_batches("val", EVAL_BATCH_SIZE), loss=training.plain_loss)
    with torch.no_grad():
        logits = training.model.eval()(training.data.normalize(training.data.val_images))
    assert val["loss"] == pytest.approx(float(squared_error(logits, training.data.val_labels)), rel=1e-5)
