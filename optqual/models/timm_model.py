"""Any model of timm, the model library of this field: `model=timm model.name=resnest14d`.

Built by timm.create_model with the data's input channels and classes. Pretrained weights
(`pretrained: true`) come through timm's Hugging Face hub cache; when they are neither cached
nor downloadable, the run stops with one line. Adaptive average pools are swapped for an equal
mean with a deterministic CUDA backward.
"""

from dataclasses import dataclass
from typing import Optional

from omegaconf import DictConfig
from torch import nn

from optqual.errors import ConfigError, require
from optqual.models.pooling import replace_global_pools
from optqual.ranges import within

TARGET = "optqual.models.timm_model.timm_model"


@dataclass
class TimmSchema:
    _target_: str = TARGET
    name: str = "resnet18"
    pretrained: bool = False
    in_channels: Optional[int] = within(3, "[1, inf)")  # null: the data's
    num_classes: Optional[int] = within(10, "[2, inf)")  # null: the data's


SCHEMAS = {"timm": TimmSchema}


def check(model: DictConfig) -> None:
    import timm

    require(timm.is_model(model.name), "model.name", model.name, "not a timm model (see timm.list_models())")


def timm_model(name: str, pretrained: bool = False, in_channels: int = 3, num_classes: int = 10) -> nn.Module:
    import timm
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        model = timm.create_model(name, pretrained=pretrained, in_chans=in_channels, num_classes=num_classes)
    except (LocalEntryNotFoundError, OSError) as err:  # offline and not cached, or the hub unreachable
        raise ConfigError(f"model.pretrained=true: no weights for {name} in the Hugging Face cache and the hub "
                          f"cannot be reached ({type(err).__name__})") from None
    return replace_global_pools(model)
