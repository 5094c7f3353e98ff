"""Reading CIFAR-10 in its official format (and downloading it), npz input, and the split."""

import functools
import hashlib
import http.server
import pickle
import tarfile
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from torchvision.datasets import CIFAR10

from conftest import write_npz
from optqual.config import ConfigError
from optqual.data import cifar10, npz, read_cifar10, split_indices

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
    arrays = read_cifar10(str(tmp_path), download=False)
    for key, value in written.items():
        assert np.array_equal(arrays[key], value), key
    assert arrays["x_train"].dtype == np.uint8 and arrays["x_train"].shape == (100, 32, 32, 3)


def test_downloads_verifies_and_extracts(tmp_path, monkeypatch):
    """The default path (data.download=true) end to end, served from a loopback HTTP server."""
    source = tmp_path / "source"
    written = write_official_cifar10(source)
    trust_written_files(monkeypatch, source / "cifar-10-batches-py")
    serve = tmp_path / "serve"
    serve.mkdir()
    with tarfile.open(serve / "cifar-10-python.tar.gz", "w:gz") as archive:
        archive.add(source / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(serve))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        monkeypatch.setattr(CIFAR10, "url", f"http://127.0.0.1:{server.server_port}/cifar-10-python.tar.gz")
        monkeypatch.setattr(CIFAR10, "tgz_md5", md5(serve / "cifar-10-python.tar.gz"))
        root = tmp_path / "data"
        data = cifar10(str(root), download=True, batch_size=16, val_fraction=0.1, split_seed=0, device=torch.device("cpu"))
    finally:
        server.shutdown()
    assert (root / "cifar-10-batches-py" / "data_batch_5").is_file()
    assert len(data.train_labels) == 90 and len(data.val_labels) == 10 and len(data.test_labels) == 20
    rows = np.concatenate([data.train_indices, data.val_indices])
    x = np.concatenate([data.train_images.numpy(), data.val_images.numpy()])
    assert np.array_equal(x, written["x_train"][rows])


def test_absent_dataset_without_download_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="CIFAR-10 not found.*data.download=true"):
        read_cifar10(str(tmp_path), download=False)


def test_corrupted_dataset_is_refused(tmp_path, monkeypatch):
    write_official_cifar10(tmp_path)
    folder = tmp_path / "cifar-10-batches-py"
    trust_written_files(monkeypatch, folder)
    (folder / "data_batch_3").write_bytes(b"truncated")
    with pytest.raises(ConfigError, match="not found or corrupted"):
        read_cifar10(str(tmp_path), download=False)


def test_npz_lands_on_the_device_as_uint8(tmp_path):
    path = write_npz(tmp_path / "d.npz", n_train=100, n_test=30)
    data = npz(str(path), batch_size=32, val_fraction=0.2, split_seed=0, device=torch.device("cpu"))
    assert data.train_images.dtype == torch.uint8 and data.train_images.shape == (80, 32, 32, 3)
    assert data.val_images.shape == (20, 32, 32, 3) and data.test_images.shape == (30, 32, 32, 3)
    with np.load(path) as raw:
        assert np.array_equal(data.test_images.numpy(), raw["x_test"])
    images, labels = next(data.train_batches(torch.Generator().manual_seed(0)))
    assert images.dtype == torch.float32 and images.shape == (32, 3, 32, 32) and labels.dtype == torch.int64
    assert sum(len(y) for _, y in data.train_batches(torch.Generator().manual_seed(0))) == 80


@pytest.mark.parametrize(
    "arrays, message",
    [
        ({"x_train": np.zeros((4, 32, 32, 3), np.uint8)}, "missing arrays"),
        ({"x_train": np.zeros((4, 32, 32, 3), np.float32), "y_train": np.zeros(4), "x_test": np.zeros((2, 32, 32, 3), np.uint8), "y_test": np.zeros(2)}, "uint8 NHWC"),
        ({"x_train": np.zeros((4, 3, 32, 32), np.uint8), "y_train": np.zeros(4), "x_test": np.zeros((2, 32, 32, 3), np.uint8), "y_test": np.zeros(2)}, "uint8 NHWC"),
    ],
)
def test_malformed_npz_is_refused(tmp_path, arrays, message):
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(ConfigError, match=message):
        npz(str(tmp_path / "bad.npz"), batch_size=8, val_fraction=0.5, split_seed=0, device=torch.device("cpu"))


def test_split_is_seeded_disjoint_and_complete():
    train, val = split_indices(50_000, 0.1, split_seed=0)
    assert len(train) == 45_000 and len(val) == 5_000
    assert len(np.union1d(train, val)) == 50_000 and len(np.intersect1d(train, val)) == 0
    again_train, again_val = split_indices(50_000, 0.1, split_seed=0)
    assert np.array_equal(train, again_train) and np.array_equal(val, again_val)
    assert not np.array_equal(val, split_indices(50_000, 0.1, split_seed=1)[1])
