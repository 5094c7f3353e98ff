"""The Hessian's top eigenvalue and trace of a real ResNet-8 (optqual's, batch norm in eval mode
with statistics from data) against curvlinops-for-pytorch, an independent, maintained library
of curvature operators: a Hessian-vector product, the top eigenvalue of its Hessian operator
under scipy's ARPACK, and its Hutchinson estimator (both trace estimates are unbiased: they
agree within their standard errors; the estimator's accuracy is tested against a dense
Hessian in tests/test_analysis_measures.py)."""

import math

import pytest
import torch
from torch import nn

from optqual.curvature import HessianVectorProducts, hutchinson_trace, lanczos_top_eigenvalues
from optqual.models import build_model
from conftest import compose_run

pytestmark = pytest.mark.slow


def resnet8_problem(images: int = 64, chunk: int = 32):
    torch.manual_seed(0)
    model = build_model(compose_run().model, {"num_classes": 10, "channels": 3, "image_size": 32})
    generator = torch.Generator().manual_seed(1)
    x, y = torch.randn(images, 3, 32, 32, generator=generator), torch.randint(0, 10, (images,), generator=generator)
    model.train()
    with torch.no_grad():
        for _ in range(3):  # running statistics from the data, not the initial (0, 1)
            model(x)
    model.eval()
    return model, [(x[i : i + chunk], y[i : i + chunk]) for i in range(0, images, chunk)]


def test_top_eigenvalue_and_trace_agree_with_curvlinops():
    from curvlinops import HessianLinearOperator
    from curvlinops.trace.hutchinson import hutchinson_trace as their_hutchinson
    from scipy.sparse.linalg import eigsh

    model, chunks = resnet8_problem()
    params = [p for p in model.parameters() if p.requires_grad]
    theirs = HessianLinearOperator(model, nn.CrossEntropyLoss(reduction="mean"), params, chunks, progressbar=False)
    their_top = float(eigsh(theirs.to_scipy(), k=1, which="LA", tol=1e-6, return_eigenvectors=False)[0])

    hvp = HessianVectorProducts(model, chunks)
    v = torch.randn(hvp.dim, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    torch.testing.assert_close(hvp(v), (theirs @ v.float()).double(), rtol=1e-4, atol=1e-4 * float(hvp(v).abs().max()))
    ours = lanczos_top_eigenvalues(hvp, hvp.dim, 1, max_products=60, tolerance=1e-6, generator=torch.Generator().manual_seed(0))
    assert ours["converged"]
    assert ours["eigenvalues"][0] == pytest.approx(their_top, rel=1e-4)

    torch.manual_seed(2)  # curvlinops draws its vectors from the global generator
    samples = torch.stack([their_hutchinson(theirs, num_matvecs=1) for _ in range(30)]).double()
    their_trace, their_error = float(samples.mean()), float(samples.std()) / math.sqrt(len(samples))
    estimate = hutchinson_trace(hvp, 10, torch.Generator().manual_seed(3), ours["basis"], ours["basis_trace"])
    assert abs(estimate["trace"] - their_trace) < 4 * math.hypot(estimate["trace_stderr"], their_error)  # within the errors
