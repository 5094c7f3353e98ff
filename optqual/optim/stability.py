"""The edge of stability each optimizer implies: the largest sharpness at which its next update is
stable on a quadratic, from its current learning rate and momentum, and for the adaptive ones the
diagonal preconditioner P whose preconditioned Hessian P^-1 H that threshold concerns.

Gradient descent is stable on a quadratic while lambda_max(H) < 2 / lr, and on neural networks it
trains at that edge (Cohen et al. 2021). In torch's conventions (a parameter group's `lr`, the
update of the momentum buffer `buf = momentum * buf + (1 - dampening) g`):

- SGD, heavy ball: lambda_max(H) < (2 + 2 momentum) / ((1 - dampening) lr) (Cohen et al. 2021, app.);
- SGD, Nesterov (`w -= lr (g + momentum * buf)`): (2 + 2 momentum) / ((1 + 2 momentum) lr);
- Adam and AdamW: lambda_max(P^-1 H) < (2 + 2 beta1) / ((1 - beta1) lr) (38 / lr at beta1 = 0.9),
  with P = (1 - beta1^(t+1)) (sqrt(v_t / (1 - beta2^t)) + eps) the preconditioner of the next
  update, the t-th second-moment estimate standing in for the (t+1)-th that its gradient will
  make, not known yet (Cohen et al. 2022, "Adaptive gradient methods at the edge of stability"); the first
  moment's bias correction is in P, AMSGrad's maximum replaces v_t;
- RMSprop (`buf = momentum * buf + g / P`, P = sqrt(v) + eps, centered: sqrt(v - mean^2) + eps):
  lambda_max(P^-1 H) < (2 + 2 momentum) / lr.

Coupled weight decay adds its coefficient to H's diagonal and decoupled decay (AdamW) shrinks the
weights; both are left out, as in the papers. Each threshold is checked in tests/test_stability.py
against the spectral radius of the update's linear map on a one-dimensional quadratic. Lion and
Muon (sign and orthogonalized updates) and SAM (whose threshold depends on the gradient's norm,
Long and Bartlett 2023) have no such threshold: their runs track the sharpness alone.
"""

import math
from dataclasses import dataclass

import torch
from torch.optim import SGD, Adam, AdamW, Optimizer, RMSprop

PLAIN, PRECONDITIONED = "hessian", "preconditioned"  # which sharpness an optimizer is regulated by


@dataclass(frozen=True)
class Stability:
    regulated: str | None  # PLAIN or PRECONDITIONED; None: no threshold known for this optimizer
    threshold: float  # the largest stable value of the regulated sharpness; nan when unknown or not defined yet
    rule: str  # the formula with the optimizer's values, or why there is none
    preconditioner: dict[torch.Tensor, torch.Tensor] | None = None  # parameter -> the diagonal of P (PRECONDITIONED)


def shared(optimizer: Optimizer, keys: tuple[str, ...]) -> dict | None:
    """The groups' common values of `keys` (the learning rate, the momentum, ...), or None if they differ."""
    values = [tuple(group[key] if not isinstance(group[key], list) else tuple(group[key]) for key in keys) for group in optimizer.param_groups]
    return dict(zip(keys, values[0])) if len(set(values)) == 1 else None


def adam_preconditioner(optimizer: Optimizer, beta1: float, beta2: float, eps: float, amsgrad: bool) -> dict | None:
    preconditioner = {}
    for group in optimizer.param_groups:
        for p in group["params"]:
            state = optimizer.state.get(p)
            if not state:  # before the first update: no second moment yet
                return None
            t = float(state["step"])
            second = state["max_exp_avg_sq"] if amsgrad else state["exp_avg_sq"]
            preconditioner[p] = (1 - beta1 ** (t + 1)) * ((second / (1 - beta2**t)).sqrt() + eps)
    return preconditioner


def rmsprop_preconditioner(optimizer: Optimizer, eps: float, centered: bool) -> dict | None:
    preconditioner = {}
    for group in optimizer.param_groups:
        for p in group["params"]:
            state = optimizer.state.get(p)
            if not state:
                return None
            second = state["square_avg"] - state["grad_avg"].square() if centered else state["square_avg"]
            preconditioner[p] = second.sqrt() + eps
    return preconditioner


def stability(optimizer: Optimizer) -> Stability:
    """The threshold of `optimizer`'s next update, from its parameter groups and state as they are now."""
    kind = type(optimizer)
    if kind is SGD:
        values = shared(optimizer, ("lr", "momentum", "dampening", "nesterov"))
        if values is None:
            return Stability(None, math.nan, "its parameter groups differ in lr, momentum or dampening")
        lr, momentum, dampening, nesterov = values.values()
        if nesterov:
            return Stability(PLAIN, (2 + 2 * momentum) / ((1 + 2 * momentum) * lr), f"(2 + 2*{momentum}) / ((1 + 2*{momentum}) * {lr:.6g})")
        return Stability(PLAIN, (2 + 2 * momentum) / ((1 - dampening) * lr), f"(2 + 2*{momentum}) / ((1 - {dampening}) * {lr:.6g})")
    if kind in (Adam, AdamW):
        values = shared(optimizer, ("lr", "betas", "eps", "amsgrad"))
        if values is None:
            return Stability(None, math.nan, "its parameter groups differ in lr, betas, eps or amsgrad")
        lr, (beta1, beta2), eps, amsgrad = values.values()
        rule = f"(2 + 2*{beta1}) / ((1 - {beta1}) * {lr:.6g})"
        preconditioner = adam_preconditioner(optimizer, beta1, beta2, eps, amsgrad)
        return Stability(PRECONDITIONED, (2 + 2 * beta1) / ((1 - beta1) * lr), rule, preconditioner)
    if kind is RMSprop:
        values = shared(optimizer, ("lr", "momentum", "eps", "centered"))
        if values is None:
            return Stability(None, math.nan, "its parameter groups differ in lr, momentum, eps or centered")
        lr, momentum, eps, centered = values.values()
        preconditioner = rmsprop_preconditioner(optimizer, eps, centered)
        return Stability(PRECONDITIONED, (2 + 2 * momentum) / lr, f"(2 + 2*{momentum}) / {lr:.6g}", preconditioner)
    return Stability(None, math.nan, f"{kind.__name__}: no stability threshold is known in closed form")
