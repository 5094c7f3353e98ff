"""Image data held on the training device as uint8, split into train/val/test, served in batches.

`cifar10(...)` and `npz(...)` are the `_target_`s of conf/data/*.yaml. Both read the
images once into uint8 NHWC arrays, carve a validation set out of the training images
with a seeded permutation (`split_seed`, fixed by default so that runs with different
seeds share one split) and move everything to the device. Training batches follow a
permutation drawn from the run's data generator and are augmented on the device.
"""

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
from filelock import FileLock
from omegaconf import MISSING

from optqual.augment import augment, normalize
from optqual.errors import ConfigError

NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test")


@dataclass
class DataSchema:
    _target_: str = MISSING
    batch_size: int = 128
    val_fraction: float = 0.1
    split_seed: int = 0


@dataclass
class Cifar10Schema(DataSchema):
    _target_: str = "optqual.data.cifar10"
    root: str = "./data"
    download: bool = True


@dataclass
class NpzSchema(DataSchema):
    _target_: str = "optqual.data.npz"
    path: str = MISSING


SCHEMAS = {"cifar10": Cifar10Schema, "npz": NpzSchema}


@dataclass
class ImageData:
    """uint8 NHWC images (as CIFAR stores them) and int64 labels on one device, plus the split.

    Batches come out as float32 NCHW in channels_last memory, the layout the model runs in.
    """

    train_images: torch.Tensor
    train_labels: torch.Tensor
    val_images: torch.Tensor
    val_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor
    train_indices: np.ndarray  # rows of the source training set used for training
    val_indices: np.ndarray  # rows of the source training set held out for validation
    batch_size: int

    def epoch_order(self, generator: torch.Generator) -> torch.Tensor:
        """A fresh random order of the training images, drawn at the start of each epoch."""
        return torch.randperm(len(self.train_labels), generator=generator, device=generator.device)

    def train_batch(self, order: torch.Tensor, step: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """Batch `step` of the epoch with this `order`, augmented; the last batch may be smaller.

        Batches are addressed by step, not iterated, so an epoch can continue from a checkpoint.
        """
        index = order[step * self.batch_size : (step + 1) * self.batch_size]
        return augment(self.train_images[index], generator), self.train_labels[index]

    def eval_batches(self, split: str, batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        images, labels = getattr(self, f"{split}_images"), getattr(self, f"{split}_labels")
        for start in range(0, len(labels), batch_size):
            yield normalize(images[start : start + batch_size]), labels[start : start + batch_size]

    def steps_per_epoch(self) -> int:
        return -(-len(self.train_labels) // self.batch_size)


def split_indices(n: int, val_fraction: float, split_seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Sorted train and val row indices of a seeded random split of n training images."""
    n_val = round(n * val_fraction)
    if not 0 < n_val < n:
        raise ConfigError(f"data.val_fraction={val_fraction}: leaves an empty train or val set of {n} images")
    permutation = np.random.default_rng(split_seed).permutation(n)
    return np.sort(permutation[n_val:]), np.sort(permutation[:n_val])


def to_device(arrays: dict[str, np.ndarray], batch_size: int, val_fraction: float, split_seed: int, device: torch.device) -> ImageData:
    train_idx, val_idx = split_indices(len(arrays["y_train"]), val_fraction, split_seed)

    def images(x: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(x)).to(device)

    def labels(y: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.asarray(y, dtype=np.int64)).to(device)

    x_train, y_train = arrays["x_train"], arrays["y_train"]
    return ImageData(
        train_images=images(x_train[train_idx]),
        train_labels=labels(y_train[train_idx]),
        val_images=images(x_train[val_idx]),
        val_labels=labels(y_train[val_idx]),
        test_images=images(arrays["x_test"]),
        test_labels=labels(arrays["y_test"]),
        train_indices=train_idx,
        val_indices=val_idx,
        batch_size=batch_size,
    )


def read_cifar10(root: str, download: bool) -> dict[str, np.ndarray]:
    """The official CIFAR-10 python batches via torchvision, which downloads and checksums them.

    A file lock in `root` makes parallel jobs download and extract once: the first one fetches,
    the others wait and then find verified files.
    """
    from torchvision.datasets import CIFAR10

    if not download and not Path(root).is_dir():
        raise ConfigError(f"data.root={root}: CIFAR-10 not found (no such directory; set data.download=true)")
    Path(root).mkdir(parents=True, exist_ok=True)
    try:
        with FileLock(Path(root) / ".cifar10.lock"):
            train = CIFAR10(root, train=True, download=download)
            test = CIFAR10(root, train=False, download=False)
    except RuntimeError as err:  # torchvision's "Dataset not found or corrupted"
        hint = "set data.download=true" if not download else "the download did not verify"
        raise ConfigError(f"data.root={root}: CIFAR-10 not found or corrupted ({hint})") from err
    except OSError as err:  # URLError, HTTPError, connection refused, ...
        raise ConfigError(f"data.root={root}: downloading CIFAR-10 failed: {err}") from err
    return {"x_train": train.data, "y_train": np.array(train.targets), "x_test": test.data, "y_test": np.array(test.targets)}


def read_npz(path: str) -> dict[str, np.ndarray]:
    if not Path(path).is_file():
        raise ConfigError(f"data.path={path}: no such file")
    with np.load(path) as archive:
        absent = [key for key in NPZ_KEYS if key not in archive]
        if absent:
            raise ConfigError(f"data.path={path}: missing arrays {absent} (need {list(NPZ_KEYS)})")
        arrays = {key: archive[key] for key in NPZ_KEYS}
    for split in ("train", "test"):
        x, y = arrays[f"x_{split}"], arrays[f"y_{split}"]
        if x.dtype != np.uint8 or x.ndim != 4 or x.shape[-1] != 3 or len(x) != len(y):
            raise ConfigError(
                f"data.path={path}: x_{split} must be uint8 NHWC with 3 channels and one label per image, "
                f"got {x.dtype} {x.shape} with {len(y)} labels"
            )
    return arrays


def cifar10(root: str, download: bool, batch_size: int, val_fraction: float, split_seed: int, device: torch.device) -> ImageData:
    return to_device(read_cifar10(root, download), batch_size, val_fraction, split_seed, device)


def npz(path: str, batch_size: int, val_fraction: float, split_seed: int, device: torch.device) -> ImageData:
    return to_device(read_npz(path), batch_size, val_fraction, split_seed, device)
