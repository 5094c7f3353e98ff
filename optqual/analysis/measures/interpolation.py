"""Linear interpolation between two solutions: loss and accuracy along (1 - a) theta_A + a theta_B,
batch-norm statistics recomputed at every point, and the barrier; naive, after aligning B's
hidden units to A's, and aligned with REPAIR.

At each of `points` evenly spaced a in [0, 1] every parameter is interpolated (torch.lerp:
the endpoints are the two solutions exactly). Batch-norm running statistics are then
recomputed on the train subset (torch.optim.swa_utils.update_bn: a cumulative average
over its batches, in train mode). Without that step the interpolated weights run with
statistics of neither network, and the curve shows mostly that mismatch (Jordan et al.
2023, REPAIR). Loss and accuracy are taken in eval mode on the train subset (A's
training images, unaugmented) and on the test set. The barrier is the maximum over a of
the loss minus the mean of the two endpoints' losses (Frankle et al. 2020), on each.

Two networks trained from different initializations differ by a permutation of their hidden
units, which leaves the function alone and puts the straight line between them through
high loss whatever the optimizers did (Entezari et al. 2021). `align` permutes B's units to
A's first (optqual/analysis/alignment.py: `activations`, matching their correlations on the train
subset, the default, or `weights`, Ainsworth et al.'s weight matching, which needs no data: on the
example sweep's ResNet-8 runs it raised the barriers of AdamW's pairs, whose weights are still
mostly their random initialization, where activation matching lowered every kind by 40-70%); the
aligned curve is that line, and with
`repair` also the line with every hidden channel's statistics corrected to the interpolation
of the endpoints' (optqual/analysis/repair.py). `distance` and `aligned_distance` are
||theta_B - theta_A|| / ||theta_A|| over the trained parameters, before and after the alignment.
"""

import copy
from dataclasses import dataclass

import torch
from omegaconf import DictConfig
from torch import nn
from torch.optim.swa_utils import update_bn

from optqual.analysis.alignment import Alignment, NotAlignable, activation_matching, weight_matching
from optqual.analysis.measures import Measure, register
from optqual.analysis.repair import channel_statistics, correction_points, interpolate, repaired
from optqual.analysis.solution import Solution, check_comparable
from optqual.engine.loop import EVAL_BATCH_SIZE, evaluate
from optqual.errors import ConfigError, require
from optqual.files.figures import pyplot
from optqual.system.progress import progress

ALIGN = ("weights", "activations", "none")
LINES = {"naive": "naive", "aligned": "aligned", "repaired": "aligned + REPAIR"}


@dataclass
class InterpolationSchema:
    _target_: str = "optqual.analysis.measures.interpolation.compare"
    _partial_: bool = True
    points: int = 11
    train_images: int = 2048
    seed: int = 0
    chunk: int = 256
    align: str = "activations"
    repair: bool = True


def check(node: DictConfig) -> None:
    require(node.points >= 2, "analysis.interpolation.points", node.points, "must be at least 2 (the two endpoints)")
    for name in ("train_images", "chunk"):
        require(node[name] > 0, f"analysis.interpolation.{name}", node[name], "must be positive")
    require(node.align in ALIGN, "analysis.interpolation.align", node.align, f"must be one of {', '.join(ALIGN)}")


def fits(node: DictConfig, solution: Solution) -> None:
    """Before any work: a model whose units alignment cannot follow is refused in one line."""
    if node.align != "none":
        try:
            Alignment(solution.model, solution.probe(2)[0])
        except NotAlignable as err:
            raise ConfigError(f"analysis.interpolation.align={node.align}: {err} (align=none interpolates without aligning)") from None


def distance(a: nn.Module, b: nn.Module) -> float:
    theta_a = torch.cat([p.detach().reshape(-1).double() for p in a.parameters()])
    theta_b = torch.cat([p.detach().reshape(-1).double() for p in b.parameters()])
    return float((theta_b - theta_a).norm() / theta_a.norm())


def recomputed(model: nn.Module, images: list[torch.Tensor]) -> nn.Module:
    """A copy with batch norm's statistics recomputed on `images`: an endpoint as every line's points are evaluated."""
    model = copy.deepcopy(model)
    update_bn(images, model)
    return model.eval()


def line(a: Solution, model_b: nn.Module, points: int, chunks, goal: tuple | None, bar) -> list[dict]:
    """Loss and accuracy at `points` evenly spaced points from A to `model_b`; REPAIRed to `goal` (A's and B's statistics) when given."""
    model = copy.deepcopy(a.model)
    images = [x for x, _ in chunks]
    ends = [(pa.detach(), pb.detach()) for pa, pb in zip(a.model.parameters(), model_b.parameters())]
    curve = []
    for alpha in torch.linspace(0, 1, points).tolist():
        with torch.no_grad():
            for p, (pa, pb) in zip(model.parameters(), ends):
                p.copy_(torch.lerp(pa, pb, alpha))
        if goal is None:
            update_bn(images, model)
            evaluated = model.eval()
        else:  # the copy REPAIR corrects recomputes every batch-norm statistic, the network's own too
            evaluated = repaired(model, interpolate(*goal, alpha), images)
        train = evaluate(evaluated, iter(chunks))
        test = evaluate(evaluated, a.data.eval_batches("test", EVAL_BATCH_SIZE))
        curve.append({"alpha": alpha, "train_loss": train["loss"], "train_acc": train["acc"], "test_loss": test["loss"], "test_acc": test["acc"]})
        bar.update()
    return curve


def barriers(curve: list[dict]) -> dict:
    return {f"barrier_{split}_loss": max(point[f"{split}_loss"] for point in curve) - (curve[0][f"{split}_loss"] + curve[-1][f"{split}_loss"]) / 2
            for split in ("train", "test")}


def compare(a: Solution, b: Solution, points: int, train_images: int, seed: int, chunk: int, align: str, repair: bool) -> dict:
    check_comparable(a, b)
    chunks = a.train_subset(train_images, seed, chunk)
    images = [x for x, _ in chunks]
    alignment = Alignment(a.model, images[0][:2]) if align != "none" else None
    lines = ["naive"] + (["aligned"] + (["repaired"] if repair else []) if align != "none" else [])
    result = {"align": align, "repair": repair and align != "none", "distance": distance(a.model, b.model), "curves": {}}
    with progress(points * len(lines), f"interpolation {a.name} -> {b.name}: {', '.join(LINES[n] for n in lines)}", "point") as bar:
        result["curves"]["naive"] = line(a, b.model, points, chunks, None, bar)
        if align != "none":
            if align == "weights":
                permutations, objectives = weight_matching(alignment, a.model.state_dict(), b.model.state_dict(), seed)
                result["matching_rounds"] = len(objectives) - 1
            else:
                permutations = activation_matching(alignment, a.model, b.model, images)
            aligned = copy.deepcopy(b.model)
            aligned.load_state_dict(alignment.apply(b.model.state_dict(), permutations))
            result["aligned_distance"] = distance(a.model, aligned)
            result["curves"]["aligned"] = line(a, aligned, points, chunks, None, bar)
            if repair:
                where = correction_points(alignment)
                goal = tuple(channel_statistics(recomputed(end, images), where, images) for end in (a.model, aligned))
                result["curves"]["repaired"] = line(a, aligned, points, chunks, goal, bar)
    for name, curve in result["curves"].items():
        prefix = "" if name == "naive" else f"{name}_"
        result.update({prefix + key: value for key, value in barriers(curve).items()})
    return {**result, "train_images": sum(len(labels) for _, labels in chunks)}


def figures(result: dict, a: Solution, b: Solution) -> dict:
    """interpolation.png: loss and accuracy along the line, train subset and test set, a line for each of
    naive, aligned and aligned + REPAIR, each labelled with its barrier."""
    plt = pyplot()
    figure, axes = plt.subplots(2, 2, figsize=(12, 8), layout="constrained", sharex=True)
    for name, curve in result["curves"].items():
        prefix = "" if name == "naive" else f"{name}_"
        for column, split in enumerate(("train", "test")):
            alphas = [point["alpha"] for point in curve]
            label = f"{LINES[name]} (barrier {result[f'{prefix}barrier_{split}_loss']:.3f})"
            axes[0][column].plot(alphas, [point[f"{split}_loss"] for point in curve], marker=".", label=label)
            axes[1][column].plot(alphas, [point[f"{split}_acc"] for point in curve], marker=".", label=LINES[name])
    for column, split in enumerate(("train subset", "test set")):
        axes[0][column].set(ylabel="loss", title=split)
        axes[1][column].set(xlabel="a: the weights (1 - a) A + a B", ylabel="accuracy")
        axes[0][column].legend(fontsize="small")
        for axis in axes[:, column]:
            axis.grid(alpha=0.3)
    method = {"weights": "weight matching", "activations": "activation matching"}.get(result["align"], "")
    figure.suptitle(f"{a.name} (a = 0) to {b.name} (a = 1)" + (f"; units aligned by {method}" if method else ""))
    return {"interpolation.png": figure}


register(Measure(name="interpolation", schema=InterpolationSchema, check=check, pairwise=True, fits=fits, figures=figures))
