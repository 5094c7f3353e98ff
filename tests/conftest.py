"""Shared fixtures: a tiny CIFAR-shaped dataset, and training run as a user runs it (`python -m optqual
train` in a new process, or in this one through Hydra's own entry, with a kill or a signal at a
chosen step)."""

import contextlib
import csv
import functools
import http.server
import io
import json
import os
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from optqual import train
from optqual.__main__ import main as optqual_main
from optqual.build import build_training
from optqual.engine.loop import Training
from optqual.errors import build
from optqual.launch import directories

REPO = Path(__file__).resolve().parents[1]

HEAD_NPZ = REPO.parent / "shared" / "data" / "cifar10_head.npz"  # real CIFAR-10 images, beside the checkout

def compose_run(*overrides: str) -> DictConfig:
    """The composed run config, as training gets it (without the hydra node)."""
    with initialize_config_dir(str(REPO / "conf"), version_base="1.3"):
        return compose("config", overrides=list(overrides))


@contextlib.contextmanager
def loopback_server(directory: Path, delay: float = 0.0) -> Iterator[tuple[str, list[str]]]:
    """An HTTP server on 127.0.0.1 serving the files in `directory` (the tests' stand-in for a
    dataset's download site): its base URL, and the requests so far. `delay` seconds per request
    stand for a slow link."""
    requests: list[str] = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def do_GET(self) -> None:
            time.sleep(delay)
            super().do_GET()

        def log_message(self, *args) -> None:
            requests.append(f"{self.command} {self.path}")

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(directory)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/", requests
    finally:
        server.shutdown()


def write_npz(path: Path, n_train: int, n_test: int, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    np.savez(
        path,
        x_train=rng.integers(0, 256, (n_train, 32, 32, 3), dtype=np.uint8),
        y_train=rng.integers(0, 10, n_train, dtype=np.uint8),
        x_test=rng.integers(0, 256, (n_test, 32, 32, 3), dtype=np.uint8),
        y_test=rng.integers(0, 10, n_test, dtype=np.uint8),
    )
    return path


def images(rng: np.random.Generator, n: int, shape: tuple) -> np.ndarray:
    return rng.integers(0, 256, (n, *shape), dtype=np.uint8)


def idx(array: np.ndarray) -> bytes:
    """The IDX format of MNIST's files: zero, zero, type 0x08 (ubyte), rank; big-endian dims; data."""
    return struct.pack(">BBBB", 0, 0, 8, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()


MNIST_FILES = {"train-images-idx3-ubyte": ("train", "x"), "train-labels-idx1-ubyte": ("train", "y"),
               "t10k-images-idx3-ubyte": ("test", "x"), "t10k-labels-idx1-ubyte": ("test", "y")}


def write_mnist_raw(raw: Path, n_train: int = 50, n_test: int = 10, seed: int = 2) -> dict:
    raw.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    arrays = {"train": (images(rng, n_train, (28, 28)), rng.integers(0, 10, n_train).astype(np.uint8)),
              "test": (images(rng, n_test, (28, 28)), rng.integers(0, 10, n_test).astype(np.uint8))}
    for name, (split, kind) in MNIST_FILES.items():
        (raw / name).write_bytes(idx(arrays[split][0 if kind == "x" else 1]))
    return arrays


@pytest.fixture(scope="session")
def tiny_npz(tmp_path_factory) -> Path:
    return write_npz(tmp_path_factory.mktemp("data") / "tiny.npz", n_train=200, n_test=60)


def tiny_overrides(npz: Path) -> list[str]:
    """A run that takes a second: tiny data, small batches, two epochs, validation every epoch."""
    return ["data=npz", f"data.path={npz}", "data.batch_size=32", "epochs=2", "eval_every=1"]


def tiny_training(npz: Path, *overrides: str) -> Training:
    """What a run of `overrides` on the tiny data builds (optqual/build.py), on the CPU; a pruning
    report would write into a fresh temporary directory."""
    cfg = compose_run(*tiny_overrides(npz), *overrides)
    cpu = torch.device("cpu")
    return build_training(cfg, build(cfg.data, "data", device=cpu), cpu, Path(tempfile.mkdtemp()))


TRAIN = [sys.executable, "-m", "optqual", "train"]  # what `python launch.py` runs, from any directory


def launch(workdir: Path, *overrides: str) -> subprocess.CompletedProcess:
    """`python -m optqual train OVERRIDES` in `workdir`, so that outputs/ lands there."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run([*TRAIN, *overrides], cwd=workdir, env=env, capture_output=True, text=True, timeout=600)


def launch_ok(workdir: Path, *overrides: str) -> subprocess.CompletedProcess:
    result = launch(workdir, *overrides)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


class Killed(BaseException):
    """The process died here, as under SIGKILL: nothing after this point is written."""


def launch_here(workdir: Path, *overrides: str) -> subprocess.CompletedProcess:
    """`python -m optqual train OVERRIDES` in `workdir`, run in this process through Hydra's own entry
    (run directories, .hydra files and callbacks as in a real run, without the seconds an
    interpreter and torch take to start). What the process would exit with and print; the thread
    count and the directory claims are restored afterwards, as a new process would have them."""
    saved = os.getcwd(), sys.argv, torch.get_num_threads()
    claims = directories._claiming, directories._claimed, directories._made
    directories._claiming, directories._claimed, directories._made = False, {}, []  # as in a new process
    os.chdir(workdir)
    sys.argv = ["optqual train", *overrides]
    out, err = io.StringIO(), io.StringIO()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            train.main()
        code = 0
    except SystemExit as exit:
        code = exit.code if isinstance(exit.code, int) else 1
        if isinstance(exit.code, str):  # what Python prints for sys.exit("message")
            err.write(exit.code + "\n")
    except Killed:
        code = -signal.SIGKILL
    finally:
        os.chdir(saved[0])
        sys.argv = saved[1]
        torch.set_num_threads(saved[2])
        directories._claiming, directories._claimed, directories._made = claims
    return subprocess.CompletedProcess(sys.argv, code, out.getvalue(), err.getvalue())


def cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """`python -m optqual ARGS` (a tool, not `train`) run in this process, in `cwd`: its exit code and
    what it printed, without the seconds an interpreter and torch take to start. The real command,
    as a new process, runs in tests/test_install.py and tests/test_legacy_runs.py."""
    saved = os.getcwd(), torch.get_num_threads()
    out, err = io.StringIO(), io.StringIO()
    os.chdir(cwd or os.getcwd())
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = optqual_main(list(args))
    except SystemExit as exit:
        code = exit.code if isinstance(exit.code, int) else 1
        if isinstance(exit.code, str):
            err.write(exit.code + "\n")
    finally:
        os.chdir(saved[0])
        torch.set_num_threads(saved[1])
    return subprocess.CompletedProcess(["optqual", *args], code, out.getvalue(), err.getvalue())


def launched(workdir: Path, *overrides: str) -> subprocess.CompletedProcess:
    result = launch_here(workdir, *overrides)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


@contextlib.contextmanager
def stopped_after(epoch: int, steps: int, how: str) -> Iterator[None]:
    """Stop the run launched inside after `steps` steps of `epoch`: `kill` (SIGKILL: the last
    end-of-epoch checkpoint is all that survives) or `term` (SIGTERM: a checkpoint at the step)."""
    original = Training.step

    def step(self, images, labels, progress):
        original(self, images, labels, progress)
        if (progress.epoch, progress.step + 1) == (epoch, steps):
            if how == "kill":
                raise Killed
            signal.raise_signal(signal.SIGTERM)

    Training.step = step
    try:
        yield
    finally:
        Training.step = original


def history(run_dir: Path) -> list[dict]:
    """history.csv without its timing column."""
    with open(run_dir / "history.csv") as file:
        return [{k: v for k, v in row.items() if k != "seconds"} for row in csv.DictReader(file)]


TIMING = {"train_seconds", "train_images_per_s", "wall_seconds", "peak_rss_mb", "peak_gpu_mb", "checkpoints", "checkpoint_seconds",
          "trackio_dir"}  # and where the run logged its dashboard: not what it computed


def assert_same_run(a: Path, b: Path) -> None:
    """Final (and best) weights, history and metrics equal bit for bit (all but timing, memory and
    where the dashboard went)."""
    for weights in ("final_model.pt", "best_model.pt"):
        if (a / weights).exists() or (b / weights).exists():
            wa, wb = (torch.load(run / weights, weights_only=True) for run in (a, b))
            assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa), weights
    assert history(a) == history(b)
    ma, mb = (json.loads((run / "metrics.json").read_text()) for run in (a, b))
    assert {k: v for k, v in ma.items() if k not in TIMING} == {k: v for k, v in mb.items() if k not in TIMING}
