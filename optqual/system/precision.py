"""What `precision` means, set on every path and recorded as it is in force.

- fp32: every float32 matmul and convolution in full IEEE fp32. cuDNN's default runs
  float32 convolutions in TF32 (a 10-bit mantissa) while cuBLAS runs matmuls in full fp32,
  so a run left at the defaults mixes the two under the name fp32: fp32 turns TF32 off.
- tf32: float32 matmuls and convolutions in TF32 on GPUs that have it (Ampere and later);
  the CPU stays IEEE.
- bf16: autocast to bfloat16 for the forward pass (weights, gradients and optimizer in fp32);
  what autocast leaves in float32 runs in IEEE fp32.
- fp16: autocast to float16 with torch's GradScaler: the loss is scaled before backward, the
  gradients unscaled before anything reads them, and a step whose gradients overflowed is
  skipped (the scale halves) rather than taken.

Only torch's `fp32_precision` settings are used (torch >= 2.9): mixing them with the legacy
`allow_tf32` flags is an error in torch.
"""

import contextlib
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Precision:
    name: str
    autocast: torch.dtype | None  # the forward pass's lower precision, None: none
    tf32: bool  # float32 matmuls and convolutions on a GPU in TF32
    loss_scaling: bool  # fp16's GradScaler


PRECISIONS = {
    "fp32": Precision("fp32", None, tf32=False, loss_scaling=False),
    "tf32": Precision("tf32", None, tf32=True, loss_scaling=False),
    "bf16": Precision("bf16", torch.bfloat16, tf32=False, loss_scaling=False),
    "fp16": Precision("fp16", torch.float16, tf32=False, loss_scaling=True),
}


def set_precision(name: str) -> None:
    """Set the float32 math of cuBLAS, cuDNN (convolutions and RNNs) and oneDNN for `precision=name`."""
    gpu = "tf32" if PRECISIONS[name].tf32 else "ieee"
    torch.backends.cuda.matmul.fp32_precision = gpu
    torch.backends.cudnn.conv.fp32_precision = gpu
    torch.backends.cudnn.rnn.fp32_precision = gpu
    torch.backends.mkldnn.fp32_precision = "ieee"  # oneDNN on the CPU: never a lower precision under the name fp32


def precision_flags(name: str) -> dict:
    """The precision settings in force now, as metrics.json records them."""
    precision = PRECISIONS[name]
    return {
        "matmul_fp32": torch.backends.cuda.matmul.fp32_precision,
        "conv_fp32": torch.backends.cudnn.conv.fp32_precision,
        "cpu_fp32": torch.backends.mkldnn.fp32_precision,
        "autocast": str(precision.autocast).removeprefix("torch.") if precision.autocast else None,
        "grad_scaler": precision.loss_scaling,
    }


def autocast(device: torch.device, name: str) -> contextlib.AbstractContextManager:
    """The forward pass's autocast for `precision=name` (a no-op for fp32 and tf32)."""
    dtype = PRECISIONS[name].autocast
    return torch.autocast(device.type, dtype=dtype, enabled=dtype is not None)


def grad_scaler(device: torch.device, name: str) -> torch.amp.GradScaler:
    """fp16's loss scaler on `device`; a disabled one (every call a pass-through) otherwise."""
    return torch.amp.GradScaler(device.type, enabled=PRECISIONS[name].loss_scaling)
