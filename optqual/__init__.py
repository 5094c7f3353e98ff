"""optqual: deterministic CIFAR-10 ResNet runs for comparing what optimizers find."""

from pathlib import Path


def config_dir() -> Path:
    """conf/: beside the package in a checkout, inside it once installed (pyproject.toml ships it there)."""
    installed = Path(__file__).parent / "conf"
    return installed if installed.is_dir() else Path(__file__).parents[1] / "conf"
