"""Reading CIFAR-10 in its official format (and downloading it), npz input, and the split."""

import contextlib
import hashlib
import io
import json
import pickle
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest
import torch
import torchvision.transforms.functional as TF
from torchvision.datasets import CIFAR10

from conftest import launch_here, loopback_server, write_npz
from optqual.data.augment import CropFlip
from optqual.errors import ConfigError
from optqual.data.images import split_indices, to_device
from optqual.data.sources import cifar10, npz, read_cifar

BATCHES = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def write_official_cifar10(root: Path, per_batch: int = 20) -> dict[str, np.ndarray]:
    """cifar-10-batches-py/ as the official archive has it: pickled dicts of (N, 3072) CHW rows."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    images = {}
    for name in BATCHES:
        nhwc = rng.integers(0, 256, (per_batch, 32, 32, 3), dtype=np.uint8)
        labels = rng.integers(0, 10, per_batch).tolist()
        rows = nhwc.transpose(0, 3, 1, 2).reshape(per_batch, 3072)
        entry = {"batch_label": name, "labels": labels, "data": rows, "filenames": [f"{name}_{i}.png" for i in range(per_batch)]}
        (folder / name).write_bytes(pickle.dumps(entry))
        images[name] = (nhwc, np.array(labels))
    (folder / "batches.meta").write_bytes(pickle.dumps({"label_names": ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]}))
    return {
        "x_train": np.concatenate([images[n][0] for n in BATCHES[:5]]),
        "y_train": np.concatenate([images[n][1] for n in BATCHES[:5]]),
        "x_test": images["test_batch"][0],
        "y_test": images["test_batch"][1],
    }


def trust_written_files(monkeypatch, folder: Path) -> None:
    """torchvision verifies md5 sums of the official files; point it at the sums of ours."""
    monkeypatch.setattr(CIFAR10, "train_list", [[n, md5(folder / n)] for n in BATCHES[:5]])
    monkeypatch.setattr(CIFAR10, "test_list", [["test_batch", md5(folder / "test_batch")]])
    monkeypatch.setattr(CIFAR10, "meta", {**CIFAR10.meta, "md5": md5(folder / "batches.meta")})


def test_reads_the_official_python_format(tmp_path, monkeypatch):
    written = write_official_cifar10(tmp_path)
    trust_written_files(monkeypatch, tmp_path / "cifar-10-batches-py")
    arrays = read_cifar("CIFAR-10", str(tmp_path), download=False)
    for key, value in written.items():
        assert np.array_equal(arrays[key], value), key
    assert arrays["x_train"].dtype == np.uint8 and arrays["x_train"].shape == (100, 32, 32, 3)


@contextlib.contextmanager
def serve_archive(tmp_path: Path, delay: float = 0.0) -> Iterator[tuple[str, dict[str, np.ndarray], list[str]]]:
    """The official archive of a small fake CIFAR-10 on a loopback HTTP server: its URL, the
    arrays it holds, and the requests so far. `delay` seconds per request stand for a slow link."""
    source = tmp_path / "source"
    written = write_official_cifar10(source)
    serve = tmp_path / "serve"
    serve.mkdir()
    with tarfile.open(serve / "cifar-10-python.tar.gz", "w:gz") as archive:
        archive.add(source / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    with loopback_server(serve, delay) as (url, requests):
        yield f"{url}cifar-10-python.tar.gz", written, requests


def official_checksums(tmp_path: Path) -> dict:
    """The attributes torchvision's CIFAR10 checks, with the sums of the files these tests write."""
    folder = tmp_path / "source" / "cifar-10-batches-py"
    return {
        "train_list": [[n, md5(folder / n)] for n in BATCHES[:5]],
        "test_list": [["test_batch", md5(folder / "test_batch")]],
        "meta": {**CIFAR10.meta, "md5": md5(folder / "batches.meta")},
        "tgz_md5": md5(tmp_path / "serve" / "cifar-10-python.tar.gz"),
    }


def test_downloads_verifies_and_extracts(tmp_path, monkeypatch):
    """The default path (data.download=true) end to end, served from a loopback HTTP server."""
    with serve_archive(tmp_path) as (url, written, requests):
        for name, value in {**official_checksums(tmp_path), "url": url}.items():
            monkeypatch.setattr(CIFAR10, name, value)
        root = tmp_path / "data"
        data = cifar10(str(root), download=True, device=torch.device("cpu"), batch_size=16)
    assert (root / "cifar-10-batches-py" / "data_batch_5").is_file()
    assert len(data.train_labels) == 90 and len(data.val_labels) == 10 and len(data.test_labels) == 20
    rows = np.concatenate([data.train_indices, data.val_indices])
    x = np.concatenate([data.train_images.numpy(), data.val_images.numpy()])
    assert np.array_equal(x, written["x_train"][rows])


@pytest.mark.slow
def test_parallel_jobs_download_once_into_one_intact_copy(tmp_path, monkeypatch):
    """Four processes prepare the same data root at once (joblib jobs do): one download."""
    root = tmp_path / "data"
    with serve_archive(tmp_path, delay=1.0) as (url, written, requests):  # slow enough for all four to overlap
        attributes = {**official_checksums(tmp_path), "url": url}
        for name, value in attributes.items():
            monkeypatch.setattr(CIFAR10, name, value)
        read_cifar("CIFAR-10", str(tmp_path / "alone"), download=True)
        one_download = list(requests)  # torchvision probes for a redirect, then downloads
        requests.clear()
        script = (
            "import json, sys, numpy as np\n"
            "from torchvision.datasets import CIFAR10\n"
            "from optqual.data.sources import read_cifar\n"
            "for name, value in json.loads(sys.argv[1]).items(): setattr(CIFAR10, name, value)\n"
            "arrays = read_cifar('CIFAR-10', sys.argv[2], download=True)\n"
            "np.savez(sys.argv[3], **arrays)\n"
        )
        processes = [
            subprocess.Popen([sys.executable, "-c", script, json.dumps(attributes), str(root), str(tmp_path / f"read{i}.npz")],
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            for i in range(4)
        ]
        for process in processes:
            assert process.wait(timeout=300) == 0, process.stderr.read()
    assert requests == one_download
    for i in range(4):
        with np.load(tmp_path / f"read{i}.npz") as arrays:
            assert all(np.array_equal(arrays[key], value) for key, value in written.items())
    checksums = official_checksums(tmp_path)
    for name, expected in checksums["train_list"] + checksums["test_list"]:
        assert md5(root / "cifar-10-batches-py" / name) == expected


def test_absent_dataset_without_download_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="CIFAR-10 not found.*data.download=true"):
        read_cifar("CIFAR-10", str(tmp_path), download=False)


def test_corrupted_dataset_is_refused(tmp_path, monkeypatch):
    write_official_cifar10(tmp_path)
    folder = tmp_path / "cifar-10-batches-py"
    trust_written_files(monkeypatch, folder)
    (folder / "data_batch_3").write_bytes(b"truncated")
    with pytest.raises(ConfigError, match="not found or corrupted"):
        read_cifar("CIFAR-10", str(tmp_path), download=False)


def test_npz_lands_on_the_device_as_uint8(tmp_path):
    path = write_npz(tmp_path / "d.npz", n_train=100, n_test=30)
    data = npz(str(path), torch.device("cpu"), batch_size=32, val_fraction=0.2, augment=CropFlip())
    assert data.train_images.dtype == torch.uint8 and data.train_images.shape == (80, 32, 32, 3)
    assert data.val_images.shape == (20, 32, 32, 3) and data.test_images.shape == (30, 32, 32, 3)
    with np.load(path) as raw:
        assert np.array_equal(data.test_images.numpy(), raw["x_test"])
    generator = torch.Generator().manual_seed(0)
    order = data.epoch_order(generator)
    images, labels = data.train_batch(order, 0, data.batch_size(1), generator)  # augmented, uint8 NHWC until normalized
    assert images.dtype == torch.uint8 and images.shape == (32, 32, 32, 3) and labels.dtype == torch.int64
    normalized = data.normalize(images)
    assert normalized.dtype == torch.float32 and normalized.shape == (32, 3, 32, 32)
    batches = [data.train_batch(order, step, data.batch_size(1), generator)[1] for step in range(data.steps(1))]
    assert [len(y) for y in batches] == [32, 32, 16]
    assert torch.equal(torch.cat(batches).sort().values, data.train_labels[order].sort().values)


@pytest.mark.parametrize("channels, mean, std", [(3, [0.4914, 0.4822, 0.4465], [0.2023, 0.1994, 0.2010]), (1, [0.1307], [0.3081])])
def test_batches_are_normalized_as_torchvision_does_bit_for_bit(channels, mean, std):
    """The per-pixel repeated statistics that make normalizing fast change no float."""
    rng = np.random.default_rng(0)
    images = {"x_train": rng.integers(0, 256, (40, 8, 8, channels), dtype=np.uint8), "y_train": np.arange(40) % 10,
              "x_test": rng.integers(0, 256, (12, 8, 8, channels), dtype=np.uint8), "y_test": np.arange(12) % 10}
    data = to_device(images, torch.device("cpu"), batch_size=8, val_fraction=0.25, mean=mean, std=std, augment=CropFlip(padding=0, flip=False))
    batch, _ = next(data.eval_batches("test", 12))
    for image, ours in zip(images["x_test"], batch):
        assert torch.equal(ours, TF.normalize(TF.to_tensor(image), mean, std))
    order = data.epoch_order(torch.Generator().manual_seed(0))
    train, _ = data.train_batch(order, 0, 8, torch.Generator())
    for row, ours in zip(order[:8], data.normalize(train)):
        assert torch.equal(ours, TF.normalize(TF.to_tensor(images["x_train"][data.train_indices[row]]), mean, std))


def arrays(**changes) -> dict[str, np.ndarray]:
    """A well-formed tiny data file's arrays, with `changes`."""
    good = {"x_train": np.zeros((4, 8, 8, 3), np.uint8), "y_train": np.array([0, 1, 2, 1]),
            "x_test": np.zeros((2, 8, 8, 3), np.uint8), "y_test": np.array([1, 0])}
    return {**good, **changes}


MALFORMED = {  # what is wrong -> the end of the one line that must say it
    "missing arrays": ({"x_train": np.zeros((4, 8, 8, 3), np.uint8)}, "missing arrays ['y_train', 'x_test', 'y_test'] (need ['x_train', 'y_train', 'x_test', 'y_test'])"),
    "float images": (arrays(x_train=np.zeros((4, 8, 8, 3), np.float32)), "x_train must be uint8 NHWC square images, got float32 (4, 8, 8, 3)"),
    "NCHW images": (arrays(x_test=np.zeros((2, 3, 8, 8), np.uint8)), "x_test must be uint8 NHWC square images, got uint8 (2, 3, 8, 8)"),
    "empty test set": (arrays(x_test=np.zeros((0, 8, 8, 3), np.uint8), y_test=np.zeros(0, np.int64)), "x_test holds no images"),
    "2-D labels": (arrays(y_train=np.zeros((4, 1), np.int64)), "y_train must hold one class index per image (1-D), got shape (4, 1)"),
    "fractional labels": (arrays(y_train=np.array([0.0, 1.5, 2.0, 1.0])), "y_train must hold whole class indices, got 1.5 (1 of 4 are not whole numbers)"),
    "NaN labels": (arrays(y_test=np.array([np.nan, 1.0])), "y_test must hold whole class indices, got nan (1 of 2 are not whole numbers)"),
    "negative labels": (arrays(y_test=np.array([1, -1])), "y_test has negative labels (1 of 2, the lowest -1)"),
    "text labels": (arrays(y_train=np.array(["a", "b", "c", "d"])), "y_train must hold class indices, got <U1"),
    "a label per image": (arrays(y_train=np.array([0, 1, 2])), "x_train has 4 images but y_train 3 labels"),
    "one huge label": (arrays(y_train=np.array([0, 1, 3_000_000, 1])), "the labels must be the classes 0..K-1, each in y_train, when "
                       "data.num_classes is not given: y_train has 3 classes and labels up to 3000000 (none of class 2); relabel them, "
                       "or set data.num_classes"),
    "a class only in test": (arrays(y_test=np.array([3, 0])), "the labels must be the classes 0..K-1, each in y_train, when "
                             "data.num_classes is not given: y_train has 3 classes and labels up to 3 (none of class 3); relabel them, "
                             "or set data.num_classes"),
    "splits of two sizes": (arrays(x_test=np.zeros((2, 6, 6, 3), np.uint8)), "x_test's images are 6x6x3 (HWC), x_train's 8x8x3: "
                            "both splits must have one image size and channel count"),
    "splits of two channel counts": (arrays(x_test=np.zeros((2, 8, 8, 1), np.uint8)), "x_test's images are 8x8x1 (HWC), x_train's "
                                     "8x8x3: both splits must have one image size and channel count"),
}


@pytest.mark.parametrize("case", MALFORMED)
def test_every_malformed_data_file_is_one_line_naming_the_file_before_any_work(tmp_path, case):
    content, message = MALFORMED[case]
    np.savez(tmp_path / "bad.npz", **content)
    with pytest.raises(ConfigError) as refused:
        npz(str(tmp_path / "bad.npz"), torch.device("cpu"), batch_size=2, val_fraction=0.5)
    assert str(refused.value) == f"data.path={tmp_path / 'bad.npz'}: {message}"


@pytest.mark.parametrize("content, message", [
    (b"", "not an .npz archive (numpy.savez's zip of arrays); empty or truncated?"),
    (b"x_train,y_train\n1,2\n", "not an .npz archive (numpy.savez's zip of arrays); empty or truncated?"),
    ("truncated", "not an .npz archive (numpy.savez's zip of arrays); empty or truncated?"),
    ("objects", "cannot read its arrays: Object arrays cannot be loaded when allow_pickle=False"),
])
def test_a_file_that_is_not_a_readable_npz_is_named_and_said_what_it_is(tmp_path, content, message):
    path = tmp_path / "bad.npz"
    if content == "truncated":
        np.savez(path, **arrays())
        path.write_bytes(path.read_bytes()[:300])
    elif content == "objects":
        np.savez(path, **arrays(y_train=np.array([0, 1, None, 1], dtype=object)))
    else:
        path.write_bytes(content)
    with pytest.raises(ConfigError) as refused:
        npz(str(path), torch.device("cpu"))
    assert str(refused.value) == f"data.path={path}: {message}"


def test_sparse_labels_are_classes_when_their_number_is_given(tmp_path):
    np.savez(tmp_path / "sparse.npz", **arrays(y_train=np.array([0, 1, 5, 1]), y_test=np.array([5, 0])))
    assert npz(str(tmp_path / "sparse.npz"), torch.device("cpu"), batch_size=2, val_fraction=0.5, num_classes=6).num_classes == 6


def test_a_batch_larger_than_the_training_set_is_refused(tmp_path):
    np.savez(tmp_path / "small.npz", **arrays())
    with pytest.raises(ConfigError, match=r"^data.batch_size=3: larger than the training set \(2 images\)$"):
        npz(str(tmp_path / "small.npz"), torch.device("cpu"), batch_size=3, val_fraction=0.5)


def zip_with(path: Path, members: list[tuple[str, bytes]]) -> None:
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members:
            archive.writestr(name, data)


def npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


@pytest.mark.parametrize("case", ["duplicate member", "raw member", "directory", "symlink loop"])
def test_what_an_npz_path_is_when_not_an_archive_of_four_arrays_is_said(tmp_path, case):
    path = tmp_path / "data.npz"
    good = [(f"{key}.npy", npy(value)) for key, value in arrays().items()]
    if case == "duplicate member":
        with pytest.warns(UserWarning, match="Duplicate name"):
            zip_with(path, [*good, ("y_train.npy", npy(np.array([2, 2, 2, 2])))])
        message = "the archive holds y_train.npy 2 times; write it again with numpy.savez"
    elif case == "raw member":
        zip_with(path, [*good[:3], ("y_test", b"1,0")])
        message = "y_test is a raw file in the zip, not a .npy array; write the archive with numpy.savez"
    elif case == "directory":
        path.mkdir()
        message = "a directory, not an .npz file"
    else:
        path.symlink_to(tmp_path / "loop.npz")
        (tmp_path / "loop.npz").symlink_to(path)
        message = "cannot read it (Too many levels of symbolic links)"
    with pytest.raises(ConfigError) as refused:
        npz(str(path), torch.device("cpu"), batch_size=2, val_fraction=0.5)
    assert str(refused.value) == f"data.path={path}: {message}"


def test_whole_float_labels_are_class_indices_and_a_bad_file_leaves_no_run(tmp_path):
    np.savez(tmp_path / "float.npz", **arrays(y_train=np.array([0.0, 1.0, 2.0, 1.0])))
    data = npz(str(tmp_path / "float.npz"), torch.device("cpu"), batch_size=2, val_fraction=0.5)
    assert data.train_labels.dtype == torch.int64 and sorted(data.train_labels.tolist() + data.val_labels.tolist()) == [0, 1, 1, 2]
    np.savez(tmp_path / "bad.npz", **arrays(y_test=np.array([1, 7]), y_train=np.array([0, 1, 2, 1])))
    result = launch_here(tmp_path, "data=npz", f"data.path={tmp_path / 'bad.npz'}", "data.num_classes=3", "trackio.enabled=false",
                         "hydra.run.dir=run")
    assert result.returncode != 0
    assert result.stderr.strip() == f"optqual: error: data.num_classes=3: data.path={tmp_path / 'bad.npz'} has labels up to 7"
    assert not (tmp_path / "run").exists()


def test_split_is_seeded_disjoint_and_complete():
    train, val = split_indices(50_000, 0.1, split_seed=0)
    assert len(train) == 45_000 and len(val) == 5_000
    assert len(np.union1d(train, val)) == 50_000 and len(np.intersect1d(train, val)) == 0
    again_train, again_val = split_indices(50_000, 0.1, split_seed=0)
    assert np.array_equal(train, again_train) and np.array_equal(val, again_val)
    assert not np.array_equal(val, split_indices(50_000, 0.1, split_seed=1)[1])
