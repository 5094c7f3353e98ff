"""Where a run trains: `device=auto` is cuda when present, else cpu; anything named must exist here."""

import torch

from optqual.errors import ConfigError, require


def resolve_device(name: str) -> torch.device:
    """`auto` is cuda when present, else cpu; anything else must exist on this machine."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
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
