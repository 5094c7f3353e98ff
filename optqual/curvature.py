"""Curvature of a training loss: exact Hessian-vector products and the Lanczos and Hutchinson
estimators built on them, shared by the end-point sharpness measure
(optqual/analysis/measures/sharpness.py) and sharpness tracked during training
(optqual/components/sharpness_tracking.py).

Products are exact (the gradient of g . v, after Pearlmutter), taken chunk by chunk in float32
on a copy of the model in eval mode (batch norm uses its running statistics, dropout is off: the
loss is one fixed function of the weights, and the model being trained is never touched) and
summed in float64; the Hessian is never formed. With a diagonal preconditioner P the operator
is P^-1/2 H P^-1/2, symmetric, with the eigenvalues of P^-1 H (Cohen et al. 2022); with a
diagonal scale D it is D H D, the Hessian in the coordinates w = D u (adaptive sharpness's
D = diag(|w|), Kwon et al. 2021). Every estimator below works on the operator.

- top eigenvalues (largest algebraic): Lanczos with full reorthogonalization in float64,
  started from a given vector (the previous estimate's eigenvector, when tracking: a warm start
  converges in a few products) or a seeded Gaussian. It stops when every wanted Ritz pair's
  residual ||H y - theta y|| (= |beta_m s_mi|, free in Lanczos) is below `tolerance` x |theta|,
  which bounds each eigenvalue's relative error, or after `max_products` products. The bound is
  conservative: the error is about residual^2 / gap.
- the spectral density: stochastic Lanczos quadrature from several Rademacher starts, each
  node smoothed by a Gaussian (Ghorbani et al. 2019; PyHessian's density plot).
- trace: tr(H) = tr(Q'HQ) + tr((I - QQ')H(I - QQ')) for the orthonormal Lanczos basis Q.
  The first term is the sum of Lanczos' alphas, exact and free; it holds the top
  eigendirections, which carry most of the estimator's variance (the idea of Hutch++,
  Meyer et al. 2021). The second is Hutchinson's estimator on the complement, with an
  independent Rademacher vector v_c for every chunk c, projected off Q: one pass over the
  subset yields one unbiased sample w_c' H_c w_c per chunk (H_c the Hessian of the chunk's
  mean loss), and their chunk-weighted mean is unbiased for the second term. The standard
  error is the samples' spread over the square root of their number: an upper bound, as it
  also counts how the chunks' own traces differ.
"""

import copy
import math
from typing import Callable, Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

LossFunction = Callable[..., torch.Tensor]  # (logits, targets, reduction=...) as optqual/losses.py's


def flatten(tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    return torch.cat([t.reshape(-1).double() for t in tensors])


class HessianVectorProducts:
    """v -> H v for the mean loss over fixed chunks of data, or S H S v with a diagonal S: P^-1/2 for a
    `preconditioner` P, or a `scale` D (one tensor per trained parameter in the model's order); vectors flat in float64.

    The products run on a copy of the model and the data in the contiguous layout: double
    backward ran 13-18% faster in it than in channels_last on the CPU (chunks of 64, measured
    with and without kept freed memory).
    """

    def __init__(self, model: nn.Module, chunks: list[tuple[torch.Tensor, torch.Tensor]], loss: LossFunction = F.cross_entropy,
                 preconditioner: Sequence[torch.Tensor] | None = None, scale: Sequence[torch.Tensor] | None = None):
        assert preconditioner is None or scale is None, "a preconditioner or a scale, not both"
        self.model = copy.deepcopy(model).to(memory_format=torch.contiguous_format).eval()
        self.chunks = [(images.contiguous(), labels) for images, labels in chunks]
        self.loss = loss
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.sizes = [p.numel() for p in self.params]
        self.dim = sum(self.sizes)
        self.count = sum(len(labels) for _, labels in chunks)
        self.scale = flatten(preconditioner).rsqrt() if preconditioner is not None else flatten(scale) if scale is not None else None
        self.passes = 0  # products over the whole subset

    def pieces(self, v: torch.Tensor) -> list[torch.Tensor]:
        return [piece.view_as(p).to(p.dtype) for piece, p in zip(torch.split(v, self.sizes), self.params)]

    def chunk_product(self, images: torch.Tensor, labels: torch.Tensor, v: list[torch.Tensor]) -> torch.Tensor:
        """H_c v, for the summed loss of one chunk, flat in float64."""
        loss = self.loss(self.model(images), labels, reduction="sum")
        grads = torch.autograd.grad(loss, self.params, create_graph=True)
        return torch.cat([h.reshape(-1) for h in torch.autograd.grad(grads, self.params, grad_outputs=v)]).double()

    def __call__(self, v: torch.Tensor) -> torch.Tensor:
        if self.scale is not None:
            v = self.scale * v
        pieces = self.pieces(v)
        total = torch.zeros_like(v)
        for images, labels in self.chunks:
            total += self.chunk_product(images, labels, pieces)
        self.passes += 1
        total /= self.count
        return total if self.scale is None else self.scale * total

    def chunk_quadratic_forms(self, generator: torch.Generator, basis: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """w_c' S H_c S w_c for an independent Rademacher v_c per chunk, projected off `basis` (rows
        orthonormal) when given: w_c = (I - Q'Q) v_c; and each chunk's weight (its share of the data)."""
        forms, weights = [], []
        for images, labels in self.chunks:
            v = torch.randint(0, 2, (self.dim,), generator=generator, device=generator.device, dtype=torch.float64) * 2 - 1
            if basis is not None:
                v = v - basis.T @ (basis @ v)
            scaled = v if self.scale is None else self.scale * v
            forms.append(self.chunk_product(images, labels, self.pieces(scaled)) @ scaled / len(labels))
            weights.append(len(labels) / self.count)
        self.passes += 1
        return torch.stack(forms), torch.tensor(weights, dtype=torch.float64, device=forms[0].device)


def lanczos_iterations(hvp, start: torch.Tensor) -> Iterator[tuple[list[float], list[float], float, torch.Tensor]]:
    """Lanczos with full reorthogonalization in float64, from `start`: after each product, the
    tridiagonal's alphas and off-diagonal betas so far, the next beta (the residual's scale; near 0:
    an invariant subspace, stop) and the orthonormal basis whose products were taken."""
    basis = [start / start.norm()]
    alphas, betas = [], []
    while True:
        w = hvp(basis[-1])
        alphas.append(float(w @ basis[-1]))
        stacked = torch.stack(basis)
        for _ in range(2):  # full reorthogonalization, twice ("twice is enough", Kahan-Parlett)
            w = w - stacked.T @ (stacked @ w)
        beta = float(w.norm())
        yield alphas, betas, beta, stacked
        betas.append(beta)
        basis.append(w / beta)


def ritz(alphas: list[float], betas: list[float]) -> tuple[torch.Tensor, torch.Tensor]:
    """The eigenvalues (ascending) and eigenvectors of the Lanczos tridiagonal."""
    tridiagonal = torch.diag(torch.tensor(alphas, dtype=torch.float64))
    if betas:
        off = torch.tensor(betas, dtype=torch.float64)
        tridiagonal += torch.diag(off, 1) + torch.diag(off, -1)
    return torch.linalg.eigh(tridiagonal)


def lanczos_top_eigenvalues(hvp, dim: int, k: int, max_products: int, tolerance: float, generator: torch.Generator | None = None,
                            progress: tqdm | None = None, start: torch.Tensor | None = None) -> dict:
    """The k largest eigenvalues of the symmetric operator `hvp`, their relative residuals, the products
    used, the top Ritz vector (a warm start for the next estimate), and the orthonormal basis whose
    products were taken with tr(Q'HQ) (for the trace). Starts from `start`, else a Gaussian from `generator`."""
    q = start if start is not None else torch.randn(dim, generator=generator, device=generator.device, dtype=torch.float64)
    for alphas, betas, beta, basis in lanczos_iterations(hvp, q):
        values, vectors = ritz(alphas, betas)
        wanted = min(k, len(alphas))
        top = values[-wanted:].flip(0)
        residuals = (beta * vectors[-1, -wanted:].flip(0)).abs() / top.abs().clamp_min(1e-30)
        if progress is not None:
            progress.update()
            progress.set_postfix(top=f"{top[0]:.4g}", residual=f"{residuals.max():.1e}", refresh=False)
        exhausted = beta < 1e-12 * abs(float(top[0]))  # an invariant subspace: the Ritz values are exact
        converged = wanted == k and float(residuals.max()) < tolerance
        if converged or exhausted or len(alphas) >= max_products:
            return {"eigenvalues": top.tolist(), "relative_residuals": residuals.tolist(), "products": len(alphas),
                    "converged": converged or exhausted, "vector": basis.T @ vectors[:, -1].to(basis.device),
                    "basis": basis, "basis_trace": sum(alphas)}


def lanczos_quadrature(hvp, dim: int, runs: int, steps: int, generator: torch.Generator, progress: tqdm | None = None) -> list[dict]:
    """Stochastic Lanczos quadrature (Golub and Meurant; Ghorbani et al. 2019): for each of `runs`
    Rademacher starts v (normalized), `steps` Lanczos steps give nodes theta_i (the tridiagonal's
    eigenvalues) and weights tau_i (the squared first components of its eigenvectors) with
    sum_i tau_i f(theta_i) ~ v'f(H)v / v'v, exact for polynomials f of degree up to 2 steps - 1.
    Their average over runs estimates the spectral density (1/n) sum_j delta(t - lambda_j)."""
    quadratures = []
    for _ in range(runs):
        v = torch.randint(0, 2, (dim,), generator=generator, device=generator.device, dtype=torch.float64) * 2 - 1
        for alphas, betas, beta, _ in lanczos_iterations(hvp, v):
            if progress is not None:
                progress.update()
            if len(alphas) >= steps or beta < 1e-12 * max(abs(a) for a in alphas):
                break
        nodes, vectors = ritz(alphas, betas)
        quadratures.append({"nodes": nodes.tolist(), "weights": vectors[0].square().tolist()})
    return quadratures


def smoothed_density(quadratures: list[dict], grid: torch.Tensor, sigma: float) -> torch.Tensor:
    """The quadratures' spectral density on `grid`, each node a Gaussian of width `sigma` (it integrates to 1)."""
    total = torch.zeros_like(grid, dtype=torch.float64)
    for quadrature in quadratures:
        nodes, weights = (torch.tensor(quadrature[key], dtype=torch.float64) for key in ("nodes", "weights"))
        kernels = torch.exp(-0.5 * ((grid.double()[:, None] - nodes[None, :]) / sigma) ** 2) / (sigma * math.sqrt(2 * math.pi))
        total += kernels @ weights
    return total / len(quadratures)


def hutchinson_trace(hvp: HessianVectorProducts, passes: int, generator: torch.Generator, basis: torch.Tensor | None = None,
                     basis_trace: float = 0.0, progress: tqdm | None = None) -> dict:
    """tr(H): `basis_trace` (= tr(Q'HQ) for the rows Q of `basis`) plus Hutchinson's estimate on the complement of `basis`."""
    samples, weights = [], []
    for _ in range(passes):
        forms, chunk_weights = hvp.chunk_quadratic_forms(generator, basis)
        samples.append(forms)
        weights.append(chunk_weights / passes)
        if progress is not None:
            progress.update()
    samples, weights = torch.cat(samples), torch.cat(weights)
    spread = float(samples.std()) if len(samples) > 1 else math.nan
    return {"trace": basis_trace + float(weights @ samples), "trace_stderr": spread * float(weights.square().sum().sqrt()),
            "trace_of_lanczos_space": basis_trace, "trace_samples": len(samples), "trace_products": passes}
