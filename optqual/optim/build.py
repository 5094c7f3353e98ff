"""From an `optimizer` config node and the model to an optimizer: schemas, parameter groups, checks.

Every option of conf/optimizer/ is a `_partial_` `_target_` called with parameter groups,
which are made here from the model (timm's `create_optimizer_v2` also sees the model):

- a plain option (sgd, adam, lion, ...) gets one group `all`, or with `no_weight_decay`
  two: `decay`, and `no_decay` (norm weights and every bias: timm's rule, a parameter of
  at most one dimension or named `*.bias`) with weight decay 0;
- `sam` passes its groups to its `base`, grouped by the base's rule;
- `muon` gets `muon`, the hidden weight matrices, and `rest.*`, everything else grouped
  by its `rest` option's rule.

Groups the model's other parts bring (the quantizer's logits, optqual/sparsity/quantizer.py)
come last with their own lr and weight decay; a quantized weight is grouped under its plain
name (`conv.weight`, not `conv.parametrizations.weight.original`). Each group has a `name`;
history.csv has its learning rate as `lr.<name>`.
"""

from dataclasses import dataclass
from typing import Any, Iterator, List

from hydra.utils import instantiate
from omegaconf import MISSING, DictConfig, OmegaConf
from torch import nn
from torch.optim import Optimizer

from optqual.errors import ConfigError, require
from optqual.optim.muon import Muon
from optqual.optim.sam import sam
from optqual.models.layers import plain_name
from optqual.ranges import within

SAM_TARGET = f"{sam.__module__}.{sam.__qualname__}"
MUON_TARGET = f"{Muon.__module__}.{Muon.__qualname__}"
GROUPING_KEYS = ("no_weight_decay",)  # how parameters are grouped, not an argument of the optimizer


@dataclass
class PlainSchema:
    _target_: str = MISSING
    _partial_: bool = True
    lr: float = within(MISSING, "(0, inf)")
    weight_decay: float = within(0.0, "[0, inf)")
    no_weight_decay: bool = False


@dataclass
class SGDSchema(PlainSchema):
    _target_: str = "torch.optim.SGD"
    momentum: float = within(0.0, "[0, 1)")
    dampening: float = within(0.0, "[0, 1]")
    nesterov: bool = False


@dataclass
class AdamSchema(PlainSchema):
    _target_: str = "torch.optim.Adam"
    betas: List[float] = within([0.9, 0.999], "[0, 1)")
    eps: float = within(1e-8, "(0, inf)")
    amsgrad: bool = False


@dataclass
class RMSpropSchema(PlainSchema):
    _target_: str = "torch.optim.RMSprop"
    alpha: float = within(0.99, "[0, 1)")
    eps: float = within(1e-8, "(0, inf)")
    momentum: float = within(0.0, "[0, 1)")
    centered: bool = False


@dataclass
class LionSchema(PlainSchema):
    _target_: str = "pytorch_optimizer.Lion"
    betas: List[float] = within([0.9, 0.99], "[0, 1)")


@dataclass
class SAMSchema:
    _target_: str = SAM_TARGET
    _partial_: bool = True
    base: Any = MISSING  # another option of the group: `optimizer@optimizer.base=adamw`
    rho: float = within(0.05, "(0, inf)")
    adaptive: bool = False


@dataclass
class MuonSchema:
    _target_: str = MUON_TARGET
    _partial_: bool = True
    rest: Any = MISSING  # a plain option of the group: `optimizer@optimizer.rest=sgd`
    lr: float = within(0.02, "(0, inf)")
    momentum: float = within(0.95, "[0, 1)")
    nesterov: bool = True
    ns_steps: int = within(5, "[1, inf)")
    weight_decay: float = within(0.0, "[0, inf)")


SCHEMAS = {"sgd": SGDSchema, "adam": AdamSchema, "rmsprop": RMSpropSchema, "lion": LionSchema, "sam": SAMSchema, "muon": MuonSchema}


def no_decay(name: str, param: nn.Parameter) -> bool:
    """Norm weights and biases: timm's `param_groups_weight_decay` rule."""
    return param.ndim <= 1 or name.endswith(".bias")


def hidden_matrices(model: nn.Module) -> set[str]:
    """Names of the weights Muon is for: every conv and linear layer's weight but the first
    (the stem) and the last (the classifier), in module order."""
    layers = [name for name, module in model.named_modules() if isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear))]
    return {f"{name}.weight" for name in layers[1:-1]}


def plain_groups(named: list[tuple[str, nn.Parameter]], no_weight_decay: bool) -> list[dict]:
    if not no_weight_decay:
        return [{"name": "all", "params": [p for _, p in named]}]
    groups = [
        {"name": "decay", "params": [p for name, p in named if not no_decay(name, p)]},
        {"name": "no_decay", "params": [p for name, p in named if no_decay(name, p)], "weight_decay": 0.0},
    ]
    return [group for group in groups if group["params"]]


def groups_for(node: DictConfig, model: nn.Module, named: list[tuple[str, nn.Parameter]]) -> list[dict]:
    if node._target_ == SAM_TARGET:
        return groups_for(node.base, model, named)
    if node._target_ == MUON_TARGET:
        hidden = hidden_matrices(model)
        rest = groups_for(node.rest, model, [(name, p) for name, p in named if name not in hidden])
        matrices = {"name": "muon", "params": [p for name, p in named if name in hidden], "use_muon": True}
        return [matrices] + [{**group, "name": f"rest.{group['name']}", "use_muon": False} for group in rest]
    return plain_groups(named, node.get("no_weight_decay", False))


def parameter_groups(model: nn.Module, node: DictConfig, own_groups: list[dict] = ()) -> list[dict]:
    """The trainable parameters of `model`, grouped as the option `node` (and its base or rest) asks,
    except those of `own_groups`, which follow as they are (Muon leaves them to its rest optimizer)."""
    taken = {id(p) for group in own_groups for p in group["params"]}
    named = [(plain_name(name), p) for name, p in model.named_parameters() if p.requires_grad and id(p) not in taken]
    return groups_for(node, model, named) + list(own_groups)


def without_grouping_keys(node: Any) -> Any:
    if isinstance(node, dict):
        return {key: without_grouping_keys(value) for key, value in node.items() if key not in GROUPING_KEYS}
    return node


def with_lr_scaled(spec: dict, factor: float) -> dict:
    """`spec` with its lr, and that of the optimizers nested in it (SAM's base, Muon's rest), times `factor`."""
    scaled = {key: with_lr_scaled(value, factor) if key in ("base", "rest") and isinstance(value, dict) else value
              for key, value in spec.items()}
    if "lr" in scaled:
        scaled["lr"] *= factor
    return scaled


def build_optimizer(model: nn.Module, node: DictConfig, lr_scale: float = 1.0, own_groups: list[dict] = ()) -> Optimizer:
    """The optimizer `node` describes, over `model`'s parameter groups, every learning rate times
    `lr_scale` (the run's `lr_scale`: a grid over it is a grid around each optimizer's own lr),
    plus `own_groups` with the lr and weight decay they carry.

    Raises ConfigError for what the constructors refuse: torch's own range checks (betas,
    momentum, eps, ...) and arguments an option does not take.
    """
    spec = with_lr_scaled(OmegaConf.to_container(node, resolve=True), lr_scale)
    factory = instantiate(without_grouping_keys(spec), _convert_="all")
    try:
        return factory(parameter_groups(model, node, own_groups))
    except (ValueError, TypeError) as err:
        raise ConfigError(f"optimizer: {err}") from err


def walk(node: DictConfig, key: str) -> Iterator[tuple[str, DictConfig]]:
    """(dotted key, node) for `node` and the optimizers nested in it (SAM's base, Muon's rest)."""
    yield key, node
    for inner in ("base", "rest"):
        if isinstance(node.get(inner), DictConfig):
            yield from walk(node[inner], f"{key}.{inner}")


def stand_in() -> nn.Module:
    """A model with one parameter of every kind the groups sort: stem, hidden conv, norm, biased head."""
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Conv2d(4, 4, 3), nn.Flatten(), nn.Linear(4, 2))


def check(cfg: DictConfig) -> None:
    """Refuse an optimizer config before any work: ranges, nesting, and whatever its constructor refuses."""
    for key, node in walk(cfg.optimizer, "optimizer"):
        if node._target_ == SAM_TARGET:
            require(node.base._target_ != SAM_TARGET, f"{key}.base", "sam", "SAM needs a base optimizer to wrap, not SAM")
        if node._target_ == MUON_TARGET:
            require(node.rest._target_ not in (SAM_TARGET, MUON_TARGET), f"{key}.rest", node.rest._target_,
                    "must be a plain optimizer (sgd, adamw, ...) for the stem, head, norms and biases")
    build_optimizer(stand_in(), cfg.optimizer, cfg.lr_scale)
