"""The Hessian's eigenvalue density: how the curvature of a solution's training loss is spread,
outliers against the bulk, and how much of it is negative (Ghorbani et al. 2019; PyHessian's
density plot).

Stochastic Lanczos quadrature (optqual/curvature.py, the float64 Lanczos of the sharpness measure):
from each of `runs` Rademacher starts, `steps` Lanczos steps give nodes and weights whose
average over the starts estimates the density (1/n) sum_j delta(t - lambda_j); each node is drawn
as a Gaussian of width `sigma` times the spectrum's range. The loss is the run's plain loss over
a seeded sample of `train_subset` training images, batch norm in eval mode, as the sharpness
measure takes it. The result keeps every node and weight (the density is theirs exactly; the
moments sum_i tau_i theta_i^k are those of the Hessian seen from each start, exact for k up to
2 steps - 1), the smoothed density on a grid, the extreme nodes (the largest converges first:
it estimates lambda_max), the mass of clearly negative curvature (nodes below minus one Gaussian
width: the bulk's node at zero sits a hair either side of it), and the trace the quadrature implies
(n times the mean first moment: Hutchinson's estimator, from the same products).
"""

from dataclasses import dataclass

import torch
from omegaconf import DictConfig

from optqual.analysis.measures import Measure, register
from optqual.analysis.solution import Solution
from optqual.curvature import HessianVectorProducts, lanczos_quadrature, smoothed_density
from optqual.errors import require
from optqual.files.figures import pyplot
from optqual.system.progress import progress

GRID = 512  # points of the smoothed density


@dataclass
class SpectrumSchema:
    _target_: str = "optqual.analysis.measures.spectrum.measure"
    _partial_: bool = True
    train_subset: int = 1024
    seed: int = 0
    runs: int = 3
    steps: int = 40
    sigma: float = 0.01
    chunk: int = 64


def check(node: DictConfig) -> None:
    key = "analysis.spectrum"
    for name in ("train_subset", "runs", "chunk"):
        require(node[name] > 0, f"{key}.{name}", node[name], "must be positive")
    require(node.steps >= 2, f"{key}.steps", node.steps, "must be at least 2")
    require(0 < node.sigma < 1, f"{key}.sigma", node.sigma, "must lie in (0, 1): a share of the spectrum's range")


def density_grid(quadratures: list[dict], sigma: float) -> tuple[torch.Tensor, float]:
    """A grid over every node, widened by 4 widths on both sides, and the width: `sigma` of the nodes' range."""
    nodes = torch.tensor([node for quadrature in quadratures for node in quadrature["nodes"]], dtype=torch.float64)
    width = sigma * float(nodes.max() - nodes.min()) or sigma
    return torch.linspace(float(nodes.min()) - 4 * width, float(nodes.max()) + 4 * width, GRID, dtype=torch.float64), width


def measure(solution: Solution, train_subset: int, seed: int, runs: int, steps: int, sigma: float, chunk: int) -> dict:
    hvp = HessianVectorProducts(solution.model, solution.train_subset(train_subset, seed, chunk), solution.loss)
    generator = torch.Generator(device=solution.device).manual_seed(seed)
    with progress(runs * steps, f"spectrum {solution.name}: {runs} Lanczos runs on {hvp.count} images", "step") as bar:
        quadratures = lanczos_quadrature(hvp, hvp.dim, runs, steps, generator, bar)
    grid, width = density_grid(quadratures, sigma)
    nodes = [node for quadrature in quadratures for node in quadrature["nodes"]]
    negative = sum(w for q in quadratures for n, w in zip(q["nodes"], q["weights"]) if n < -width) / runs
    first_moments = [sum(n * w for n, w in zip(q["nodes"], q["weights"])) for q in quadratures]
    return {
        "largest_node": max(nodes),
        "smallest_node": min(nodes),
        "negative_mass": negative,
        "trace": hvp.dim * sum(first_moments) / runs,
        "quadratures": quadratures,
        "grid": grid.tolist(),
        "density": smoothed_density(quadratures, grid, width).tolist(),
        "sigma": width,
        "products": hvp.passes,
        "subset_images": hvp.count,
        "parameters": hvp.dim,
    }


def figures(result: dict, solution: Solution) -> dict:
    """spectrum.png: the smoothed density on a log scale (PyHessian's picture), the extreme nodes marked."""
    plt = pyplot()
    figure, axis = plt.subplots(figsize=(7, 4.5), layout="constrained")
    density = torch.tensor(result["density"]).clamp_min(1e-12)
    axis.semilogy(result["grid"], density, label=f"{len(result['quadratures'])} Lanczos runs x "
                                                 f"{len(result['quadratures'][0]['nodes'])} nodes, Gaussian width {result['sigma']:.3g}")
    axis.axvline(result["largest_node"], color="tab:red", linestyle="--", label=f"largest node {result['largest_node']:.4g}")
    axis.axvline(0, color="black", linewidth=0.8)
    axis.set(xlabel="eigenvalue of the training loss's Hessian", ylabel="density (log scale)", ylim=(1e-8, None),
             title=f"Hessian eigenvalue density, {result['subset_images']} training images\n{solution.name}: "
                   f"mass below -{result['sigma']:.2g} {result['negative_mass']:.3f}, trace {result['trace']:.4g}")
    axis.grid(alpha=0.3)
    axis.legend(fontsize="small")
    return {"spectrum.png": figure}


register(Measure(name="spectrum", schema=SpectrumSchema, check=check, figures=figures))
