"""`python -m optqual profile RUN_DIR`: the model profile of a run, timed on this machine.

The model is rebuilt from the run's config with its final weights (for the data facts the
run recorded in metrics.json), profiled by optqual/models/profile.py, and the result written
to RUN_DIR/profile.json (atomically; the run's own files are not touched) and printed.
"""

import json
from pathlib import Path

import torch
from omegaconf import OmegaConf

from optqual.config import resolve_device
from optqual.models import build_model
from optqual.models.profile import static_profile, timings
from optqual.runs.diff import NotARunDir
from optqual.runs.rundir import FINAL_MODEL, METRICS, write_json

PROFILE = "profile.json"


def profile_run(run_dir: str, device: str = "auto", calls: int = 200) -> dict:
    path = Path(run_dir)
    if not (path / METRICS).is_file() or not (path / ".hydra" / "config.yaml").is_file():
        raise NotARunDir(f"{run_dir}: not a run directory (no {METRICS} or .hydra/config.yaml)")
    metrics = json.loads((path / METRICS).read_text())
    cfg = OmegaConf.load(path / ".hydra" / "config.yaml")
    if "data" not in metrics:
        raise NotARunDir(f"{run_dir}: its {METRICS} has no data facts (a run from before profiles; re-run it)")
    facts = metrics["data"]
    model = build_model(cfg.model, facts)
    weights = path / FINAL_MODEL
    if weights.is_file():
        model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    result = {**static_profile(cfg.model, facts, model, weights), **timings(model, facts, resolve_device(device), calls)}
    write_json(path / PROFILE, result)
    return result


def format_profile(result: dict) -> str:
    latency = result["latency_ms"]
    return "\n".join([
        f"parameters          {result['params']:,}",
        f"MACs per image      {result['macs_per_image'] / 1e6:,.1f} M",
        f"checkpoint          {result['checkpoint_bytes'] / 2**20:,.2f} MiB" if result["checkpoint_bytes"] else "checkpoint          (none)",
        f"latency, batch 1    mean {latency['mean']:.2f} ms, p50 {latency['p50']:.2f} ms, p95 {latency['p95']:.2f} ms "
        f"({result['latency_calls']} calls, fp32, {result['device']}, {result['threads']} threads)",
        f"throughput          {result['throughput_img_s']:,.0f} images/s at batch {result['throughput_batch']}",
    ])
