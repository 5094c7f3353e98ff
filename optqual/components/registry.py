"""What every component declares about itself, in its own module, and the registry of them.

A component's module ends with `register(Component(...))`: its name (its key in the run
config, and its part of the training state), its config group's schemas and default option
(the YAML options live in conf/<name>/), its value checks, how it is built, the random
stream it draws from, where it is called among the others, and examples that turn it on.
Everything that needs to know the components reads the registry: the run schema and the
checks (optqual/config/), the run builder and so the training state (optqual/build.py), the
random streams, `--help`, and the test that resumes every component bit for bit. Adding a
component touches its module, its YAML, its docs page and its tests, and no list.

`order` places a component among the others at every point they share, lowest first:

     0  adapt_model      what changes the model before the optimizer is built (quantizer)
    10  on_images        per-image policies on the uint8 images (augment)
    20  on_batch         per-image ops on the normalized batch (random_erasing)
    30  on_batch         ops that mix the batch (batch_mix)
    35  on_batch         what measures the weights before the update (track)
    40  after_backward   what changes the gradient (clip_grad_norm)
    50  loss_terms       what adds to the loss (regularizer)
    60  after_step       the learning rate (scheduler)
    70  after_step       what follows the weights (ema)
    80  on_epoch_end     what chooses weights or stops training (early_stopping)
    90  on_epoch_end     what reports on the epoch's weights (sparsity)
"""

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping, Sequence

import torch
from omegaconf import DictConfig
from torch import nn

from optqual.components.extension import POINTS, Extension, uses
from optqual.data.images import EpochSteps, ImageData
from optqual.system.reproducibility import DATA_STREAM, stream_generator


@dataclass(frozen=True)
class BuildContext:
    """What a component is built from: the run's config, model, optimizer and data, and its own random stream."""

    config: DictConfig  # the whole run config (a component's own node is passed beside it)
    model: nn.Module
    optimizer: torch.optim.Optimizer
    data: ImageData
    epoch_steps: EpochSteps  # the optimizer updates of each epoch
    seed: int
    stream: str | None  # the component's declared random stream
    run_dir: Path  # where a component that writes files writes them (the pruning report)
    evaluate: Callable[[nn.Module, str], dict[str, float]]  # a model's mean loss and accuracy on "val" or "test"

    def generator(self, device: torch.device = torch.device("cpu")) -> torch.Generator:
        """The component's own stream of the run's seed, on `device` (in its state_dict, so resume is exact)."""
        if self.stream is None:
            raise ValueError("a component that draws random numbers must declare its stream")
        return stream_generator(self.seed, self.stream, device)


def no_check(cfg: DictConfig) -> None:
    """The check of a component whose schema checks every value it takes."""


@dataclass(frozen=True)
class Component:
    name: str  # its key in the run config; its part of the training state is `extension.<name>`
    summary: str  # one line: --help and the docs
    order: int  # where it is called among the others (the module docstring)
    examples: Mapping[str, Sequence[str]]  # overrides that turn it on: each is resumed bit for bit in the tests
    schemas: Mapping[str, type] = field(default_factory=dict)  # its group's schemas, stored as schema/<name>/<key>
    default: str | None = None  # the option of conf/<name>/ a run composes unless told otherwise (it must be off:
    # runs configured before the component existed are read with it, optqual/config/upgrade.py); None: a run-level key
    check: Callable[[DictConfig], None] = no_check  # the run config's values that concern it, before any work
    build: Callable[[DictConfig, BuildContext], Extension | None] | None = None  # its config node: an extension, or None (off)
    extension: type[Extension] | None = None  # the class `build` makes
    adapt_model: Callable[[DictConfig, nn.Module], list[dict]] | None = None  # changes the model before the optimizer
    # is built; returns the parameter groups it trains with its own settings
    stream: str | None = None  # the random stream it draws from (optqual/system/reproducibility.py)

    @property
    def points(self) -> list[str]:
        """The points of training it takes part in."""
        return [point for point in POINTS if self.extension is not None and uses(self.extension, point)]


_REGISTRY: dict[str, Component] = {}


def register(component: Component) -> Component:
    """Add a component (once per name, one component per stream)."""
    if component.name in _REGISTRY:
        raise ValueError(f"two components are named {component.name!r}")
    taken = {c.stream: c.name for c in _REGISTRY.values() if c.stream is not None}
    if component.stream in taken or component.stream == DATA_STREAM:
        raise ValueError(f"{component.name}: the random stream {component.stream!r} is {taken.get(component.stream, 'the data order')}'s")
    if not component.examples:
        raise ValueError(f"{component.name}: a component shows how to turn it on (examples)")
    if (component.build is None) != (component.extension is None):
        raise ValueError(f"{component.name}: a component that builds an extension declares its class, and only then")
    _REGISTRY[component.name] = component
    return component


def components() -> list[Component]:
    """Every registered component, in calling order."""
    return sorted(_REGISTRY.values(), key=lambda component: (component.order, component.name))
