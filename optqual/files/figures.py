"""matplotlib for files (no display on a cluster node), how every figure is written (a PNG, atomically,
with its checksum: an analysis result records the checksums of its figures), and how the sweep's
curves (optqual/tools/curves.py) and the pruning report's pictures (optqual/sparsity/pictures.py) are finished."""

import hashlib
import io
from pathlib import Path

from optqual.files.atomic import atomic_write


def pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on a cluster node
    import matplotlib.pyplot as plt

    return plt


def save_figure(figure, axes, title: str, path: Path) -> None:
    """A grid and a legend on every panel, the title; the PNG written atomically."""
    for axis in axes:
        axis.grid(alpha=0.3)
        if axis.has_data():
            axis.legend(fontsize="small")
    figure.suptitle(title)
    write_figure(figure, path, dpi=120)


def write_figure(figure, path: Path, dpi: int = 110) -> str:
    """`figure` as a PNG at `path`, written atomically, then closed; the PNG's SHA-256."""
    png = io.BytesIO()
    figure.savefig(png, format="png", dpi=dpi)
    pyplot().close(figure)
    atomic_write(path, lambda file: file.write(png.getvalue()))
    return hashlib.sha256(png.getvalue()).hexdigest()


def file_sha256(path: Path) -> str | None:
    """The SHA-256 of the file at `path`; None when there is none."""
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except FileNotFoundError:
        return None
