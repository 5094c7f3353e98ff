"""Which hardware and which math libraries made a run (metrics.json's `hardware`).

CPU results are bit-identical on one machine but not across x86 CPU models: oneDNN and MKL
pick kernels by the instruction sets they find (AVX2, AVX-512, AMX), and those split sums
differently. So a run records the CPU model, the ISA features those libraries use, their
versions, and on a GPU its name and the CUDA and cuDNN versions; `python -m optqual diff`
shows them when two runs differ in them.
"""

import platform
import re
from pathlib import Path

import torch

from optqual.compat import cpu_features


def cpu_model() -> str:
    """The CPU's model name as the kernel reports it (platform's answer where /proc is absent)."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        found = re.search(r"^model name\s*:\s*(.+)$", cpuinfo.read_text(), re.MULTILINE)
        if found:
            return found.group(1).strip()
    return platform.processor() or platform.machine()


def library_version(pattern: str) -> str | None:
    """A line of torch's build configuration (oneDNN's and MKL's versions live there)."""
    found = re.search(pattern, torch.__config__.show())
    return found.group(1) if found else None


def hardware(device: torch.device) -> dict:
    record = {
        "cpu": cpu_model(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),  # the ISA torch's own CPU kernels were dispatched to
        "cpu_isa": cpu_features(),
        "onednn": library_version(r"MKL-DNN v([\d.]+)"),
        "mkl": library_version(r"Math Kernel Library Version ([\d.]+)"),
    }
    if device.type == "cuda":
        # the UUID names the physical GPU (nvidia-smi -L lists it), whatever CUDA_VISIBLE_DEVICES renumbered it to
        record.update(gpu=torch.cuda.get_device_name(device), gpu_uuid=f"GPU-{torch.cuda.get_device_properties(device).uuid}",
                      cuda=torch.version.cuda, cudnn=torch.backends.cudnn.version())
    return record


def device_name(device: torch.device) -> str:
    """What a run's arithmetic ran on: the GPU's name on CUDA, the CPU's model on the CPU."""
    return torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_model()
