"""The pruning report's pictures (optqual/sparsity/report.py), one PNG each per report:
channel liveness (rows layers, columns output channels; dead channels dark), per-layer
sparsity (structured: the share of dead filters, beside unstructured: the share of zero
weights), and per-layer bit-widths when a quantizer is on."""

from pathlib import Path

import numpy as np

from optqual.files.figures import pyplot, save_figure

DASHBOARD = "sparsity"  # the dashboards' section for the pictures


def liveness(report: dict, path: Path) -> None:
    rows = report["layers"]
    widest = max(row["out_channels"] for row in rows)
    grid = np.full((len(rows), widest), np.nan)  # beyond a layer's width: blank
    for index, row in enumerate(rows):
        grid[index, : row["out_channels"]] = 1.0
        grid[index, row["dead_channels"]] = 0.0
    plt = pyplot()
    figure, axis = plt.subplots(figsize=(max(6.0, widest / 8), 1.5 + 0.28 * len(rows)), layout="constrained")
    cmap = plt.get_cmap("viridis").with_extremes(bad="white")
    axis.imshow(np.ma.masked_invalid(grid), aspect="auto", cmap=cmap, vmin=0, vmax=1, interpolation="nearest")
    axis.set_yticks(range(len(rows)), [f"{row['layer']} ({row['dead_out']}/{row['out_channels']} dead)" for row in rows],
                    fontsize="small")
    axis.set_xlabel("output channel (dark: dead, an all-zero filter)")
    save_figure(figure, [], f"channel liveness, epoch {report['epoch']}: {report['dead_channels']} dead channels, "
                f"structured MAC ratio {report['mac_ratio_structured']:.3f}", path)


def layer_bars(report: dict, path: Path, columns: dict[str, list[float]], ylabel: str, title: str) -> None:
    rows = report["layers"]
    plt = pyplot()
    figure, axis = plt.subplots(figsize=(max(6.0, 0.45 * len(rows)), 4.5), layout="constrained")
    width = 0.8 / len(columns)
    for index, (label, values) in enumerate(columns.items()):
        axis.bar(np.arange(len(rows)) + (index - (len(columns) - 1) / 2) * width, values, width, label=label)
    axis.set_xticks(range(len(rows)), [row["layer"] for row in rows], rotation=60, ha="right", fontsize="small")
    axis.set_ylabel(ylabel)
    save_figure(figure, [axis], title, path)


def draw(report: dict, directory: Path, quantized: bool) -> dict[str, Path]:
    """Write the report's pictures into `directory`; their dashboard names and paths."""
    epoch, rows = report["epoch"], report["layers"]
    drawn = {f"{DASHBOARD}/liveness": directory / f"liveness_e{epoch:04d}.png",
             f"{DASHBOARD}/layer_sparsity": directory / f"layer_sparsity_e{epoch:04d}.png"}
    liveness(report, drawn[f"{DASHBOARD}/liveness"])
    layer_bars(report, drawn[f"{DASHBOARD}/layer_sparsity"], {
        "structured (dead filters)": [row["dead_out"] / row["out_channels"] for row in rows],
        "unstructured (zero weights)": [row["zero_weights"] / row["weights"] for row in rows],
    }, "share of the layer", f"per-layer sparsity, epoch {epoch}: unstructured {report['unstructured_sparsity']:.3f}", )
    if quantized:
        drawn[f"{DASHBOARD}/bits"] = directory / f"bits_e{epoch:04d}.png"
        layer_bars(report, drawn[f"{DASHBOARD}/bits"], {"weight bits": [row["bits"] for row in rows]}, "bits",
                   f"per-layer bit-width, epoch {epoch}: mean {report['mean_bits']:.2f} bits per weight")
    return drawn
