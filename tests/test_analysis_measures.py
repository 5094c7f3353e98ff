"""Every number the analysis publishes, against an independent computation: the Hessian's top
eigenvalues and trace against a dense Hessian, CKA against the full-batch formula and its
invariances, ECE by hand, stable and effective rank of known matrices."""

import copy
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from optqual.analysis.measures.activations import dead_share, effective_rank
from optqual.analysis.measures.calibration import expected_calibration_error
from optqual.analysis.measures.sharpness import filter_normalized_direction, perturbation_loss_increase
from optqual.analysis.measures.similarity import cka, linear_kernels
from optqual.analysis.measures.weights import stable_rank
from optqual.curvature import (HessianVectorProducts, hutchinson_trace, lanczos_quadrature, lanczos_top_eigenvalues,
                               smoothed_density)


class Tiny(nn.Module):
    """A conv, a batch norm in eval mode (non-trivial statistics), a ReLU, pooling and a biased head: 67 parameters."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 2, 3, bias=False)
        self.bn = nn.BatchNorm2d(2)
        self.head = nn.Linear(2, 3)
        self.bn.running_mean.uniform_(-0.5, 0.5)
        self.bn.running_var.uniform_(0.5, 2.0)
        self.eval()

    def forward(self, x):
        return self.head(F.relu(self.bn(self.conv(x))).mean(dim=(2, 3)))


def tiny_problem(images: int = 32, chunk: int = 4):
    model = Tiny()
    generator = torch.Generator().manual_seed(1)
    x, y = torch.randn(images, 3, 6, 6, generator=generator), torch.randint(0, 3, (images,), generator=generator)
    return model, [(x[i : i + chunk], y[i : i + chunk]) for i in range(0, images, chunk)], x, y


def dense_hessian(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The whole Hessian of the mean loss, from torch.autograd.functional.hessian, in float64."""
    names = [name for name, _ in model.named_parameters()]
    shapes = [p.shape for p in model.parameters()]
    flat = torch.cat([p.detach().reshape(-1) for p in model.parameters()]).double()
    double = Tiny().double()
    double.load_state_dict(model.state_dict())

    def loss(vector: torch.Tensor) -> torch.Tensor:
        pieces = torch.split(vector, [math.prod(shape) for shape in shapes])
        params = {name: piece.view(shape) for name, piece, shape in zip(names, pieces, shapes)}
        return F.cross_entropy(functional_call(double, params, (x.double(),)), y)

    return torch.autograd.functional.hessian(loss, flat)


def test_hessian_vector_products_are_the_dense_hessian_times_v():
    model, chunks, x, y = tiny_problem()
    hessian = dense_hessian(model, x, y)
    hvp = HessianVectorProducts(model, chunks)
    v = torch.randn(hvp.dim, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    torch.testing.assert_close(hvp(v), hessian @ v, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("k", [1, 3])
def test_lanczos_top_eigenvalues_match_the_dense_hessians_within_one_percent(k):
    model, chunks, x, y = tiny_problem()
    dense = torch.linalg.eigvalsh(dense_hessian(model, x, y)).flip(0)[:k]
    hvp = HessianVectorProducts(model, chunks)
    found = lanczos_top_eigenvalues(hvp, hvp.dim, k, max_products=hvp.dim, tolerance=1e-6, generator=torch.Generator().manual_seed(0))
    assert found["converged"] and found["products"] < hvp.dim
    assert max(found["relative_residuals"]) < 1e-6
    for ours, exact in zip(found["eigenvalues"], dense.tolist()):
        assert ours == pytest.approx(exact, rel=0.01)
        assert ours == pytest.approx(exact, rel=1e-6)  # converged: far inside the 1% asked for


@pytest.mark.slow
def test_trace_matches_the_dense_trace_within_one_percent():
    """Lanczos' space taken exactly (16 products), Hutchinson on the rest."""
    model, chunks, x, y = tiny_problem(images=32, chunk=1)
    exact = float(torch.trace(dense_hessian(model, x, y)))
    hvp = HessianVectorProducts(model, chunks)
    lanczos = lanczos_top_eigenvalues(hvp, hvp.dim, 1, max_products=16, tolerance=1e-12, generator=torch.Generator().manual_seed(0))
    assert lanczos["basis"].shape == (lanczos["products"], hvp.dim) and lanczos["products"] >= 12
    estimate = hutchinson_trace(hvp, 100, torch.Generator().manual_seed(3), lanczos["basis"], lanczos["basis_trace"])
    assert estimate["trace_samples"] == 100 * 32 and estimate["trace_products"] == 100
    assert estimate["trace"] == pytest.approx(exact, rel=0.01)
    assert abs(estimate["trace"] - exact) < 4 * estimate["trace_stderr"]  # the reported uncertainty covers the error
    assert 0 < estimate["trace_of_lanczos_space"] < exact


@pytest.mark.slow
def test_plain_hutchinson_is_unbiased_within_its_reported_error():
    model, chunks, x, y = tiny_problem(images=32, chunk=4)
    exact = float(torch.trace(dense_hessian(model, x, y)))
    estimate = hutchinson_trace(HessianVectorProducts(model, chunks), 300, torch.Generator().manual_seed(4))
    assert abs(estimate["trace"] - exact) < 4 * estimate["trace_stderr"] and estimate["trace_stderr"] < 0.05 * exact


def adaptive(model: nn.Module) -> list[torch.Tensor]:
    return [p.detach().abs() for p in model.parameters()]


def test_adaptive_sharpness_is_that_of_diag_w_h_diag_w_computed_densely():
    """Products, top eigenvalue and trace of the scaled operator against D H D formed from the dense Hessian."""
    model, chunks, x, y = tiny_problem()
    scale = torch.cat([w.reshape(-1) for w in adaptive(model)]).double()
    exact = scale[:, None] * dense_hessian(model, x, y) * scale[None, :]
    hvp = HessianVectorProducts(model, chunks, scale=adaptive(model))
    v = torch.randn(hvp.dim, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    torch.testing.assert_close(hvp(v), exact @ v, rtol=1e-5, atol=1e-6)
    top = lanczos_top_eigenvalues(hvp, hvp.dim, 1, max_products=hvp.dim, tolerance=1e-6, generator=torch.Generator().manual_seed(0))
    assert top["eigenvalues"][0] == pytest.approx(float(torch.linalg.eigvalsh(exact)[-1]), rel=1e-6)
    trace = hutchinson_trace(hvp, 300, torch.Generator().manual_seed(4))
    assert abs(trace["trace"] - float(torch.trace(exact))) < 4 * trace["trace_stderr"] < 0.2 * float(torch.trace(exact))


def test_rescaling_a_layer_behind_batch_norm_changes_raw_sharpness_not_adaptive_sharpness():
    """Dinh et al. 2017: the conv's weights over 10, batch norm's statistics with them, the same function;
    the conv's block of H grows 100-fold and raw sharpness with it, diag(|w|) H diag(|w|) keeps its eigenvalue and trace."""
    model, chunks, x, y = tiny_problem()
    rescaled = copy.deepcopy(model)
    with torch.no_grad():
        rescaled.conv.weight /= 10
        rescaled.bn.running_mean /= 10
        rescaled.bn.running_var.add_(rescaled.bn.eps).div_(100).sub_(rescaled.bn.eps)  # (var + eps) over 100
    torch.testing.assert_close(rescaled(x), model(x), rtol=1e-5, atol=1e-5)

    def top(m: nn.Module, scale) -> float:
        hvp = HessianVectorProducts(m, chunks, scale=scale)
        return lanczos_top_eigenvalues(hvp, hvp.dim, 1, hvp.dim, 1e-8, torch.Generator().manual_seed(0))["eigenvalues"][0]

    def trace(m: nn.Module) -> float:  # exact: the dense Hessian's diagonal, weighted by w^2
        scale = torch.cat([w.reshape(-1) for w in adaptive(m)]).double()
        return float(torch.diagonal(dense_hessian(m, x, y)) @ scale.square())

    assert top(rescaled, None) > 5 * top(model, None)
    assert top(rescaled, adaptive(rescaled)) == pytest.approx(top(model, adaptive(model)), rel=1e-4)
    assert trace(rescaled) == pytest.approx(trace(model), rel=1e-4)


def test_the_perturbation_reports_the_standard_error_of_its_mean_over_directions():
    """Six directions at once are six single directions in turn, each scaled to the solution's own filters."""
    model, chunks, x, y = tiny_problem()
    result = perturbation_loss_increase(model, chunks, F.cross_entropy, [0.5], 6, torch.Generator().manual_seed(0))
    generator = torch.Generator().manual_seed(0)
    singles = [perturbation_loss_increase(model, chunks, F.cross_entropy, [0.5], 1, generator)["loss_increase"]["0.5"] for _ in range(6)]
    assert result["loss_increase"]["0.5"] == pytest.approx(np.mean(singles))
    assert result["loss_increase_stderr"]["0.5"] == pytest.approx(np.std(singles, ddof=1) / math.sqrt(6))
    torch.testing.assert_close(torch.cat([p.reshape(-1) for p in model.parameters()]),
                               torch.cat([p.reshape(-1) for p in Tiny().parameters()]))  # the weights are back


def test_filter_normalized_directions_scale_each_filter_to_its_weights_and_leave_biases():
    model = Tiny()
    direction = filter_normalized_direction(list(model.parameters()), torch.Generator().manual_seed(0))
    for (name, p), d in zip(model.named_parameters(), direction):
        if p.ndim > 1:
            torch.testing.assert_close(d.reshape(len(d), -1).norm(dim=1), p.detach().reshape(len(p), -1).norm(dim=1))
        else:
            assert not d.any(), name


def test_stable_rank_of_known_matrices():
    assert stable_rank(torch.diag(torch.tensor([3.0, 4.0], dtype=torch.float64))) == pytest.approx(25 / 16)
    assert stable_rank(torch.outer(torch.arange(1.0, 5.0), torch.arange(1.0, 4.0)).double()) == pytest.approx(1.0)
    assert stable_rank(torch.eye(7, dtype=torch.float64)) == pytest.approx(7.0)
    matrix = torch.randn(20, 30, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    singular = np.linalg.svd(matrix.numpy(), compute_uv=False)
    assert stable_rank(matrix) == pytest.approx((singular ** 2).sum() / singular[0] ** 2)


def test_effective_rank_counts_equally_weighted_directions():
    rotation, _ = torch.linalg.qr(torch.randn(8, 8, generator=torch.Generator().manual_seed(0), dtype=torch.float64))
    for k in (1, 3, 8):
        scores = torch.zeros(200, 8, dtype=torch.float64)
        scores[:, :k] = torch.randn(200, k, generator=torch.Generator().manual_seed(k), dtype=torch.float64)
        u, _, _ = torch.linalg.svd(scores[:, :k] - scores[:, :k].mean(0), full_matrices=False)
        equal = torch.zeros(200, 8, dtype=torch.float64)
        equal[:, :k] = u * 5.0  # k orthogonal, centered directions of equal weight
        assert effective_rank(equal @ rotation) == pytest.approx(k, rel=1e-6)


def test_dead_units_are_channels_silent_on_every_image_and_position():
    output = torch.rand(5, 4, 3, 3)
    output[:, 1] = 0
    output[:, 3] = 0
    output[2, 3, 1, 1] = 0.5  # fires once: alive
    assert dead_share(output) == 0.25


def test_ece_by_hand_with_a_confidence_of_exactly_one():
    confidence = torch.tensor([1.0, 1.0, 0.95, 0.5, 0.45, 0.2], dtype=torch.float64)
    correct = torch.tensor([True, False, True, True, False, False])
    ece, bins = expected_calibration_error(confidence, correct, bins=10)
    # bins (0.9, 1.0]: 1.0, 1.0, 0.95 -> acc 2/3, conf 0.98333; (0.4, 0.5]: 0.5, 0.45 -> acc 1/2, conf 0.475;
    # (0.1, 0.2]: 0.2 -> acc 0, conf 0.2
    expected = 3 / 6 * abs(2 / 3 - 2.95 / 3) + 2 / 6 * abs(0.5 - 0.475) + 1 / 6 * abs(0 - 0.2)
    assert ece == pytest.approx(expected, abs=1e-12)
    assert bins[9]["count"] == 3 and bins[4]["count"] == 2 and bins[1]["count"] == 1
    assert sum(row["count"] for row in bins) == 6  # nothing falls out of range, 1.0 included


def biased_linear_cka(x: np.ndarray, y: np.ndarray) -> float:
    """Kornblith et al. (2019), eq. 5: ||Y'X||_F^2 / (||X'X||_F ||Y'Y||_F) on centered features."""
    x, y = x - x.mean(0), y - y.mean(0)
    return np.linalg.norm(y.T @ x) ** 2 / (np.linalg.norm(x.T @ x) * np.linalg.norm(y.T @ y))


def unbiased_cka_by_definition(x: np.ndarray, y: np.ndarray) -> float:
    """CKA with Song et al.'s unbiased HSIC, written from its definition with numpy, in one batch."""
    def hsic(k, l):
        n = len(k)
        k, l = k - np.diag(np.diag(k)), l - np.diag(np.diag(l))
        return (np.trace(k @ l) + k.sum() * l.sum() / ((n - 1) * (n - 2)) - 2 / (n - 2) * (k.sum(0) @ l.sum(1))) / (n * (n - 3))
    k, l = x @ x.T, y @ y.T
    return hsic(k, l) / math.sqrt(hsic(k, k) * hsic(l, l))


def features(n: int = 1024):
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(n, 6, generator=generator, dtype=torch.float64)
    y = x @ torch.randn(6, 5, generator=generator, dtype=torch.float64) + 0.5 * torch.randn(n, 5, generator=generator, dtype=torch.float64)
    return x, y


def test_cka_against_the_full_batch_formulas():
    x, y = features()
    one_batch = cka(linear_kernels(x, len(x)), linear_kernels(y, len(y)))
    assert one_batch == pytest.approx(unbiased_cka_by_definition(x.numpy(), y.numpy()), rel=1e-10)
    minibatches = cka(linear_kernels(x, 256), linear_kernels(y, 256))
    assert minibatches == pytest.approx(biased_linear_cka(x.numpy(), y.numpy()), abs=0.02)  # the biased one, for many images
    assert 0.3 < minibatches < 0.99


def test_cka_is_one_for_the_same_representation_and_invariant_to_rotation_and_scale():
    x, y = features()
    rotation, _ = torch.linalg.qr(torch.randn(6, 6, generator=torch.Generator().manual_seed(5), dtype=torch.float64))

    def ours(a, b):
        return cka(linear_kernels(a, 256), linear_kernels(b, 256))

    assert ours(x, x) == pytest.approx(1.0, abs=1e-12)
    assert ours(x, x @ rotation) == pytest.approx(1.0, abs=1e-12)
    assert ours(x, 7.0 * x) == pytest.approx(1.0, abs=1e-12)
    assert ours(x @ rotation, 0.1 * y) == pytest.approx(ours(x, y), abs=1e-12)


def test_lanczos_quadrature_has_the_dense_hessians_moments_and_extremes():
    """Per start v, sum_i tau_i theta_i^k = v'H^k v / v'v exactly for k < 2 steps; over starts, the
    first two moments estimate tr(H)/n and tr(H^2)/n; the largest node is lambda_max."""
    model, chunks, x, y = tiny_problem()
    hessian = dense_hessian(model, x, y)
    n = len(hessian)
    hvp = HessianVectorProducts(model, chunks)
    quadratures = lanczos_quadrature(hvp, n, runs=40, steps=12, generator=torch.Generator().manual_seed(7))
    generator = torch.Generator().manual_seed(7)  # the same Rademacher starts, drawn again
    for quadrature in quadratures:
        v = torch.randint(0, 2, (n,), generator=generator, dtype=torch.float64) * 2 - 1
        nodes, weights = torch.tensor(quadrature["nodes"]), torch.tensor(quadrature["weights"])
        for k in range(5):
            exact = float(v @ torch.linalg.matrix_power(hessian, k) @ v / (v @ v))
            assert float(weights @ nodes**k) == pytest.approx(exact, rel=1e-6, abs=1e-9)
    first = torch.tensor([sum(t * w for t, w in zip(q["nodes"], q["weights"])) for q in quadratures])
    assert abs(float(first.mean()) - float(torch.trace(hessian)) / n) < 4 * float(first.std()) / math.sqrt(len(first))
    eigenvalues = torch.linalg.eigvalsh(hessian)
    assert max(q["nodes"][-1] for q in quadratures) == pytest.approx(float(eigenvalues.max()), rel=1e-6)
    assert min(q["nodes"][0] for q in quadratures) == pytest.approx(float(eigenvalues.min()), rel=1e-3)


def test_the_smoothed_density_integrates_to_one():
    quadratures = [{"nodes": [-1.0, 0.5, 3.0], "weights": [0.2, 0.5, 0.3]}, {"nodes": [0.0, 2.0], "weights": [0.6, 0.4]}]
    grid = torch.linspace(-3, 5, 4001, dtype=torch.float64)
    density = smoothed_density(quadratures, grid, 0.1)
    assert float(torch.trapezoid(density, grid)) == pytest.approx(1.0, rel=1e-6)
    assert float(torch.trapezoid(density * grid, grid)) == pytest.approx((0.2 * -1 + 0.25 + 0.9 + 0.8) / 2, rel=1e-6)


def test_the_embedding_is_one_stage_not_two():
    """ResNet-8's pool output is the classifier's input: the mean CKA over stages counts it once."""
    from optqual.analysis.measures.activations import stage_outputs
    from optqual.models.cifar_resnet import CifarResNet

    outputs = stage_outputs(CifarResNet().eval(), torch.randn(8, 3, 32, 32))
    assert list(outputs) == ["stem", "stage1", "stage2", "stage3", "embedding"]


def test_ece_is_torchmetrics_where_the_binnings_agree():
    """torchmetrics bins left-closed and ours right-closed: with no confidence on a bin edge the ECEs are equal."""
    from torchmetrics.functional.classification import multiclass_calibration_error

    generator = torch.Generator().manual_seed(0)
    logits, labels = torch.randn(2000, 10, generator=generator) * 3, torch.randint(0, 10, (2000,), generator=generator)
    probabilities = logits.double().softmax(dim=1)
    confidence, predicted = probabilities.max(dim=1)
    assert not torch.isclose(confidence[:, None] * 15, (confidence[:, None] * 15).round()).any()  # none on an edge
    ours, _ = expected_calibration_error(confidence, predicted == labels, 15)
    theirs = float(multiclass_calibration_error(probabilities, labels, num_classes=10, n_bins=15, norm="l1"))
    assert ours == pytest.approx(theirs, rel=1e-6)  # torchmetrics sums in float32
