"""What a sweep found: a row per job, seeds grouped into mean and spread, and a plain verdict.

`write_summary(directory)` writes summary.csv, summary.md and curves.png into a sweep (or
single-run) directory. It reads only what the jobs wrote, so it works while a sweep is
still running (a partial summary) and after some jobs failed: they are listed with their
status, and the group statistics use the completed jobs only.
"""

import csv
import io
import math
import statistics
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from optqual.runs.curves import plot_curves
from optqual.runs.rundir import write_text
from optqual.runs.sweep import Job, override_values, read_jobs, varying_keys
from optqual.status import RunStatus

SEED = "seed"  # the override that repeats an experiment rather than changing it
RESULTS = ("train_loss", "train_acc", "val_loss", "val_acc", "test_loss", "test_acc")
BEST = ("best_epoch", "best_val_acc", "best_test_loss", "best_test_acc")  # of the best weights (optqual/early_stopping.py)
CSV_COLUMNS = ("job", "group", "status", "epochs", *RESULTS, *BEST, "wall_seconds", "overrides", "error")
# what a summary can rank groups by: (column title, in words)
RANKED_BY = {"test_acc": ("test acc %", "test accuracy"), "best_test_acc": ("best-weights test acc %", "test accuracy of the best weights")}
OTHER_STATS = {"val_acc": "val acc %", "train_loss": "final train loss"}


@dataclass
class Stats:
    n: int
    mean: float
    std: float  # sample standard deviation across seeds; nan for a single seed
    low: float
    high: float

    @classmethod
    def of(cls, values: list[float]) -> "Stats | None":
        if not values:
            return None
        std = statistics.stdev(values) if len(values) > 1 else math.nan
        return cls(len(values), statistics.fmean(values), std, min(values), max(values))


@dataclass
class Group:
    label: str  # the overrides its jobs share, seed aside
    jobs: list[Job]

    @property
    def completed(self) -> list[Job]:
        """The jobs with results (completed, or stopped early): the ones the statistics use."""
        return [job for job in self.jobs if job.status.has_results]

    def stats(self, key: str) -> Stats | None:
        return Stats.of([job.metrics[key] for job in self.completed if job.metrics.get(key) is not None])


@dataclass
class Summary:
    directory: Path
    jobs: list[Job]
    groups: list[Group]  # best mean of `metric` first
    metric: str = "test_acc"  # a key of RANKED_BY

    @property
    def finished(self) -> bool:
        return all(job.status.ended for job in self.jobs)


def group_label(job: Job, keys: list[str]) -> str:
    values = override_values(job.overrides)
    return ",".join(f"{key}={values.get(key, '(default)')}" for key in keys) or "all jobs"


def group_jobs(jobs: list[Job], metric: str = "test_acc") -> list[Group]:
    """Jobs that differ only in their seed form a group; groups are sorted best mean `metric` first."""
    keys = [key for key in varying_keys(jobs) if key != SEED]
    groups: dict[str, Group] = {}
    for job in jobs:
        label = group_label(job, keys)
        groups.setdefault(label, Group(label, [])).jobs.append(job)

    def rank(group: Group) -> float:
        test = group.stats(metric)
        return -test.mean if test else math.inf

    return sorted(groups.values(), key=rank)


def verdict(groups: list[Group], metric: str = "test_acc") -> str:
    """Whether the best group's lead over the second exceeds the seed-to-seed spread, in words."""
    if len(groups) < 2:
        return "One group (only the seed varies): nothing to compare."
    ranked = [(group, group.stats(metric)) for group in groups if group.stats(metric)]
    if len(ranked) < 2:
        return "Fewer than two groups have completed jobs: nothing to compare yet."
    (best, a), (second, b) = ranked[:2]
    lead = 100 * (a.mean - b.mean)
    head = f"**{best.label}** leads **{second.label}** by {lead:.2f} points of mean {RANKED_BY[metric][1]} (n={a.n} vs n={b.n})."
    if min(a.n, b.n) < 2:
        return f"{head} With a single seed in a group the seed-to-seed spread is unknown: run more seeds."
    spread = 100 * max(a.std, b.std)
    ratio = f"{lead / spread:.1f}x" if spread > 0 else "infinitely"
    detail = f"The seed-to-seed spread (std) is {100 * a.std:.2f} and {100 * b.std:.2f} points; the lead is {ratio} the larger"
    if lead <= spread:
        return f"{head} {detail}: within seed noise, not a real difference at this number of seeds."
    if a.low > b.high:
        return f"{head} {detail}, and every seed of {best.label} beats every seed of {second.label}: more than seed noise."
    return f"{head} {detail}, but their seeds overlap: suggestive, not conclusive; run more seeds."


def format_table(header: list[str], rows: list[list[str]]) -> str:
    """A Markdown table with padded columns, as readable in a terminal as rendered."""
    widths = [max(len(cell) for cell in column) for column in zip(header, *rows)]
    lines = [header, ["-" * width for width in widths], *rows]
    return "\n".join("| " + " | ".join(cell.ljust(width) for cell, width in zip(line, widths)) + " |" for line in lines)


def number(value: float | None, percent: bool = False) -> str:
    if value is None or math.isnan(value):
        return "-"
    return f"{100 * value:.2f}" if percent else f"{value:.4f}"


def groups_table(groups: list[Group], metric: str = "test_acc") -> str:
    columns = {metric: RANKED_BY[metric][0], **OTHER_STATS}
    header = ["group", "n"]
    for title in columns.values():
        header += [f"{title} mean ± std", "min", "max"]
    header.append("not completed")
    rows = []
    for group in groups:
        all_stats = {key: group.stats(key) for key in columns}
        row = [group.label, str(len(group.completed))]
        for key, stats in all_stats.items():
            percent = key.endswith("acc")
            if stats is None:
                row += ["-", "-", "-"]
            else:
                row += [f"{number(stats.mean, percent)} ± {number(stats.std, percent)}", number(stats.low, percent), number(stats.high, percent)]
        others = [str(job.status) for job in group.jobs if not job.status.has_results]
        row.append(", ".join(f"{others.count(s)} {s}" for s in sorted(set(others))) or "-")
        rows.append(row)
    return format_table(header, rows)


def jobs_table(jobs: list[Job]) -> str:
    rows = [
        [job.name, job.status, str(job.metrics.get("epochs", "-")), number(job.metrics.get("train_loss")),
         number(job.metrics.get("val_acc"), True), number(job.metrics.get("test_acc"), True),
         f"{job.metrics['wall_seconds']:.0f}" if "wall_seconds" in job.metrics else "-"]
        for job in jobs
    ]
    return format_table(["job", "status", "epochs", "train loss", "val acc %", "test acc %", "wall s"], rows)


def progress(jobs: list[Job]) -> str:
    statuses = [str(job.status) for job in jobs]
    counts = ", ".join(f"{statuses.count(s)} {s}" for s in dict.fromkeys(sorted(statuses)))
    partial = "" if all(job.status.ended for job in jobs) else " (partial: the sweep is not finished)"
    stopped = "; the stopped ones were killed: `python -m optqual resume` continues them" if RunStatus.STOPPED in statuses else ""
    return f"{len(jobs)} jobs: {counts}{partial}{stopped}"


def markdown(summary: Summary) -> str:
    return "\n\n".join([
        f"# Summary of {summary.directory.name}",
        f"{progress(summary.jobs)}. Written {datetime.now():%Y-%m-%d %H:%M:%S}.",
        f"## Groups, best mean {RANKED_BY[summary.metric][1]} first\n\nStatistics over the completed seeds of each group.",
        groups_table(summary.groups, summary.metric),
        verdict(summary.groups, summary.metric),
        "![train loss and val accuracy per group: mean over seeds, min-max band](curves.png)",
        "## Jobs",
        jobs_table(summary.jobs),
    ]) + "\n"


def terminal_text(summary: Summary) -> str:
    return "\n".join([f"{summary.directory}: {progress(summary.jobs)}", groups_table(summary.groups, summary.metric),
                      verdict(summary.groups, summary.metric)])


def summary_csv(groups: list[Group]) -> str:
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for group in groups:
        for job in group.jobs:
            row = {key: job.metrics.get(key) for key in CSV_COLUMNS}
            writer.writerow(row | {"job": job.name, "group": group.label, "status": job.status, "overrides": " ".join(job.overrides)})
    return text.getvalue()


def write_summary(directory: str | Path, metric: str = "test_acc") -> Summary:
    """Read a sweep or run directory and write summary.csv, summary.md and curves.png into it,
    groups ranked by `metric`: the test accuracy of the last weights, or of the best (`best_test_acc`)."""
    jobs = read_jobs(directory)
    summary = Summary(Path(directory), jobs, group_jobs(jobs, metric), metric)
    write_text(summary.directory / "summary.csv", summary_csv(summary.groups))
    plot_curves({group.label: group.jobs for group in summary.groups}, summary.directory / "curves.png")
    write_text(summary.directory / "summary.md", markdown(summary))
    return summary
