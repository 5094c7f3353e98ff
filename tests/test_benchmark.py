"""The benchmarks still run end to end (their figures are quoted, never asserted)."""

import json
import subprocess
import sys

import pytest

from conftest import HEAD_NPZ, REPO

pytestmark = pytest.mark.slow  # `make test-fast` leaves these out


def test_benchmark_runs_and_reports_every_figure():
    command = [sys.executable, str(REPO / "benchmarks" / "throughput.py"), "--train-images", "256", "--eval-images", "256", "256",
               "--ceiling-steps", "2", "--repeats", "1", "--workers", "0", "--precisions", "fp32,bf16"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    figures = json.loads(result.stdout.strip().splitlines()[-1])
    for precision in ("fp32", "bf16"):
        assert {"ceiling_img_s", "optqual_img_s", "eval_img_s", "projected_baseline_s"} <= figures[precision].keys()
        assert len(figures[precision]["optqual_over_ceiling_rounds"]) == 1  # one ratio per round, their median the figure
    assert {"optqual_over_textbook", "bf16_over_fp32", "peak_rss_mb", "dataset_resident_mb"} <= figures.keys()
    assert "optqual epoch (bf16)" in figures["windows_img_s"]  # every window kept, not just the medians


def test_host_state_reports_every_round():
    command = [sys.executable, str(REPO / "benchmarks" / "host_state.py"), "--rounds", "2", "--steps", "1"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    rounds = json.loads(result.stdout.strip().splitlines()[-1])
    assert len(rounds) == 2
    assert {"fp32_img_s", "bf16_img_s", "bf16_over_fp32", "l2_gb_s", "dram_gb_s"} <= rounds[0].keys()


def test_benchmark_times_any_optimizer_variants_and_ablations():
    command = [sys.executable, str(REPO / "benchmarks" / "throughput.py"), "--train-images", "256", "--eval-images", "256", "256",
               "--ceiling-steps", "2", "--repeats", "1", "--precisions", "fp32", "--no-textbook", "--optimizer", "sam", "--model", "resnet20",
               "--variants", "optimizer=muon", "scheduler=cosine clip_grad_norm=1.0", "--ablate"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    figures = json.loads(result.stdout.strip().splitlines()[-1])
    assert figures["optimizer"] == "sam" and figures["model"] == "resnet20" and "textbook_img_s" not in figures
    variants = figures["fp32"]["variants"]
    assert sorted(variants) == ["optimizer=muon", "scheduler=cosine clip_grad_norm=1.0"]
    assert all(stats["img_s"] > 0 and len(stats["cost_rounds"]) == 1 for stats in variants.values())
    assert sorted(figures["fp32"]["ablations_over_ceiling"]) == ["on one batch", "without grad norms"]
    assert "optqual epoch on one batch / ceiling" in result.stdout


def test_model_profiles_prints_a_row_per_model():
    command = [sys.executable, str(REPO / "benchmarks" / "model_profiles.py"), "resnet8", "mlp", "--calls", "3"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = json.loads(result.stdout.strip().splitlines()[-1])
    assert sorted(rows) == ["mlp", "resnet8"] and rows["resnet8"]["params"] == 78_042
    assert "| `resnet8` | 78,042 |" in result.stdout


def test_trackio_sync_reports_the_bookkeeping_and_the_read_back():
    result = subprocess.run([sys.executable, str(REPO / "benchmarks" / "trackio_sync.py"), "--epochs", "5"],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    figures = json.loads(result.stdout.strip().splitlines()[-1])
    assert {"log_seconds_plain", "log_seconds_with_bookkeeping", "read_back_seconds"} <= figures.keys()


@pytest.mark.skipif(not HEAD_NPZ.is_file(), reason="the shared real images are not beside the checkout")
def test_the_edge_of_stability_reproduction_runs_and_says_its_verdict(tmp_path):
    """A tenth of the updates (--quick): the script trains, reads its runs back, judges and draws; the verdict
    itself needs the whole run (docs/sharpness.md quotes it)."""
    command = [sys.executable, str(REPO / "benchmarks" / "eos_adam.py"), "--quick", "--workdir", str(tmp_path / "runs"),
               "--figure", str(tmp_path / "eos.png")]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert result.returncode in (0, 1), result.stderr[-3000:]  # 1: not reproduced in a tenth of the updates
    lines = result.stdout.splitlines()
    assert sum(line.startswith("eta = ") and "median lambda_max(P^-1 H) / threshold" in line for line in lines) == 2
    assert any(line.startswith("verdict: ") for line in lines) and (tmp_path / "eos.png").stat().st_size > 10_000


@pytest.mark.skipif(not (HEAD_NPZ.parent / "MNIST" / "raw").is_dir(), reason="the shared MNIST is not beside the checkout")
def test_the_git_re_basin_reproduction_runs_and_says_its_verdict(tmp_path):
    """One epoch (--quick): the script trains the 2 x 2 sweep, analyzes every pair, judges and draws; docs/connectivity.md
    quotes the whole run's verdict."""
    command = [sys.executable, str(REPO / "benchmarks" / "rebasin_mnist.py"), "--quick", "--workdir", str(tmp_path / "runs"),
               "--figure", str(tmp_path / "rebasin.png")]
    result = subprocess.run(command, capture_output=True, text=True, timeout=900)
    assert result.returncode in (0, 1), result.stderr[-3000:]  # 1: not reproduced after one epoch
    lines = result.stdout.splitlines()
    assert sum(line.startswith("optimizer=") for line in lines) == 6  # every pair, the two equal-seed ones included
    assert sum(line.endswith("(shared initialization: not judged)") for line in lines) == 2
    assert any(line.startswith("verdict: ") for line in lines) and (tmp_path / "rebasin.png").stat().st_size > 10_000
