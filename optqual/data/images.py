"""Images held on the training device as uint8, split into train/val/test, served in batches.

`to_device` takes a source's uint8 NHWC arrays, carves a validation set out of the training
images with a seeded permutation (`split_seed`, fixed by default so that runs with different
seeds share one split), checks them against what the data option states (channels, image
size, classes; each stated value must hold, an unstated one is read off the arrays) and
moves everything to the device. Normalization statistics are the option's, or, when it
gives none, the per-channel mean and std of the training split, computed once. Training
batches follow a permutation drawn from the run's data generator and are augmented on the
device (the dataset's own crop and flip); the training loop normalizes them.
"""

import functools
from dataclasses import dataclass
from typing import Iterator, Optional, Sequence

import numpy as np
import torch

from optqual.data.augment import Augmentation, CropFlip, normalize
from optqual.errors import ConfigError
from optqual.system.devices import free_memory


@dataclass(frozen=True)
class EpochSteps:
    """The optimizer updates of each of a run's epochs, indexed from 0 like a list of them, held as
    the batch-size schedule's segments: its size and its sums do not grow with the number of
    epochs (a list of 10^9 epochs took minutes and gigabytes before the first step)."""

    epochs: int
    segments: tuple[tuple[int, int], ...]  # (first epoch, counted from 1; updates of each epoch from there), increasing

    def __len__(self) -> int:
        return self.epochs

    def __getitem__(self, index: int) -> int:
        if not 0 <= index < self.epochs:
            raise IndexError(index)
        return next(steps for first, steps in reversed(self.segments) if first <= index + 1)

    def before(self, index: int) -> int:
        """The updates of the first `index` epochs."""
        ends = [first for first, _ in self.segments[1:]] + [self.epochs + 1]
        return sum(steps * max(0, min(index + 1, end) - first) for (first, steps), end in zip(self.segments, ends))

    @property
    def total(self) -> int:
        return self.before(self.epochs)


@dataclass
class ImageData:
    """uint8 NHWC images and int64 labels on one device, the split, and how batches are made.

    Training batches come out as uint8 NHWC, augmented by the dataset's own augmentation;
    `normalize` makes them float32 NCHW in channels_last memory, the layout the model runs in.
    Evaluation batches come out normalized.
    """

    train_images: torch.Tensor
    train_labels: torch.Tensor
    val_images: torch.Tensor
    val_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor
    train_indices: np.ndarray  # rows of the source training set used for training
    val_indices: np.ndarray  # rows of the source training set held out for validation
    batch_sizes: dict[int, int]  # the epoch (counted from 0) at which each batch size starts
    num_classes: int
    mean: torch.Tensor  # per channel, on the device
    std: torch.Tensor
    augmentation: Augmentation
    class_names: Optional[list[str]] = None  # in label order, where the dataset names its classes

    @property
    def channels(self) -> int:
        return self.train_images.shape[-1]

    @property
    def image_size(self) -> int:
        return self.train_images.shape[1]

    def facts(self) -> dict:
        """What a model and a reader of the run need to know about the data (metrics.json's `data`)."""
        return {"num_classes": self.num_classes, "channels": self.channels, "image_size": self.image_size,
                "mean": [round(v, 6) for v in self.mean.tolist()], "std": [round(v, 6) for v in self.std.tolist()]}

    @functools.cached_property
    def pixel_stats(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The mean and std repeated to every pixel of an HWC image. Broadcast from a length-3 innermost
        dimension, the elementwise kernels do not vectorize: normalizing a CIFAR batch took 4x longer."""
        shape = self.train_images.shape[1:]
        return self.mean.expand(shape).contiguous(), self.std.expand(shape).contiguous()

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        return normalize(images, *self.pixel_stats)

    def epoch_order(self, generator: torch.Generator) -> torch.Tensor:
        """A fresh random order of the training images, drawn at the start of each epoch."""
        return torch.randperm(len(self.train_labels), generator=generator, device=generator.device)

    def batch_size(self, epoch: int) -> int:
        """The batch size of `epoch` (counted from 1, as the loop counts)."""
        return self.batch_sizes[max(start for start in self.batch_sizes if start < epoch)]

    def steps(self, epoch: int) -> int:
        """Batches in `epoch`: the last one may be smaller."""
        return -(-len(self.train_labels) // self.batch_size(epoch))

    def train_batch(self, order: torch.Tensor, step: int, batch_size: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """Batch `step` of an epoch with this `order` and batch size, augmented, as uint8 NHWC images.

        Batches are addressed by step, not iterated, so an epoch can continue from a checkpoint.
        """
        index = order[step * batch_size : (step + 1) * batch_size]
        images = self.train_images.index_select(0, index)  # a plain copy of whole rows, unlike images[index]
        return self.augmentation(images, generator), self.train_labels.index_select(0, index)

    def eval_batches(self, split: str, batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        images, labels = getattr(self, f"{split}_images"), getattr(self, f"{split}_labels")
        for start in range(0, len(labels), batch_size):
            yield self.normalize(images[start : start + batch_size]), labels[start : start + batch_size]

    def train_sample(self, size: int, seed: int, chunk: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """A seeded sample of `size` training images (all of them if fewer), in their order in the split,
        unaugmented and normalized, in chunks of `chunk`: the same for every run that shares the split."""
        count = len(self.train_labels)
        rows = np.sort(np.random.default_rng(seed).permutation(count)[: min(size, count)])
        rows = torch.from_numpy(rows).to(self.train_labels.device)
        images, labels = self.train_images[rows], self.train_labels[rows]
        return [(self.normalize(images[i : i + chunk]), labels[i : i + chunk]) for i in range(0, len(labels), chunk)]

    def epoch_steps(self, epochs: int) -> EpochSteps:
        """The number of batches of each of the run's epochs."""
        starts = [start for start in sorted(self.batch_sizes) if start < epochs]
        return EpochSteps(epochs, tuple((start + 1, self.steps(start + 1)) for start in starts))


def split_indices(n: int, val_fraction: float, split_seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Sorted train and val row indices of a seeded random split of n training images."""
    n_val = round(n * val_fraction)
    if not 0 < n_val < n:
        raise ConfigError(f"data.val_fraction={val_fraction}: leaves an empty train or val set of {n} images")
    permutation = np.random.default_rng(split_seed).permutation(n)
    return np.sort(permutation[n_val:]), np.sort(permutation[:n_val])


def channel_statistic(stated: Optional[Sequence[float]], key: str, channels: int, computed) -> torch.Tensor:
    """One value per channel: the stated ones (a single value serves every channel), or `computed()`."""
    if stated is None:
        return computed()
    if len(stated) not in (1, channels):
        raise ConfigError(f"data.{key}={list(stated)}: need one value per channel ({channels}) or one for all")
    return torch.tensor(list(stated) * (channels // len(stated)), dtype=torch.float32)


def pixel_statistics(images: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and (population) std of uint8 NHWC images scaled to [0, 1], exact in
    float64 from each channel's histogram of the 256 levels (no float copy of the images)."""
    levels = np.arange(256) / 255
    counts = np.stack([np.bincount(images[..., c].ravel(), minlength=256) for c in range(images.shape[-1])])
    mean = counts @ levels / counts.sum(axis=1)
    variance = counts @ levels**2 / counts.sum(axis=1) - mean**2
    return torch.tensor(mean, dtype=torch.float32), torch.tensor(np.sqrt(variance), dtype=torch.float32)


def checked_labels(y: np.ndarray, name: str, origin: str) -> np.ndarray:
    """Class indices as int64: one dimension, whole numbers, none negative; else a ConfigError naming `origin`."""
    if y.ndim != 1:
        raise ConfigError(f"{origin}: {name} must hold one class index per image (1-D), got shape {y.shape}")
    if not (np.issubdtype(y.dtype, np.integer) or np.issubdtype(y.dtype, np.floating) or y.dtype == np.bool_):
        raise ConfigError(f"{origin}: {name} must hold class indices, got {y.dtype}")
    if np.issubdtype(y.dtype, np.floating):
        whole = np.isfinite(y) & (y == np.round(y))
        if not whole.all():
            raise ConfigError(f"{origin}: {name} must hold whole class indices, got {y[~whole][0].item()} "
                              f"({int((~whole).sum())} of {len(y)} are not whole numbers)")
    if len(y) and y.min() < 0:
        raise ConfigError(f"{origin}: {name} has negative labels ({int((y < 0).sum())} of {len(y)}, the lowest {y.min().item()})")
    return y.astype(np.int64)


def check_arrays(arrays: dict[str, np.ndarray], origin: str, channels: Optional[int], image_size: Optional[int],
                 num_classes: Optional[int]) -> tuple[np.ndarray, np.ndarray]:
    """Everything training relies on in a data source's arrays, before any work: uint8 NHWC square
    images, at least one per split, with one whole, non-negative class index each, below the stated
    `num_classes`, and the stated shape. Returns the train and test labels as int64."""
    labels = []
    for split in ("train", "test"):
        x = arrays[f"x_{split}"]
        if x.dtype != np.uint8 or x.ndim != 4 or x.shape[1] != x.shape[2]:
            raise ConfigError(f"{origin}: x_{split} must be uint8 NHWC square images, got {x.dtype} {x.shape}")
        if len(x) == 0:
            raise ConfigError(f"{origin}: x_{split} holds no images")
        y = checked_labels(np.asarray(arrays[f"y_{split}"]), f"y_{split}", origin)
        if len(y) != len(x):
            raise ConfigError(f"{origin}: x_{split} has {len(x)} images but y_{split} {len(y)} labels")
        for key, stated, actual in (("channels", channels, x.shape[3]), ("image_size", image_size, x.shape[1])):
            if stated is not None and stated != actual:
                raise ConfigError(f"data.{key}={stated}: the images have {actual}")
        labels.append(y)
    shapes = [arrays[f"x_{split}"].shape[1:] for split in ("train", "test")]
    if shapes[0] != shapes[1]:  # found at test time, after all of training, otherwise
        raise ConfigError(f"{origin}: x_test's images are {'x'.join(map(str, shapes[1]))} (HWC), x_train's "
                          f"{'x'.join(map(str, shapes[0]))}: both splits must have one image size and channel count")
    top_label = int(max(y.max() for y in labels))
    if num_classes is not None and top_label >= num_classes:
        raise ConfigError(f"data.num_classes={num_classes}: {origin} has labels up to {top_label}")
    if num_classes is None:  # read from the labels: a gap would add classes that never train (one label of 3e6: a head of 3e6)
        present = np.unique(labels[0])
        if len(present) != top_label + 1:
            missing = np.setdiff1d(np.arange(min(top_label + 1, 10**7)), present)
            raise ConfigError(f"{origin}: the labels must be the classes 0..K-1, each in y_train, when data.num_classes is not given: "
                              f"y_train has {len(present)} classes and labels up to {top_label} (none of class {missing[0]}); "
                              "relabel them, or set data.num_classes")
    return labels[0], labels[1]


def to_device(arrays: dict[str, np.ndarray], device: torch.device, batch_size: int = 128,
              batch_size_schedule: Optional[dict[int, int]] = None, full_batch: bool = False, val_fraction: float = 0.1,
              train_size: Optional[int] = None, split_seed: int = 0, num_classes: Optional[int] = None, channels: Optional[int] = None,
              image_size: Optional[int] = None, mean: Optional[Sequence[float]] = None, std: Optional[Sequence[float]] = None,
              augment: Optional[Augmentation] = None, origin: str = "the data") -> ImageData:
    y_train, y_test = check_arrays(arrays, origin, channels, image_size, num_classes)
    needed = arrays["x_train"].nbytes + arrays["x_test"].nbytes + 8 * (len(y_train) + len(y_test))  # uint8 images, int64 labels
    free = free_memory(device)
    if free is not None and needed > free:
        raise ConfigError(f"{origin}: its images take {needed / 2**30:.2f} GiB on {device}, and {free / 2**30:.2f} GiB are free there")
    x_train = arrays["x_train"]
    top_label = int(max(y_train.max(), y_test.max()))
    train_idx, val_idx = split_indices(len(y_train), val_fraction, split_seed)
    if train_size is not None:
        if train_size > len(train_idx):
            raise ConfigError(f"data.train_size={train_size}: the training split has {len(train_idx)} images")
        train_idx = train_idx[:train_size]  # the split's order is a seeded permutation: a random subset, the same for every run
    if full_batch:
        batch_size, batch_size_schedule = len(train_idx), None
    if batch_size_schedule and max(batch_size_schedule.values()) > len(train_idx):
        raise ConfigError(f"data.batch_size_schedule={dict(batch_size_schedule)}: a batch of {max(batch_size_schedule.values())} "
                          f"is larger than the training set ({len(train_idx)} images)")
    if not batch_size_schedule and batch_size > len(train_idx):
        raise ConfigError(f"data.batch_size={batch_size}: larger than the training set ({len(train_idx)} images)")
    n_channels = x_train.shape[3]
    classes = num_classes if num_classes is not None else top_label + 1
    names = arrays.get("class_names")
    if names is not None and (names.ndim != 1 or len(names) != classes):
        raise ConfigError(f"{origin}: class_names holds {names.size} names for {classes} classes (one per class, in label order)")
    statistics = functools.cache(lambda: pixel_statistics(x_train[train_idx]))  # once, only if a value is not stated

    def images(x: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(x)).to(device)

    return ImageData(
        train_images=images(x_train[train_idx]),
        train_labels=torch.from_numpy(y_train[train_idx]).to(device),
        val_images=images(x_train[val_idx]),
        val_labels=torch.from_numpy(y_train[val_idx]).to(device),
        test_images=images(arrays["x_test"]),
        test_labels=torch.from_numpy(y_test).to(device),
        train_indices=train_idx,
        val_indices=val_idx,
        batch_sizes=dict(sorted(batch_size_schedule.items())) if batch_size_schedule else {0: batch_size},
        num_classes=classes,
        mean=channel_statistic(mean, "mean", n_channels, lambda: statistics()[0]).to(device),
        std=channel_statistic(std, "std", n_channels, lambda: statistics()[1]).to(device),
        augmentation=augment if augment is not None else CropFlip(padding=0, flip=False),
        class_names=None if names is None else [str(name) for name in names],
    )
