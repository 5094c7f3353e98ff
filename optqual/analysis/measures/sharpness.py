"""Sharpness of a solution: the top Hessian eigenvalues and the Hessian trace of its training
loss, and the loss increase under random filter-normalized perturbations (Li et al. 2018).

The loss is the run's plain loss (optqual/losses.py: the mean cross-entropy, or the square
loss of a `loss=mse` run) over the train subset (a seeded sample of the run's training images,
unaugmented), with batch norm in eval mode, so that it is one fixed function of the weights.
Hessian-vector products, the top eigenvalues (Lanczos) and the trace (Hutchinson, deflated by
the Lanczos basis) are optqual/curvature.py's. On a 2-core CPU a product over 5,120 images
costs about 4 gradients (8-11 s for ResNet-8); on ResNet-8 solutions the default tolerance 1e-2
took 6 products, and the eigenvalue was then within 1e-4 of its converged value; the deflation
cut the trace's relative standard error of one pass from 6.8% to 2.3%.

- adaptive (Kwon et al. 2021; Andriushchenko et al. 2023): the top eigenvalue and trace of
  D H D, D = diag(|w|), the Hessian in coordinates relative to each weight, over every trained
  parameter. Raw sharpness mostly reflects the weights' scale: where batch norm follows a layer,
  scaling its weights by a leaves the network's function alone and divides that block of H by
  a^2 (Dinh et al. 2017); a ReLU layer scaled by a and the next by 1/a do the same. D H D does
  not change under either, so it compares solutions whose weight norms differ (AdamW's decay
  against SGD's). Its trace is sum_i w_i^2 H_ii.
- perturbation (Li et al.): for `directions` Gaussian directions d, each filter (output
  unit) of every conv and linear weight scaled to that filter's norm, biases and norm
  weights left in place, the mean of L(w + r d) - L(w) at each radius r, and its standard
  error over the directions. The increase varies much from one direction to the next: 2
  directions left a standard error of 30-70% of the mean on ResNet-8 solutions, so the default is
  32 (7-28%, median 10%, on the six runs of docs/example_analysis); the error is in the result,
  `loss_increase_stderr`. Pairing each direction with its opposite cancels the gradient's share
  of the spread, but the measured gain (a 2.2-fold smaller variance at twice the passes) did not pay.
- regulated (Cohen et al. 2021; 2022): raw sharpness is not comparable across optimizers, each
  regulates its own. For the final weights, the optimizer is rebuilt with the state its last
  update left (checkpoint.pt), for a snapshot with the state saved beside it, and the result
  adds the threshold of the next update, the
  preconditioned top eigenvalue lambda_max(P^-1 H) for Adam, AdamW and RMSprop, and `ratio`,
  the sharpness the optimizer is regulated by over its threshold (optqual/optim/stability.py).
  Other weights (best, EMA) have no saved optimizer state: the threshold is then
  null, and `threshold_rule` says why.

Batch norm in eval mode uses the running statistics as training left them, an average over
its last batches, which lag the final weights (`batch_norm: running`, the default, recorded in
the result). `batch_norm: recomputed` recomputes them first on the train subset
(torch.optim.swa_utils.update_bn, as the interpolation does at each point), on a copy: then
every number here is of the loss with the statistics of the final weights themselves.
"""

import copy
import dataclasses
import math
from dataclasses import dataclass, field
from typing import List

import torch
from omegaconf import DictConfig
from torch import nn
from torch.optim.swa_utils import update_bn
from tqdm import tqdm

from optqual.analysis.measures import Measure, register
from optqual.analysis.solution import Solution
from optqual.curvature import HessianVectorProducts, hutchinson_trace, lanczos_top_eigenvalues
from optqual.engine.checkpoint import load_checkpoint
from optqual.errors import require
from optqual.files.layout import CHECKPOINT
from optqual.losses import LossFunction
from optqual.optim.build import build_optimizer
from optqual.optim.stability import PRECONDITIONED, stability
from optqual.system.progress import progress


@dataclass
class SharpnessSchema:
    _target_: str = "optqual.analysis.measures.sharpness.measure"
    _partial_: bool = True
    train_subset: int = 5120
    seed: int = 0
    top_k: int = 1
    max_products: int = 20
    tolerance: float = 1e-2
    trace_passes: int = 1
    radii: List[float] = field(default_factory=lambda: [0.1, 0.2, 0.4])
    regulated: bool = True
    batch_norm: str = "running"
    adaptive: bool = True
    directions: int = 32
    chunk: int = 64


def check(node: DictConfig) -> None:
    key = "analysis.sharpness"
    require(1 <= node.top_k <= 5, f"{key}.top_k", node.top_k, "must lie in 1..5")
    require(node.max_products >= node.top_k, f"{key}.max_products", node.max_products, f"must be at least top_k ({node.top_k})")
    require(0 < node.tolerance < 1, f"{key}.tolerance", node.tolerance, "must lie in (0, 1)")
    for name in ("train_subset", "trace_passes", "directions", "chunk"):
        require(node[name] > 0, f"{key}.{name}", node[name], "must be positive")
    require(all(r > 0 for r in node.radii), f"{key}.radii", list(node.radii), "must be positive")
    require(node.batch_norm in ("running", "recomputed"), f"{key}.batch_norm", node.batch_norm, "must be running or recomputed")


def mean_loss(model: nn.Module, chunks: list[tuple[torch.Tensor, torch.Tensor]], loss: LossFunction) -> float:
    with torch.no_grad():
        total = sum(float(loss(model(images), labels, reduction="sum").double()) for images, labels in chunks)
    return total / sum(len(labels) for _, labels in chunks)


def filter_normalized_direction(parameters: list[torch.Tensor], generator: torch.Generator) -> list[torch.Tensor]:
    """A Gaussian direction with each filter of each conv / linear weight scaled to that filter's norm;
    zero on biases and norm weights (Li et al. 2018, sec. 4)."""
    direction = []
    for p in parameters:
        if p.ndim <= 1:
            direction.append(torch.zeros_like(p))
            continue
        d = torch.randn(p.shape, generator=generator, device=generator.device, dtype=p.dtype)
        filters, weights = d.reshape(len(d), -1), p.detach().reshape(len(p), -1)
        direction.append((filters * (weights.norm(dim=1) / filters.norm(dim=1).clamp_min(1e-30))[:, None]).view_as(p))
    return direction


def perturbation_loss_increase(model: nn.Module, chunks, loss: LossFunction, radii: list[float], directions: int,
                               generator: torch.Generator, progress: tqdm | None = None) -> dict:
    base = mean_loss(model, chunks, loss)
    original = [p.detach().clone() for p in model.parameters()]
    increases = {radius: [] for radius in radii}
    for _ in range(directions):
        direction = filter_normalized_direction(original, generator)  # scaled to the solution's filters, not the last perturbed ones
        for radius in radii:
            with torch.no_grad():
                for p, w, d in zip(model.parameters(), original, direction):
                    p.copy_(w + radius * d)
            increases[radius].append(mean_loss(model, chunks, loss) - base)
            if progress is not None:
                progress.update()
    with torch.no_grad():
        for p, w in zip(model.parameters(), original):
            p.copy_(w)
    return {"train_subset_loss": base,
            "loss_increase": {str(r): sum(values) / len(values) for r, values in increases.items()},
            "loss_increase_stderr": {str(r): torch.tensor(values).std().item() / math.sqrt(len(values)) if len(values) > 1 else math.nan
                                     for r, values in increases.items()}}


def optimizer_at_the_end(solution: Solution) -> tuple[torch.optim.Optimizer | None, str]:
    """The run's optimizer as it stood at the analyzed weights, over the analyzed model: a snapshot's
    saved state (<weights>_optimizer.pt), or the last update's (checkpoint.pt) for the last weights;
    None, and why, for weights no saved state belongs to (best or EMA weights)."""
    beside = solution.run_dir / f"{solution.weights}_optimizer.pt"
    if beside.is_file():
        state = torch.load(beside, map_location="cpu", weights_only=True)
    elif not (solution.run_dir / CHECKPOINT).is_file():
        return None, "the run kept no checkpoint.pt"
    else:
        saved = load_checkpoint(solution.run_dir)["state"]
        weights, analyzed = saved["model"], dict(solution.model.named_parameters())  # batch norm's statistics may be recomputed
        if not analyzed.keys() <= weights.keys() or not all(torch.equal(weights[key], analyzed[key].detach().cpu()) for key in analyzed):
            return None, "the analyzed weights are not those the optimizer's saved state belongs to"
        state = saved["optimizer"]
    optimizer = build_optimizer(solution.model, solution.config.optimizer, solution.config.lr_scale)
    optimizer.load_state_dict(state)
    return optimizer, ""


def adaptive_sharpness(solution: Solution, chunks, max_products: int, tolerance: float, trace_passes: int,
                       generator: torch.Generator, progress: tqdm) -> dict:
    """The top eigenvalue and trace of D H D, D = diag(|w|): sharpness that a function-preserving rescaling leaves alone."""
    scale = [p.detach().abs() for p in solution.model.parameters() if p.requires_grad]
    hvp = HessianVectorProducts(solution.model, chunks, solution.loss, scale=scale)
    top = lanczos_top_eigenvalues(hvp, hvp.dim, 1, max_products, tolerance, generator, progress)
    progress.total -= max_products - top["products"]
    trace = hutchinson_trace(hvp, trace_passes, generator, top["basis"], top["basis_trace"], progress)
    return {"adaptive_top_eigenvalue": top["eigenvalues"][0], "adaptive_eigenvalue_converged": top["converged"],
            "adaptive_trace": trace["trace"], "adaptive_trace_stderr": trace["trace_stderr"]}


def regulated_sharpness(solution: Solution, chunks, max_products: int, tolerance: float,
                        generator: torch.Generator) -> dict:
    """The sharpness the run's optimizer is regulated by at its last update, and the threshold of that update
    (optqual/optim/stability.py): lambda_max(H) for SGD, lambda_max(P^-1 H) for Adam, AdamW and RMSprop."""
    optimizer, why = optimizer_at_the_end(solution)
    regime = stability(optimizer) if optimizer is not None else None
    known = regime is not None and regime.regulated is not None
    result = {"regulated_by": regime.regulated if known else None, "threshold": regime.threshold if known else None,
              "threshold_rule": regime.rule if regime else why, "preconditioned_top_eigenvalue": None}
    if regime is not None and regime.regulated == PRECONDITIONED and regime.preconditioner is not None:
        diagonal = [regime.preconditioner[p] for p in solution.model.parameters() if p.requires_grad]
        preconditioned = HessianVectorProducts(solution.model, chunks, solution.loss, diagonal)
        top = lanczos_top_eigenvalues(preconditioned, preconditioned.dim, 1, max_products, tolerance, generator)
        result["preconditioned_top_eigenvalue"] = top["eigenvalues"][0]
    return result


def measure(solution: Solution, train_subset: int, seed: int, top_k: int, max_products: int, tolerance: float,
            trace_passes: int, radii: list[float], directions: int, chunk: int, regulated: bool, adaptive: bool, batch_norm: str) -> dict:
    chunks = solution.train_subset(train_subset, seed, chunk)
    if batch_norm == "recomputed":  # the statistics of the solution's own training images, not the last batches' running average
        solution = dataclasses.replace(solution, model=copy.deepcopy(solution.model))
        update_bn([images for images, _ in chunks], solution.model)
        solution.model.eval()
    hvp = HessianVectorProducts(solution.model, chunks, solution.loss)
    def seeded(stream: int) -> torch.Generator:  # an independent stream per estimator: turning one off leaves the others alone
        return torch.Generator(device=solution.device).manual_seed(seed * 8 + stream)

    total = (max_products + trace_passes) * (1 + adaptive) + directions * len(radii)
    with progress(total, f"sharpness {solution.name}: Lanczos, Hessian-vector products on {hvp.count} images", "step") as bar:
        top = lanczos_top_eigenvalues(hvp, hvp.dim, top_k, max_products, tolerance, seeded(0), bar)
        bar.total -= max_products - top["products"]
        bar.set_description(f"sharpness {solution.name}: trace, Hutchinson passes on {hvp.count} images")
        trace = hutchinson_trace(hvp, trace_passes, seeded(1), top.pop("basis"), top.pop("basis_trace"), bar)
        del top["vector"]
        if adaptive:
            bar.set_description(f"sharpness {solution.name}: adaptive, Lanczos and trace of diag(|w|) H diag(|w|)")
            scaled = adaptive_sharpness(solution, chunks, max_products, tolerance, trace_passes, seeded(2), bar)
        bar.set_description(f"sharpness {solution.name}: loss at {directions} random directions x {len(radii)} radii")
        perturbation = perturbation_loss_increase(solution.model, chunks, solution.loss, radii, directions, seeded(3), bar)
        if regulated:
            bar.set_description(f"sharpness {solution.name}: the sharpness its optimizer is regulated by")
            regime = regulated_sharpness(solution, chunks, max_products, tolerance, seeded(4))
    if regulated:  # None where the optimizer has no threshold, or its preconditioner is not there
        own = regime["preconditioned_top_eigenvalue"] if regime["regulated_by"] == PRECONDITIONED else top["eigenvalues"][0]
        regime["ratio"] = own / regime["threshold"] if regime["regulated_by"] and own is not None else None
    return {
        "top_eigenvalue": top["eigenvalues"][0],
        "top_eigenvalues": top["eigenvalues"],
        "eigenvalue_relative_residuals": top["relative_residuals"],
        "eigenvalue_converged": top["converged"],
        "eigenvalue_products": top["products"],
        **trace,
        **(scaled if adaptive else {}),
        **perturbation,
        **(regime if regulated else {}),
        "batch_norm": batch_norm,
        "subset_images": hvp.count,
        "parameters": hvp.dim,
    }


register(Measure(name="sharpness", schema=SharpnessSchema, check=check))
