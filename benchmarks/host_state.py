"""Which of its speeds the shared machine is giving this process, round by round.

    python benchmarks/host_state.py              # 20 rounds, about 1.5 minutes on the 2-core CPU
    python benchmarks/host_state.py --rounds 60

On this project's 2-vCPU cloud machines the bf16 step runs at one of two speeds from one
minute to the next, with the same process, code and data, while the fp32 step barely
moves. Each round times the bare fp32 and bf16 steps (throughput.py's ceiling), then two
copies whose speed depends only on the cores and memory the host lends: one that stays in
the cores' L2 caches and one that streams from DRAM. If the bf16 step's slow rounds are
the rounds in which those copies change speed too, the variation is the host's, not
optqual's (on this project's machine: L2 about 113 -> 88 GB/s, DRAM about 34 -> 52 GB/s).
Prints a line per round, then one JSON line with all rounds.
"""

import argparse
import json
import time

import torch

from optqual.system.allocator import keep_freed_memory
from optqual.system.reproducibility import make_deterministic
from throughput import BASELINE, BATCH, ceiling, random_images, rates, run_config  # the sibling script

L2_RESIDENT = 512 * 1024  # bytes read (and as many written) per copy: within two 1 MiB L2 caches
DRAM_BOUND = 128 * 2**20  # four times the 32 MiB L3


def copy_bandwidth(n_bytes: int, repeats: int) -> float:
    """GB/s read plus written by an elementwise add over `n_bytes` of float32."""
    source = torch.ones(n_bytes // 4)
    out = torch.empty_like(source)
    torch.add(source, 1, out=out)  # touch `out` before timing
    start = time.perf_counter()
    for _ in range(repeats):
        torch.add(source, 1, out=out)
    return 2 * n_bytes * repeats / (time.perf_counter() - start) / 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--steps", type=int, default=10, help="train steps per timed window")
    args = parser.parse_args()

    cpu = torch.device("cpu")
    make_deterministic(0)
    keep_freed_memory()  # as a run does (optqual/system/machine.py)
    cfg = run_config("sgd", "none", BASELINE["epochs"])
    _, data = random_images(BATCH, (BASELINE["val"], BASELINE["test"]), cpu, cfg.data)
    steps = {precision: ceiling(data, cpu, precision, False, args.steps, cfg) for precision in ("fp32", "bf16")}
    rounds = []
    for number in range(1, args.rounds + 1):
        speeds = rates(cpu, steps, 1)
        row = {"fp32_img_s": speeds["fp32"][0], "bf16_img_s": speeds["bf16"][0],
               "l2_gb_s": copy_bandwidth(L2_RESIDENT, 2000), "dram_gb_s": copy_bandwidth(DRAM_BOUND, 10)}
        row["bf16_over_fp32"] = row["bf16_img_s"] / row["fp32_img_s"]
        rounds.append(row)
        print(f"round {number:>3}: step fp32 {row['fp32_img_s']:>5.0f}  bf16 {row['bf16_img_s']:>5.0f} img/s  "
              f"(bf16 / fp32 {row['bf16_over_fp32']:.2f})  |  copy in L2 {row['l2_gb_s']:>4.0f}  from DRAM {row['dram_gb_s']:>3.0f} GB/s",
              flush=True)
    print(json.dumps(rounds))


if __name__ == "__main__":
    main()
