"""curves.png: train loss and validation accuracy per group, mean over seeds with a min-max band,
and curves.csv, the numbers it draws; sensitivity.png: validation accuracy and final train loss
against a tuned value."""

import csv
import io
import math
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from optqual.files.atomic import write_text
from optqual.files.figures import pyplot, save_figure
from optqual.runs.reader import Job

PANELS = (("train_loss", "train loss (log scale)", "log"), ("val_acc", "validation accuracy", "linear"))


def band(histories: list[list[dict]], column: str) -> list[tuple[float, int, float, float, float]]:
    """(epoch, n, mean, min, max) over runs of `column` at each epoch where some run has a finite
    value (diverged runs drop out of the band where their values stop being finite)."""
    by_epoch: dict[float, list[float]] = defaultdict(list)
    for history in histories:
        for record in history:
            value = record.get(column)
            if value is not None and math.isfinite(value):
                by_epoch[record["epoch"]].append(value)
    return [(epoch, len(values), sum(values) / len(values), min(values), max(values))
            for epoch, values in sorted(by_epoch.items())]


CURVES_COLUMNS = ("curve", "runs", "column", "epoch", "n", "mean", "min", "max")


def plot_curves(curves: dict[str, list[Job]], path: Path) -> None:
    """One colour per curve, drawn from exactly the runs given for it (for a tuned group, those of
    its selected setting): the line is their mean, the band their min-max. The numbers drawn go to
    curves.csv beside the PNG, so a reader can check or redraw them."""
    from matplotlib import ticker

    plt = pyplot()
    figure, axes = plt.subplots(1, len(PANELS), figsize=(12, 4.5), layout="constrained", sharex=True)
    colours = plt.get_cmap("tab10").colors
    table = io.StringIO()
    writer = csv.writer(table, lineterminator="\n")
    writer.writerow(CURVES_COLUMNS)
    for index, (label, jobs) in enumerate(curves.items()):
        drawn = [(job, history) for job in jobs if (history := job.history())]
        if not drawn:
            continue
        colour = colours[index % len(colours)]
        names = ";".join(job.name for job, _ in drawn)
        for axis, (column, _, _) in zip(axes, PANELS):
            points = band([history for _, history in drawn], column)
            writer.writerows([label, names, column, *point] for point in points)
            epochs, _, mean, low, high = zip(*points) if points else ([],) * 5
            axis.plot(epochs, mean, color=colour, marker="o" if len(epochs) < 3 else None, label=f"{label} (n={len(drawn)})")
            axis.fill_between(epochs, low, high, color=colour, alpha=0.2, linewidth=0)
    for axis, (_, title, scale) in zip(axes, PANELS):
        axis.set(xlabel="epoch", ylabel=title, yscale=scale)
        axis.xaxis.set_major_locator(ticker.MaxNLocator(integer=True))
        if scale == "log":  # plain numbers (0.3, 2), not 3x10^-1
            for set_formatter in (axis.yaxis.set_major_formatter, axis.yaxis.set_minor_formatter):
                set_formatter(ticker.LogFormatter(labelOnlyBase=False, minor_thresholds=(2, 0.5)))
    write_text(path.with_suffix(".csv"), table.getvalue())
    save_figure(figure, axes, f"{path.parent.name}: mean over seeds, band = min-max over seeds", path)


@dataclass
class Setting:
    """A setting tried in a tuned sweep, as sensitivity.png shows it."""

    x: float  # its value of the first tuned key
    values: dict[str, list[float]]  # column: the value of each of its jobs with results
    selected: bool  # selected on validation


def plot_sensitivity(lines: dict[str, list[Setting]], key: str, selected_on: str, path: Path) -> None:
    """Validation accuracy (`selected_on`) and final train loss against the first tuned `key`, one
    line per group (and per value of the other tuned keys; settings in grid order), mean over seeds
    with a min-max band, the selected setting circled. A log x axis when every value is positive."""
    from matplotlib import ticker

    plt = pyplot()
    figure, axes = plt.subplots(1, 2, figsize=(12, 4.5), layout="constrained", sharex=True)
    colours = plt.get_cmap("tab10").colors
    all_x = [setting.x for settings in lines.values() for setting in settings]
    for index, (label, settings) in enumerate(lines.items()):
        colour = colours[index % len(colours)]
        for axis, column in zip(axes, (selected_on, "train_loss")):
            curve = []
            for setting in settings:
                ys = [y for y in setting.values[column] if math.isfinite(y)]
                if ys:
                    curve.append((setting.x, sum(ys) / len(ys), min(ys), max(ys), setting.selected))
            if not curve:
                continue
            xs, mean, low, high, selected = zip(*curve)
            axis.plot(xs, mean, color=colour, marker="o", label=label)
            axis.fill_between(xs, low, high, color=colour, alpha=0.2, linewidth=0)
            for x, y, chosen in zip(xs, mean, selected):
                if chosen:
                    axis.plot([x], [y], marker="o", markersize=14, markerfacecolor="none", markeredgecolor=colour, markeredgewidth=2)
    for axis, title in zip(axes, (f"{selected_on} (selects the setting)", "final train loss")):
        axis.set(xlabel=key, ylabel=title, xscale="log" if all_x and min(all_x) > 0 else "linear")
        if len(set(all_x)) <= 12:  # a grid: a tick at every value tried, written as given (0.3, not 3x10^-1)
            axis.set_xticks(sorted(set(all_x)), [f"{x:g}" for x in sorted(set(all_x))])
            axis.xaxis.set_minor_formatter(ticker.NullFormatter())
    save_figure(figure, axes, f"{path.parent.name}: mean over seeds, band = min-max over seeds, circle = selected on validation", path)
