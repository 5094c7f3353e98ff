"""A checked config to everything a run trains with: the data, the model, the optimizer, every
registered component and the training state.

Building writes nothing and changes nothing on the machine; setting the machine up (threads,
allocator, deterministic kernels, seeds: optqual/system/machine.py) is a step of its own that
comes first, since the initial weights are the first draw from the seeded global generator.
The order below is part of every result: the model, the components that adapt it, the
optimizer over its parameter groups, then the components in the registry's order.
"""

from dataclasses import dataclass
from pathlib import Path

import torch
from omegaconf import DictConfig

from optqual.components.extension import Extension
from optqual.components.registry import BuildContext, components
from optqual.config.resolved import resolved_config
from optqual.config.schema import experiment_title
from optqual.data.images import ImageData
from optqual.engine.hooks import Hooks
from optqual.engine.loop import EVAL_BATCH_SIZE, Training, evaluate, grad_norm_every
from optqual.engine.state import RandomState, TrainingState
from optqual.errors import build
from optqual.losses import plain_loss, training_loss
from optqual.models import build_model
from optqual.models.layout import to_training_layout
from optqual.models.profile import macs_per_parameter
from optqual.optim.build import build_optimizer
from optqual.recording.recorder import RunRecorder
from optqual.system.hardware import hardware
from optqual.system.precision import precision_flags
from optqual.system.reproducibility import DATA_STREAM, stream_generator


@dataclass
class Run:
    training: Training  # the model, optimizer, data and components, and where training stands
    state: TrainingState  # everything checkpoint.pt saves and restores
    recorder: RunRecorder  # history.csv and metrics.json
    config: dict  # resolved, with what the data decided: alone, it rebuilds the model (resolved_config.yaml)
    choices: dict[str, str]  # the option of each group Hydra composed (the dashboards group runs by them)
    device: torch.device  # where it trains


def build_training(cfg: DictConfig, data: ImageData, device: torch.device, run_dir: Path) -> Training:
    """The model, its optimizer and every component of `cfg` over `data`, as a Training."""
    model = build_model(cfg.model, data.facts())  # the first draw from the seeded generator: the initial weights
    own_groups = [group for component in components() if component.adapt_model is not None
                  for group in component.adapt_model(cfg[component.name], model)]  # quantizer=deadzone: weight is then quantized
    to_training_layout(model, device)  # channels_last, the layout convolutions run fastest in
    if cfg.compile:  # in place: state_dict keys stay those of the plain model. A batch of another size (an epoch's last,
        # evaluation's) compiles once more and marks the batch dimension dynamic: no size compiles again after it
        model.compile(mode=cfg.compile_mode)
    optimizer = build_optimizer(model, cfg.optimizer, cfg.lr_scale, own_groups)

    def evaluate_on(model: torch.nn.Module, split: str) -> dict[str, float]:
        return evaluate(model, data.eval_batches(split, EVAL_BATCH_SIZE), cfg.precision, plain_loss(cfg.loss))

    epoch_steps = data.epoch_steps(cfg.epochs)
    extensions: dict[str, Extension] = {}
    for component in components():
        if component.build is None:
            continue
        context = BuildContext(cfg, model, optimizer, data, epoch_steps, cfg.seed, component.stream, run_dir, evaluate_on)
        extension = component.build(cfg[component.name], context)
        if extension is not None:
            extensions[component.name] = extension
    norm_every = grad_norm_every(cfg.grad_norm_every, macs_per_parameter(cfg.model, data.facts()))  # counted on the meta device
    return Training(model, optimizer, data, stream_generator(cfg.seed, DATA_STREAM, device), Hooks(extensions), cfg.epochs,
                    cfg.eval_every, cfg.precision, training_loss(cfg.loss), plain_loss(cfg.loss), norm_every)


def build_run(cfg: DictConfig, choices: dict[str, str], run_dir: Path, device: torch.device, started: float) -> Run:
    """The run of a checked config in `run_dir` on `device`; `choices`: the option of each group
    Hydra composed (recorded in metrics.json)."""
    data = build(cfg.data, "data", device=device)
    training = build_training(cfg, data, device, run_dir)
    model = training.model
    recorder = RunRecorder(run_dir, {
        "experiment": experiment_title(cfg.experiment_name, choices),  # the Trackio project
        "trackio_dir": str(Path(cfg.trackio.dir).resolve()) if cfg.trackio.enabled else None,  # `optqual dashboard` opens it
        "seed": cfg.seed,
        "optimizer": choices["optimizer"],
        "scheduler": choices["scheduler"],
        "device": str(device),
        "threads": torch.get_num_threads(),
        "precision": cfg.precision,
        "precision_flags": precision_flags(cfg.precision),  # the float32 math and autocast in force
        "compile": cfg.compile,
        "compile_mode": cfg.compile_mode,
        "params": sum(p.numel() for p in model.parameters()),
        "grad_norm_every": training.grad_norm_every,  # what grad_norm_every=auto came to
        "train_images": len(data.train_labels),
        "data": data.facts(),
        "hardware": hardware(device),  # CPU results are bit-identical on one CPU model, not across them
    }, started)
    state = TrainingState()
    parts = {"model": model, "optimizer": training.optimizer, **{f"extension.{name}": e for name, e in training.hooks.extensions.items()},
             "rng": RandomState({"data": training.generator}, device), "loop": training, "record": recorder,
             **({"scaler": training.scaler} if training.scaler.is_enabled() else {})}  # fp16's loss scale goes on from where it was
    for name, part in parts.items():
        state.register(name, part)
    return Run(training, state, recorder, resolved_config(cfg, data.facts()), dict(choices), device)
