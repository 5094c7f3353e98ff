"""The model profile of every model option on this machine: the README's table.

    python benchmarks/model_profiles.py                  # every option of conf/model/, for CIFAR-10's 3x32x32
    python benchmarks/model_profiles.py resnet20 mlp --calls 100

Each model is built as a run would build it for data=cifar10 and profiled by
optqual/models/profile.py: parameters, MACs per image, the size of its saved weights,
batch-1 fp32 latency (mean, p50, p95 after a warm-up) and throughput at batch 1024.
Prints a markdown table, then one JSON line.
"""

import argparse
import json
import tempfile
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir

from optqual import config_dir
from optqual.config.schema import register_with_hydra
from optqual.models import build_model
from optqual.models.profile import static_profile, timings
from optqual.recording.recorder import save_weights
from optqual.system.devices import resolve_device

OPTIONS = sorted(path.stem for path in (config_dir() / "model").glob("*.yaml"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("models", nargs="*", default=OPTIONS, help=f"options of conf/model/ (default: all: {', '.join(OPTIONS)})")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--calls", type=int, default=200, help="timed batch-1 calls")
    args = parser.parse_args()
    device = resolve_device(args.device)
    register_with_hydra()
    rows = {}
    print("| model | parameters | MACs / image | checkpoint | latency, batch 1 (mean / p50 / p95) | throughput, batch 1024 |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for option in args.models:
        with initialize_config_dir(str(config_dir()), version_base="1.3"):
            cfg = compose("config", overrides=[f"model={option}"])
        facts = {key: cfg.data[key] for key in ("num_classes", "channels", "image_size")}
        torch.manual_seed(0)
        model = build_model(cfg.model, facts)
        with tempfile.TemporaryDirectory() as folder:
            save_weights(Path(folder) / "model.pt", model.state_dict())
            row = {**static_profile(cfg.model, facts, model, Path(folder) / "model.pt"), **timings(model, facts, device, args.calls)}
        rows[option] = row
        latency = row["latency_ms"]
        print(f"| `{option}` | {row['params']:,} | {row['macs_per_image'] / 1e6:,.1f} M | {row['checkpoint_bytes'] / 2**20:.2f} MiB | "
              f"{latency['mean']:.2f} / {latency['p50']:.2f} / {latency['p95']:.2f} ms | {row['throughput_img_s']:,.0f} img/s |", flush=True)
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
