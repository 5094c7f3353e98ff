"""Sharpness tracked during training: it changes nothing about training, resumes exactly, and
its numbers match independent computations: the preconditioned top eigenvalue a dense
P^-1/2 H P^-1/2, each optimizer's threshold the step size at which torch's own optimizer stops
converging on a quadratic."""

import csv
import math

import pytest
import torch
from torch import nn
from torch.optim import SGD, Adam, AdamW, RMSprop

from conftest import assert_same_run, launch_here, launched, stopped_after, tiny_overrides
from optqual.curvature import HessianVectorProducts, lanczos_top_eigenvalues
from optqual.optim.stability import PLAIN, PRECONDITIONED, stability
from test_analysis_measures import dense_hessian, tiny_problem


def sharpness_rows(run_dir) -> list[dict]:
    """sharpness.csv without its timing column."""
    with open(run_dir / "sharpness.csv") as file:
        return [{key: value for key, value in row.items() if key != "seconds"} for row in csv.DictReader(file)]


def test_preconditioned_top_eigenvalue_is_the_dense_one():
    model, chunks, x, y = tiny_problem()
    generator = torch.Generator().manual_seed(5)
    diagonal = [torch.rand(p.shape, generator=generator) + 0.05 for p in model.parameters()]
    p = torch.cat([d.reshape(-1) for d in diagonal]).double()
    hessian = dense_hessian(model, x, y)
    symmetric = hessian / p.sqrt()[:, None] / p.sqrt()[None, :]  # P^-1/2 H P^-1/2
    exact = float(torch.linalg.eigvalsh(symmetric).max())
    assert exact == pytest.approx(float(torch.linalg.eigvals(hessian / p[:, None]).real.max()), rel=1e-9)  # = lambda_max(P^-1 H)
    hvp = HessianVectorProducts(model, chunks, preconditioner=diagonal)
    found = lanczos_top_eigenvalues(hvp, hvp.dim, 1, max_products=hvp.dim, tolerance=1e-8, generator=torch.Generator().manual_seed(0))
    assert found["eigenvalues"][0] == pytest.approx(exact, rel=1e-6)
    assert found["eigenvalues"][0] != pytest.approx(float(torch.linalg.eigvalsh(hessian).max()), rel=0.1)  # P matters here


def test_a_warm_start_from_the_eigenvector_converges_in_one_or_two_products():
    model, chunks, _, _ = tiny_problem()
    hvp = HessianVectorProducts(model, chunks)
    cold = lanczos_top_eigenvalues(hvp, hvp.dim, 1, max_products=hvp.dim, tolerance=1e-6, generator=torch.Generator().manual_seed(0))
    warm = lanczos_top_eigenvalues(hvp, hvp.dim, 1, max_products=hvp.dim, tolerance=1e-6, start=cold["vector"])
    assert warm["products"] <= 2 < cold["products"]
    assert warm["eigenvalues"][0] == pytest.approx(cold["eigenvalues"][0], rel=1e-6)  # float32 products


def growth(make, curvature: float, steps: int = 3000, start: float = 1e-12) -> tuple[float, float]:
    """The largest and the last |w| over |w| before, in `steps` updates of torch's optimizer on
    0.5 * curvature * w^2 (inf: it overflowed). 1000 updates with a zero gradient come first, so that
    Adam's bias corrections are 1: the threshold is a late update's, not the first few's, whose smaller
    P steps further. Past its threshold an adaptive method's own second moment grows until it is
    stable again (its edge of stability), so divergence shows in the largest |w|."""
    w = nn.Parameter(torch.tensor([start], dtype=torch.float64))
    optimizer = make([w])
    largest = 0.0
    for step in range(1000 + steps):
        optimizer.zero_grad()
        (0.5 * (curvature if step >= 1000 else 0.0) * w.square()).sum().backward()
        optimizer.step()
        largest = max(largest, float(w.detach().abs()) / start)
    last = float(w.detach().abs()) / start
    return tuple(ratio if math.isfinite(ratio) else math.inf for ratio in (largest, last))


# eps = 1e4 dominates sqrt(v) at these tiny weights: P is eps (times Adam's bias factor, 1 by then), so the
# curvature at which the run turns unstable is eps times the threshold of lambda_max(P^-1 H)
OPTIMIZERS = {
    "gd": (lambda params: SGD(params, lr=0.1), 1.0),
    "heavy_ball": (lambda params: SGD(params, lr=0.1, momentum=0.9), 1.0),
    "dampened": (lambda params: SGD(params, lr=0.1, momentum=0.5, dampening=0.3), 1.0),
    "nesterov": (lambda params: SGD(params, lr=0.1, momentum=0.9, nesterov=True), 1.0),
    "adam": (lambda params: Adam(params, lr=0.1, betas=(0.9, 0.999), eps=1e4), 1e4),
    "adamw_beta1_0.5": (lambda params: AdamW(params, lr=0.1, betas=(0.5, 0.999), eps=1e4, weight_decay=0.0), 1e4),
    "rmsprop_momentum": (lambda params: RMSprop(params, lr=0.1, momentum=0.5, eps=1e4), 1e4),
}


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_each_threshold_is_where_torchs_own_optimizer_stops_converging(name):
    make, eps = OPTIMIZERS[name]
    regime = stability(make([nn.Parameter(torch.zeros(1))]))
    assert regime.regulated == (PRECONDITIONED if name.startswith(("adam", "rmsprop")) else PLAIN)
    critical = regime.threshold * eps
    assert growth(make, 0.97 * critical)[1] < 1e-2, "below the threshold it converges"
    assert growth(make, 1.03 * critical)[0] > 1e2, "above it, it diverges"


def test_optimizers_without_a_known_threshold_say_so():
    from pytorch_optimizer import Lion

    regime = stability(Lion([nn.Parameter(torch.zeros(1))], lr=1e-4))
    assert regime.regulated is None and math.isnan(regime.threshold) and "Lion" in regime.rule


def test_adams_preconditioner_is_defined_once_it_has_a_second_moment():
    w = nn.Parameter(torch.tensor([1.0, -2.0]))
    optimizer = Adam([w], lr=0.01, betas=(0.9, 0.99), eps=1e-3)
    assert stability(optimizer).preconditioner is None  # before the first update
    for _ in range(3):
        optimizer.zero_grad()
        (w.square().sum() * 0.5).backward()
        optimizer.step()
    v = optimizer.state[w]["exp_avg_sq"]
    expected = (1 - 0.9**4) * ((v / (1 - 0.99**3)).sqrt() + 1e-3)
    torch.testing.assert_close(stability(optimizer).preconditioner[w], expected)


TRACKED = ["optimizer=adam", "track.sharpness.every=3", "track.sharpness.subset=64", "track.sharpness.chunk=32"]


@pytest.mark.slow
def test_tracking_leaves_weights_and_history_bit_identical(tmp_path, tiny_npz):
    """A ResNet-8 with batch norm under Adam: its statistics, the random streams and the optimizer's state are untouched."""
    overrides = [*tiny_overrides(tiny_npz), "trackio.enabled=false", "optimizer=adam"]
    launched(tmp_path, *overrides, "hydra.run.dir=off")
    launched(tmp_path, *overrides, *TRACKED, "hydra.run.dir=on")
    off, on = (torch.load(tmp_path / run / "final_model.pt", weights_only=True) for run in ("off", "on"))
    assert all(torch.equal(off[key], on[key]) for key in off)
    with open(tmp_path / "off" / "history.csv") as a, open(tmp_path / "on" / "history.csv") as b:
        rows_off, rows_on = list(csv.DictReader(a)), list(csv.DictReader(b))
    assert [{k: v for k, v in row.items() if k != "seconds"} for row in rows_off] == \
           [{k: row[k] for k in row_off if k != "seconds"} for row, row_off in zip(rows_on, rows_off)]
    tracked = sharpness_rows(tmp_path / "on")
    assert [int(row["update"]) for row in tracked] == [0, 3, 6, 9]  # 6 updates an epoch, 2 epochs
    assert math.isnan(float(tracked[0]["preconditioned_sharpness"]))  # before Adam's first update: no preconditioner yet
    assert all(float(row["preconditioned_sharpness"]) > 0 and float(row["ratio"]) > 0 for row in tracked[1:])
    assert float(tracked[1]["threshold"]) == pytest.approx(38 / 1e-3)
    assert {"sharpness.hessian", "sharpness.preconditioned", "sharpness.threshold", "sharpness.ratio"} <= rows_on[0].keys()
    assert (tmp_path / "on" / "sharpness.png").stat().st_size > 10_000


@pytest.mark.slow
def test_a_killed_run_with_tracking_resumes_bit_for_bit(tmp_path, tiny_npz):
    overrides = [*tiny_overrides(tiny_npz), "epochs=3", "trackio.enabled=false", *TRACKED]
    launched(tmp_path, *overrides, "hydra.run.dir=reference")
    with stopped_after(epoch=2, steps=4, how="kill"):
        assert launch_here(tmp_path, *overrides, "hydra.run.dir=killed").returncode == -9
    assert len(sharpness_rows(tmp_path / "killed")) == 2  # updates 0 and 3, as written when the first epoch ended
    launched(tmp_path, *overrides, "hydra.run.dir=killed", "hydra.output_subdir=null")
    assert_same_run(tmp_path / "reference", tmp_path / "killed")
    assert sharpness_rows(tmp_path / "reference") == sharpness_rows(tmp_path / "killed")
