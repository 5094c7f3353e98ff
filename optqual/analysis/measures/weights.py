"""The weights of a solution, layer by layer: norms, spectrum, distance travelled, near-zero share,
and batch-norm scales.

Every conv and linear weight W is read as a matrix, out x (in * kh * kw) for a conv:
Frobenius (L2) norm, spectral norm (its largest singular value, from an exact SVD), stable
rank ||W||_F^2 / ||W||_2^2, distance from the initial weights ||W - W0||_F / ||W0||_F (when
the run saved initial_model.pt), and the share of entries with |w| below `near_zero` x
max |w| of the layer. Each batch norm's scale gamma: mean, std, min and max of |gamma|, and
the share of channels with |gamma| < `near_zero` x max |gamma| (channels the norm has
switched off).
"""

import math
from dataclasses import dataclass

import torch
from omegaconf import DictConfig
from torch import nn

from optqual.analysis.measures import Measure, register
from optqual.analysis.solution import Solution
from optqual.errors import require



@dataclass
class WeightsSchema:
    _target_: str = "optqual.analysis.measures.weights.measure"
    _partial_: bool = True
    near_zero: float = 0.01


def check(node: DictConfig) -> None:
    require(0 < node.near_zero < 1, "analysis.weights.near_zero", node.near_zero, "must lie in (0, 1)")


WEIGHTED = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)
NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


def stable_rank(matrix: torch.Tensor) -> float:
    """||W||_F^2 / ||W||_2^2: how many directions carry the matrix's energy (1 for rank one)."""
    return float(matrix.square().sum() / torch.linalg.matrix_norm(matrix, ord=2).square())


def layer_figures(name: str, weight: torch.Tensor, initial: torch.Tensor | None, near_zero: float) -> dict:
    matrix = weight.detach().double().reshape(len(weight), -1)
    frobenius = float(matrix.norm())
    row = {
        "layer": name, "shape": list(weight.shape), "l2_norm": frobenius,
        "spectral_norm": float(torch.linalg.matrix_norm(matrix, ord=2)), "stable_rank": stable_rank(matrix),
        "near_zero_share": float((matrix.abs() < near_zero * matrix.abs().max()).double().mean()),
        "relative_distance_from_init": None,
    }
    if initial is not None:
        start = initial.double().reshape_as(matrix)
        row["relative_distance_from_init"] = float((matrix - start).norm() / start.norm())
    return row


def measure(solution: Solution, near_zero: float) -> dict:
    initial = solution.initial or {}
    layers, norms = [], []
    for name, module in solution.model.named_modules():
        if isinstance(module, WEIGHTED):
            layers.append(layer_figures(name, module.weight, initial.get(f"{name}.weight"), near_zero))
        elif isinstance(module, NORMS) and module.weight is not None:
            gamma = module.weight.detach().double().abs()
            norms.append({"layer": name, "gamma_mean": float(gamma.mean()), "gamma_std": float(gamma.std()),
                          "gamma_min": float(gamma.min()), "gamma_max": float(gamma.max()),
                          "off_share": float((gamma < near_zero * gamma.max()).double().mean())})
    weights = torch.cat([p.detach().double().reshape(-1) for p in solution.model.parameters()])
    summary = {
        "total_l2_norm": float(weights.norm()),
        "mean_stable_rank": sum(row["stable_rank"] for row in layers) / len(layers),
        "mean_spectral_norm": sum(row["spectral_norm"] for row in layers) / len(layers),
        "near_zero_share": sum(row["near_zero_share"] * math.prod(row["shape"]) for row in layers) / sum(math.prod(row["shape"]) for row in layers),
        "bn_gamma_mean": sum(row["gamma_mean"] for row in norms) / len(norms) if norms else None,
        "relative_distance_from_init": None,
    }
    if solution.initial is not None:
        start = torch.cat([solution.initial[name].double().reshape(-1) for name, _ in solution.model.named_parameters()])
        summary["relative_distance_from_init"] = float((weights - start).norm() / start.norm())
    return {**summary, "layers": layers, "batch_norms": norms}


register(Measure(name="weights", schema=WeightsSchema, check=check))
