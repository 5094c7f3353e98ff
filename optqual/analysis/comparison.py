"""A sweep's analysis read side by side: how the groups' solutions differ, in tables, words and figures.

SWEEP_DIR/analysis/ gets comparison.csv (a row per run, every compared number),
comparison.md (each number's mean +- std, min-max per group; pair measures within and
between groups; a paragraph on the differences that exceed the seed-to-seed spread) and
its figures: weight_profiles.png, sharpness_vs_accuracy.png, interpolation.png, cka.png, and
spectra.png when the spectrum measure ran.
Groups are those of the sweep summary (every override but the seed).

A difference "exceeds the seed-to-seed spread" when every run of one group lies beyond
every run of the other. Two groups of n and m runs from one distribution separate that
way with probability 2 n! m! / (n + m)! (1 in 10 for 3 and 3, 1 in 3 for 2 and 2), and the
paragraph says how many of the compared numbers would separate so by chance alone.
Between two groups, the default pairs are runs of equal seed, which start from the same
initial weights; pairs within a group start from different ones. The paragraph says so,
since a shared start alone makes two solutions closer.
"""

import csv
import io
import itertools
import math
import statistics
from collections import defaultdict
from pathlib import Path

from optqual.analysis.measures.interpolation import LINES
from optqual.analysis.solution import Solution
from optqual.files.atomic import write_text
from optqual.files.figures import pyplot, write_figure
from optqual.tools.summary import format_table

# what is compared, from which measure (run: the run's own metrics.json), in words
PER_RUN = [
    ("run", "test_acc", "test accuracy"),
    ("run", "train_loss", "final train loss"),
    ("weights", "total_l2_norm", "weight norm"),
    ("weights", "relative_distance_from_init", "relative distance from the initial weights"),
    ("weights", "mean_spectral_norm", "mean spectral norm of the layers"),
    ("weights", "mean_stable_rank", "mean stable rank of the layers"),
    ("weights", "near_zero_share", "share of near-zero weights"),
    ("weights", "bn_gamma_mean", "mean batch-norm scale |gamma|"),
    ("activations", "embedding_effective_rank", "effective rank of the embedding"),
    ("activations", "mean_dead_share", "share of dead units"),
    ("sharpness", "top_eigenvalue", "top Hessian eigenvalue"),
    ("sharpness", "trace", "Hessian trace"),
    ("sharpness", "adaptive_top_eigenvalue", "top eigenvalue of diag(|w|) H diag(|w|) (scale-invariant)"),
    ("sharpness", "adaptive_trace", "trace of diag(|w|) H diag(|w|) (scale-invariant)"),
    ("sharpness", "loss_increase", "loss increase under a random perturbation"),
    ("sharpness", "preconditioned_top_eigenvalue", "top eigenvalue of P^-1 H (adaptive methods)"),
    ("sharpness", "threshold", "stability threshold of the optimizer's last update"),
    ("sharpness", "ratio", "regulated sharpness / its threshold"),
    ("spectrum", "negative_mass", "share of the Hessian's spectrum clearly below zero"),
    ("spectrum", "largest_node", "largest eigenvalue the density reached"),
    ("calibration", "ece", "expected calibration error"),
    ("calibration", "nll", "test NLL"),
    ("calibration", "brier", "Brier score"),
    ("calibration", "mean_confidence", "mean confidence"),
]
PAIRS = [
    ("interpolation", "barrier_train_loss", "loss barrier between them (train subset)"),
    ("interpolation", "barrier_test_loss", "loss barrier between them (test set)"),
    ("interpolation", "aligned_barrier_train_loss", "loss barrier with B's units aligned to A's (train subset)"),
    ("interpolation", "aligned_barrier_test_loss", "loss barrier with B's units aligned to A's (test set)"),
    ("interpolation", "repaired_barrier_train_loss", "loss barrier, aligned and REPAIRed (train subset)"),
    ("interpolation", "repaired_barrier_test_loss", "loss barrier, aligned and REPAIRed (test set)"),
    ("interpolation", "distance", "distance between their weights, relative to A's"),
    ("interpolation", "aligned_distance", "distance between their weights once aligned, relative to A's"),
    ("similarity", "mean_cka", "mean CKA over stages"),
    ("similarity", "disagreement", "share of test images they predict differently"),
]


def run_numbers(solution: Solution, results: dict) -> dict[str, tuple[str, float]]:
    """Column name -> (words, value) for one run; the perturbation gives one number per radius."""
    numbers = {}
    for measure, key, words in PER_RUN:
        source = solution.metrics if measure == "run" else results.get(measure) or {}
        value = source.get(key)
        if isinstance(value, dict):
            numbers.update({f"{measure}.{key}@{radius}": (f"{words} of radius {radius}", v) for radius, v in value.items()})
        elif value is not None:
            numbers[f"{measure}.{key}"] = (words, value)
    return numbers


def headline(results: dict) -> str:
    parts = []
    picks = (("sharpness", "top_eigenvalue", "top eigenvalue {:.4g}"), ("sharpness", "trace", "trace {:.4g}"),
             ("weights", "mean_stable_rank", "stable rank {:.3g}"), ("activations", "embedding_effective_rank", "embedding rank {:.3g}"),
             ("calibration", "ece", "ECE {:.4f}"))
    for measure, key, text in picks:
        if results.get(measure) and results[measure].get(key) is not None:
            parts.append(text.format(results[measure][key]))
    return ", ".join(parts) or "done"


def pair_text(name_a: str, name_b: str, results: dict) -> str:
    lines = [f"{name_a} vs {name_b}"]
    for measure, key, words in PAIRS:
        if (results.get(measure) or {}).get(key) is not None:
            lines.append(f"  {words}: {results[measure][key]:.4f}")
    if results.get("similarity"):
        lines.append("  CKA per stage: " + ", ".join(f"{stage} {value:.3f}" for stage, value in results["similarity"]["cka"].items()))
    return "\n".join(lines)


def spread(values: list[float]) -> str:
    """mean ± std [min, max]"""
    std = f" ± {statistics.stdev(values):.3g}" if len(values) > 1 else ""
    return f"{statistics.fmean(values):.4g}{std} [{min(values):.4g}, {max(values):.4g}]"


def chance_of_separation(n: int, m: int) -> float:
    """That n and m draws from one continuous distribution separate completely, one way or the other."""
    return 2 * math.factorial(n) * math.factorial(m) / math.factorial(n + m)


def separated(a: list[float], b: list[float]) -> int:
    """+1 when every value of a exceeds every value of b, -1 the other way, 0 when they overlap."""
    if len(a) < 2 or len(b) < 2:
        return 0
    return 1 if min(a) > max(b) else -1 if max(a) < min(b) else 0


def differences(by_group: dict[str, dict[str, list[float]]], words: dict[str, str]) -> list[str]:
    sentences = []
    for (g1, values1), (g2, values2) in itertools.combinations(by_group.items(), 2):
        for column in words:
            a, b = values1.get(column, []), values2.get(column, [])
            side = separated(a, b)
            if side:
                high, low = ((g1, a), (g2, b)) if side > 0 else ((g2, b), (g1, a))
                sentences.append(f"The {words[column]} is higher for **{high[0]}** ({spread(high[1])}) than for "
                                 f"**{low[0]}** ({spread(low[1])}): every run of one above every run of the other.")
    return sentences


SAME_SEED = ", same seed"


def pair_kind(group_a: str, group_b: str, same_seed: bool) -> str:
    """`within G` for two runs of group G, `between G1 / G2` (in name order) for runs of two groups, and
    `between G1 / G2, same seed` for two that started from the same initial weights."""
    if group_a == group_b:
        return f"within {group_a}"
    return f"between {' / '.join(sorted((group_a, group_b)))}" + (SAME_SEED if same_seed else "")


def pair_groups(pairs: dict, kinds: dict[tuple[str, str], str]) -> dict[str, dict[str, list[float]]]:
    """Pair measure values by kind of pair."""
    grouped: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for (a, b), results in pairs.items():
        kind = kinds[a, b]
        for measure, key, _ in PAIRS:
            if (results.get(measure) or {}).get(key) is not None:  # an aligned barrier needs analysis.interpolation.align
                grouped[kind][f"{measure}.{key}"].append(results[measure][key])
    return grouped


def pair_sentences(kinds: dict[str, dict[str, list[float]]]) -> list[str]:
    sentences = []
    within = {kind: values for kind, values in kinds.items() if kind.startswith("within")}
    between = {kind: values for kind, values in kinds.items() if kind.startswith("between") and not kind.endswith(SAME_SEED)}
    for measure, key, words in PAIRS:
        column = f"{measure}.{key}"
        inside = [v for values in within.values() for v in values.get(column, [])]
        for kind, values in between.items():
            across = values.get(column, [])
            side = separated(across, inside)
            if side:
                more = "higher" if side > 0 else "lower"
                sentences.append(f"The {words} is {more} for every pair {kind} ({spread(across)}) than for every pair within "
                                 f"a group ({spread(inside)}).")
    return sentences


def own_terms(solutions: list[Solution], groups: dict[str, str], by_group: dict[str, dict[str, list[float]]]) -> str:
    """Where the groups train with different optimizers: what their raw sharpness means, and the ratio that compares."""
    if len({s.config.optimizer._target_ for s in solutions}) < 2 or not any("sharpness.top_eigenvalue" in g for g in by_group.values()):
        return ""
    ratios = [f"**{group}** {spread(values['sharpness.ratio'])}" for group, values in by_group.items() if values.get("sharpness.ratio")]
    text = ("\n\nThe groups train with different optimizers, and each regulates its own sharpness (Cohen et al. 2021; 2022): "
            "SGD the top eigenvalue of H, against (2 + 2 momentum) / lr; Adam, AdamW and RMSprop the top eigenvalue of P^-1 H, "
            "P their diagonal preconditioner, against (2 + 2 beta1) / ((1 - beta1) lr) for Adam. Raw sharpness across them "
            "(top eigenvalue, trace, loss under perturbation) compares numbers each optimizer regulates on a different scale")
    if not ratios:
        text += "; the regulated sharpness of each run's last update needs its checkpoint.pt and `analysis.sharpness.regulated=true`."
    else:
        text += (". What compares is each run's regulated sharpness over its own threshold, at its last update: "
                 f"{'; '.join(ratios)} (about 1 is the edge of stability, where full-batch training hovers; minibatches, "
                 "batch norm's eval-mode statistics and a schedule's last lr move it).")
    if any("sharpness.adaptive_trace" in values for values in by_group.values()):
        text += (" Raw sharpness also follows the weights' scale, which weight decay sets and which batch norm makes irrelevant to "
                 "the function (Dinh et al. 2017): the adaptive rows, of diag(|w|) H diag(|w|), do not change under such a "
                 "rescaling, and compare the geometry of solutions whose norms differ.")
    return text


def connectivity(kinds: dict[str, dict[str, list[float]]]) -> str:
    """What alignment did to the barriers, per kind of pair, with their spread over the pairs."""
    rows = []
    for kind, values in sorted(kinds.items()):
        if values.get("interpolation.aligned_barrier_test_loss"):
            text = (f"{kind} {spread(values['interpolation.barrier_test_loss'])} naive, "
                    f"{spread(values['interpolation.aligned_barrier_test_loss'])} aligned")
            if values.get("interpolation.repaired_barrier_test_loss"):
                text += f", {spread(values['interpolation.repaired_barrier_test_loss'])} aligned + REPAIR"
            rows.append(text)
    if not rows:
        return ""
    return ("\n\nTwo networks from different initializations also differ by a permutation of their hidden units, which "
            "leaves their function alone and puts the straight line between them through high loss whatever the optimizers "
            "did (Entezari et al. 2021); aligned, the line measures the solutions themselves (Ainsworth et al. 2022; REPAIR, "
            "Jordan et al. 2022). Test-loss barriers over the pairs: " + "; ".join(rows) + ". Near 0 once aligned: one basin "
            "up to a permutation of the units; still high: not, at this width and training length.")


def perturbation_error(results: dict[str, dict]) -> str:
    """How precise the perturbation's means are: their largest standard error over the directions, relative to the mean."""
    relative = []
    for run in results.values():
        sharpness = run.get("sharpness") or {}
        for radius, stderr in (sharpness.get("loss_increase_stderr") or {}).items():
            if stderr is not None and math.isfinite(stderr) and sharpness["loss_increase"][radius] > 0:  # one direction: no error (null)
                relative.append(stderr / sharpness["loss_increase"][radius])
    if not relative:
        return ""
    return (f"\n\nEach loss increase under perturbation is a mean over random directions; its standard error is at most "
            f"{max(relative):.0%} of the mean (median {statistics.median(relative):.0%}) over these runs and radii "
            "(`loss_increase_stderr` in each run's results; `analysis.sharpness.directions` sets how many).")


def write(out: Path, solutions: list[Solution], groups: dict[str, str], results: dict[str, dict], pairs: dict) -> list[str]:
    """comparison.csv, comparison.md and the figures in `out`; the names written."""
    numbers = {s.name: run_numbers(s, results[s.name]) for s in solutions}
    words = {column: text for run in numbers.values() for column, (text, _) in run.items()}
    columns = list(words)
    by_group: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for s in solutions:
        for column, (_, value) in numbers[s.name].items():
            by_group[groups[s.name]][column].append(value)

    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(["run", "group", *columns])
    for s in solutions:
        writer.writerow([s.name, groups[s.name], *(numbers[s.name].get(c, (None, ""))[1] for c in columns)])
    write_text(out / "comparison.csv", text.getvalue())

    names = list(by_group)
    sizes = {g: len(next(iter(by_group[g].values()))) for g in names}
    table = format_table(["", *(f"{g} (n={sizes[g]})" for g in names)],
                         [[words[column], *(spread(by_group[g][column]) if by_group[g].get(column) else "-" for g in names)]
                          for column in columns])
    seeds = {s.name: s.config.seed for s in solutions}
    kind_of = {(a, b): pair_kind(groups[a], groups[b], seeds[a] == seeds[b]) for a, b in pairs}
    kinds = pair_groups(pairs, kind_of)
    pair_words = {f"{m}.{k}": text for m, k, text in PAIRS if any(f"{m}.{k}" in values for values in kinds.values())}
    pair_table = format_table(["", *(f"{kind} ({len(next(iter(values.values())))} pairs)" for kind, values in sorted(kinds.items()))],
                              [[text, *(spread(values[c]) if values.get(c) else "-" for _, values in sorted(kinds.items()))]
                               for c, text in pair_words.items()])
    found = differences(by_group, words) + pair_sentences(kinds)
    expected = sum(chance_of_separation(sizes[g1], sizes[g2]) for g1, g2 in itertools.combinations(names, 2)) * len(columns)
    paragraph = "\n".join(f"- {sentence}" for sentence in found) if found else "No number separates the groups beyond the seed-to-seed spread."
    if any(kind.endswith(SAME_SEED) for kind in kind_of.values()):
        paragraph += ("\n\nPairs marked *same seed* are runs of two groups that started from the same initial weights: a shared "
                      "start alone brings two solutions closer (lower barrier, higher CKA), so they are kept apart and compared "
                      "with nothing else (`pairs=all` adds them; the default pairs runs of different seeds, as within a group).")
    paragraph += connectivity(kinds)
    paragraph += own_terms(solutions, groups, by_group) + perturbation_error(results)
    paragraph += (f"\n\nOf the {len(columns)} numbers compared per pair of groups, about {expected:.1f} would separate completely "
                  f"by chance alone with these group sizes, so one separation is a lead to test with more seeds, not a finding.")
    figures = plot(out, solutions, groups, results, pairs, kind_of)
    write_text(out / "comparison.md", "\n\n".join([
        f"# How the solutions of {out.parent.name} differ",
        f"{len(solutions)} runs in {len(names)} groups; {len(pairs)} pairs compared. Each cell: mean ± std [min, max] "
        "over the group's runs (or pairs); comparison.csv has every run's numbers.",
        "## Per run\n\n" + table,
        "## Pairs\n\n" + pair_table,
        "## What differs\n\n" + paragraph,
        "\n\n".join(f"![{name}]({name})" for name in figures),
    ]) + "\n")
    return ["comparison.csv", "comparison.md", *figures]


def interpolation_figure(plt, curves: dict, kind_of: dict[tuple[str, str], str], colours: dict):
    """The loss along the line between the two runs of each pair, train subset and test set side by
    side, a row for each line measured (naive; B's units aligned to A's; aligned and REPAIRed): pairs
    within a group in the group's colour, solid; pairs of two groups dashed, a colour for each couple
    of groups, so that each line's legend entry says which runs it joins."""
    lines = [name for name in LINES if any(name in pair for pair in curves.values())]
    figure, axes = plt.subplots(len(lines), 2, figsize=(13, 4.2 * len(lines) + 0.8), layout="constrained", sharey=True, squeeze=False)
    kinds = sorted({kind_of[pair] for pair in curves})
    between = [kind for kind in kinds if kind.startswith("between")]
    styles = {kind: {"color": colours[kind.removeprefix("within ")], "linestyle": "-"} for kind in kinds if kind not in between}
    styles |= {kind: {"color": plt.get_cmap("Dark2").colors[i % 8], "linestyle": "--"} for i, kind in enumerate(between)}
    labelled = set()
    for row, line in zip(axes, lines):
        for (a, b), pair in curves.items():
            kind = kind_of[a, b]
            for axis, split in zip(row, ("train", "test")):
                axis.plot([p["alpha"] for p in pair[line]], [p[f"{split}_loss"] for p in pair[line]],
                          label=None if kind in labelled else kind, **styles[kind])
            labelled.add(kind)
        for axis, split in zip(row, ("train subset", "test set")):
            axis.set(xlabel="a: the weights (1 - a) A + a B", ylabel="loss", title=f"{LINES[line]}, {split}")
            axis.grid(alpha=0.3)
    figure.legend(*axes[0][0].get_legend_handles_labels(), loc="outside lower center", ncols=min(3, len(kinds)), fontsize="small",
                  title="pairs (a line per pair)")  # each pair's entry once: every panel draws it
    figure.suptitle("Loss along the straight line between two solutions, batch norm recomputed at each point")
    return figure


def pair_heatmaps(plt, names: list[str], panels: dict[str, dict], diagonal: float, scale: tuple[float, float], colours: str, label: str):
    """A heatmap of runs against runs per panel (three to a row), each cell its pair's value written out,
    blank where the pair was not compared, `diagonal` on the diagonal, on one colour scale for all panels."""
    low, high = scale
    columns = min(3, len(panels))
    rows = math.ceil(len(panels) / columns)
    side = max(3.2, 0.5 * len(names) + 1.5)
    figure, axes = plt.subplots(rows, columns, figsize=(side * columns + 2, side * rows + 1), layout="constrained", squeeze=False)
    short = [name if len(name) <= 24 else name[:23] + "…" for name in names]
    for axis, (title, values) in zip(axes.flat, panels.items()):
        matrix = [[diagonal if a == b else values.get((a, b), values.get((b, a), math.nan)) for b in names] for a in names]
        image = axis.imshow(matrix, vmin=low, vmax=high, cmap=colours)
        axis.set_title(title)
        axis.set_xticks(range(len(names)), short, rotation=45, ha="right", fontsize=8)
        axis.set_yticks(range(len(names)), short, fontsize=8)
        if len(names) <= 12:
            for i, row in enumerate(matrix):
                for j, value in enumerate(row):
                    if not math.isnan(value):
                        axis.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=7,
                                  color="black" if value > (low + high) / 2 else "white")
    for axis in list(axes.flat)[len(panels):]:
        axis.set_visible(False)
    figure.colorbar(image, ax=axes, shrink=0.6, label=label)
    return figure


def cka_figure(plt, names: list[str], similar: dict):
    """Linear CKA between runs, a heatmap per stage, the colour scale stretched over the values found
    (0.85 and 0.90 look alike on one from 0 to 1)."""
    stages = list(next(iter(similar.values())))
    low = math.floor(min(cka for pair in similar.values() for cka in pair.values()) * 20) / 20  # to the 0.05 below
    panels = {stage: {pair: values[stage] for pair, values in similar.items()} for stage in stages}
    figure = pair_heatmaps(plt, names, panels, 1.0, (low, 1.0), "viridis", f"linear CKA (scale from {low:.2f})")
    figure.suptitle("Linear CKA between runs, per stage (blank: pair not compared)")
    return figure


def barrier_figure(plt, names: list[str], pairs: dict):
    """The test-loss barrier between runs: naive, and after alignment (and REPAIR) where measured."""
    panels = {}
    for line, prefix in (("naive", ""), ("aligned", "aligned_"), ("repaired", "repaired_")):
        values = {pair: result[f"{prefix}barrier_test_loss"] for pair, result in pairs.items() if f"{prefix}barrier_test_loss" in result}
        if values:
            panels[LINES[line]] = values
    high = max(max(values.values()) for values in panels.values())
    figure = pair_heatmaps(plt, names, panels, 0.0, (min(0.0, *(min(v.values()) for v in panels.values())), high), "magma",
                           "loss barrier on the test set")
    figure.suptitle("Loss barrier between runs on the straight line between them (blank: pair not compared)")
    return figure


def spectra_figure(plt, spectra: dict[str, dict], groups: dict[str, str], colours: dict):
    """Each run's Hessian eigenvalue density in its group's colour, on a log scale."""
    figure, axis = plt.subplots(figsize=(8, 4.8), layout="constrained")
    for name, spectrum in spectra.items():
        axis.semilogy(spectrum["grid"], [max(value, 1e-12) for value in spectrum["density"]], color=colours[groups[name]], linewidth=1)
    for group in dict.fromkeys(groups[name] for name in spectra):
        members = [name for name in spectra if groups[name] == group]
        axis.plot([], [], color=colours[group], label=f"{group} (n={len(members)})")
    axis.axvline(0, color="black", linewidth=0.8)
    axis.set(xlabel="eigenvalue of the training loss's Hessian", ylabel="density (log scale)", ylim=(1e-8, None),
             title="Hessian eigenvalue density of each run (stochastic Lanczos quadrature)")
    axis.grid(alpha=0.3)
    axis.legend(fontsize="small")
    return figure


def plot(out: Path, solutions: list[Solution], groups: dict[str, str], results: dict, pairs: dict, kind_of: dict) -> list[str]:
    plt = pyplot()
    colours = dict(zip(dict.fromkeys(groups[s.name] for s in solutions), plt.get_cmap("tab10").colors))
    written = []

    def save(name: str, figure) -> None:
        write_figure(figure, out / name)
        written.append(name)

    with_weights = [s for s in solutions if results[s.name].get("weights")]
    if with_weights:
        figure, axes = plt.subplots(1, 2, figsize=(12, 4.5), layout="constrained")
        layers = [row["layer"] for row in results[with_weights[0].name]["weights"]["layers"]]
        for group, colour in colours.items():
            members = [results[s.name]["weights"]["layers"] for s in with_weights if groups[s.name] == group]
            if not members:
                continue
            for axis, key in zip(axes, ("l2_norm", "stable_rank")):
                values = [[layer[key] for layer in run] for run in members]
                mean = [statistics.fmean(column) for column in zip(*values)]
                axis.plot(range(len(layers)), mean, color=colour, marker="o", markersize=3, label=f"{group} (n={len(members)})")
                axis.fill_between(range(len(layers)), [min(c) for c in zip(*values)], [max(c) for c in zip(*values)], color=colour, alpha=0.2)
        for axis, (title, label) in zip(axes, (("L2 norm", "||W||_F"), ("stable rank", "||W||_F^2 / ||W||_2^2"))):
            axis.set_xticks(range(len(layers)), layers, rotation=90, fontsize=7)
            axis.set(ylabel=f"{title}: {label}", title=f"{title} per layer (mean over seeds, band: min-max)")
            axis.grid(alpha=0.3)
            axis.legend(fontsize="small")
        save("weight_profiles.png", figure)

    with_sharpness = [s for s in solutions if results[s.name].get("sharpness")]
    if with_sharpness:
        figure, axes = plt.subplots(1, 2, figsize=(11, 4.5), layout="constrained")
        for s in with_sharpness:
            for axis, key in zip(axes, ("top_eigenvalue", "trace")):
                axis.scatter(results[s.name]["sharpness"][key], s.metrics["test_acc"], color=colours[groups[s.name]], s=40)
        for group, colour in colours.items():
            axes[0].scatter([], [], color=colour, label=group)
        for axis, title in zip(axes, ("top Hessian eigenvalue", "Hessian trace")):
            axis.set(xscale="log", xlabel=f"{title} (log scale)", ylabel="test accuracy", title=f"{title} against test accuracy")
            axis.grid(alpha=0.3)
        axes[0].legend(fontsize="small")
        save("sharpness_vs_accuracy.png", figure)

    with_spectrum = [s for s in solutions if results[s.name].get("spectrum")]
    if with_spectrum:
        save("spectra.png", spectra_figure(plt, {s.name: results[s.name]["spectrum"] for s in with_spectrum}, groups, colours))

    interpolated = {key: value["interpolation"] for key, value in pairs.items() if value.get("interpolation")}
    if interpolated:
        save("interpolation.png", interpolation_figure(plt, {key: result["curves"] for key, result in interpolated.items()}, kind_of, colours))
        save("barriers.png", barrier_figure(plt, [s.name for s in solutions], interpolated))

    similar = {key: value["similarity"]["cka"] for key, value in pairs.items() if value.get("similarity")}
    if similar:
        save("cka.png", cka_figure(plt, [s.name for s in solutions], similar))
    return written
