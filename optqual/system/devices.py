"""Where a run trains: `device=auto` is cuda when present, else cpu (never silently, where GPUs are present but
unusable); anything named must exist here."""

import os
import re
from pathlib import Path

import torch

from optqual.errors import ConfigError, require


def nvidia_driver() -> str | None:
    """The loaded NVIDIA kernel driver's version (Linux), None where there is none."""
    path = Path("/proc/driver/nvidia/version")
    if not path.is_file():
        return None
    found = re.search(r"Kernel Module\s+(\S+)", path.read_text())
    return found.group(1) if found else "unknown version"


def why_no_cuda() -> str:
    """Why this torch cannot use the machine's NVIDIA GPUs, with the way out."""
    if torch.version.cuda is None:
        return "this torch is a build without CUDA: install a CUDA build of torch"
    return (f"this torch, built for CUDA {torch.version.cuda}, cannot use them (most often the driver is older than that "
            "CUDA needs): update the driver, or install a torch built for an older CUDA")


def resolve_device(name: str) -> torch.device:
    """`auto` is cuda when present, else cpu; anything else must exist on this machine. `auto` on a
    machine whose NVIDIA GPUs this torch cannot use is refused: a run meant for a GPU would
    otherwise train on the CPU, hundreds of times slower, with one word in its log to say so."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        driver = nvidia_driver()
        hidden = os.environ.get("CUDA_VISIBLE_DEVICES") == ""  # hidden on purpose: the CPU was asked for
        require(driver is None or hidden, "device", "auto",
                f"this machine has NVIDIA GPUs (driver {driver}) but {why_no_cuda()}; or set device=cpu to train on the CPU")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"device={name}: unknown device (use auto, cpu, cuda or cuda:N)") from None
    if device.type == "cuda":
        require(torch.cuda.is_available(), "device", name, "CUDA is not available on this machine")
        index = device.index or 0
        require(index < torch.cuda.device_count(), "device", name, "no such CUDA device")
    elif device.type == "mps":
        require(torch.backends.mps.is_available(), "device", name, "MPS is not available")
    else:
        require(device.type == "cpu", "device", name, "unsupported device type")
    return device


def free_memory(device: torch.device) -> int | None:
    """The bytes `device` can still take: CUDA's free memory, the host's available memory (Linux's
    MemAvailable) for the CPU; None where it cannot be known."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    if device.type == "cpu":
        try:
            with open("/proc/meminfo") as meminfo:
                return next(int(line.split()[1]) * 1024 for line in meminfo if line.startswith("MemAvailable:"))
        except (OSError, StopIteration):
            return None
    return None


def host_to_device(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A host tensor on `device` without making the host wait: to a GPU from pinned memory,
    asynchronously (a non-blocking copy from pageable memory waits for the GPU's stream)."""
    if device.type != "cuda":
        return tensor.to(device)
    return tensor.pin_memory().to(device, non_blocking=True)
