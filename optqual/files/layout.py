"""The name of every file and folder optqual puts in a run or sweep directory: one place, read by
what writes them (training, the launcher, the tools) and by what reads them back (optqual/runs/reader.py)."""

from pathlib import Path

# a run directory
HYDRA_DIR = ".hydra"  # the launch's record, as Hydra writes it: config.yaml (composed), hydra.yaml, overrides.yaml
LOG = "launch.log"  # the job's log lines
RESOLVED_CONFIG = "resolved_config.yaml"  # the run's config, resolved, with the facts its data decided: rebuilds the model
HISTORY = "history.csv"  # a row per epoch
SHARPNESS = "sharpness.csv"  # a row per sharpness estimate during training (track.sharpness.every)
SHARPNESS_FIGURE = "sharpness.png"  # those estimates against the optimizer's stability threshold
SNAPSHOTS_DIR = "snapshots"  # the weights at chosen points of training (snapshots.at), <label>_model.pt
SNAPSHOTS_INDEX = "snapshots.json"  # in SNAPSHOTS_DIR: every snapshot taken, its label, epoch and update
METRICS = "metrics.json"  # how the run stands or ended, its results and facts
CHECKPOINT = "checkpoint.pt"  # everything to continue the run (optqual/engine/checkpoint.py)
SPLIT = "split_indices.npz"  # the rows of the source training set used for training and for validation
LOCK = ".lock"  # held by the process that trains the run (optqual/files/lock.py)
SPARSITY_DIR = "sparsity"  # the pruning report's tables and pictures (optqual/sparsity/report.py)
TENSORBOARD_DIR = "tensorboard"  # TensorBoard's event files, when it is on
PROFILE = "profile.json"  # `python -m optqual profile`
ANALYSIS_DIR = "analysis"  # `python -m optqual analyze`, beside a run's (or a sweep's) own files

# weight files: `<name>_model.pt`, each a state dict the run's model loads
INITIAL = "initial"  # the weights training started from
FINAL = "final"  # the last weights

# a sweep directory
MULTIRUN = "multirun.yaml"  # the sweep's config, saved before any job starts
JOBS = "jobs.yaml"  # every job's overrides, saved before any job starts
SUMMARY_LOCK = ".summary.lock"  # serializes the summaries that jobs ending together write
SWEEP_LOCK = ".sweep.lock"  # held by the process that runs the sweep


def config_dir() -> Path:
    """conf/: beside the package in a checkout, inside it once installed (pyproject.toml ships it there)."""
    installed = Path(__file__).parents[1] / "conf"
    return installed if installed.is_dir() else Path(__file__).parents[2] / "conf"


def is_run_dir(path: Path) -> bool:
    """Whether `path` holds a run: its record, written once its launch was accepted (optqual/launch/record.py)."""
    return (path / HYDRA_DIR / "config.yaml").is_file()


def snapshot_label(unit: str, n: int) -> str:
    """A snapshot's name: `epoch_000005`, `update_000120`; its weights are SNAPSHOTS_DIR/<label>_model.pt."""
    return f"{unit}_{n:06d}"


def weights_file(name: str) -> str:
    """The file of a run's weights called `name`: final, initial, best, ema, ..."""
    return f"{name}_model.pt"
