"""checkpoint.pt: everything needed to continue a run exactly where it stopped.

The file holds the whole training state (optqual/engine/state.py: model, optimizer, every
extension, every random generator, the loop's position inside the current epoch, the
history so far), the composed config and the thread count, as one serialized blob plus its
SHA-256. It is written atomically; a file that is truncated or damaged anyway (a partial
copy, a full disk) fails the checksum and is refused, never loaded silently.
"""

import hashlib
import io
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from optqual.config import config_diff
from optqual.engine.state import StateMismatch, TrainingState
from optqual.errors import ConfigError
from optqual.runs.rundir import atomic_write

CHECKPOINT = "checkpoint.pt"
FORMAT = 2  # 2: the training state as registered parts


class CheckpointError(ConfigError):
    """A checkpoint that cannot be trusted or does not belong to this run."""


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
    # RNG states must be CPU tensors, and each part's load_state_dict moves the rest to the device
    state = torch.load(io.BytesIO(payload), map_location="cpu", weights_only=False)
    if state.get("format") != FORMAT:
        raise CheckpointError(f"{path}: checkpoint format {state.get('format')!r}, this optqual reads {FORMAT}")
    return state


def save_training_state(run_dir: Path, cfg: DictConfig, state: TrainingState) -> None:
    save_checkpoint(run_dir, {
        "config": OmegaConf.to_container(cfg, resolve=True),
        "threads": torch.get_num_threads(),  # part of a CPU run's arithmetic
        "state": state.state_dict(),
    })


def restore_training_state(run_dir: Path, cfg: DictConfig, state: TrainingState) -> bool:
    """Load `run_dir`'s checkpoint into `state` (and the thread count it ran with); False when there is none.

    The checkpoint must come from this very config: a run continued with other settings
    would no longer be the run it claims to be.
    """
    if not (run_dir / CHECKPOINT).is_file():
        return False
    saved = load_checkpoint(run_dir)
    changed = config_diff(OmegaConf.create(saved["config"]), OmegaConf.create(OmegaConf.to_container(cfg, resolve=True)))
    if changed:
        listed = ", ".join(f"{key}: {before!r} -> {now!r}" for key, before, now in changed[:3])
        raise CheckpointError(f"{run_dir / CHECKPOINT} was written by another config ({listed}); resume it with python -m optqual resume {run_dir}")
    torch.set_num_threads(saved["threads"])
    try:
        state.load_state_dict(saved["state"])
    except StateMismatch as err:
        raise CheckpointError(f"{run_dir / CHECKPOINT}: {err}") from err
    return True
