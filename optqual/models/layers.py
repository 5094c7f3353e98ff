"""A model's layers by name, the weights its optimizer trains, and its weights under plain names.

Names are those of `model.named_modules()` ("stem.conv", "stage2.0.conv1", "fc"); patterns
are shell-style (`fnmatch`: "stem.*", "stage3.*", "fc"). A pattern that matches no layer
of the model is a config error, so a typo cannot silently leave a layer in. A weight under a
parametrization (the quantizer of optqual/sparsity/quantizer.py) is trained as
`<layer>.parametrizations.weight.original`; weight files hold what the parametrization makes
of it, under the plain model's name (`plain_state_dict`).
"""

from fnmatch import fnmatch
from typing import Iterable

import torch
from omegaconf import DictConfig
from torch import nn
from torch.nn.utils import parametrize

from optqual.errors import ConfigError
from optqual.models import build_model

CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
WEIGHTED = CONV + (nn.Linear,)  # the layers that hold the network's multiply-accumulates
PARAMETRIZED = ".parametrizations."  # in a parameter's name: it is, or belongs to, a parametrization


def matches(name: str, patterns: Iterable[str]) -> bool:
    return any(fnmatch(name, pattern) for pattern in patterns)


def select_layers(model: nn.Module, kinds: tuple[type, ...], exclude: Iterable[str] = ()) -> list[tuple[str, nn.Module]]:
    """(name, module) of every module of `kinds`, in module order, except those `exclude` matches."""
    return [(name, module) for name, module in model.named_modules() if isinstance(module, kinds) and not matches(name, exclude)]


def trained_weight(module: nn.Module) -> torch.Tensor:
    """The weight the optimizer updates: under a parametrization its original, not the `weight` it makes."""
    if parametrize.is_parametrized(module, "weight"):
        return module.parametrizations.weight.original
    return module.weight


def plain_name(name: str) -> str:
    """A parameter's name as in the model without parametrizations: "fc.parametrizations.weight.original" -> "fc.weight"."""
    owner, marker, rest = name.partition(PARAMETRIZED)
    return f"{owner}.{rest.partition('.')[0]}" if marker and rest.endswith(".original") else name


def plain_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """`model.state_dict()`, with each parametrized tensor as its parametrization makes it, under the
    plain model's name, and the parametrizations' own parameters left out: what the model without
    them loads (the weight files).

    Not a deepcopy with the parametrizations removed: a parametrized module's class is shared
    by its copies, and removing one copy's parametrization removes the original's tensor.
    """
    state = model.state_dict()
    if not any(PARAMETRIZED in key for key in state):
        return state
    plain = {}
    with torch.no_grad():
        for key, value in state.items():
            owner, marker, rest = key.partition(PARAMETRIZED)
            if not marker:
                plain[key] = value
            elif rest.endswith(".original"):
                plain[plain_name(key)] = getattr(model.get_submodule(owner), rest.partition(".")[0]).detach().clone()
    return plain


def layer_names(cfg: DictConfig, kinds: tuple[type, ...]) -> list[str]:
    """The names of the config's model's layers of `kinds`, without building its weights (meta device)."""
    stand_ins = {"channels": 3, "num_classes": 10, "image_size": 32}  # what an npz file decides; names do not depend on it
    facts = {fact: cfg.data.get(fact) or value for fact, value in stand_ins.items()}
    with torch.device("meta"):
        model = build_model(cfg.model, facts)
    return [name for name, _ in select_layers(model, kinds)]


def check_patterns(patterns: Iterable[str], names: list[str], key: str) -> None:
    for pattern in patterns:
        if not any(fnmatch(name, pattern) for name in names):
            raise ConfigError(f"{key}: {pattern!r} matches no layer of the model (its layers: {', '.join(names)})")
