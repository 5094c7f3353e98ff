"""checkpoint.pt: everything needed to continue a run exactly where it stopped.

The file holds the training state (model, optimizer, every random generator that
influences the run, the position inside the current epoch, the history so far) as one
serialized blob plus its SHA-256. It is written atomically; a file that is truncated or
damaged anyway (a partial copy, a full disk) fails the checksum and is refused, never
loaded silently.
"""

import hashlib
import io
import random
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from optqual.config import ConfigError
from optqual.runs.diff import config_diff
from optqual.runs.rundir import atomic_write
from optqual.engine.loop import EpochProgress

CHECKPOINT = "checkpoint.pt"
FORMAT = 1


class CheckpointError(ConfigError):
    """A checkpoint that cannot be trusted or does not belong to this run."""


def rng_states(generator: torch.Generator) -> dict[str, Any]:
    """Every generator that can influence a run: torch (CPU and CUDA), numpy, random, and the
    run's data generator (order and augmentation)."""
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None,
        "numpy": np.random.get_state(),
        "python": random.getstate(),
        "data": generator.get_state(),
    }


def restore_rng_states(states: dict[str, Any], generator: torch.Generator) -> None:
    torch.set_rng_state(states["torch"])
    if states["cuda"] is not None:
        torch.cuda.set_rng_state_all(states["cuda"])
    np.random.set_state(states["numpy"])
    random.setstate(states["python"])
    generator.set_state(states["data"])


def save_checkpoint(run_dir: Path, state: dict[str, Any]) -> None:
    blob = io.BytesIO()
    torch.save({"format": FORMAT, **state}, blob)
    payload = blob.getvalue()
    digest = hashlib.sha256(payload).hexdigest()
    # the payload as a uint8 tensor: stored raw in the zip (pickled bytes would be a latin-1 string)
    outer = {"sha256": digest, "payload": torch.frombuffer(bytearray(payload), dtype=torch.uint8)}
    atomic_write(run_dir / CHECKPOINT, lambda file: torch.save(outer, file))


def load_checkpoint(run_dir: Path) -> dict[str, Any]:
    """The state saved in `run_dir/checkpoint.pt`, after checking that the file is whole."""
    path = run_dir / CHECKPOINT
    try:
        outer = torch.load(path, map_location="cpu", weights_only=True)
        payload, digest = outer["payload"].numpy().tobytes(), outer["sha256"]
    except Exception as err:  # whatever a damaged zip or pickle raises: the file is not whole
        raise CheckpointError(f"{path}: torn or truncated checkpoint, refusing to load it ({type(err).__name__})") from err
    if hashlib.sha256(payload).hexdigest() != digest:
        raise CheckpointError(f"{path}: checkpoint fails its SHA-256 check, refusing to load it")
    # our own file, checksum verified: it may hold numpy and Python RNG states. On the CPU:
    # RNG states must be CPU tensors, and load_state_dict moves the rest to the device
    state = torch.load(io.BytesIO(payload), map_location="cpu", weights_only=False)
    if state.get("format") != FORMAT:
        raise CheckpointError(f"{path}: checkpoint format {state.get('format')!r}, this optqual reads {FORMAT}")
    return state


@dataclass
class StartingPoint:
    """Where a run starts: at the beginning, or where its checkpoint left off."""

    from_checkpoint: bool = False
    history: list[dict] = field(default_factory=list)  # every finished epoch's record
    progress: EpochProgress | None = None  # the epoch it stopped inside, if it stopped mid-epoch
    wall_seconds: float = 0.0  # wall time the run had spent before

    @property
    def first_epoch(self) -> int:
        return self.progress.epoch if self.progress else len(self.history) + 1


def save_training_state(
    run_dir: Path,
    cfg: DictConfig,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    generator: torch.Generator,
    history: list[dict],
    progress: EpochProgress | None,
    wall_seconds: float,
) -> None:
    save_checkpoint(run_dir, {
        "config": OmegaConf.to_container(cfg, resolve=True),
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "rng": rng_states(generator),
        "threads": torch.get_num_threads(),  # part of a CPU run's arithmetic
        "history": history,
        "progress": asdict(progress) if progress else None,
        "wall_seconds": wall_seconds,
    })


def starting_point(run_dir: Path, cfg: DictConfig, model: torch.nn.Module, optimizer: torch.optim.Optimizer, generator: torch.Generator) -> StartingPoint:
    """The beginning, or, when `run_dir` holds a checkpoint, the point it left off: its state is
    loaded into the model, optimizer and generators.

    The checkpoint must come from this very config: a run continued with other settings
    would no longer be the run it claims to be.
    """
    if not (run_dir / CHECKPOINT).is_file():
        return StartingPoint()
    state = load_checkpoint(run_dir)
    changed = config_diff(OmegaConf.create(state["config"]), OmegaConf.create(OmegaConf.to_container(cfg, resolve=True)))
    if changed:
        listed = ", ".join(f"{key}: {saved!r} -> {now!r}" for key, saved, now in changed[:3])
        raise CheckpointError(f"{run_dir / CHECKPOINT} was written by another config ({listed}); resume it with python -m optqual resume {run_dir}")
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    restore_rng_states(state["rng"], generator)
    torch.set_num_threads(state["threads"])
    progress = EpochProgress(**state["progress"]).to(generator.device) if state["progress"] else None
    return StartingPoint(True, state["history"], progress, state["wall_seconds"])
