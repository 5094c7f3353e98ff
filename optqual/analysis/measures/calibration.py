"""Calibration of a solution on the test set: expected calibration error, NLL, Brier score,
per-class accuracy, the confusion matrix, and their pictures.

Probabilities are the softmax of the logits in float64. ECE (Guo et al. 2017) sorts the
predictions' confidences (the top probability) into `bins` equal-width bins
((k-1)/B, k/B], so a confidence of exactly 1.0 falls in the last bin (torchmetrics 1.9
bins left-closed, [(k-1)/B, k/B), with 1.0 in a bin of its own after the last; the two
agree wherever no confidence lies on a bin edge, as tests/test_analysis_measures.py checks); ECE = sum over bins of (n_b / N) |acc_b - conf_b|. NLL
is the mean cross-entropy; the Brier score the mean over images of sum over classes of
(p_c - y_c)^2 (Brier's multi-class form, between 0 and 2).
"""

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from omegaconf import DictConfig

from optqual.analysis.measures import Measure, register
from optqual.analysis.solution import Solution
from optqual.engine.loop import EVAL_BATCH_SIZE
from optqual.errors import require
from optqual.files.figures import pyplot


@dataclass
class CalibrationSchema:
    _target_: str = "optqual.analysis.measures.calibration.measure"
    _partial_: bool = True
    bins: int = 15


def check(node: DictConfig) -> None:
    require(node.bins > 0, "analysis.calibration.bins", node.bins, "must be a positive number of bins")


def expected_calibration_error(confidence: torch.Tensor, correct: torch.Tensor, bins: int) -> tuple[float, list[dict]]:
    """ECE over equal-width bins ((k-1)/B, k/B], and each bin's count, accuracy and mean confidence."""
    index = ((confidence.double() * bins).ceil().long() - 1).clamp(0, bins - 1)
    table, ece = [], 0.0
    for k in range(bins):
        members = index == k
        count = int(members.sum())
        row = {"low": k / bins, "high": (k + 1) / bins, "count": count, "accuracy": None, "confidence": None}
        if count:
            row["accuracy"] = float(correct[members].double().mean())
            row["confidence"] = float(confidence[members].double().mean())
            ece += count / len(confidence) * abs(row["accuracy"] - row["confidence"])
        table.append(row)
    return ece, table


@torch.no_grad()
def test_logits(solution: Solution) -> tuple[torch.Tensor, torch.Tensor]:
    solution.model.eval()
    logits, labels = zip(*[(solution.model(images), labels) for images, labels in solution.data.eval_batches("test", EVAL_BATCH_SIZE)])
    return torch.cat(logits).double(), torch.cat(labels)


def measure(solution: Solution, bins: int) -> dict:
    logits, labels = test_logits(solution)
    probabilities = logits.softmax(dim=1)
    confidence, predicted = probabilities.max(dim=1)
    correct = predicted == labels
    ece, table = expected_calibration_error(confidence, correct, bins)
    classes = logits.shape[1]
    confusion = torch.zeros(classes, classes, dtype=torch.long)
    confusion.index_put_((labels.cpu(), predicted.cpu()), torch.ones(len(labels), dtype=torch.long), accumulate=True)
    per_class = (confusion.diag().double() / confusion.sum(dim=1).clamp_min(1)).tolist()
    return {
        "ece": ece,
        "nll": float(F.cross_entropy(logits, labels)),
        "brier": float((probabilities - F.one_hot(labels, classes).double()).square().sum(dim=1).mean()),
        "accuracy": float(correct.double().mean()),
        "mean_confidence": float(confidence.mean()),
        "test_images": len(labels),
        "per_class_accuracy": per_class,
        "confusion": confusion.tolist(),  # rows: true class, columns: predicted
        "bins": table,
    }


def figures(result: dict, solution: Solution) -> dict:
    """reliability.png (accuracy against confidence per bin) and confusion.png (row-normalized, the
    dataset's class names where it has them)."""
    plt = pyplot()

    reliability, axis = plt.subplots(figsize=(5.5, 5.5), layout="constrained")
    filled = [row for row in result["bins"] if row["count"]]
    width = 1 / len(result["bins"])
    axis.bar([row["low"] for row in filled], [row["accuracy"] for row in filled], width=width, align="edge",
             edgecolor="black", label="accuracy of the bin's images")
    axis.bar([row["low"] for row in filled], [row["confidence"] - row["accuracy"] for row in filled], width=width, align="edge",
             bottom=[row["accuracy"] for row in filled], color="tab:red", alpha=0.3, hatch="//", edgecolor="tab:red",
             label="up to their mean confidence\n(above the bar: over-confident)")
    axis.plot([0, 1], [0, 1], "k--", linewidth=1, label="perfect calibration")
    axis.set(xlabel=f"confidence (top softmax probability), {len(result['bins'])} equal bins", ylabel="accuracy",
             xlim=(0, 1), ylim=(0, 1), title=f"{solution.name}\nECE {result['ece']:.3f}, NLL {result['nll']:.3f}, "
                                              f"{result['test_images']} test images")
    axis.legend(loc="upper left", fontsize="small")

    confusion = torch.tensor(result["confusion"], dtype=torch.float64)
    classes = len(confusion)
    names = solution.data.class_names or [str(label) for label in range(classes)]
    normalized = confusion / confusion.sum(dim=1, keepdim=True).clamp_min(1)
    side = min(12.0, max(6.0, 0.55 * classes))
    matrix, axis = plt.subplots(figsize=(side + 1, side), layout="constrained")
    image = axis.imshow(normalized.numpy(), cmap="Blues", vmin=0, vmax=1)
    axis.set(xlabel="predicted class", ylabel="true class", title=f"{solution.name}: test confusion (each row sums to 1)")
    matrix.colorbar(image, ax=axis, shrink=0.8, label="share of the true class's test images")
    if classes <= 40:  # a name per row and column while they can be read
        slanted = max(map(len, names)) > 3  # names, not digits
        axis.set_xticks(range(classes), names, rotation=45 if slanted else 0, ha="right" if slanted else "center", fontsize=8)
        axis.set_yticks(range(classes), names, fontsize=8)
    if classes <= 20:
        for (i, j), value in zip(torch.cartesian_prod(torch.arange(classes), torch.arange(classes)).tolist(), normalized.flatten()):
            axis.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=7, color="white" if value > 0.5 else "black")
    return {"reliability.png": reliability, "confusion.png": matrix}


register(Measure(name="calibration", schema=CalibrationSchema, check=check, figures=figures))
