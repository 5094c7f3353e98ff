"""The `snapshots` group: the weights at chosen points of training, for `analyze --snapshots`
to measure the solution as it forms (`snapshots.at=log:12`).

`snapshots.at` says when, in `snapshots.unit` (epochs, or optimizer updates): a list (`[1,5,20]`),
`every:N`, or `log:K`, K points spaced evenly on a log scale from the first to the last (fewer
where they round to the same one: early training changes fastest). A snapshot is taken after
that epoch (its validation done) or that update: `snapshots/<unit>_<n>_model.pt`, the model's
state dict as `final_model.pt` holds it, and with `optimizer_state` (the default) the optimizer's
state beside it (`<label>_optimizer.pt`: the sharpness measure then also measures the sharpness
the optimizer regulates, against its threshold), written atomically; `snapshots/snapshots.json` lists
every snapshot taken (its label, epoch and update), rewritten atomically after each. The list
is part of the training state: a resumed run takes again, bit for bit, the snapshots after its
checkpoint, and keeps those before it.
"""

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, ListConfig
from torch import nn

from optqual.components.extension import Extension
from optqual.components.registry import BuildContext, Component, register
from optqual.errors import ConfigError, require
from optqual.files.atomic import atomic_write, write_json
from optqual.files.layout import SNAPSHOTS_DIR, SNAPSHOTS_INDEX, snapshot_label
from optqual.models.layers import plain_state_dict

SPEC = re.compile(r"(every|log):(\d+)")


@dataclass
class SnapshotsSchema:
    at: Any = None  # null: none; a list of epochs (or updates), every:N or log:K
    unit: str = "epoch"  # epoch or update
    optimizer_state: bool = True  # also the optimizer's state: the sharpness it regulates, at each snapshot


SCHEMAS = {"snapshots": SnapshotsSchema}


def points(at: Any, total: int) -> list[int]:
    """The epochs (or updates), from 1 to `total`, that `at` names, ascending; a ConfigError names the key."""
    if isinstance(at, (list, ListConfig)):
        require(all(isinstance(n, int) and 1 <= n <= total for n in at), "snapshots.at", list(at),
                f"must be whole numbers from 1 to the run's {total}")
        return sorted(set(at))
    match = SPEC.fullmatch(str(at))
    if match is None or int(match[2]) < 1:
        raise ConfigError(f"snapshots.at={at}: must be a list ([1,5,20]), every:N or log:K with N, K >= 1")
    kind, n = match[1], int(match[2])
    if kind == "every":
        return list(range(n, total + 1, n))
    return sorted({int(round(value)) for value in np.logspace(0, math.log10(total), n)} if total > 1 else {1})


class Snapshots(Extension):
    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer | None, run_dir: Path, unit: str, at: list[int]):
        self.model, self.optimizer, self.directory, self.unit, self.at = model, optimizer, run_dir / SNAPSHOTS_DIR, unit, set(at)
        self.updates, self.epochs = 0, 0  # done
        self.taken: list[dict] = []

    def after_step(self) -> None:
        self.updates += 1
        if self.unit == "update" and self.updates in self.at:
            self.take(epoch=self.epochs + 1)  # the epoch in progress

    def on_epoch_end(self, record: dict) -> bool:
        self.epochs = record["epoch"]
        if self.unit == "epoch" and self.epochs in self.at:
            self.take(epoch=self.epochs)
        return False

    def take(self, epoch: int) -> None:
        label = snapshot_label(self.unit, epoch if self.unit == "epoch" else self.updates)
        self.directory.mkdir(exist_ok=True)
        weights = plain_state_dict(self.model)
        atomic_write(self.directory / f"{label}_model.pt", lambda file: torch.save(weights, file))
        if self.optimizer is not None:
            state = self.optimizer.state_dict()
            atomic_write(self.directory / f"{label}_optimizer.pt", lambda file: torch.save(state, file))
        self.taken = [row for row in self.taken if row["label"] != label] + [{"label": label, "epoch": epoch, "update": self.updates}]
        write_json(self.directory / SNAPSHOTS_INDEX, {"unit": self.unit, "snapshots": self.taken})

    def state_dict(self) -> dict:
        return {"updates": self.updates, "epochs": self.epochs, "taken": self.taken}

    def load_state_dict(self, state: dict) -> None:
        self.updates, self.epochs, self.taken = state["updates"], state["epochs"], list(state["taken"])


def build_snapshots(node: DictConfig, context: BuildContext) -> Snapshots | None:
    if node.at is None:
        return None
    total = context.epoch_steps.total if node.unit == "update" else len(context.epoch_steps)
    return Snapshots(context.model, context.optimizer if node.optimizer_state else None, context.run_dir, node.unit, points(node.at, total))


def check(cfg: DictConfig) -> None:
    node = cfg.snapshots
    require(node.unit in ("epoch", "update"), "snapshots.unit", node.unit, "must be epoch or update")
    if node.at is not None and node.unit == "epoch":
        points(node.at, cfg.epochs)  # a list past the last epoch is refused before any work


register(Component(
    name="snapshots",
    summary="the weights at chosen epochs or updates (a list, every:N, log:K) for `analyze --snapshots`",
    order=95,  # after everything that changes the weights, at the end of the update and of the epoch
    schemas=SCHEMAS,
    default="default",
    check=check,
    build=build_snapshots,
    extension=Snapshots,
    examples={"snapshots_log": ["snapshots.at=log:3"], "snapshots_updates": ["snapshots.at=every:4", "snapshots.unit=update"]},
))
