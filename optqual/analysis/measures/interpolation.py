"""Linear interpolation between two solutions: loss and accuracy along (1 - a) theta_A + a theta_B,
batch-norm statistics recomputed at every point, and the barrier.

At each of `points` evenly spaced a in [0, 1] every parameter is interpolated (torch.lerp:
the endpoints are the two solutions exactly). Batch-norm running statistics are then
recomputed on the train subset (torch.optim.swa_utils.update_bn: a cumulative average
over its batches, in train mode). Without that step the interpolated weights run with
statistics of neither network, and the curve shows mostly that mismatch (Jordan et al.
2023, REPAIR). Loss and accuracy are taken in eval mode on the train subset (A's
training images, unaugmented) and on the test set. The barrier is the maximum over a of
the loss minus the mean of the two endpoints' losses (Frankle et al. 2020), on each.
"""

import copy
from dataclasses import dataclass

import torch
from omegaconf import DictConfig
from torch.optim.swa_utils import update_bn

from optqual.analysis.measures import Measure, register
from optqual.analysis.solution import Solution, check_comparable
from optqual.engine.loop import EVAL_BATCH_SIZE, evaluate
from optqual.errors import require
from optqual.system.progress import progress


@dataclass
class InterpolationSchema:
    _target_: str = "optqual.analysis.measures.interpolation.compare"
    _partial_: bool = True
    points: int = 11
    train_images: int = 2048
    seed: int = 0
    chunk: int = 256


def check(node: DictConfig) -> None:
    require(node.points >= 2, "analysis.interpolation.points", node.points, "must be at least 2 (the two endpoints)")
    for name in ("train_images", "chunk"):
        require(node[name] > 0, f"analysis.interpolation.{name}", node[name], "must be positive")


def compare(a: Solution, b: Solution, points: int, train_images: int, seed: int, chunk: int) -> dict:
    check_comparable(a, b)
    model = copy.deepcopy(a.model)
    chunks = a.train_subset(train_images, seed, chunk)
    ends = [(pa.detach(), pb.detach()) for pa, pb in zip(a.model.parameters(), b.model.parameters())]
    curve = []
    with progress(points, f"interpolation {a.name} -> {b.name}: BN statistics and losses", "point") as bar:
        for alpha in torch.linspace(0, 1, points).tolist():
            with torch.no_grad():
                for p, (pa, pb) in zip(model.parameters(), ends):
                    p.copy_(torch.lerp(pa, pb, alpha))
            update_bn([images for images, _ in chunks], model)
            train = evaluate(model, iter(chunks))
            test = evaluate(model, a.data.eval_batches("test", EVAL_BATCH_SIZE))
            curve.append({"alpha": alpha, "train_loss": train["loss"], "train_acc": train["acc"], "test_loss": test["loss"], "test_acc": test["acc"]})
            bar.update()
    barrier = {f"barrier_{split}_loss": max(point[f"{split}_loss"] for point in curve) - (curve[0][f"{split}_loss"] + curve[-1][f"{split}_loss"]) / 2
               for split in ("train", "test")}
    return {**barrier, "curve": curve, "train_images": sum(len(labels) for _, labels in chunks)}


register(Measure(name="interpolation", schema=InterpolationSchema, check=check, pairwise=True))
