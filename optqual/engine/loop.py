"""The training loop: a step that reads top to bottom, the components at their points, metrics kept on the device.

The hot loop never asks the device for a number: each step's loss, correct count and
parameter gradient norms (on every `grad_norm_every`-th step) stay on the device as the step
made them, kept in lists, and are reduced and read once per epoch. The training loss is the
one differentiated (the `loss` group's, label smoothing included); `train_ce` beside it is the
plain cross-entropy, so runs with and without smoothing, or with another loss, compare. Targets are class indices, or
class probabilities when a batch was mixed (MixUp/CutMix): then a prediction counts as
correct against the label with the larger weight. The loop's position (epochs done, the
epoch in progress with its order and per-step figures) is part of the training state, so
a checkpoint taken between two steps continues exactly.
"""

import logging
import math
import time
from dataclasses import dataclass, field, fields
from typing import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from optqual.compat import parameter_norms, skipped_step
from optqual.data.images import ImageData
from optqual.engine.hooks import Hooks
from optqual.losses import LossFunction
from optqual.optim.sam import base_step_through, running_stats_frozen, two_pass
from optqual.status import RunStatus
from optqual.system.precision import autocast, grad_scaler

log = logging.getLogger(__name__)
EVAL_BATCH_SIZE = 1024  # no gradients are kept, so evaluation can take large batches
FULLY_CONNECTED_MACS = 2  # multiply-adds per parameter per image below which a model counts as fully connected
SAMPLED_GRAD_NORM_EVERY = 8  # `grad_norm_every: auto` on a fully connected model


def owner(name: str) -> str:
    """The layer a parameter belongs to: "stage1.0.conv1.weight" -> "stage1.0.conv1"; a quantized weight
    and its quantizer's logits ("fc.parametrizations.weight.0.theta_dz") belong to their layer."""
    layer, marker, _ = name.partition(".parametrizations.")
    return layer if marker else name.rpartition(".")[0]


def grad_norm_every(setting: int | str, macs_per_param: float) -> int:
    """The `grad_norm_every` setting as a number of steps. `auto` takes the norms on every step (the
    epoch's exact mean) unless the model does fewer than FULLY_CONNECTED_MACS multiply-adds per
    parameter per image, as a fully connected net does (1; a convolution reuses each weight at every
    position: ResNet-20 150, ResNet-18-CIFAR 50). Such a step is so small that the norms' one extra
    pass over all gradients costs it 4-8%; every 8th step costs an eighth of that."""
    if setting != "auto":
        return setting
    if macs_per_param >= FULLY_CONNECTED_MACS:
        return 1
    log.info("grad_norm_every=auto: gradient norms on every %dth step (a fully connected model, %.1f multiply-adds per "
             "parameter per image)", SAMPLED_GRAD_NORM_EVERY, macs_per_param)
    return SAMPLED_GRAD_NORM_EVERY


class LayerGradNorms:
    """L2 norm of each layer's gradient (all parameters of one module together).

    A step takes one fused norm per parameter; the epoch's end combines the sampled steps'
    norms into layers with one tiny matmul, so the step pays two device operations.
    """

    def __init__(self, model: nn.Module):
        trained = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
        self.params = [p for _, p in trained]
        owners = [owner(name) for name, _ in trained]
        self.layers = list(dict.fromkeys(owners))
        rows = [[float(owner == layer) for owner in owners] for layer in self.layers]
        self.membership = torch.tensor(rows, device=self.params[0].device)

    def __call__(self) -> torch.Tensor:
        """Each parameter's gradient norm, now."""
        return parameter_norms([p.grad for p in self.params])

    def layer_means(self, steps: torch.Tensor) -> torch.Tensor:
        """Each layer's norm, averaged over the steps: `steps` holds one row of parameter norms per step."""
        return (steps.square() @ self.membership.T).sqrt().mean(0)


@torch.inference_mode()
def evaluate(model: nn.Module, batches: Iterator[tuple[torch.Tensor, torch.Tensor]], precision: str = "fp32",
             loss: LossFunction = F.cross_entropy) -> dict[str, float]:
    """Mean `loss` (a plain loss of optqual/losses.py) and accuracy (a fraction) over all batches, in eval mode.
    The loss is taken in fp32 at every precision: on bf16 logits it would be off by 0.2-0.4%, and
    early stopping, the plateau schedule and best_model.pt follow it."""
    model.eval()
    sums, count = 0, 0
    for images, labels in batches:
        with autocast(images.device, precision):
            logits = model(images).float()
        sums = sums + torch.stack([loss(logits, labels, reduction="sum"), (logits.argmax(1) == labels).sum().float()])
        count += len(labels)
    loss_sum, correct = sums.tolist()
    return {"loss": loss_sum / count, "acc": correct / count}


@dataclass
class EpochProgress:
    """How far training has got inside one epoch: enough to continue it exactly.

    Each step's figures are kept as the step made them, on the device: appending one to a
    list costs the step nothing, where adding it to a running sum would cost a device
    operation per figure (the MLP's step feels each one). They are reduced when the epoch ends.
    """

    epoch: int  # the epoch being trained, from 1
    order: torch.Tensor  # this epoch's permutation of the training images
    step: int = 0  # batches done
    seconds: float = 0.0  # training time spent in this epoch
    losses: list[torch.Tensor] = field(default_factory=list)  # per step: the batch's mean training loss
    ces: list[torch.Tensor] = field(default_factory=list)  # per step: its plain cross-entropy (without label smoothing)
    correct: list[torch.Tensor] = field(default_factory=list)  # per step: images classified right
    grad_norms: list[torch.Tensor] = field(default_factory=list)  # per sampled step: each parameter's gradient norm
    skipped: list[torch.Tensor] = field(default_factory=list)  # fp16, per step: 1 where the loss scaler skipped it

    PER_STEP = ("losses", "ces", "correct", "grad_norms", "skipped")  # the fields with an entry per (sampled) step

    @classmethod
    def begin(cls, epoch: int, data: ImageData, generator: torch.Generator) -> "EpochProgress":
        return cls(epoch, data.epoch_order(generator))

    def state_dict(self) -> dict:
        """The fields, each per-step list stacked into one tensor: the same values, in a compact
        checkpoint (thousands of tiny tensors would each take a record of their own)."""
        state = {f.name: getattr(self, f.name) for f in fields(self)}
        return state | {name: torch.stack(state[name]) if state[name] else torch.empty(0) for name in self.PER_STEP}

    @classmethod
    def from_state_dict(cls, state: dict, device: torch.device) -> "EpochProgress":
        state = {key: value.to(device) if torch.is_tensor(value) else value for key, value in state.items()}
        # a stacked tensor back into its steps; a checkpoint written before `skipped` existed has none
        return cls(**state | {name: [*state.get(name, ())] for name in cls.PER_STEP})

    def record(self, count: int, batch_size: int, norms: LayerGradNorms, scaler: torch.amp.GradScaler) -> dict[str, float]:
        """The finished epoch's history row: batch size, mean loss, accuracy and per-layer grad norms, time.

        Under fp16's loss scaling `skipped_steps` counts the steps the scaler skipped because a
        gradient overflowed (each halved the scale; `loss_scale` is the one the epoch ended with).
        The means are over the steps whose loss was finite: a skipped step's finite loss was still
        measured at the weights it was computed at. An epoch with no finite loss has no finite
        mean: diverged."""
        sizes = torch.full((self.step,), float(batch_size), dtype=torch.float64, device=self.order.device)
        sizes[-1] = count - batch_size * (self.step - 1)  # the last batch may be smaller
        losses = torch.stack(self.losses).double()
        taken = losses.isfinite() if scaler.is_enabled() else torch.ones_like(losses, dtype=torch.bool)
        weights = sizes * taken

        def mean(values: torch.Tensor) -> torch.Tensor:  # over images: each batch's mean weighted by its size
            return torch.where(taken, values, 0.0) @ weights / weights.sum()

        skipped = torch.stack(self.skipped).sum().double() if self.skipped else losses.new_zeros(())
        figures = torch.stack([mean(losses), mean(torch.stack(self.ces).double()), torch.stack(self.correct).sum().double(), skipped])
        loss, ce, correct, skipped_steps = figures.tolist()
        record = {"epoch": self.epoch, "batch_size": batch_size, "train_loss": loss, "train_ce": ce, "train_acc": correct / count}
        if scaler.is_enabled():
            record.update(skipped_steps=int(skipped_steps), loss_scale=scaler.get_scale())
        layer_norms = norms.layer_means(torch.stack(self.grad_norms)).tolist()
        record.update({f"grad_norm.{layer}": value for layer, value in zip(norms.layers, layer_norms)})
        record["seconds"] = self.seconds
        return record


@dataclass
class Training:
    """One run's moving parts and where training stands; `fit` trains the remaining epochs."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    data: ImageData
    generator: torch.Generator  # the data order and augmentation
    hooks: Hooks
    epochs: int
    eval_every: int | None  # None: never validate
    precision: str = "fp32"
    loss: LossFunction = F.cross_entropy  # the loss differentiated (optqual/losses.py)
    plain_loss: LossFunction = F.cross_entropy  # the loss validation and test report
    grad_norm_every: int = 1  # per-layer gradient norms on steps 0, N, 2N, ... of each epoch
    epochs_done: int = 0
    current: EpochProgress | None = None  # the epoch in progress, when a checkpoint is taken inside one
    stopped: bool = False  # an extension ended training before `epochs` (early stopping)
    grad_norms: LayerGradNorms = field(init=False)
    scaler: torch.amp.GradScaler = field(init=False)  # fp16's loss scaler; a pass-through at the other precisions

    def __post_init__(self) -> None:
        self.grad_norms = LayerGradNorms(self.model)
        self.two_pass = two_pass(self.optimizer)
        self.scaler = grad_scaler(self.data.train_labels.device, self.precision)

    def forward_backward(self, images: torch.Tensor, targets: torch.Tensor,
                         stepping: torch.optim.Optimizer | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The loss and logits of a batch, and the gradient of the objective (the loss and the components'
        terms), unscaled: the gradient norms, clipping and the optimizer read true gradients. `stepping`:
        the optimizer those gradients are unscaled for (the run's, or SAM's base in its second pass)."""
        with autocast(images.device, self.precision):
            logits = self.model(images)
        loss = self.loss(logits.float(), targets)  # in fp32 at every precision
        objective = loss
        for term in self.hooks.loss_terms(self.model):
            objective = objective + term
        self.scaler.scale(objective).backward()
        self.scaler.unscale_(stepping or self.optimizer)
        return loss, logits

    def second_pass(self, images: torch.Tensor, targets: torch.Tensor, base: torch.optim.Optimizer) -> torch.Tensor:
        """SAM's closure: the gradient at the perturbed weights, unscaled for the `base` optimizer that
        steps with it; batch norm statistics stay as the first pass left them."""
        with running_stats_frozen(self.model):
            loss, _ = self.forward_backward(images, targets, base)
        self.hooks.after_backward()
        return loss

    def step(self, images: torch.Tensor, labels: torch.Tensor, progress: EpochProgress) -> None:
        images, targets = self.hooks.on_batch(images, labels)
        self.optimizer.zero_grad(set_to_none=True)
        loss, logits = self.forward_backward(images, targets)
        if progress.step % self.grad_norm_every == 0:  # one more pass over all gradients: a tiny model's step feels it
            progress.grad_norms.append(self.grad_norms())  # the raw gradient at the current weights
        self.hooks.after_backward()
        stepping = self.optimizer.base_optimizer if self.two_pass else self.optimizer  # the optimizer the scaler steps
        if self.two_pass:  # SAM: its base optimizer's step is the scaler's, skipped when the second pass overflowed
            with base_step_through(self.optimizer, self.scaler):
                self.optimizer.step(lambda: self.second_pass(images, targets, stepping))
        else:
            self.scaler.step(self.optimizer)  # fp16: skipped when the gradients overflowed (one host sync)
        if self.scaler.is_enabled():
            progress.skipped.append(skipped_step(self.scaler, stepping))
        self.scaler.update()
        self.hooks.after_step()
        loss = loss.detach()
        progress.losses.append(loss)
        progress.ces.append(loss if self.loss is F.cross_entropy else F.cross_entropy(logits.detach().float(), targets))
        progress.correct.append((logits.argmax(1) == (targets if targets.ndim == 1 else targets.argmax(1))).sum())

    def train_epoch(self, progress: EpochProgress, on_step: Callable[[], None], should_stop: Callable[[], bool]) -> bool:
        """Train the rest of `progress`'s epoch; False if `should_stop` said so before it ended."""
        self.model.train()
        started = time.perf_counter()
        try:
            batch_size = self.data.batch_size(progress.epoch)
            for step in range(progress.step, self.data.steps(progress.epoch)):
                if should_stop():
                    return False
                images, labels = self.data.train_batch(progress.order, step, batch_size, self.generator)
                self.step(self.data.normalize(self.hooks.on_images(images)), labels, progress)
                progress.step = step + 1
                on_step()
        finally:
            if progress.order.is_cuda:  # the step only queues kernels: the epoch ends when they have run
                torch.cuda.synchronize(progress.order.device)
            progress.seconds += time.perf_counter() - started
        return True

    def epoch_record(self, progress: EpochProgress) -> dict[str, float]:
        """The history row of `progress`'s finished epoch (its one read of the device-side figures)."""
        return progress.record(len(self.data.train_labels), self.data.batch_size(progress.epoch), self.grad_norms, self.scaler)

    def end_epoch(self, record: dict) -> bool:
        """Validate (every `eval_every` epochs and after the last) into `record`, let the
        extensions see it, and say whether one of them asks to stop."""
        epoch = record["epoch"]
        if self.eval_every is not None and (epoch % self.eval_every == 0 or epoch == self.epochs):
            val = evaluate(self.model, self.data.eval_batches("val", EVAL_BATCH_SIZE), self.precision, self.plain_loss)
            record.update(val_loss=val["loss"], val_acc=val["acc"])
        return self.hooks.on_epoch_end(record)

    def fit(self, on_epoch: Callable[[dict], None], on_checkpoint: Callable[[], None], checkpoint_every: int,
            should_stop: Callable[[], bool] = lambda: False) -> RunStatus:
        """Train from where the state stands to the last epoch and return how training ended.

        `on_epoch` receives each finished epoch's record; keeping it is its job. `on_checkpoint`
        is called every `checkpoint_every` epochs, after the last, when an extension stops
        training, and when `should_stop()` turns true: then the current step finishes and
        fit returns INTERRUPTED. A non-finite training loss ends training after its epoch with
        DIVERGED (checked once per epoch: no per-step host sync).
        """
        if self.stopped:
            return RunStatus.STOPPED_EARLY
        steps = self.data.epoch_steps(self.epochs)
        first = self.current.epoch if self.current else self.epochs_done + 1
        done = steps.before(first - 1) + (self.current.step if self.current else 0)
        bar = tqdm(total=steps.total, initial=done, unit="step", desc="train", disable=None)
        with bar, logging_redirect_tqdm():
            for epoch in range(first, self.epochs + 1):
                if self.current is None:
                    self.current = EpochProgress.begin(epoch, self.data, self.generator)
                if not self.train_epoch(self.current, bar.update, should_stop):
                    on_checkpoint()
                    return RunStatus.INTERRUPTED
                record = self.epoch_record(self.current)
                self.current, self.epochs_done = None, epoch
                if not math.isfinite(record["train_loss"]):
                    log.warning("epoch %d: training loss is %s: the run diverged", epoch, record["train_loss"])
                    on_epoch(record)
                    return RunStatus.DIVERGED
                self.stopped = self.end_epoch(record)
                bar.set_postfix(loss=f"{record['train_loss']:.3f}", acc=f"{record['train_acc']:.3f}")
                log.info(describe(record, self.epochs))
                on_epoch(record)
                if self.stopped or epoch % checkpoint_every == 0 or epoch == self.epochs:
                    on_checkpoint()
                if self.stopped:
                    return RunStatus.STOPPED_EARLY
        return RunStatus.COMPLETED

    def state_dict(self) -> dict:
        """The loop's position: epochs done, the epoch in progress (its order and per-step figures), stopped."""
        return {"epochs_done": self.epochs_done, "current": self.current.state_dict() if self.current else None, "stopped": self.stopped}

    def load_state_dict(self, state: dict) -> None:
        self.epochs_done, self.stopped = state["epochs_done"], state["stopped"]
        current = state["current"]
        if current and "loss_sum" in current:
            current = steps_from_running_sums(current, self.data.batch_size(current["epoch"]), self.grad_norms, self.grad_norm_every)
        self.current = EpochProgress.from_state_dict(current, self.data.train_labels.device) if current else None


def steps_from_running_sums(saved: dict, batch_size: int, norms: LayerGradNorms, grad_norm_every: int) -> dict:
    """An epoch in progress as an optqual older than 2026-11-22 saved it, as running sums, in the form
    of `EpochProgress.state_dict`: each sum becomes the first step's figure and the other steps done
    add zeros, so the epoch's means come out as they would have (up to rounding). Every step before
    a stop had a full batch."""

    def first_then_zeros(value: torch.Tensor, count: int) -> torch.Tensor:
        rows = value.new_zeros((count, *value.shape))
        rows[:1] = value  # no rows when no step was done
        return rows

    step, loss_sum = saved["step"], saved["loss_sum"]
    ce_sum = saved.get("ce_sum", loss_sum)  # saved before train_ce existed, when there was no label smoothing
    layer_firsts = norms.membership.argmax(1).cpu()  # each layer's sum goes on its first parameter
    norm_sums = torch.zeros(len(norms.params)).index_copy(0, layer_firsts, saved["norm_sum"])
    return {"epoch": saved["epoch"], "order": saved["order"], "step": step, "seconds": saved["seconds"],
            "losses": first_then_zeros(loss_sum / batch_size, step), "ces": first_then_zeros(ce_sum / batch_size, step),
            "correct": first_then_zeros(saved["correct"], step),
            "grad_norms": first_then_zeros(norm_sums, -(-step // grad_norm_every))}


def describe(record: dict, epochs: int) -> str:
    line = f"epoch {record['epoch']}/{epochs}  train_loss {record['train_loss']:.4f}  train_acc {record['train_acc']:.4f}"
    if "val_loss" in record:
        line += f"  val_loss {record['val_loss']:.4f}  val_acc {record['val_acc']:.4f}"
    return line + f"  ({record['seconds']:.1f}s)"
