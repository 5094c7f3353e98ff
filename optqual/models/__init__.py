"""The `model` group: each option's module, its schema, and the one way every caller builds a model.

A model takes its input channels, class count (and, for the MLP, image size) from the data:
conf/model/*.yaml interpolate `${data.channels}`, `${data.num_classes}`, `${data.image_size}`.
`build_model` fills what the data option leaves to the data itself (an npz file's classes)
and refuses an explicit value that contradicts the data, as one line naming the key.
"""

from typing import Any, Mapping

import torch
from omegaconf import DictConfig

from optqual.errors import ConfigError, build, check_arguments
from optqual.models import cifar_resnet, mlp, resnet18_cifar, timm_model

SCHEMAS = {**cifar_resnet.SCHEMAS, **mlp.SCHEMAS, **resnet18_cifar.SCHEMAS, **timm_model.SCHEMAS}
DATA_FACTS = {"in_channels": "channels", "num_classes": "num_classes", "image_size": "image_size"}  # model key: data key


def inputs_from_data(model: DictConfig, facts: Mapping[str, Any]) -> dict[str, Any]:
    """The model's keys that the data decides, from `facts` (the data's channels, num_classes,
    image_size; None where not yet known); a model value that contradicts a known fact is an error."""
    filled = {}
    for key, fact in DATA_FACTS.items():
        if key not in model or facts.get(fact) is None:
            continue
        if model[key] is not None and model[key] != facts[fact]:
            raise ConfigError(f"model.{key}={model[key]}: the data has {fact} {facts[fact]} (leave model.{key} to the data)")
        filled[key] = facts[fact]
    return filled


def check(cfg: DictConfig) -> None:
    """Before any work: what the data option states must fit the model, and the model's own values."""
    inputs_from_data(cfg.model, {fact: cfg.data.get(fact) for fact in DATA_FACTS.values()})
    check_arguments(cfg.model, "model")
    if cfg.model._target_ == timm_model.TARGET:
        timm_model.check(cfg.model)
    if cfg.model._target_ == mlp.TARGET:
        mlp.check(cfg.model)


def build_model(model: DictConfig, facts: Mapping[str, Any]) -> torch.nn.Module:
    """The model of a config, for data with these facts (optqual.data.ImageData.facts)."""
    return build(model, "model", **inputs_from_data(model, facts))
