"""The per-run measures over training: each scalar at every snapshot (`analyze --snapshots`),
per run and per sweep group, in a table and a figure.

A run's RUN_DIR/analysis/trajectories.csv holds a row per snapshot (its label, epoch and
update, then every scalar below that its measures gave); trajectories.png draws them against
the update, one panel per scalar, and, when the run tracked its sharpness during training
(`track.sharpness.every`), a panel of that sharpness over its optimizer's threshold. A sweep's
SWEEP_DIR/analysis/trajectories.csv has a row per run and snapshot with its group, and its
trajectories.png each group's mean over seeds with the min-max band, at each snapshot the
group's runs share.
"""

import statistics
from pathlib import Path

import pandas as pd

from optqual.files.atomic import write_csv
from optqual.files.figures import pyplot, write_figure
from optqual.files.layout import SHARPNESS

SCALARS = [  # (measure, key, words)
    ("sharpness", "top_eigenvalue", "top Hessian eigenvalue"),
    ("sharpness", "trace", "Hessian trace"),
    ("sharpness", "ratio", "regulated sharpness / its threshold"),
    ("weights", "total_l2_norm", "weight norm ||w||"),
    ("weights", "relative_distance_from_init", "distance from init ||w - w0|| / ||w0||"),
    ("activations", "embedding_effective_rank", "effective rank of the embedding"),
    ("calibration", "ece", "expected calibration error"),
    ("calibration", "accuracy", "test accuracy"),
    ("spectrum", "negative_mass", "Hessian mass clearly below zero"),
]
TRACKED = "tracked regulated sharpness / threshold"  # the panel from sharpness.csv


def row(snapshot: dict, results: dict) -> dict:
    """A snapshot's label, epoch and update, and each scalar its results hold."""
    values = {f"{measure}.{key}": (results.get(measure) or {}).get(key) for measure, key, _ in SCALARS}
    return {"label": snapshot["label"], "epoch": snapshot["epoch"], "update": snapshot["update"],
            **{key: value for key, value in values.items() if value is not None}}


def panels(columns) -> list[tuple[str, str]]:
    return [(f"{measure}.{key}", words) for measure, key, words in SCALARS if f"{measure}.{key}" in columns]


def grid(plt, count: int, title: str):
    columns = min(3, count)
    rows = -(-count // columns)
    figure, axes = plt.subplots(rows, columns, figsize=(4.6 * columns, 3.4 * rows), layout="constrained", squeeze=False)
    for axis in axes.flat[count:]:
        axis.set_visible(False)
    figure.suptitle(title)
    return figure, list(axes.flat[:count])


def write_run(run_dir: Path, out: Path, rows: list[dict]) -> list[str]:
    """trajectories.csv and trajectories.png of one run; the names written."""
    out.mkdir(parents=True, exist_ok=True)
    write_csv(out / "trajectories.csv", rows)
    table = pd.DataFrame(rows)
    shown = panels(table.columns)
    tracked = pd.read_csv(run_dir / SHARPNESS) if (run_dir / SHARPNESS).is_file() else None
    tracked = tracked if tracked is not None and tracked["ratio"].notna().any() else None
    plt = pyplot()
    figure, axes = grid(plt, len(shown) + (tracked is not None), f"{run_dir.name}: the solution over training, at each snapshot")
    for axis, (column, words) in zip(axes, shown):
        axis.plot(table["update"], table[column], marker="o")
        axis.set(xlabel="optimizer update", ylabel=words, xscale="log" if table["update"].min() > 0 else "linear", title=words)
    if tracked is not None:
        axis = axes[-1]
        axis.plot(tracked["update"], tracked["ratio"], marker=".", label=f"{tracked['regulated_by'].dropna().iloc[-1]} sharpness / threshold")
        axis.axhline(1, color="black", linestyle="--", label="the edge of stability")
        axis.set(xlabel="optimizer update", ylabel="ratio", title=TRACKED)
        axis.legend(fontsize="small")
    for axis in axes:
        axis.grid(alpha=0.3)
    write_figure(figure, out / "trajectories.png")
    return ["trajectories.csv", "trajectories.png"]


def write_sweep(out: Path, runs: dict[str, list[dict]], groups: dict[str, str]) -> list[str]:
    """The sweep's trajectories.csv (a row per run and snapshot) and trajectories.png (per group: mean, min-max)."""
    rows = [{"run": name, "group": groups[name], **snapshot} for name, snapshots in runs.items() for snapshot in snapshots]
    out.mkdir(parents=True, exist_ok=True)
    write_csv(out / "trajectories.csv", rows)
    table = pd.DataFrame(rows)
    shown = panels(table.columns)
    plt = pyplot()
    colours = dict(zip(dict.fromkeys(table["group"]), plt.get_cmap("tab10").colors))
    figure, axes = grid(plt, len(shown), "Each group's solution over training: mean over seeds, band min-max")
    for axis, (column, words) in zip(axes, shown):
        for group, members in table.groupby("group", sort=False):
            shared = members.groupby("label").filter(lambda at: len(at) == members['run'].nunique())  # snapshots every seed took
            if shared.empty:
                continue
            at = shared.groupby("label").agg(update=("update", "first"), mean=(column, statistics.fmean), low=(column, "min"),
                                             high=(column, "max")).sort_values("update")
            axis.plot(at["update"], at["mean"], marker="o", color=colours[group], label=f"{group} (n={members['run'].nunique()})")
            axis.fill_between(at["update"], at["low"], at["high"], color=colours[group], alpha=0.2)
        axis.set(xlabel="optimizer update", ylabel=words, title=words, xscale="log" if table["update"].min() > 0 else "linear")
        axis.grid(alpha=0.3)
    axes[0].legend(fontsize="small")
    write_figure(figure, out / "trajectories.png")
    return ["trajectories.csv", "trajectories.png"]
