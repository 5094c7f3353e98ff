"""Each data option's files read into uint8 NHWC arrays: the `_target_`s of conf/data/*.yaml.

Every torchvision dataset is read through torchvision itself, which downloads and checksums
it on first use (`download: true`). A file lock in `root` makes parallel jobs download and
extract once: the first one fetches, the others wait and then find verified files. Options
that every source shares (batch size, split, classes, channels, image size, normalization,
augmentation) pass through to optqual.data.images.to_device.
"""

import re
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, List, Optional

import numpy as np
import torch
from filelock import FileLock
from omegaconf import MISSING

from optqual.data.images import ImageData, to_device
from optqual.errors import ConfigError
from optqual.ranges import within

NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test")
CLASS_NAMES = "class_names"  # optional: a name per class, in label order (figures show them: the confusion matrix)
Arrays = dict[str, np.ndarray]


@dataclass
class DataSchema:
    _target_: str = MISSING
    batch_size: int = within(128, "[1, inf)")
    # {epoch (from 0): size from then on}, replacing batch_size; untyped because OmegaConf cannot merge
    # a command-line dict into a typed Optional[Dict] that is null (check_config checks it instead)
    batch_size_schedule: Any = None
    full_batch: bool = False  # every update on the whole training set (gradient descent): replaces batch_size
    val_fraction: float = within(0.1, "(0, 1)")
    train_size: Optional[int] = within(None, "[1, inf)")  # null: the whole training split; N: its first N images (the split is seeded)
    split_seed: int = within(0, "[0, 4294967296)")
    num_classes: Optional[int] = within(None, "[2, inf)")  # null: 1 + the largest label
    channels: Optional[int] = within(None, "[1, inf)")  # null: what the images have
    image_size: Optional[int] = within(None, "[16, inf)")  # null: what the images have; the CIFAR ResNets downsample by 4
    mean: Optional[List[float]] = within(None, "(-inf, inf)")  # per channel (or one for all); null: the training split's
    std: Optional[List[float]] = within(None, "(0, inf)")
    augment: Any = MISSING  # a class of optqual.data.augment: each option names its own


@dataclass
class TorchvisionSchema(DataSchema):
    root: str = "./data"
    download: bool = True


@dataclass
class GreySchema(TorchvisionSchema):
    to_rgb: bool = False


@dataclass
class SvhnSchema(TorchvisionSchema):
    include_extra: bool = False


@dataclass
class PetsSchema(TorchvisionSchema):
    image_size: Optional[int] = within(64, "[16, inf)")


@dataclass
class NpzSchema(DataSchema):
    path: str = MISSING


SCHEMAS = {"torchvision": TorchvisionSchema, "grey": GreySchema, "svhn": SvhnSchema, "pets": PetsSchema, "npz": NpzSchema}


# what torchvision reads under data.root, per dataset: where a copy made elsewhere goes
LAYOUTS = {"CIFAR-10": "cifar-10-batches-py/", "CIFAR-100": "cifar-100-python/", "MNIST": "MNIST/raw/",
           "FashionMNIST": "FashionMNIST/raw/", "SVHN": "train_32x32.mat and test_32x32.mat",
           "OxfordIIITPet": "oxford-iiit-pet/"}
OWN_IMAGES = "or train on images of your own: data=npz data.path=FILE.npz"


def download_failure(err: Exception) -> str | None:
    """Why a download failed, in a few words; None when `err` is not a failed download (a file that
    did not verify, a dataset not there)."""
    if isinstance(err, OSError):  # URLError, HTTPError, connection refused, ...
        return str(getattr(err, "reason", err))
    if str(err).startswith("Error downloading"):  # MNIST's, after every mirror failed: the last mirror's error last
        last = [line for line in str(err).splitlines() if line.strip()][-1]
        if "corrupted" in last:  # torchvision's "File not found or corrupted.": a checksum that did not match
            return None
        return re.sub(r"^<urlopen error (.*)>$", r"\1", last)
    return None


def read_torchvision(name: str, root: str, download: bool, make: Callable[[bool], Any]) -> Any:
    """`make(download)` (torchvision datasets of one root) under the root's download lock,
    torchvision's failures as one line that says what to type."""
    layout = LAYOUTS[name]
    if not download and not Path(root).is_dir():
        raise ConfigError(f"data.root={root}: {name} not found (no such directory): set data.root to the folder that "
                          f"holds {layout}, or data.download=true")
    Path(root).mkdir(parents=True, exist_ok=True)
    try:
        with FileLock(Path(root) / f".{name.lower()}.lock"):
            return make(download)
    except (OSError, RuntimeError) as err:  # torchvision's "Dataset not found or corrupted", a failed download, ...
        failure = download_failure(err)
        if failure is not None:
            raise ConfigError(f"data.root={root}: downloading {name} failed ({failure}): without a network, put a copy "
                              f"at DIR/{layout} and set data.root=DIR data.download=false, {OWN_IMAGES}") from err
        if download:
            raise ConfigError(f"data.root={root}: {name} did not verify after its download (interrupted, or altered): "
                              f"delete {Path(root) / layout.split()[0]} and run again") from err
        raise ConfigError(f"data.root={root}: {name} not found or corrupted ({layout} missing or incomplete): set "
                          f"data.root to the folder that holds {layout}, or data.download=true") from err


def arrays_of(train_x: Any, train_y: Any, test_x: Any, test_y: Any, class_names: Optional[list[str]] = None) -> Arrays:
    arrays = {"x_train": np.asarray(train_x), "y_train": np.asarray(train_y), "x_test": np.asarray(test_x), "y_test": np.asarray(test_y)}
    return arrays if class_names is None else arrays | {CLASS_NAMES: np.asarray(class_names)}


def read_cifar(name: str, root: str, download: bool) -> Arrays:
    """CIFAR-10 or CIFAR-100 (fine labels) from the official python batches: already NHWC."""
    from torchvision.datasets import CIFAR10, CIFAR100

    cls = {"CIFAR-10": CIFAR10, "CIFAR-100": CIFAR100}[name]
    train, test = read_torchvision(name, root, download, lambda fetch: (cls(root, train=True, download=fetch), cls(root, train=False)))
    return arrays_of(train.data, train.targets, test.data, test.targets, train.classes)


def read_grey(name: str, root: str, download: bool, to_rgb: bool) -> Arrays:
    """MNIST or Fashion-MNIST from the idx files under root/<name>/raw: N x 28 x 28, given a channel axis."""
    from torchvision.datasets import MNIST, FashionMNIST

    cls = {"MNIST": MNIST, "FashionMNIST": FashionMNIST}[name]
    train, test = read_torchvision(name, root, download, lambda fetch: (cls(root, train=True, download=fetch), cls(root, train=False)))
    channels = 3 if to_rgb else 1  # the grey level replicated: what models built for RGB expect

    def images(split) -> np.ndarray:
        return np.repeat(split.data.numpy()[..., None], channels, axis=3)

    names = [name.split(" - ")[0] for name in train.classes]  # MNIST's "0 - zero" is the digit
    return arrays_of(images(train), train.targets.numpy(), images(test), test.targets.numpy(), names)


def read_svhn(root: str, download: bool, include_extra: bool) -> Arrays:
    """SVHN's train and test .mat files (N x 3 x 32 x 32, label 10 read as digit 0 by torchvision),
    with the 531,131 extra images added to the training set on request."""
    from torchvision.datasets import SVHN

    splits = ["train", "test"] + (["extra"] if include_extra else [])
    sets = read_torchvision("SVHN", root, download, lambda fetch: {s: SVHN(root, split=s, download=fetch) for s in splits})
    train = [sets[s] for s in splits if s != "test"]
    x_train = np.concatenate([s.data for s in train]).transpose(0, 2, 3, 1)
    return arrays_of(x_train, np.concatenate([s.labels for s in train]), sets["test"].data.transpose(0, 2, 3, 1), sets["test"].labels)


def read_pets(root: str, download: bool, image_size: int) -> Arrays:
    """Oxford-IIIT Pet's official trainval/test split, 37 breeds; each image decoded once, its shorter
    side resized to `image_size` (antialiased bilinear) and the centre square kept."""
    from torchvision.datasets import OxfordIIITPet
    from torchvision.transforms.v2.functional import center_crop, pil_to_tensor, resize

    sets = read_torchvision("OxfordIIITPet", root, download,
                            lambda fetch: [OxfordIIITPet(root, split=s, download=fetch) for s in ("trainval", "test")])

    def images_and_labels(dataset) -> tuple[np.ndarray, np.ndarray]:
        squares, labels = [], []
        for image, label in dataset:  # torchvision's own reading: each file opened once, as RGB
            squares.append(center_crop(resize(pil_to_tensor(image), [image_size], antialias=True), [image_size]))
            labels.append(label)
        return torch.stack(squares).permute(0, 2, 3, 1).numpy(), np.array(labels)

    breeds = sets[0].classes  # torchvision names the breeds its trainval split holds: all 37 of an intact copy
    return arrays_of(*images_and_labels(sets[0]), *images_and_labels(sets[1]), breeds if len(breeds) == 37 else None)


def read_npz(path: str) -> Arrays:
    """The four arrays of a .npz file; what the file is, if not that, as a ConfigError naming it.
    What the arrays hold is checked with every source's (images.check_arrays)."""
    try:
        with open(path, "rb"):
            pass
    except FileNotFoundError:
        raise ConfigError(f"data.path={path}: no such file") from None
    except IsADirectoryError:
        raise ConfigError(f"data.path={path}: a directory, not an .npz file") from None
    except OSError as err:  # permissions, a symlink loop, ...
        raise ConfigError(f"data.path={path}: cannot read it ({err.strerror})") from None
    if not zipfile.is_zipfile(path):  # np.load would try it as a pickle and blame that
        raise ConfigError(f"data.path={path}: not an .npz archive (numpy.savez's zip of arrays); empty or truncated?")
    with zipfile.ZipFile(path) as archive:
        members = archive.namelist()
    repeated = sorted({name for name in members if members.count(name) > 1})
    if repeated:  # which of them numpy reads is not defined
        raise ConfigError(f"data.path={path}: the archive holds {repeated[0]} {members.count(repeated[0])} times; "
                          "write it again with numpy.savez")
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {key: archive[key] for key in (*NPZ_KEYS, CLASS_NAMES) if key in archive}
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError) as err:  # damaged members, object arrays
        raise ConfigError(f"data.path={path}: cannot read its arrays: {err}") from None
    absent = [key for key in NPZ_KEYS if key not in arrays]
    if absent:
        raise ConfigError(f"data.path={path}: missing arrays {absent} (need {list(NPZ_KEYS)})")
    raw = [key for key, value in arrays.items() if not isinstance(value, np.ndarray)]
    if raw:  # np.load hands a member not saved as .npy over as bytes
        raise ConfigError(f"data.path={path}: {raw[0]} is a raw file in the zip, not a .npy array; write the archive with numpy.savez")
    return arrays


def cifar10(root: str, download: bool, device: torch.device, **options) -> ImageData:
    return to_device(read_cifar("CIFAR-10", root, download), device, **options)


def cifar100(root: str, download: bool, device: torch.device, **options) -> ImageData:
    return to_device(read_cifar("CIFAR-100", root, download), device, **options)


def mnist(root: str, download: bool, to_rgb: bool, device: torch.device, **options) -> ImageData:
    return to_device(read_grey("MNIST", root, download, to_rgb), device, **options)


def fashion_mnist(root: str, download: bool, to_rgb: bool, device: torch.device, **options) -> ImageData:
    return to_device(read_grey("FashionMNIST", root, download, to_rgb), device, **options)


def svhn(root: str, download: bool, include_extra: bool, device: torch.device, **options) -> ImageData:
    return to_device(read_svhn(root, download, include_extra), device, **options)


def oxford_pets(root: str, download: bool, image_size: int, device: torch.device, **options) -> ImageData:
    return to_device(read_pets(root, download, image_size), device, image_size=image_size, **options)


def npz(path: str, device: torch.device, **options) -> ImageData:
    return to_device(read_npz(path), device, origin=f"data.path={path}", **options)
