"""How alike two solutions represent and predict: linear CKA per stage on the probe set, and the
share of test images on which their predictions disagree.

Linear CKA (Kornblith et al. 2019) of each stage's outputs (flattened per image) and of the
embedding, estimated over minibatches of the probe with the unbiased HSIC estimator (Song
et al. 2012), as in Nguyen et al. (2021):
CKA = sum_b HSIC1(K_b, L_b) / sqrt(sum_b HSIC1(K_b, K_b) * sum_b HSIC1(L_b, L_b)), where
K_b = X_b X_b' is the linear kernel of a minibatch, all in float64. It is 1 for identical
representations and unchanged by orthogonal transforms and isotropic scaling of either;
the unbiased estimator has no bias toward similarity from a finite number of images.
"""

from dataclasses import dataclass
from typing import Optional

import torch
from omegaconf import DictConfig

from optqual.analysis.measures import Measure, register
from optqual.analysis.measures.activations import stage_outputs
from optqual.analysis.measures.calibration import test_logits
from optqual.analysis.solution import Solution, check_comparable
from optqual.errors import require


@dataclass
class SimilaritySchema:
    _target_: str = "optqual.analysis.measures.similarity.compare"
    _partial_: bool = True
    probe_size: Optional[int] = None  # null: set when the runs are loaded (optqual/analysis/analyze.py)
    minibatch: int = 256


def check(node: DictConfig) -> None:
    # the unbiased HSIC needs more than 3 images in every minibatch, the last one included
    if node.probe_size is None:  # checked again once the runs say how many test images there are
        return
    last = node.probe_size % node.minibatch or node.minibatch
    require(node.minibatch > 3 and last > 3, "analysis.similarity.minibatch", node.minibatch,
            f"every minibatch of the probe ({node.probe_size} images) must hold more than 3 images")


def hsic1(k: torch.Tensor, l: torch.Tensor) -> torch.Tensor:
    """The unbiased HSIC estimator of two n x n kernel matrices (n > 3)."""
    n = len(k)
    k, l = k.clone(), l.clone()
    k.fill_diagonal_(0)
    l.fill_diagonal_(0)
    ones = torch.ones(n, dtype=k.dtype, device=k.device)
    trace = (k * l).sum()
    return (trace + (ones @ k @ ones) * (ones @ l @ ones) / ((n - 1) * (n - 2)) - 2 / (n - 2) * (ones @ k @ (l @ ones))) / (n * (n - 3))


def linear_kernels(features: torch.Tensor, minibatch: int) -> list[torch.Tensor]:
    """X_b X_b' for each minibatch of `features` (rows: images), in float64."""
    flat = features.flatten(1).double()
    return [block @ block.T for block in flat.split(minibatch)]


def cka(kernels_a: list[torch.Tensor], kernels_b: list[torch.Tensor]) -> float:
    cross = sum(hsic1(k, l) for k, l in zip(kernels_a, kernels_b))
    self_a = sum(hsic1(k, k) for k in kernels_a)
    self_b = sum(hsic1(l, l) for l in kernels_b)
    return float(cross / (self_a * self_b).sqrt())


def representation(solution: Solution, probe_size: int, minibatch: int) -> dict[str, list[torch.Tensor]]:
    """Each stage's minibatch kernels on the probe: all CKA needs of a run, kept for its other pairs."""
    key = ("kernels", probe_size, minibatch)
    if key not in solution.memo:
        images, _ = solution.probe(probe_size)
        solution.memo[key] = {stage: linear_kernels(output, minibatch) for stage, output in stage_outputs(solution.model, images).items()}
    return solution.memo[key]


def predictions(solution: Solution) -> torch.Tensor:
    if "predictions" not in solution.memo:
        solution.memo["predictions"] = test_logits(solution)[0].argmax(dim=1)
    return solution.memo["predictions"]


def compare(a: Solution, b: Solution, probe_size: int, minibatch: int) -> dict:
    check_comparable(a, b)
    kernels_a, kernels_b = representation(a, probe_size, minibatch), representation(b, probe_size, minibatch)
    per_stage = {stage: cka(kernels_a[stage], kernels_b[stage]) for stage in kernels_a}
    return {
        "cka": per_stage,
        "mean_cka": sum(per_stage.values()) / len(per_stage),
        "disagreement": float((predictions(a) != predictions(b)).double().mean()),
        "probe_images": probe_size,
    }


register(Measure(name="similarity", schema=SimilaritySchema, check=check, pairwise=True))
