"""The training state: everything a resume needs, registered once by name, saved and restored whole.

Anything with `state_dict()` / `load_state_dict()` (the model, the optimizer, every
extension, the random generators, the loop's position, the run's history) is registered
here when the run is built. The checkpoint saves `TrainingState.state_dict()` and restores
it with `load_state_dict()`, which refuses a checkpoint whose parts differ from the run's:
a component added to a run is in its checkpoint without anyone listing it there.
"""

import random
from typing import Any, Protocol

import numpy as np
import torch


class Stateful(Protocol):
    def state_dict(self) -> dict: ...

    def load_state_dict(self, state: dict) -> None: ...


class RandomState:
    """Every generator that can influence a run: torch's global CPU generator and the CUDA one of the
    run's GPU, numpy's, Python's, and the run's own (the data order and augmentation)."""

    def __init__(self, generators: dict[str, torch.Generator], device: torch.device = torch.device("cpu")):
        self.generators = generators
        self.device = device

    def state_dict(self) -> dict[str, Any]:
        return {
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state(self.device) if self.device.type == "cuda" else None,
            "numpy": np.random.get_state(),
            "python": random.getstate(),
            "generators": {name: generator.get_state() for name, generator in self.generators.items()},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        torch.set_rng_state(state["torch"])
        cuda = state["cuda"]
        if cuda is not None and self.device.type == "cuda":  # saved as every GPU's list before 2026-12-07: cuda:0 was the run's
            torch.cuda.set_rng_state(cuda[0] if isinstance(cuda, (list, tuple)) else cuda, self.device)
        np.random.set_state(state["numpy"])
        random.setstate(state["python"])
        for name, generator in self.generators.items():
            generator.set_state(state["generators"][name])


class StateMismatch(ValueError):
    """A saved state whose parts are not the parts of this run."""


class TrainingState:
    def __init__(self) -> None:
        self.parts: dict[str, Stateful] = {}

    def register(self, name: str, part: Stateful) -> None:
        if name in self.parts:
            raise ValueError(f"two parts of the training state are named {name!r}")
        self.parts[name] = part

    def state_dict(self) -> dict[str, dict]:
        return {name: part.state_dict() for name, part in self.parts.items()}

    def load_state_dict(self, state: dict[str, dict]) -> None:
        if state.keys() != self.parts.keys():
            missing, unknown = sorted(self.parts.keys() - state.keys()), sorted(state.keys() - self.parts.keys())
            raise StateMismatch(f"the saved state lacks {missing} and has unknown parts {unknown}")
        for name, part in self.parts.items():
            part.load_state_dict(state[name])
