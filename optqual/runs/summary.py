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
from optqual.runs.sweep import FINISHED, Job, override_values, read_jobs, varying_keys

SEED = "seed"  # the override that repeats an experiment rather than changing it
RESULTS = ("train_loss", "train_acc", "val_loss", "val_acc", "test_loss", "test_acc")
CSV_COLUMNS = ("job", "group", "status", "epochs", *RESULTS, "wall_seconds", "overrides", "error")
GROUP_STATS = {"test_acc": "test acc %", "val_acc": "val acc %", "train_loss": "final train loss"}


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
        return [job for job in self.jobs if job.status == "completed"]

    def stats(self, key: str) -> Stats | None:
        return Stats.of([job.metrics[key] for job in self.completed if job.metrics.get(key) is not None])


@dataclass
class Summary:
    directory: Path
    jobs: list[Job]
    groups: list[Group]  # best mean test accuracy first

    @property
    def finished(self) -> bool:
        return all(job.status in FINISHED for job in self.jobs)


def group_label(job: Job, keys: list[str]) -> str:
    values = override_values(job.overrides)
    return ",".join(f"{key}={values.get(key, '(default)')}" for key in keys) or "all jobs"


def group_jobs(jobs: list[Job]) -> list[Group]:
    """Jobs that differ only in their seed form a group; groups are sorted best first."""
    keys = [key for key in varying_keys(jobs) if key != SEED]
    groups: dict[str, Group] = {}
    for job in jobs:
        label = group_label(job, keys)
        groups.setdefault(label, Group(label, [])).jobs.append(job)

    def rank(group: Group) -> float:
        test = group.stats("test_acc")
        return -test.mean if test else math.inf

    return sorted(groups.values(), key=rank)


def verdict(groups: list[Group]) -> str:
    """Whether the best group's lead over the second exceeds the seed-to-seed spread, in words."""
    if len(groups) < 2:
        return "One group (only the seed varies): nothing to compare."
    ranked = [(group, group.stats("test_acc")) for group in groups if group.stats("test_acc")]
    if len(ranked) < 2:
        return "Fewer than two groups have completed jobs: nothing to compare yet."
    (best, a), (second, b) = ranked[:2]
    lead = 100 * (a.mean - b.mean)
    head = f"**{best.label}** leads **{second.label}** by {lead:.2f} points of mean test accuracy (n={a.n} vs n={b.n})."
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


def groups_table(groups: list[Group]) -> str:
    header = ["group", "n"]
    for title in GROUP_STATS.values():
        header += [f"{title} mean ± std", "min", "max"]
    header.append("not completed")
    rows = []
    for group in groups:
        all_stats = {key: group.stats(key) for key in GROUP_STATS}
        row = [group.label, str(len(group.completed))]
        for key, stats in all_stats.items():
            percent = key.endswith("acc")
            if stats is None:
                row += ["-", "-", "-"]
            else:
                row += [f"{number(stats.mean, percent)} ± {number(stats.std, percent)}", number(stats.low, percent), number(stats.high, percent)]
        others = [job.status for job in group.jobs if job.status != "completed"]
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
    statuses = [job.status for job in jobs]
    counts = ", ".join(f"{statuses.count(s)} {s}" for s in dict.fromkeys(sorted(statuses)))
    partial = "" if all(s in FINISHED for s in statuses) else " (partial: the sweep is not finished)"
    return f"{len(jobs)} jobs: {counts}{partial}"


def markdown(summary: Summary) -> str:
    return "\n\n".join([
        f"# Summary of {summary.directory.name}",
        f"{progress(summary.jobs)}. Written {datetime.now():%Y-%m-%d %H:%M:%S}.",
        "## Groups, best mean test accuracy first\n\nStatistics over the completed seeds of each group.",
        groups_table(summary.groups),
        verdict(summary.groups),
        "![train loss and val accuracy per group: mean over seeds, min-max band](curves.png)",
        "## Jobs",
        jobs_table(summary.jobs),
    ]) + "\n"


def terminal_text(summary: Summary) -> str:
    return "\n".join([f"{summary.directory}: {progress(summary.jobs)}", groups_table(summary.groups), verdict(summary.groups)])


def summary_csv(groups: list[Group]) -> str:
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for group in groups:
        for job in group.jobs:
            row = {key: job.metrics.get(key) for key in CSV_COLUMNS}
            writer.writerow(row | {"job": job.name, "group": group.label, "status": job.status, "overrides": " ".join(job.overrides)})
    return text.getvalue()


def write_summary(directory: str | Path) -> Summary:
    """Read a sweep or run directory and write summary.csv, summary.md and curves.png into it."""
    jobs = read_jobs(directory)
    summary = Summary(Path(directory), jobs, group_jobs(jobs))
    write_text(summary.directory / "summary.csv", summary_csv(summary.groups))
    plot_curves({group.label: group.jobs for group in summary.groups}, summary.directory / "curves.png")
    write_text(summary.directory / "summary.md", markdown(summary))
    return summary
