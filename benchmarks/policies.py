"""Time per batch of the augmentation policies (optqual/components/augment.py) on uint8 CIFAR-sized images.

    python benchmarks/policies.py                    # the CPU, batches of 128, 2 threads
    python benchmarks/policies.py --device cuda      # a GPU (synchronized around each window)

Each figure is the median over --windows timed windows of --calls calls each, after warm-up
calls; the policies take turns window by window, so a drift in the machine's speed slows all
of them alike. Prints one line per policy and one JSON line.
"""

import argparse
import json
import statistics
import time

import torch

from optqual.components.augment import AutoAugment, RandAugment, TrivialAugmentWide
from optqual.models.profile import synchronize

POLICIES = {"randaugment": RandAugment, "trivialaugment": TrivialAugmentWide, "autoaugment": AutoAugment}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--windows", type=int, default=9)
    parser.add_argument("--calls", type=int, default=20)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    images = torch.randint(0, 256, (args.batch, 32, 32, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(0)).to(device)
    policies = {name: policy(torch.Generator().manual_seed(1)) for name, policy in POLICIES.items()}
    for policy in policies.values():
        for _ in range(5):
            policy.on_images(images)
    windows = {name: [] for name in policies}
    for _ in range(args.windows):
        for name, policy in policies.items():
            synchronize(device)
            started = time.perf_counter()
            for _ in range(args.calls):
                policy.on_images(images)
            synchronize(device)
            windows[name].append((time.perf_counter() - started) / args.calls * 1000)
    figures = {name: statistics.median(times) for name, times in windows.items()}
    for name, ms in figures.items():
        print(f"{name:16s} {ms:6.2f} ms per batch of {args.batch}")
    print(json.dumps({"device": str(device), "threads": args.threads, "ms_per_batch": figures}))


if __name__ == "__main__":
    main()
