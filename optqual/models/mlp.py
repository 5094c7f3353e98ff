"""A multilayer perceptron: flatten, then Linear (+ batch norm) + activation (+ dropout) per hidden
width, then a linear classifier. The simplest optimizer testbed, and the MNIST-type model; with
`activation: tanh`, no batch norm and hidden [200, 200] it is the edge-of-stability papers'
`fc-tanh` (Cohen et al. 2021).

Submodules: `flatten`, `hidden1..K` (each a Sequential), `fc`; the embedding is fc's input.
"""

from collections import OrderedDict
from dataclasses import dataclass
from typing import List, Optional, Sequence

from omegaconf import DictConfig
from torch import nn

from optqual.errors import require
from optqual.ranges import within

ACTIVATIONS = {"relu": lambda: nn.ReLU(inplace=True), "tanh": nn.Tanh}
TARGET = "optqual.models.mlp.MLP"


@dataclass
class MLPSchema:
    _target_: str = TARGET
    hidden: List[int] = within([512, 256], "[1, inf)")
    dropout: float = within(0.0, "[0, 1)")
    batch_norm: bool = False
    activation: str = "relu"  # relu or tanh
    in_channels: Optional[int] = within(3, "[1, inf)")  # null: the data's
    image_size: Optional[int] = within(32, "[1, inf)")  # null: the data's
    num_classes: Optional[int] = within(10, "[2, inf)")  # null: the data's


SCHEMAS = {"mlp": MLPSchema}


def check(model: DictConfig) -> None:
    require(model.activation in ACTIVATIONS, "model.activation", model.activation, f"must be one of {', '.join(ACTIVATIONS)}")


class MLP(nn.Sequential):
    def __init__(self, hidden: Sequence[int] = (512, 256), dropout: float = 0.0, batch_norm: bool = False, activation: str = "relu",
                 in_channels: int = 3, image_size: int = 32, num_classes: int = 10):
        if not hidden or min(hidden) < 1:
            raise ValueError(f"hidden: need at least one positive width, got {list(hidden)}")
        if not 0 <= dropout < 1:
            raise ValueError(f"dropout {dropout}: must lie in [0, 1)")
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation {activation!r}: must be one of {', '.join(ACTIVATIONS)}")
        layers: list[tuple[str, nn.Module]] = [("flatten", nn.Flatten())]
        features = in_channels * image_size * image_size
        for index, width in enumerate(hidden, start=1):
            parts = [nn.Linear(features, width)] + ([nn.BatchNorm1d(width)] if batch_norm else []) + [ACTIVATIONS[activation]()]
            parts += [nn.Dropout(dropout)] if dropout > 0 else []
            layers.append((f"hidden{index}", nn.Sequential(*parts)))
            features = width
        layers.append(("fc", nn.Linear(features, num_classes)))
        super().__init__(OrderedDict(layers))
