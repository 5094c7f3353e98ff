"""What a sweep found: a row per job, seeds grouped into mean and spread, and a verdict.

`write_summary(directory)` writes summary.csv, summary.md and curves.png (with curves.csv, its numbers) into a sweep (or
single-run) directory. It reads only what the jobs wrote, so it works while a sweep is
still running (a partial summary) and after some jobs failed: they are listed with their
status, and the group statistics use the completed jobs only.

With `tune` (keys such as `optimizer.lr`), a group is every override but the seed and the
tuned keys, and its setting of the tuned keys is selected by mean validation accuracy over
seeds, never by test accuracy, as the optimizer benchmarks of the field do (DeepOBS,
AlgoPerf); the group's statistics are those of its selected setting, a selection at the
edge of the grid is said to be one, and sensitivity.png shows every setting tried.
The verdict compares the two best groups with Welch's t-test (optqual/tools/significance.py).
"""

import csv
import io
import math
import statistics
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from omegaconf import OmegaConf

from optqual.errors import ConfigError
from optqual.files.atomic import write_text
from optqual.files.layout import HISTORY, MULTIRUN
from optqual.runs.jobs import override_values
from optqual.runs.reader import Job, config_columns, read_sweep, read_yaml, varying_keys
from optqual.status import RunStatus
from optqual.tools.curves import Setting, plot_curves, plot_sensitivity
from optqual.tools.significance import compare

SEED = "seed"  # the override that repeats an experiment rather than changing it
RESULTS = ("train_loss", "train_acc", "val_loss", "val_acc", "test_loss", "test_acc")
BEST = ("best_epoch", "best_val_acc", "best_test_loss", "best_test_acc")  # of the best weights (optqual/components/early_stopping.py)
CSV_COLUMNS = ("job", "group", "setting", "selected", "status", "epochs", *RESULTS, *BEST, "wall_seconds", "overrides", "error")
# what a summary can rank groups by: (column title, in words)
RANKED_BY = {"test_acc": ("test acc %", "test accuracy"), "best_test_acc": ("best-weights test acc %", "test accuracy of the best weights")}
SELECTED_ON = {"test_acc": "val_acc", "best_test_acc": "best_val_acc"}  # tuning selects on the validation of the same weights
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
    label: str  # the overrides its jobs share, seed (and tuned keys) aside
    jobs: list[Job]
    settings: dict[str, list[Job]] = field(default_factory=dict)  # tuned: the jobs of each setting tried
    selected: str | None = None  # tuned: the setting with the best mean validation accuracy

    @property
    def completed(self) -> list[Job]:
        """The jobs with results (completed, or stopped early) that the statistics use: of the
        selected setting when the group is tuned."""
        jobs = self.settings.get(self.selected, []) if self.settings else self.jobs
        return [job for job in jobs if job.status.has_results]

    def values(self, key: str, jobs: list[Job] | None = None) -> list[float]:
        return [job.metrics[key] for job in (self.completed if jobs is None else jobs)
                if job.status.has_results and job.metrics.get(key) is not None]

    def stats(self, key: str) -> Stats | None:
        return Stats.of(self.values(key))

    def select(self, metric: str) -> None:
        """The setting with the best mean validation accuracy of the weights `metric` tests."""
        means = {setting: statistics.fmean(values) for setting, jobs in self.settings.items()
                 if (values := self.values(SELECTED_ON[metric], jobs))}
        self.selected = max(means, key=means.get) if means else None  # a tie: the first in directory order


@dataclass
class Summary:
    directory: Path
    jobs: list[Job]
    groups: list[Group]  # best mean of `metric` first
    metric: str = "test_acc"  # a key of RANKED_BY
    tune: list[str] = field(default_factory=list)  # keys tuned on validation within each group

    @property
    def finished(self) -> bool:
        return all(job.status.ended for job in self.jobs)


def group_label(job: Job, keys: list[str]) -> str:
    values = override_values(job.overrides)
    return ",".join(f"{key}={values.get(key, '(default)')}" for key in keys) or "all jobs"


def group_jobs(jobs: list[Job], metric: str = "test_acc", tune: list[str] = ()) -> list[Group]:
    """Jobs that differ only in their seed (and in the `tune` keys) form a group; a tuned group
    selects its setting on validation. Groups are sorted best mean `metric` first."""
    varying = varying_keys(jobs)
    for key in tune:
        if key not in varying:
            raise ConfigError(f"--tune {key}: it does not vary across the jobs (keys that do: {', '.join(varying) or 'none'})")
    keys = [key for key in varying if key != SEED and key not in tune]
    groups: dict[str, Group] = {}
    for job in jobs:
        group = groups.setdefault(group_label(job, keys), Group(group_label(job, keys), []))
        group.jobs.append(job)
        if tune:
            group.settings.setdefault(group_label(job, list(tune)), []).append(job)
    for group in groups.values():
        if tune:  # the settings in grid order (0.3, 1, 3, 10; not as the directories sort), then the selection
            group.settings = dict(sorted(group.settings.items(), key=lambda item: grid_order(item[1][0], tune)))
            group.select(metric)

    def rank(group: Group) -> float:
        test = group.stats(metric)
        return -test.mean if test else math.inf

    return sorted(groups.values(), key=rank)


def edge_warnings(groups: list[Group], tune: list[str]) -> list[str]:
    """A selected value that is the smallest or largest number tried: the best may lie beyond the grid."""
    warnings = []
    for group in groups:
        if group.selected is None:
            continue
        chosen = override_values(group.settings[group.selected][0].overrides)
        for key in tune:
            values = [override_values(jobs[0].overrides).get(key) for jobs in group.settings.values()]
            tried = {float(value) for value in values if is_number(value)}
            if len(tried) < 2 or not is_number(chosen.get(key)):
                continue
            value = float(chosen[key])
            side = "smallest" if value == min(tried) else "largest" if value == max(tried) else None
            if side:
                warnings.append(f"{group.label}: the selected {key}={chosen[key]} is the {side} value tried, so the tuning is "
                                f"incomplete: extend the grid {'down' if side == 'smallest' else 'up'}wards.")
    return warnings


def grid_order(job: Job, keys: list[str]) -> tuple:
    values = override_values(job.overrides)
    return tuple((0, float(values[key]), "") if is_number(values.get(key)) else (1, 0.0, str(values.get(key))) for key in keys)


def is_number(value: str | None) -> bool:
    try:
        return value is not None and math.isfinite(float(value))
    except ValueError:
        return False


def verdict(groups: list[Group], metric: str = "test_acc") -> str:
    """The best group against the second (each at its selected setting when tuned), with
    Welch's t-test over seeds, in words that respect the number of seeds."""
    if len(groups) < 2:
        return f"One group{'' if groups and groups[0].settings else ' (only the seed varies)'}: nothing to compare."
    ranked = [(group, group.values(metric)) for group in groups if group.values(metric)]
    if len(ranked) < 2:
        return "Fewer than two groups have completed jobs: nothing to compare yet."
    (best, a), (second, b) = ranked[:2]
    at = " at their selected settings" if best.settings else ""
    lead = 100 * (statistics.fmean(a) - statistics.fmean(b))
    head = f"**{best.label}** leads **{second.label}** by {lead:.2f} points of mean {RANKED_BY[metric][1]}{at} (n={len(a)} vs n={len(b)})."
    if min(len(a), len(b)) < 2:
        return f"{head} With a single seed in a group the seed-to-seed spread is unknown: run more seeds."
    difference = compare(a, b)
    if math.isnan(difference.p):
        return f"{head} Every seed of each group gives the same value: there is no spread to test the difference against."
    test = (f"Welch's t-test over seeds: the difference is {lead:.2f} points, 95% confidence interval "
            f"[{100 * difference.low:.2f}, {100 * difference.high:.2f}], p = {difference.p:.2g}.")
    n = min(len(a), len(b))
    if difference.resolved:
        caution = f" With {n} seeds per group it rests on few runs: a repeat with more seeds would confirm it." if n < 5 else ""
        return f"{head} {test} More than seed noise at the 5% level.{caution}"
    needed = (f"at the observed spread, about {difference.seeds_needed} seeds per group would resolve a difference this size "
              "(80% power, 5% level)" if difference.seeds_needed else "the difference is zero")
    return f"{head} {test} Not resolved with {n} seeds per group: {needed}."


def format_table(header: list[str], rows: list[list[str]]) -> str:
    """A Markdown table with padded columns, as readable in a terminal as rendered; a | inside a cell
    (|gamma|, diag(|w|)) escaped, or it would end the cell."""
    header, rows = [cell.replace("|", "\\|") for cell in header], [[cell.replace("|", "\\|") for cell in row] for row in rows]
    widths = [max(len(cell) for cell in column) for column in zip(header, *rows)]
    lines = [header, ["-" * width for width in widths], *rows]
    return "\n".join("| " + " | ".join(cell.ljust(width) for cell, width in zip(line, widths)) + " |" for line in lines)


def number(value: float | None, percent: bool = False) -> str:
    if value is None or math.isnan(value):
        return "-"
    return f"{100 * value:.2f}" if percent else f"{value:.4f}"


def not_completed(jobs: list[Job]) -> str:
    others = [str(job.status) for job in jobs if not job.status.has_results]
    return ", ".join(f"{others.count(s)} {s}" for s in sorted(set(others))) or "-"


def stats_cells(stats: Stats | None, percent: bool) -> list[str]:
    if stats is None:
        return ["-", "-", "-"]
    return [f"{number(stats.mean, percent)} ± {number(stats.std, percent)}", number(stats.low, percent), number(stats.high, percent)]


def groups_table(groups: list[Group], metric: str = "test_acc") -> str:
    """One row per group; for a tuned group, the statistics of its selected setting."""
    columns = {metric: RANKED_BY[metric][0], **OTHER_STATS}
    tuned = any(group.settings for group in groups)
    header = ["group", *(["selected (on validation)", "tried"] if tuned else []), "n"]
    for title in columns.values():
        header += [f"{title} mean ± std", "min", "max"]
    header.append("not completed")
    rows = []
    for group in groups:
        row = [group.label]
        if tuned:
            row += [group.selected or "-", "; ".join(group.settings)]
        row.append(str(len(group.completed)))
        for key in columns:
            row += stats_cells(group.stats(key), key.endswith("acc"))
        rows.append(row + [not_completed(group.jobs)])
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
    unreadable = [f"\n  {job.unreadable}" for job in jobs if job.unreadable is not None]
    if unreadable:
        unreadable.append("\n  left out of the statistics; `python -m optqual resume` runs them again (from their checkpoints)")
    return f"{len(jobs)} jobs: {counts}{partial}{stopped}{''.join(unreadable)}"


def tuning_text(summary: Summary) -> str:
    if not summary.tune:
        return ""
    selected_on = SELECTED_ON[summary.metric]
    lines = [f"Tuned: {', '.join(summary.tune)}, selected per group by the mean {selected_on} over seeds (never by test "
             f"accuracy); the group's statistics are its selected setting's. sensitivity.png shows every setting tried."]
    return "\n\n".join(lines + edge_warnings(summary.groups, summary.tune))


def history_warnings(jobs: list[Job]) -> list[str]:
    """A finished run whose history.csv holds fewer epochs than it trained: its curve would end early unsaid."""
    warnings = []
    for job in jobs:
        trained = job.metrics.get("epochs") if job.status.has_results else None
        if trained and len(job.history()) < trained:
            warnings.append(f"Warning: {job.path / HISTORY} holds {len(job.history())} of the {trained} epochs the run trained "
                            "(truncated?): its curve in curves.png ends early.")
    return warnings


def markdown(summary: Summary) -> str:
    figures = ["![train loss and val accuracy per group" + (" at its selected setting" if summary.tune else "")
               + ": mean over seeds, min-max band (numbers: curves.csv)](curves.png)"]
    if summary.tune:
        figures.insert(0, "![validation accuracy and final train loss against the tuned value: mean over seeds, "
                          "min-max band, the selected setting circled](sensitivity.png)")
    return "\n\n".join(part for part in [
        f"# Summary of {summary.directory.name}",
        f"{progress(summary.jobs)}. Written {datetime.now():%Y-%m-%d %H:%M:%S}.",
        f"## Groups, best mean {RANKED_BY[summary.metric][1]} first\n\nStatistics over the completed seeds of each group.",
        tuning_text(summary),
        groups_table(summary.groups, summary.metric),
        verdict(summary.groups, summary.metric),
        *history_warnings(summary.jobs),
        *figures,
        "## Jobs",
        jobs_table(summary.jobs),
    ] if part) + "\n"


def terminal_text(summary: Summary) -> str:
    return "\n".join(part for part in [f"{summary.directory}: {progress(summary.jobs)}", tuning_text(summary),
                                        groups_table(summary.groups, summary.metric), verdict(summary.groups, summary.metric),
                                        *history_warnings(summary.jobs)] if part)


def summary_csv(groups: list[Group]) -> str:
    """A row per job: its name, optimizer, seed and the other config keys that vary (as load_sweep's
    columns; `epochs` is the one the run trained), then its group, setting, status and results."""
    jobs = [job for group in groups for job in group.jobs]
    keys = dict(zip((job.name for job in jobs), config_columns(jobs)))
    config_keys = [key for key in dict.fromkeys(key for columns in keys.values() for key in columns) if key not in CSV_COLUMNS]
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=[CSV_COLUMNS[0], *config_keys, *CSV_COLUMNS[1:]], lineterminator="\n")
    writer.writeheader()
    for group in groups:
        setting_of = {job.name: setting for setting, jobs in group.settings.items() for job in jobs}
        for job in group.jobs:
            row = {key: job.metrics.get(key) for key in CSV_COLUMNS}
            setting = setting_of.get(job.name)
            writer.writerow(keys[job.name] | row | {"job": job.name, "group": group.label, "setting": setting,
                                                    "selected": None if setting is None else setting == group.selected,
                                                    "status": job.status, "overrides": " ".join(job.overrides)})
    return text.getvalue()


def sensitivity_lines(groups: list[Group], tune: list[str], selected_on: str) -> dict[str, list[Setting]]:
    """sensitivity.png's lines: one per group and value of the tuned keys after the first, each
    setting at its value of the first, in grid order."""
    lines: dict[str, list[Setting]] = {}
    for group in groups:
        for setting, jobs in group.settings.items():
            values = override_values(jobs[0].overrides)
            label = ",".join([group.label, *(f"{other}={values.get(other)}" for other in tune[1:])])
            lines.setdefault(label, []).append(Setting(float(values[tune[0]]), {column: group.values(column, jobs)
                                                                                for column in (selected_on, "train_loss")},
                                                       setting == group.selected))
    return lines


def curves(groups: list[Group]) -> dict[str, list[Job]]:
    """curves.png's curves: each group's runs, of its selected setting when tuned (a tuned group
    with no selection yet has no curve: no setting has results)."""
    return {f"{group.label}, selected {group.selected}" if group.settings else group.label:
            group.settings[group.selected] if group.settings else group.jobs
            for group in groups if group.selected or not group.settings}


def sweep_tune(directory: Path) -> list[str]:
    """The keys the sweep itself asks its summary to tune (`summary.tune` in its multirun.yaml)."""
    saved = directory / MULTIRUN
    return list(OmegaConf.select(read_yaml(saved), "summary.tune", default=None) or []) if saved.is_file() else []


def write_summary(directory: str | Path, metric: str = "test_acc", tune: list[str] | None = None) -> Summary:
    """Read a sweep or run directory and write summary.csv, summary.md and curves.png into it
    (and sensitivity.png when tuning), groups ranked by `metric`: the test accuracy of the last
    weights, or of the best (`best_test_acc`). `tune`: the keys to tune on validation (None:
    the sweep's own `summary.tune`)."""
    directory = Path(directory)
    jobs = read_sweep(directory)
    tune = sweep_tune(directory) if tune is None else tune
    summary = Summary(directory, jobs, group_jobs(jobs, metric, tune), metric, list(tune))
    write_text(summary.directory / "summary.csv", summary_csv(summary.groups))
    plot_curves(curves(summary.groups), summary.directory / "curves.png")
    if summary.tune:
        selected_on = SELECTED_ON[metric]
        plot_sensitivity(sensitivity_lines(summary.groups, summary.tune, selected_on), summary.tune[0], selected_on,
                         summary.directory / "sensitivity.png")
    write_text(summary.directory / "summary.md", markdown(summary))
    return summary
