"""Sharpness-aware minimization (Foret et al. 2021; ASAM: Kwon et al. 2021) around any optimizer of the group.

The update is pytorch-optimizer's `SAM`: with the gradient g at the weights w already
computed, it moves to w + e with e = rho * g / ||g|| (ASAM: e = rho * w^2 g / ||w g||),
recomputes the gradient there through the closure, moves back to w and lets the base
optimizer step with that gradient. The training loop gives SAM the closure (`two_pass`),
and runs it with batch-norm statistics frozen: the running means, variances and batch
counters are updated by the first pass only, as in the reference implementation.
"""

import contextlib
import sys
import types
from typing import Callable, Iterator

import torch
from torch import nn


def sam(params, base: Callable, rho: float = 0.05, adaptive: bool = False) -> torch.optim.Optimizer:
    """`_target_` of conf/optimizer/sam.yaml: SAM around `base`, another option of the group (a partial)."""
    from pytorch_optimizer import SAM  # imported by the runs that use it: it takes 0.7 s to import

    return SAM(params, base_optimizer=base, rho=rho, adaptive=adaptive)


def two_pass(optimizer: torch.optim.Optimizer) -> bool:
    """Whether `step` needs a closure that recomputes the loss and its gradient (SAM's second pass)."""
    library = sys.modules.get("pytorch_optimizer")  # not imported: no SAM was built
    return library is not None and isinstance(optimizer, library.SAM)


@contextlib.contextmanager
def running_stats_frozen(model: nn.Module) -> Iterator[None]:
    """Batch norm normalizes with the batch's statistics as in training, but updates no running
    statistic and no batch counter (a module that tracks none computes exactly that)."""
    norms = [m for m in model.modules() if getattr(m, "track_running_stats", False)]  # batch norm, and instance norm that tracks
    for module in norms:
        module.track_running_stats = False
    try:
        yield
    finally:
        for module in norms:
            module.track_running_stats = True


@contextlib.contextmanager
def base_step_through(optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler) -> Iterator[None]:
    """SAM's base step taken through fp16's GradScaler: `scaler.step(base)`, which skips the update
    when the second pass's gradients overflowed (SAM has already put the weights back by then; a first
    pass that overflowed perturbs them to NaN, so its second pass overflows too). GradScaler takes no
    closure, and SAM's step takes the base optimizer's step with its own; at the other precisions
    `scaler.step(base)` is `base.step()`."""
    base = optimizer.base_optimizer
    optimizer.base_optimizer = types.SimpleNamespace(step=lambda: scaler.step(base))
    try:
        yield
    finally:
        optimizer.base_optimizer = base
