"""Every data option read through torchvision's real loading path from files these tests write in
the official formats (downloads from a loopback server, checksums verified), the statistics and
facts a run records, the batched random-resized-crop against torchvision, and the shared MNIST."""

import gzip
import hashlib
import json
import pickle
import tarfile
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import torch
import torchvision.transforms.v2.functional as TF
from PIL import Image
from torchvision.datasets import CIFAR100, MNIST, SVHN, FashionMNIST
from torchvision.transforms import RandomResizedCrop

from conftest import MNIST_FILES, compose_run, images, launch_here, loopback_server, write_mnist_raw, write_npz
from optqual.__main__ import main as optqual_main
from optqual.data.augment import ResizedCropFlip, draw_resized_crops, resized_crop
from optqual.config.checks import check_config
from optqual.data.images import pixel_statistics
from optqual.data.sources import LAYOUTS, fashion_mnist, mnist, npz, oxford_pets, read_cifar, read_grey, read_pets, read_svhn, svhn
from optqual.errors import ConfigError, build

CPU = torch.device("cpu")
SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def write_cifar100(folder: Path, n_train: int = 60, n_test: int = 20) -> dict:
    """cifar-100-python/ as the official archive has it: pickled train/test dicts of CHW rows, fine and coarse labels."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(1)
    written = {}
    for split, n in (("train", n_train), ("test", n_test)):
        nhwc, fine = images(rng, n, (32, 32, 3)), rng.integers(0, 100, n)
        entry = {"data": nhwc.transpose(0, 3, 1, 2).reshape(n, 3072), "fine_labels": fine.tolist(),
                 "coarse_labels": (fine // 5).tolist(), "filenames": [f"{i}.png" for i in range(n)]}
        (folder / split).write_bytes(pickle.dumps(entry))
        written[split] = nhwc, fine
    (folder / "meta").write_bytes(pickle.dumps({"fine_label_names": [f"class{i}" for i in range(100)], "coarse_label_names": []}))
    return written


def test_cifar100_downloads_verifies_and_reads_fine_labels(tmp_path, monkeypatch):
    written = write_cifar100(tmp_path / "source" / "cifar-100-python")
    serve = tmp_path / "serve"
    serve.mkdir()
    with tarfile.open(serve / "cifar-100-python.tar.gz", "w:gz") as archive:
        archive.add(tmp_path / "source" / "cifar-100-python", arcname="cifar-100-python")
    folder = tmp_path / "source" / "cifar-100-python"
    with loopback_server(serve) as (url, requests):
        for name, value in {"url": f"{url}cifar-100-python.tar.gz", "tgz_md5": md5(serve / "cifar-100-python.tar.gz"),
                            "train_list": [["train", md5(folder / "train")]], "test_list": [["test", md5(folder / "test")]],
                            "meta": {**CIFAR100.meta, "md5": md5(folder / "meta")}}.items():
            monkeypatch.setattr(CIFAR100, name, value)
        data = build(compose_run("data=cifar100", f"data.root={tmp_path / 'data'}", "data.val_fraction=0.5", "data.batch_size=8").data, "data", device=CPU)
    assert any("cifar-100-python.tar.gz" in r for r in requests)
    assert data.num_classes == 100 and len(data.train_labels) == 30 and len(data.test_labels) == 20
    assert data.class_names == [f"class{i}" for i in range(100)]  # the names in its meta file, for the figures
    assert np.array_equal(data.test_images.numpy(), written["test"][0]) and np.array_equal(data.test_labels.numpy(), written["test"][1])
    rows = data.train_indices
    assert np.array_equal(data.train_images.numpy(), written["train"][0][rows])
    assert data.facts()["mean"] == [0.5071, 0.4865, 0.4409]  # the option's own statistics, not CIFAR-10's


def test_mnist_downloads_from_a_mirror_with_checksums_and_reads_the_idx_files(tmp_path, monkeypatch):
    source = tmp_path / "source"
    written = write_mnist_raw(source)
    serve = tmp_path / "serve"
    serve.mkdir()
    for name in MNIST_FILES:
        (serve / f"{name}.gz").write_bytes(gzip.compress((source / name).read_bytes()))
    with loopback_server(serve) as (url, requests):
        monkeypatch.setattr(MNIST, "mirrors", [url])
        monkeypatch.setattr(MNIST, "resources", [(f"{name}.gz", md5(serve / f"{name}.gz")) for name in MNIST_FILES])
        data = mnist(str(tmp_path / "data"), download=True, to_rgb=False, device=CPU, val_fraction=0.2, batch_size=8)
    assert {r.split()[1] for r in requests if r.startswith("GET")} == {f"/{name}.gz" for name in MNIST_FILES}
    assert data.train_images.shape == (40, 28, 28, 1) and data.test_images.shape == (10, 28, 28, 1)
    assert data.class_names == [str(digit) for digit in range(10)]  # torchvision's "0 - zero": the digit
    assert np.array_equal(data.test_images[..., 0].numpy(), written["test"][0])
    assert np.array_equal(data.test_labels.numpy(), written["test"][1])


def test_mnist_download_with_a_wrong_checksum_is_refused(tmp_path, monkeypatch):
    write_mnist_raw(tmp_path / "source")
    serve = tmp_path / "serve"
    serve.mkdir()
    for name in MNIST_FILES:
        (serve / f"{name}.gz").write_bytes(gzip.compress((tmp_path / "source" / name).read_bytes()))
    with loopback_server(serve) as (url, _):
        monkeypatch.setattr(MNIST, "mirrors", [url])
        monkeypatch.setattr(MNIST, "resources", [(f"{name}.gz", "0" * 32) for name in MNIST_FILES])
        with pytest.raises(ConfigError, match=r"MNIST did not verify after its download \(interrupted, or altered\): delete .*/MNIST/raw"):
            mnist(str(tmp_path / "data"), download=True, to_rgb=False, device=CPU, batch_size=8)


def test_fashion_mnist_reads_its_folder_and_to_rgb_gives_three_equal_channels(tmp_path):
    written = write_mnist_raw(tmp_path / "FashionMNIST" / "raw", seed=3)
    grey = fashion_mnist(str(tmp_path), download=False, to_rgb=False, device=CPU, batch_size=8)
    rgb = fashion_mnist(str(tmp_path), download=False, to_rgb=True, device=CPU, mean=[0.286], std=[0.353], batch_size=8)
    assert grey.channels == 1 and rgb.channels == 3
    assert torch.equal(rgb.test_images, grey.test_images.expand(-1, -1, -1, 3))
    assert np.array_equal(grey.test_images[..., 0].numpy(), written["test"][0])
    assert rgb.mean.tolist() == pytest.approx([0.286] * 3)  # one stated value serves every channel
    assert FashionMNIST.classes[0] == "T-shirt/top"


def test_svhn_reads_the_mat_files_with_label_10_as_0_and_adds_extra_on_request(tmp_path, monkeypatch):
    folder = tmp_path / "data"
    folder.mkdir()
    rng = np.random.default_rng(4)
    written, sums = {}, {}
    for split, n in (("train", 30), ("test", 10), ("extra", 20)):
        x, y = images(rng, n, (32, 32, 3)), rng.integers(1, 11, n)  # labels 1..10, 10 standing for the digit 0
        scipy.io.savemat(folder / f"{split}_32x32.mat", {"X": x.transpose(1, 2, 3, 0), "y": y[:, None]})
        written[split] = x, y % 10
        sums[split] = [SVHN.split_list[split][0], f"{split}_32x32.mat", md5(folder / f"{split}_32x32.mat")]
    monkeypatch.setattr(SVHN, "split_list", sums)
    data = svhn(str(folder), download=False, include_extra=False, device=CPU, val_fraction=0.1, batch_size=8)
    assert np.array_equal(data.test_images.numpy(), written["test"][0]) and np.array_equal(data.test_labels.numpy(), written["test"][1])
    assert len(data.train_labels) + len(data.val_labels) == 30
    more = svhn(str(folder), download=False, include_extra=True, device=CPU, val_fraction=0.1, batch_size=8)
    assert len(more.train_labels) + len(more.val_labels) == 50
    rows = np.concatenate([written["train"][0], written["extra"][0]])
    assert np.array_equal(more.train_images.numpy(), rows[more.train_indices])


def write_pets(root: Path, per_split: int = 6) -> dict:
    """oxford-iiit-pet/ as the official archives unpack: images/*.jpg, annotations/{trainval,test}.txt
    ("name class species breed", class from 1). The images are solid colours, so a resize keeps them."""
    folder = root / "oxford-iiit-pet"
    (folder / "images").mkdir(parents=True)
    (folder / "annotations").mkdir()
    written = {}
    for s, split in enumerate(("trainval", "test")):
        lines, colours, labels = [], [], []
        for i in range(per_split):
            name, label, colour = f"Breed{i}_{s}{i}", (3 * i + s) % 37, (40 * i, 255 - 30 * i, 17 * s)
            Image.new("RGB", (90 + 7 * i, 60 + 5 * i), colour).save(folder / "images" / f"{name}.jpg", quality=100)
            lines.append(f"{name} {label + 1} 1 {i + 1}")
            colours.append(colour)
            labels.append(label)
        (folder / "annotations" / f"{split}.txt").write_text("\n".join(lines) + "\n")
        written[split] = np.array(colours), np.array(labels)
    return written


def test_oxford_pets_reads_the_official_split_resized_square_on_the_device(tmp_path):
    written = write_pets(tmp_path)
    data = oxford_pets(str(tmp_path), download=False, image_size=32, device=CPU, val_fraction=0.5, batch_size=2, num_classes=37)
    assert data.test_images.shape == (6, 32, 32, 3) and data.image_size == 32
    assert np.array_equal(data.test_labels.numpy(), written["test"][1])
    centre = data.test_images[:, 16, 16].numpy().astype(int)
    assert np.abs(centre - written["test"][0]).max() <= 3  # JPEG's rounding of a solid colour


def test_an_image_size_below_16_is_one_line_before_any_work():
    with pytest.raises(ConfigError, match=r"^data.image_size=8: must lie in \[16, inf\)$"):
        check_config(compose_run("data=oxford_pets", "data.image_size=8"))


def test_npz_may_name_its_classes_one_per_class(tmp_path):
    path = write_npz(tmp_path / "d.npz", n_train=100, n_test=20)
    with np.load(path) as raw:
        arrays = dict(raw)
    np.savez(tmp_path / "named.npz", **arrays, class_names=np.array([f"kind {i}" for i in range(10)]))
    assert npz(str(tmp_path / "named.npz"), CPU, batch_size=8).class_names == [f"kind {i}" for i in range(10)]
    np.savez(tmp_path / "short.npz", **arrays, class_names=np.array(["cat", "dog"]))
    with pytest.raises(ConfigError, match=r"class_names holds 2 names for 10 classes \(one per class, in label order\)"):
        npz(str(tmp_path / "short.npz"), CPU, batch_size=8)


def test_npz_classes_shape_and_statistics_come_from_the_file_when_not_given(tmp_path):
    path = write_npz(tmp_path / "d.npz", n_train=100, n_test=20)
    data = npz(str(path), CPU, val_fraction=0.2, batch_size=8)
    with np.load(path) as raw:
        train = raw["x_train"][data.train_indices].astype(np.float64) / 255
        assert data.num_classes == int(max(raw["y_train"].max(), raw["y_test"].max())) + 1
    assert data.mean.tolist() == pytest.approx(train.mean(axis=(0, 1, 2)).tolist(), abs=1e-6)
    assert data.std.tolist() == pytest.approx(train.std(axis=(0, 1, 2)).tolist(), abs=1e-6)
    assert (data.channels, data.image_size) == (3, 32)
    with pytest.raises(ConfigError, match=rf"^data.num_classes=2: data.path={path} has labels up to 9"):
        npz(str(path), CPU, num_classes=2, batch_size=8)
    with pytest.raises(ConfigError, match=r"^data.channels=1: the images have 3"):
        npz(str(path), CPU, channels=1, batch_size=8)
    with pytest.raises(ConfigError, match=r"need one value per channel \(3\) or one for all"):
        npz(str(path), CPU, mean=[0.5, 0.5], batch_size=8)


def test_pixel_statistics_are_exact():
    x = np.random.default_rng(0).integers(0, 256, (7, 5, 5, 2), dtype=np.uint8)
    mean, std = pixel_statistics(x)
    reference = x.reshape(-1, 2).astype(np.float64) / 255
    assert mean.tolist() == pytest.approx(reference.mean(axis=0).tolist(), abs=1e-7)
    assert std.tolist() == pytest.approx(reference.std(axis=0).tolist(), abs=1e-7)


def test_resized_crops_equal_torchvisions_resized_crop_within_one_grey_level():
    generator = torch.Generator().manual_seed(0)
    batch = torch.randint(0, 256, (48, 40, 40, 3), dtype=torch.uint8, generator=generator)
    boxes = draw_resized_crops(len(batch), 40, (0.08, 1.0), (3 / 4, 4 / 3), generator)
    boxes[0] = torch.tensor([0, 0, 40, 40])  # the whole image, and a thin strip at the corner
    boxes[1] = torch.tensor([37, 0, 3, 40])
    flips = torch.arange(len(batch)) % 2 == 1
    ours = resized_crop(batch, boxes, flips)
    for i in range(len(batch)):
        top, left, h, w = boxes[i].tolist()
        reference = TF.resized_crop(batch[i].permute(2, 0, 1), top, left, h, w, [40, 40], antialias=True)
        reference = TF.horizontal_flip(reference) if flips[i] else reference
        difference = (ours[i].permute(2, 0, 1).int() - reference.int()).abs().max()
        assert difference <= 1, f"image {i}: box {boxes[i].tolist()} differs by {difference}"


def test_resized_crop_boxes_follow_torchvisions_distribution():
    boxes = draw_resized_crops(20_000, 64, (0.35, 1.0), (3 / 4, 4 / 3), torch.Generator().manual_seed(1))
    top, left, h, w = boxes.T
    assert (top >= 0).all() and (left >= 0).all() and (top + h <= 64).all() and (left + w <= 64).all()
    torch.manual_seed(1)
    sampler = RandomResizedCrop(64, scale=(0.35, 1.0), ratio=(3 / 4, 4 / 3))
    reference = torch.tensor([sampler.get_params(torch.zeros(3, 64, 64), sampler.scale, sampler.ratio) for _ in range(20_000)])
    for ours, theirs in ((h * w / 64**2, reference[:, 2] * reference[:, 3] / 64**2), (w / h, reference[:, 3] / reference[:, 2]),
                         (top, reference[:, 0]), (left, reference[:, 1])):
        assert ours.float().mean() == pytest.approx(theirs.float().mean().item(), rel=0.02)
        assert ours.float().std() == pytest.approx(theirs.float().std().item(), rel=0.05)
    augmented = ResizedCropFlip()(torch.zeros(4, 64, 64, 3, dtype=torch.uint8), torch.Generator().manual_seed(2))
    assert augmented.shape == (4, 64, 64, 3) and augmented.dtype == torch.uint8


@pytest.mark.slow
@pytest.mark.skipif(not (SHARED / "MNIST" / "raw").is_dir(), reason="the shared MNIST files are not beside this checkout")
def test_the_shared_mnist_reads_through_the_real_path():
    data = mnist(str(SHARED), download=False, to_rgb=False, device=CPU)
    assert len(data.train_labels) + len(data.val_labels) == 60_000 and len(data.test_labels) == 10_000
    assert data.test_labels[:10].tolist() == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]
    train_labels = np.empty(60_000, dtype=np.int64)
    train_labels[data.train_indices], train_labels[data.val_indices] = data.train_labels.numpy(), data.val_labels.numpy()
    assert train_labels[:10].tolist() == [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]


def test_an_mlp_trains_on_mnist_files_in_process(tmp_path):
    write_mnist_raw(tmp_path / "data" / "MNIST" / "raw", n_train=120, n_test=30)
    launch_here(tmp_path, "model=mlp", "data=mnist", f"data.root={tmp_path / 'data'}", "data.download=false",
                "model.hidden=[32]", "epochs=2", "data.batch_size=32", "trackio.enabled=false", "hydra.run.dir=run")
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["status"] == "completed" and metrics["data"]["channels"] == 1
    assert metrics["profile"]["macs_per_image"] == 784 * 32 + 32 * 10  # one hidden layer of 32, then 10 classes
    assert metrics["profile"]["checkpoint_bytes"] == (tmp_path / "run" / "final_model.pt").stat().st_size

    assert optqual_main(["profile", str(tmp_path / "run"), "--calls", "5"]) == 0
    profiled = json.loads((tmp_path / "run" / "profile.json").read_text())
    assert profiled["params"] == metrics["params"] and profiled["latency_calls"] == 5 and profiled["throughput_img_s"] > 0


def test_profile_of_a_directory_that_is_not_a_run_is_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        optqual_main(["profile", str(tmp_path)])
    assert exit_.value.code == 2 and "not a run directory" in capsys.readouterr().err.strip()


READERS = {"CIFAR-10": lambda root, download: read_cifar("CIFAR-10", root, download),
           "CIFAR-100": lambda root, download: read_cifar("CIFAR-100", root, download),
           "MNIST": lambda root, download: read_grey("MNIST", root, download, False),
           "FashionMNIST": lambda root, download: read_grey("FashionMNIST", root, download, False),
           "SVHN": lambda root, download: read_svhn(root, download, False),
           "OxfordIIITPet": lambda root, download: read_pets(root, download, 64)}


@pytest.mark.parametrize("name", sorted(READERS))
def test_every_dataset_that_cannot_be_read_names_the_fix(name, tmp_path, monkeypatch):
    """Offline (every download refused, as on a machine without a network), a download names how to
    point at a copy or at images of one's own; with download off, where the copy must be."""
    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network here")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    with pytest.raises(ConfigError) as failed:
        READERS[name](str(tmp_path / "data"), True)
    assert str(failed.value) == (f"data.root={tmp_path / 'data'}: downloading {name} failed (no network here): without a network, "
                                 f"put a copy at DIR/{LAYOUTS[name]} and set data.root=DIR data.download=false, "
                                 "or train on images of your own: data=npz data.path=FILE.npz")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError) as absent:
        READERS[name](str(tmp_path / "empty"), False)
    assert str(absent.value).endswith(f"set data.root to the folder that holds {LAYOUTS[name]}, or data.download=true")
