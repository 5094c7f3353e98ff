"""Shared fixtures: a tiny CIFAR-shaped dataset, and launch.py run as a user runs it."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from optqual.config import register_schemas
from optqual.runs.sweep import register_resolvers

REPO = Path(__file__).resolve().parents[1]
HEAD_NPZ = REPO.parent / "shared" / "data" / "cifar10_head.npz"  # real CIFAR-10 images, beside the checkout

register_schemas()
register_resolvers()


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


@pytest.fixture(scope="session")
def tiny_npz(tmp_path_factory) -> Path:
    return write_npz(tmp_path_factory.mktemp("data") / "tiny.npz", n_train=200, n_test=60)


def tiny_overrides(npz: Path) -> list[str]:
    """A run that takes a second: tiny data, small batches, two epochs, validation every epoch."""
    return ["data=npz", f"data.path={npz}", "data.batch_size=32", "epochs=2", "eval_every=1"]


def launch(workdir: Path, *overrides: str) -> subprocess.CompletedProcess:
    """`python launch.py OVERRIDES` in `workdir`, so that outputs/ lands there."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run(
        [sys.executable, str(REPO / "launch.py"), *overrides], cwd=workdir, env=env, capture_output=True, text=True, timeout=600
    )


def launch_ok(workdir: Path, *overrides: str) -> subprocess.CompletedProcess:
    result = launch(workdir, *overrides)
    assert result.returncode == 0, result.stderr[-3000:]
    return result
