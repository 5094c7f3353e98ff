"""matplotlib for files (no display on a cluster node), and how every figure is finished: the
sweep's curves (optqual/tools/curves.py), the pruning report's pictures (optqual/sparsity/pictures.py)."""

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
    atomic_write(path, lambda file: figure.savefig(file, format="png", dpi=120))
    pyplot().close(figure)
