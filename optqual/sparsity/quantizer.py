"""The `quantizer` group: CoDeQ's dead-zone quantizer (Wenshoj et al. 2025, arXiv:2512.12981),
as its reference code saintslab/CoDeQ `src/quantizer.py` computes it.

Per layer, on every forward pass, from the full-precision weight w:

    absmax = the 99th percentile of |w|              (no gradient)
    b      = round(2 + 6 |tanh(theta_bit)|)           bits, in [2, 8]
    d      = 2 absmax (1 - |tanh(theta_dz)|)          the dead zone's width
    Q      = 2^(b-1) - 1                              the largest level
    s      = (absmax - d/2) / (Q - 0.5) + 1e-8        the step (the reference's 1e-8 keeps d = 2 absmax finite)
    shift  = d/2 - s/2
    q      = clamp(round(sign(w) relu(|w| - shift) / s), -Q, Q)
    w_hat  = s q + shift sign(q)

so |w| < d/2 gives exactly 0. round, clamp and relu pass the gradient straight through; the
gradient reaches theta_bit through b and s and theta_dz through d. Both logits start at 3.0:
8 bits and a dead zone 1% of absmax wide. They are trained in their own optimizer parameter
groups (`quantizer.dz`, `quantizer.bit`) with their own lr and weight decay, and decay is
what prunes: it pulls the logits toward 0, which widens the dead zone and lowers the bits.

The quantizer is attached with `torch.nn.utils.parametrize` to the weight of every conv and
linear layer not excluded: `module.weight` is the quantized weight, the optimizer trains
`module.parametrizations.weight.original`. Weight files (initial/final/best_model.pt) hold the
quantized weights under the plain model's names (optqual/models/layers.py: `plain_state_dict`), so every tool loads
them into the model without the quantizer; checkpoint.pt holds the originals and the logits.
"""

import math
from dataclasses import dataclass, field
from typing import Callable, List, Optional

import torch
from omegaconf import DictConfig
from torch import nn
from torch.nn.utils import parametrize

from optqual.components.registry import Component, register
from optqual.errors import require
from optqual.models.layers import WEIGHTED, check_patterns, layer_names, select_layers
from optqual.ranges import within

MIN_BITS, MAX_BITS = 2, 8
PERCENTILE = 0.99


@dataclass
class QuantizerSchema:
    kind: Optional[str] = None  # deadzone, or null (quantizer=none)
    exclude: List[str] = field(default_factory=list)  # conv/linear layer name patterns left in full precision
    init_logit: float = within(3.0, "(-inf, inf)")  # theta_dz and theta_bit at the start
    lr_dz: float = within(1e-3, "(0, inf)")
    lr_bit: float = within(1e-3, "(0, inf)")
    weight_decay_dz: float = within(0.01, "[0, inf)")
    weight_decay_bit: float = within(0.01, "[0, inf)")


SCHEMAS = {"quantizer": QuantizerSchema}


class StraightThrough(torch.autograd.Function):
    """`op(x, *args)` forward, the identity backward (to x; the args get no gradient). The op is a
    fixed function, never a fresh lambda: torch.compile guards on it, and would recompile per call."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, op: Callable[..., torch.Tensor], *args: torch.Tensor) -> torch.Tensor:
        ctx.extra = len(args)
        return op(x, *args)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        return grad, None, *[None] * ctx.extra


def percentile(values: torch.Tensor, q: float) -> torch.Tensor:
    """`torch.quantile(values, q)` of a flat tensor (linear interpolation), from two `kthvalue`
    selections as the reference code does: quantile sorts the whole tensor, and on a 64x64x3x3
    conv weight that took 0.47 ms of the quantizer's 0.63 ms forward pass (kthvalue: 0.07 ms)."""
    position = q * (values.numel() - 1)
    low = math.floor(position)
    lower = torch.kthvalue(values, low + 1).values
    if position == low:
        return lower
    return lower.lerp(torch.kthvalue(values, low + 2).values, position - low)


def straight_through(op: Callable[..., torch.Tensor], x: torch.Tensor, *args: torch.Tensor) -> torch.Tensor:
    return StraightThrough.apply(x, op, *args)


class DeadZoneQuantizer(nn.Module):
    """One layer's quantizer: a parametrization of its weight (see the module docstring)."""

    def __init__(self, init_logit: float = 3.0):
        super().__init__()
        self.theta_dz = nn.Parameter(torch.tensor(float(init_logit)))
        self.theta_bit = nn.Parameter(torch.tensor(float(init_logit)))

    def bits(self) -> torch.Tensor:
        return straight_through(torch.round, MIN_BITS + (MAX_BITS - MIN_BITS) * torch.tanh(self.theta_bit).abs())

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            absmax = percentile(w.abs().flatten(), PERCENTILE)
        levels = 2 ** (self.bits() - 1) - 1
        dead_zone = 2 * absmax * (1 - torch.tanh(self.theta_dz).abs())
        step = (absmax - dead_zone / 2) / (levels - 0.5) + 1e-8
        shift = dead_zone / 2 - step / 2
        compressed = torch.sign(w) * straight_through(torch.relu, w.abs() - shift)
        bound = levels.detach()
        q = straight_through(torch.clamp, straight_through(torch.round, compressed / step), -bound, bound)
        return step * q + shift * torch.sign(q)


def quantizers(model: nn.Module) -> dict[str, DeadZoneQuantizer]:
    """Layer name: its quantizer, for every quantized layer of `model`."""
    return {name: module.parametrizations.weight[0] for name, module in model.named_modules()
            if parametrize.is_parametrized(module, "weight") and isinstance(module.parametrizations.weight[0], DeadZoneQuantizer)}


def attach_quantizers(node: DictConfig, model: nn.Module) -> None:
    """Quantize the weight of every conv and linear layer of `model` that `node.exclude` leaves in (quantizer=deadzone)."""
    if node.kind is None:
        return
    for _, module in select_layers(model, WEIGHTED, node.exclude):
        parametrize.register_parametrization(module, "weight", DeadZoneQuantizer(node.init_logit))


def quantize(node: DictConfig, model: nn.Module) -> list[dict]:
    """Attach the quantizers (quantizer=deadzone) and return their logits' parameter groups."""
    attach_quantizers(node, model)
    return quantizer_groups(node, model)


def quantizer_groups(node: DictConfig, model: nn.Module) -> list[dict]:
    """The logits' own optimizer parameter groups (none without a quantizer)."""
    found = quantizers(model).values()
    if not found:
        return []
    return [{"name": "quantizer.dz", "params": [q.theta_dz for q in found], "lr": node.lr_dz, "weight_decay": node.weight_decay_dz},
            {"name": "quantizer.bit", "params": [q.theta_bit for q in found], "lr": node.lr_bit, "weight_decay": node.weight_decay_bit}]


def check(cfg: DictConfig) -> None:
    node = cfg.quantizer
    if node.kind is None:
        return
    require(node.kind == "deadzone", "quantizer.kind", node.kind, "must be deadzone (or null: quantizer=none)")
    names = layer_names(cfg, WEIGHTED)
    check_patterns(node.exclude, names, "quantizer.exclude")


register(Component(
    name="quantizer",
    summary="CoDeQ's learnable dead-zone quantizer on conv and linear weights",
    order=0,
    schemas=SCHEMAS,
    default="none",
    check=check,
    adapt_model=quantize,
    examples={"quantizer": ["quantizer=deadzone", "optimizer=adamw", "quantizer.weight_decay_dz=1", "regularizer=l1_kernel",
                            "regularizer/schedule=cosine_anneal"]},
))
