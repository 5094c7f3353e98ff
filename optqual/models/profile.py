"""What a reproducibility sheet reports about a model: parameters, multiply-accumulates per
image, checkpoint size on disk, and, timed on a device, inference latency at batch 1 (fp32,
after a warm-up: mean, p50, p95 over a fixed number of calls) and throughput at batch 1024.

MACs are counted by torch.utils.flop_counter.FlopCounterMode (half its FLOPs: convolutions,
matmuls; normalization and activations are not counted, as the papers' figures do not) on a
copy of the model built on the meta device, so counting costs no compute and no memory.
"""

import statistics
import time
from pathlib import Path
from typing import Any, Mapping, Optional

import torch
from omegaconf import DictConfig
from torch.utils.flop_counter import FlopCounterMode

from optqual.models import build_model


def macs_per_image(model: DictConfig, facts: Mapping[str, Any]) -> int:
    return macs_and_params(model, facts)[0]


def macs_per_parameter(model: DictConfig, facts: Mapping[str, Any]) -> float:
    """Multiply-accumulates per parameter per image: about 1 for a fully connected model, whose
    every weight is used once per image; tens to hundreds for a convolutional one."""
    macs, params = macs_and_params(model, facts)
    return macs / params


def macs_and_params(model: DictConfig, facts: Mapping[str, Any]) -> tuple[int, int]:
    """The model option's MACs per image and its parameters, both counted on a copy built on the meta device."""
    with torch.device("meta"):
        counted = build_model(model, facts).eval()
        image = torch.empty(1, facts["channels"], facts["image_size"], facts["image_size"])
    with FlopCounterMode(display=False) as counter:
        counted(image)
    return counter.get_total_flops() // 2, sum(p.numel() for p in counted.parameters())


def static_profile(model: DictConfig, facts: Mapping[str, Any], built: torch.nn.Module, checkpoint: Optional[Path]) -> dict:
    """The figures that cost no timing: for metrics.json at the end of every run."""
    return {"params": sum(p.numel() for p in built.parameters()), "macs_per_image": macs_per_image(model, facts),
            "checkpoint_bytes": checkpoint.stat().st_size if checkpoint is not None and checkpoint.is_file() else None}


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.inference_mode()
def timings(model: torch.nn.Module, facts: Mapping[str, Any], device: torch.device, calls: int = 200,
            batch: int = 1024, batch_calls: int = 3) -> dict:
    """Batch-1 latency (ms) and batch-`batch` throughput (images/s) of `model` in eval mode, fp32."""
    model = model.to(device, memory_format=torch.channels_last).eval()
    shape = (facts["channels"], facts["image_size"], facts["image_size"])
    one = torch.randn(1, *shape, device=device).contiguous(memory_format=torch.channels_last)
    many = torch.randn(batch, *shape, device=device).contiguous(memory_format=torch.channels_last)

    def seconds(x: torch.Tensor) -> float:
        synchronize(device)
        start = time.perf_counter()
        model(x)
        synchronize(device)
        return time.perf_counter() - start

    for _ in range(max(10, calls // 10)):  # warm-up: allocator, kernel selection
        seconds(one)
    latency = sorted(1000 * seconds(one) for _ in range(calls))
    seconds(many)
    throughput = statistics.median(batch / seconds(many) for _ in range(batch_calls))
    return {"latency_ms": {"mean": statistics.fmean(latency), "p50": statistics.median(latency),
                           "p95": latency[min(calls - 1, round(0.95 * (calls - 1)))]},
            "latency_calls": calls, "throughput_img_s": throughput, "throughput_batch": batch,
            "device": str(device), "threads": torch.get_num_threads()}
