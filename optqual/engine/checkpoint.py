"""checkpoint.pt: everything needed to continue a run exactly where it stopped.

The file holds the whole training state (optqual/engine/state.py: model, optimizer, every
component, every random generator, the loop's position inside the current epoch, the history
so far), the composed config and the thread count, as one serialized blob plus its SHA-256.
It is written atomically; a file that is truncated or damaged anyway (a partial copy, a full
disk) fails the checksum and is refused, never loaded silently. A checkpoint of an earlier
format is read as this format (its parts renamed); whether its config is the run's is the
caller's question (optqual/train.py).
"""

import hashlib
import io
from pathlib import Path
from typing import Any

import torch

from optqual.engine.state import TrainingState
from optqual.errors import ConfigError
from optqual.files.atomic import atomic_write
from optqual.files.layout import CHECKPOINT
from optqual.system.hardware import device_name

FORMAT = 3  # 2: the training state as registered parts; 3: each component's part named after its config key
# the parts format 2 named otherwise (optqual before its components registered themselves, 2026-12-06)
RENAMED_IN_3 = {"augment": "extension.augment", "extension.clipping": "extension.clip_grad_norm",
                "extension.lr_schedule": "extension.scheduler", "extension.sparsity_report": "extension.sparsity"}


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
    """The state saved in `run_dir/checkpoint.pt`, after checking that the file is whole, in this format."""
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
    if state.get("format") == 2:
        state["state"] = {RENAMED_IN_3.get(name, name): part for name, part in state["state"].items()}
    elif state.get("format") != FORMAT:
        raise CheckpointError(f"{path}: checkpoint format {state.get('format')!r}, this optqual reads 2 and {FORMAT}")
    return state


def device_record(device: torch.device) -> dict[str, str]:
    """The device a checkpoint was written on: its type and the GPU's name or the CPU's model."""
    return {"type": device.type, "name": device_name(device)}


def save_training_state(run_dir: Path, config: dict, state: TrainingState, device: torch.device) -> None:
    """checkpoint.pt of a run with this (resolved) config on `device`, now."""
    save_checkpoint(run_dir, {
        "config": config,
        "threads": torch.get_num_threads(),  # part of a CPU run's arithmetic
        "device": device_record(device),  # so is the hardware: resume refuses other hardware
        "state": state.state_dict(),
    })


def check_same_device(run_dir: Path, saved: dict, device: torch.device) -> None:
    """Refuse to continue on other hardware a run that trained on `saved["device"]` (checkpoints
    before 2026-12-07 did not record it): its numbers would no longer come from one machine's arithmetic,
    and a CUDA generator's state does not load into the CPU's."""
    ran_on, here = saved.get("device"), device_record(device)
    if ran_on is None or ran_on == here:
        return
    raise CheckpointError(f"{run_dir / CHECKPOINT}: this run trained on {ran_on['type']} ({ran_on['name']}), this process would "
                          f"continue it on {here['type']} ({here['name']}): resume it on a machine with that "
                          f"{'GPU' if ran_on['type'] == 'cuda' else 'CPU'} (device={ran_on['type']}), or train it again in another directory")
