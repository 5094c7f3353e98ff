"""Host synchronizations per training step on a GPU, counted by torch.cuda.set_sync_debug_mode.

    python benchmarks/sync_check.py --data-path /tmp/synthetic.npz                 # every setting below
    python benchmarks/sync_check.py --data-path /tmp/synthetic.npz augment=randaugment

A step that makes the host wait for the GPU (a .item(), a blocking copy, a tensor built from
Python numbers on the device) leaves the GPU idle while the host catches up; a small model's
step is short enough to feel every one. Each setting's run builds what `python launch.py`
builds (optqual/build.py) and takes STEPS steps after WARMUP; the count is of torch's
synchronization warnings in those steps (fp16's GradScaler needs one per step: it decides on
the host whether to skip the update). Prints one line per setting and one JSON line; exits 1
when a setting other than fp16 synchronizes.
"""

import argparse
import json
import sys
import tempfile
import warnings
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir

from optqual import config_dir
from optqual.build import build_training
from optqual.config.schema import register_with_hydra
from optqual.engine.loop import EpochProgress
from optqual.errors import build
from optqual.system.machine import set_up_machine

SETTINGS = ["", "augment=randaugment", "augment=trivialaugment", "augment=autoaugment", "batch_mix=cutmix", "batch_mix=mixup",
            "random_erasing=default", "optimizer=sam", "quantizer=deadzone", "precision=bf16", "precision=fp16"]
ALLOWED = {"precision=fp16": 1}  # GradScaler's one decision per step
WARMUP, STEPS = 3, 10


def syncs_per_step(overrides: list[str], data_path: str) -> float:
    with initialize_config_dir(str(config_dir()), version_base="1.3"):
        cfg = compose("config", overrides=["data=npz", f"data.path={data_path}", "trackio.enabled=false", *overrides])
    device = torch.device("cuda")
    set_up_machine(0, device=device, precision=cfg.precision)
    training = build_training(cfg, build(cfg.data, "data", device=device), device, Path(tempfile.mkdtemp()))
    progress = EpochProgress.begin(1, training.data, training.generator)
    training.model.train()

    def step(index: int) -> None:
        images, labels = training.data.train_batch(progress.order, index, training.data.batch_size(1), training.generator)
        training.step(training.data.normalize(training.hooks.on_images(images)), labels, progress)

    for index in range(WARMUP):
        step(index)
    torch.cuda.synchronize()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            for index in range(WARMUP, WARMUP + STEPS):
                step(index)
        finally:
            torch.cuda.set_sync_debug_mode("default")
    syncs = [w for w in caught if "synchroniz" in str(w.message).lower()]
    for found in {f"{w.filename}:{w.lineno}" for w in syncs}:
        print(f"    synchronizes at {found}")
    return len(syncs) / STEPS


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-path", required=True, help="an npz of CIFAR-shaped images (data=npz)")
    parser.add_argument("settings", nargs="*", help="overrides, one setting each (default: every setting above)")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        sys.exit("sync_check: needs a CUDA GPU")
    register_with_hydra()
    found = {}
    for setting in args.settings or SETTINGS:
        found[setting or "default"] = syncs_per_step(setting.split(), args.data_path)
        print(f"{setting or 'default':28s} {found[setting or 'default']:.1f} synchronizations per step", flush=True)
    print(json.dumps({"syncs_per_step": found}))
    too_many = [name for name, count in found.items() if count > ALLOWED.get(name, 0)]
    if too_many:
        sys.exit(f"sync_check: these settings synchronize the host in every step: {', '.join(too_many)}")


if __name__ == "__main__":
    main()
