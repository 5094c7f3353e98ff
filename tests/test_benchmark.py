"""The throughput benchmark still runs end to end (its figures are quoted, never asserted)."""

import json
import subprocess
import sys

from conftest import REPO


def test_benchmark_runs_and_reports_every_figure():
    command = [sys.executable, str(REPO / "benchmarks" / "throughput.py"), "--train-images", "256", "--ceiling-steps", "2",
               "--repeats", "1", "--workers", "0", "--precisions", "fp32,bf16"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    figures = json.loads(result.stdout.strip().splitlines()[-1])
    for precision in ("fp32", "bf16"):
        assert {"ceiling_img_s", "optqual_img_s", "eval_img_s", "projected_baseline_s"} <= figures[precision].keys()
    assert {"optqual_over_textbook", "bf16_over_fp32", "peak_rss_mb", "dataset_resident_mb"} <= figures.keys()
    assert "optqual epoch (bf16)" in figures["windows_img_s"]  # every window kept, not just the medians
