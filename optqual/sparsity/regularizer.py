"""The `regularizer` group: sparsity penalties on conv filters, weighted by a coefficient that
follows the update count.

The differentiated loss is `cross_entropy + strength * schedule(update) * penalty(model)`,
with penalty = sum over conv layers (not excluded) of `layer weight * sum of group L2 norms`:

- `group_lasso_channels`: one group per output filter W[f] (channel pruning);
- `group_lasso_blocks`: one group per `block_size` consecutive filters (the last block may be short);
- `l1_kernel`: one group per kernel W[f, c] (the L1 norm of the per-kernel L2 norms).

The penalty is taken on the weights the optimizer trains (under the quantizer: its full-precision
originals). The coefficient is evaluated before every update (the schedule's shapes are in
optqual/sparsity/regularizer_schedule.py). Each epoch's history records `reg_loss` (the mean of the added term),
`reg.penalty` (the mean penalty, unweighted) and `reg.coefficient` (that of the epoch's last
update); `train_loss` stays the cross-entropy, so the two terms read apart.
"""

from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional

import torch
from omegaconf import DictConfig, MISSING, OmegaConf
from torch import nn

from optqual.components.extension import Extension
from optqual.components.registry import Component, register
from optqual.data.images import EpochSteps
from optqual.errors import require
from optqual.models.layers import CONV, check_patterns, layer_names, matches, select_layers, trained_weight
from optqual.ranges import within
from optqual.sparsity import regularizer_schedule
from optqual.sparsity.regularizer_schedule import build_coefficient, check_coefficient

PENALTIES = ("group_lasso_channels", "group_lasso_blocks", "l1_kernel")


@dataclass
class RegularizerSchema:
    penalty: Optional[str] = None  # one of PENALTIES, or null (regularizer=none)
    strength: float = within(1e-4, "[0, inf)")  # the coefficient's scale: its schedule runs from 0 to 1 times this
    block_size: int = within(4, "[1, inf)")  # group_lasso_blocks: filters per group
    exclude: List[str] = field(default_factory=list)  # conv layers left out, e.g. [stem.*]
    layer_weights: Dict[str, float] = within({}, "[0, inf)")  # pattern: weight (the first match; default 1)
    schedule: Any = MISSING  # regularizer/schedule: constant, linear_warmup, cosine_anneal


# the group's schema, and those of its `schedule` subgroup (conf/regularizer/schedule/)
SCHEMAS = {"regularizer": RegularizerSchema, **{f"schedule/{name}": schema for name, schema in regularizer_schedule.SCHEMAS.items()}}


def group_norms(weight: torch.Tensor, penalty: str, block_size: int) -> torch.Tensor:
    """The L2 norm of every group of `weight` (out, in, *kernel) that `penalty` names."""
    if penalty == "l1_kernel":
        return torch.linalg.vector_norm(weight.flatten(2), dim=2)
    filters = weight.flatten(1)
    if penalty == "group_lasso_blocks":
        short = -len(filters) % block_size  # zero rows complete the last block without changing its norm
        filters = torch.cat([filters, filters.new_zeros(short, filters.shape[1])]).reshape(-1, block_size * filters.shape[1])
    return torch.linalg.vector_norm(filters, dim=1)


class SparsityPenalty(Extension):
    """Adds the weighted penalty to every step's loss and records it per epoch."""

    def __init__(self, layers: list[tuple[nn.Module, float]], penalty: str, block_size: int, strength: float,
                 schedule: Callable[[int], float], device: torch.device):
        self.layers, self.penalty, self.block_size = layers, penalty, block_size
        self.strength, self.schedule = strength, schedule
        self.updates = 0  # the optimizer updates taken so far: the schedule's clock
        self.coefficient = strength * schedule(0)
        self.sums = torch.zeros(2, device=device)  # this epoch's penalty and added term, summed over updates
        self.steps = 0
        self.counted = False  # SAM's second pass of the same update is not counted again

    def value(self) -> torch.Tensor:
        return sum(weight * group_norms(trained_weight(module), self.penalty, self.block_size).sum() for module, weight in self.layers)

    def loss_terms(self, model: nn.Module) -> list[torch.Tensor]:
        self.coefficient = self.strength * self.schedule(self.updates)
        if self.coefficient == 0:  # off: recorded, but no gradient work
            with torch.no_grad():
                penalty = self.value()
            term = None
        else:
            penalty = self.value()
            term = self.coefficient * penalty
        if not self.counted:
            self.sums += torch.stack([penalty.detach(), penalty.detach() * self.coefficient])
            self.steps, self.counted = self.steps + 1, True
        return [] if term is None else [term]

    def after_step(self) -> None:
        self.updates += 1
        self.counted = False

    def on_epoch_end(self, record: dict) -> bool:
        penalty, term = (self.sums / max(self.steps, 1)).tolist()
        record.update({"reg_loss": term, "reg.penalty": penalty, "reg.coefficient": self.coefficient})
        self.sums.zero_()
        self.steps = 0
        return False

    def state_dict(self) -> dict:
        return {"updates": self.updates, "coefficient": self.coefficient, "sums": self.sums, "steps": self.steps}

    def load_state_dict(self, state: dict) -> None:
        self.updates, self.coefficient, self.steps = state["updates"], state["coefficient"], state["steps"]
        self.sums.copy_(state["sums"])


def layer_weight(name: str, weights: dict[str, float]) -> float:
    return next((weight for pattern, weight in weights.items() if matches(name, [pattern])), 1.0)


def build_penalty(node: DictConfig, model: nn.Module, epoch_steps: EpochSteps) -> SparsityPenalty | None:
    """The run's penalty, or None for `regularizer=none`."""
    if node.penalty is None:
        return None
    weights = OmegaConf.to_container(node.layer_weights)
    layers = [(module, layer_weight(name, weights)) for name, module in select_layers(model, CONV, node.exclude)]
    device = next(model.parameters()).device
    return SparsityPenalty(layers, node.penalty, node.block_size, node.strength, build_coefficient(node.schedule, epoch_steps), device)


def check(cfg: DictConfig) -> None:
    node = cfg.regularizer
    if node.penalty is None:
        return
    require(node.penalty in PENALTIES, "regularizer.penalty", node.penalty, f"must be one of {', '.join(PENALTIES)}")
    check_coefficient(node.schedule, "regularizer.schedule", cfg.epochs)
    names = layer_names(cfg, CONV)
    check_patterns(node.exclude, names, "regularizer.exclude")
    check_patterns(node.layer_weights, names, "regularizer.layer_weights")
    require(any(not matches(name, node.exclude) for name in names), "regularizer.exclude", list(node.exclude),
            "leaves no conv layer to penalize")


register(Component(
    name="regularizer",
    summary="a sparsity penalty on conv filters, its coefficient on a schedule (regularizer/schedule)",
    order=50,
    schemas=SCHEMAS,
    default="none",
    check=check,
    build=lambda node, context: build_penalty(node, context.model, context.epoch_steps),  # its coefficient follows the updates
    extension=SparsityPenalty,
    examples={"sparsity_penalty": ["regularizer=group_lasso_blocks", "regularizer/schedule=linear_warmup", "regularizer.schedule.delay=1",
                                   "regularizer.schedule.ramp=1", "regularizer.strength=0.01"]},
))
