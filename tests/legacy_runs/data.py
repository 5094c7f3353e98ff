"""The data every legacy-run fixture was trained on, written where its config expects it (relative
to the directory the run was started in): tiny 16x16 RGB images with random labels."""

from pathlib import Path

import numpy as np

DATA = "tiny16.npz"


def write_data(workdir: Path) -> Path:
    rng = np.random.default_rng(11)
    path = workdir / DATA
    np.savez(path, x_train=rng.integers(0, 256, (120, 16, 16, 3), dtype=np.uint8), y_train=rng.integers(0, 10, 120, dtype=np.uint8),
             x_test=rng.integers(0, 256, (40, 16, 16, 3), dtype=np.uint8), y_test=rng.integers(0, 10, 40, dtype=np.uint8))
    return path
