"""Every use of another library's private or internal API, in one place, each pinned by a test
(tests/test_compat.py) on the versions of constraints.txt; tests/test_architecture.py finds any
such use elsewhere. Each is here because no public API does the same job as fast:

- `parameter_norms`: torch's fused per-tensor norm. The public per-tensor
  `torch.linalg.vector_norm` gives the same floats but took 1.2-1.3x as long on the CPU
  (ResNet-8's 29 gradients: 54 against 64 us; ResNet-20's 59: 122 against 160 us) and
  launches a kernel per tensor on a GPU; the loop takes it on every step.
- `augmentation_ops`, `geometric_matrix`: torchvision's tables of AutoAugment, RandAugment and
  TrivialAugment ops with their magnitude bins, and the inverse affine matrix its geometric ops
  (shears about the corner, translations, rotation) warp with: what its policies apply, with no
  public equivalent per op.
- `trackio_logged`, `trackio_dir`: what Trackio's database holds for a run, and the data
  directory Trackio read when it was imported (its public API reads neither).
- `share_state`: an optimizer made of two (Muon and another), each pointed at its part of the
  outer optimizer's groups and at its one state dict.
- `cpu_features`: the instruction sets torch's CPU kernels may use, as torch itself detects them.
- `compiled_graphs`: how many graphs torch.compile compiled, as dynamo counts them (a run
  records its recompilations; torch has no public count).
- `skipped_step`: whether fp16's GradScaler skipped an optimizer's step, as the device-side flag
  the scaler itself decided by (the public `get_scale` would cost a host sync per step and
  only shows that the scale fell).
"""

import math
from pathlib import Path
from typing import Any

import torch

# torch.cpu's detectors of the instruction sets that oneDNN and MKL dispatch on
_ISA_CHECKS = {"avx2": "_is_avx2_supported", "avx512": "_is_avx512_supported", "avx512_vnni": "_is_vnni_supported",
               "avx512_bf16": "_is_avx512_bf16_supported", "amx_tile": "_is_amx_tile_supported", "amx_fp16": "_is_amx_fp16_supported"}


def parameter_norms(tensors: list[torch.Tensor]) -> torch.Tensor:
    """The L2 norm of each tensor, stacked: one fused kernel."""
    return torch.stack(torch._foreach_norm(tensors))


def augmentation_ops(policy: str, bins: int, size: int) -> dict[str, tuple[torch.Tensor, bool]]:
    """torchvision's op table of `policy` (randaugment, trivialaugment, autoaugment) for `bins`
    magnitude bins on size x size images: op name -> (magnitude of each bin, whether it is signed)."""
    from torchvision.transforms import autoaugment as tv

    if policy == "trivialaugment":
        return tv.TrivialAugmentWide()._augmentation_space(bins)
    transform = {"randaugment": tv.RandAugment, "autoaugment": tv.AutoAugment}[policy]()
    return transform._augmentation_space(bins, (size, size))


def geometric_matrix(name: str, magnitude: float, width: int, height: int) -> list[float]:
    """The inverse affine matrix (6 numbers) torchvision's op `name` (ShearX/Y, TranslateX/Y, Rotate)
    warps a `width` x `height` image with at `magnitude`, as its policies call F.affine and F.rotate
    (shears about the corner, integer translations, rotation about the centre)."""
    from torchvision.transforms.functional import _get_inverse_affine_matrix

    if name in ("ShearX", "ShearY"):
        shear = math.degrees(math.atan(magnitude))
        corner = [1.0 * (0 - width * 0.5), 1.0 * (0 - height * 0.5)]
        return _get_inverse_affine_matrix(corner, 0.0, [0.0, 0.0], 1.0, [shear, 0.0] if name == "ShearX" else [0.0, shear])
    if name in ("TranslateX", "TranslateY"):
        shift = [1.0 * int(magnitude), 0.0] if name == "TranslateX" else [0.0, 1.0 * int(magnitude)]
        return _get_inverse_affine_matrix([0.0, 0.0], 0.0, shift, 1.0, [0.0, 0.0])
    return _get_inverse_affine_matrix([0.0, 0.0], -magnitude, [0.0, 0.0], 1.0, [0.0, 0.0])  # Rotate


def trackio_logged(project: str, name: str) -> list[dict[str, Any]]:
    """Every row (step, timestamp, charts) Trackio's database holds for run `name` of `project`."""
    from trackio.sqlite_storage import SQLiteStorage

    return SQLiteStorage.get_logs(project, run=name)


def trackio_dir() -> Path:
    """The data directory of this process's Trackio: TRACKIO_DIR as it was when trackio was imported."""
    import trackio.utils

    return Path(trackio.utils.TRACKIO_DIR)


def share_state(inner: torch.optim.Optimizer, groups: list[dict], state: dict) -> torch.optim.Optimizer:
    """`inner` stepping `groups` (some of an outer optimizer's) with the outer one's `state` dict:
    torch's and pytorch-optimizer's step read both through these attributes."""
    inner.param_groups = groups
    inner.state = state
    return inner


def cpu_features() -> list[str]:
    """The instruction sets among avx2, avx512, avx512_vnni, avx512_bf16, amx_tile, amx_fp16 this CPU has."""
    return [name for name, check in _ISA_CHECKS.items() if getattr(torch.cpu, check, lambda: False)()]


def compiled_graphs() -> int:
    """Graphs torch.compile has compiled in this process so far, each recompilation one more: dynamo's
    own count (torch has no public one)."""
    from torch._dynamo.utils import counters  # imported on use: importing dynamo takes a second

    return counters["stats"]["unique_graphs"]


def skipped_step(scaler: torch.amp.GradScaler, optimizer: torch.optim.Optimizer) -> torch.Tensor:
    """1 where the scaler found an inf or NaN in `optimizer`'s gradients and so skipped its last step,
    else 0; on the device, read between `scaler.step(optimizer)` and `scaler.update()`."""
    return sum(scaler._per_optimizer_states[id(optimizer)]["found_inf_per_device"].values())
