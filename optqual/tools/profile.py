"""`python -m optqual profile RUN_DIR`: the model profile of a run, timed on this machine.

The model is rebuilt from the run's config (optqual/runs/reader.py) with its final weights,
profiled by optqual/models/profile.py, and the result written to RUN_DIR/profile.json
(atomically; the run's own files are not touched) and printed.
"""

import torch

from optqual.files.atomic import write_json
from optqual.files.layout import FINAL, PROFILE
from optqual.models import build_model
from optqual.models.profile import static_profile, timings
from optqual.runs.reader import read_run
from optqual.system.devices import resolve_device


def profile_run(run_dir: str, device: str = "auto", calls: int = 200, threads: int | None = None) -> dict:
    if threads is not None:
        torch.set_num_threads(threads)
    run = read_run(run_dir)
    facts = {key: run.config.data[key] for key in ("num_classes", "channels", "image_size")}
    model = build_model(run.config.model, facts)
    weights = run.weights(FINAL)
    if weights.is_file():
        model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    result = {**static_profile(run.config.model, facts, model, weights), **timings(model, facts, resolve_device(device), calls)}
    write_json(run.path / PROFILE, result)
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
