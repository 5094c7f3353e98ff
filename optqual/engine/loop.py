"""The training loop: cross-entropy, optimizer step, metrics accumulated on the device.

The hot loop never asks the device for a number: losses, correct counts and per-layer
gradient norms are summed into device tensors and read once per epoch.
"""

import contextlib
import logging
import math
import time
from dataclasses import dataclass, replace
from typing import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from optqual.data import ImageData

log = logging.getLogger(__name__)
EVAL_BATCH_SIZE = 1024  # no gradients are kept, so evaluation can take large batches


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """bf16 autocast for the forward pass (and so the matching backward); fp32 runs as is."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")


class LayerGradNorms:
    """L2 norm of each layer's gradient (all parameters of one module together), per step.

    One fused norm over all gradients and a tiny matmul that sums the squares of each
    module's parameters; both stay on the device.
    """

    def __init__(self, model: nn.Module):
        trained = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
        self.params = [p for _, p in trained]
        owners = [name.rpartition(".")[0] for name, _ in trained]  # "stage1.0.conv1.weight" -> "stage1.0.conv1"
        self.layers = list(dict.fromkeys(owners))
        rows = [[float(owner == layer) for owner in owners] for layer in self.layers]
        self.membership = torch.tensor(rows, device=self.params[0].device)

    def __call__(self) -> torch.Tensor:
        norms = torch.stack(torch._foreach_norm([p.grad for p in self.params]))
        return (self.membership @ norms.square()).sqrt()


@torch.inference_mode()
def evaluate(model: nn.Module, batches: Iterator[tuple[torch.Tensor, torch.Tensor]], precision: str = "fp32") -> dict[str, float]:
    """Mean cross-entropy and accuracy (a fraction) over all batches, in eval mode."""
    model.eval()
    sums, count = 0, 0
    for images, labels in batches:
        with autocast(images.device, precision):
            logits = model(images)
        sums = sums + torch.stack([F.cross_entropy(logits, labels, reduction="sum"), (logits.argmax(1) == labels).sum().float()])
        count += len(labels)
    loss_sum, correct = sums.tolist()
    return {"loss": loss_sum / count, "acc": correct / count}


@dataclass
class EpochProgress:
    """How far training has got inside one epoch: enough to continue it exactly.

    The sums stay on the device; they are read once, when the epoch ends.
    """

    epoch: int  # the epoch being trained, from 1
    order: torch.Tensor  # this epoch's permutation of the training images
    loss_sum: torch.Tensor
    correct: torch.Tensor
    norm_sum: torch.Tensor  # per-layer gradient norms, summed over steps
    step: int = 0  # batches done
    seconds: float = 0.0  # training time spent in this epoch

    @classmethod
    def begin(cls, epoch: int, data: ImageData, generator: torch.Generator, layers: int) -> "EpochProgress":
        device = data.train_labels.device
        zero = torch.zeros((), device=device)
        return cls(epoch, data.epoch_order(generator), zero.clone(), zero.long(), torch.zeros(layers, device=device))

    def to(self, device: torch.device) -> "EpochProgress":
        return replace(self, order=self.order.to(device), loss_sum=self.loss_sum.to(device),
                       correct=self.correct.to(device), norm_sum=self.norm_sum.to(device))

    def record(self, count: int, layers: list[str]) -> dict[str, float]:
        """The finished epoch's history row: mean loss, accuracy and per-layer grad norms, time."""
        record = {"epoch": self.epoch, "train_loss": self.loss_sum.item() / count, "train_acc": self.correct.item() / count}
        record.update({f"grad_norm.{layer}": value / self.step for layer, value in zip(layers, self.norm_sum.tolist())})
        record["seconds"] = self.seconds
        return record


def train_epoch(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    data: ImageData,
    generator: torch.Generator,
    grad_norms: LayerGradNorms,
    progress: EpochProgress,
    on_step: Callable[[], None] = lambda: None,
    precision: str = "fp32",
    should_stop: Callable[[], bool] = lambda: False,
) -> bool:
    """Train the rest of `progress`'s epoch; False if `should_stop` said so before it ended."""
    model.train()
    started = time.perf_counter()
    try:
        for step in range(progress.step, data.steps_per_epoch()):
            if should_stop():
                return False
            images, labels = data.train_batch(progress.order, step, generator)
            with autocast(images.device, precision):
                logits = model(images)
                loss = F.cross_entropy(logits, labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            progress.norm_sum += grad_norms()
            optimizer.step()
            progress.loss_sum += loss.detach() * len(labels)
            progress.correct += (logits.argmax(1) == labels).sum()
            progress.step = step + 1
            on_step()
    finally:
        progress.seconds += time.perf_counter() - started
    return True


def describe(record: dict, epochs: int) -> str:
    line = f"epoch {record['epoch']}/{epochs}  train_loss {record['train_loss']:.4f}  train_acc {record['train_acc']:.4f}"
    if "val_loss" in record:
        line += f"  val_loss {record['val_loss']:.4f}  val_acc {record['val_acc']:.4f}"
    return line + f"  ({record['seconds']:.1f}s)"


def fit(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    data: ImageData,
    generator: torch.Generator,
    epochs: int,
    eval_every: int,
    on_epoch: Callable[[dict], None],
    on_checkpoint: Callable[[EpochProgress | None], None],
    checkpoint_every: int,
    should_stop: Callable[[], bool] = lambda: False,
    precision: str = "fp32",
    first_epoch: int = 1,
    resume: EpochProgress | None = None,
) -> str:
    """Train epochs `first_epoch`..`epochs` (finishing `resume`'s epoch first, if given),
    validating every `eval_every` epochs and after the last; return how training ended.

    `on_epoch` receives each finished epoch's record; keeping it is its job. `on_checkpoint`
    is called every `checkpoint_every` epochs and after the last (with None: between
    epochs), and when `should_stop()` turns true: then the current step finishes,
    `on_checkpoint` gets the epoch's progress and fit returns "interrupted". A non-finite
    training loss ends training after its epoch with "diverged" (checked once per epoch:
    no per-step host sync). Otherwise "completed".
    """
    grad_norms = LayerGradNorms(model)
    steps = data.steps_per_epoch()
    done = (first_epoch - 1) * steps + (resume.step if resume else 0)
    bar = tqdm(total=epochs * steps, initial=done, unit="step", desc="train", disable=None)
    with bar, logging_redirect_tqdm():
        for epoch in range(first_epoch, epochs + 1):
            progress = resume if resume and resume.epoch == epoch else EpochProgress.begin(epoch, data, generator, len(grad_norms.layers))
            if not train_epoch(model, optimizer, data, generator, grad_norms, progress, bar.update, precision, should_stop):
                on_checkpoint(progress)
                return "interrupted"
            record = progress.record(len(data.train_labels), grad_norms.layers)
            if not math.isfinite(record["train_loss"]):
                log.warning("epoch %d: training loss is %s: the run diverged", epoch, record["train_loss"])
                on_epoch(record)
                return "diverged"
            if epoch % eval_every == 0 or epoch == epochs:
                val = evaluate(model, data.eval_batches("val", EVAL_BATCH_SIZE), precision)
                record.update(val_loss=val["loss"], val_acc=val["acc"])
            bar.set_postfix(loss=f"{record['train_loss']:.3f}", acc=f"{record['train_acc']:.3f}")
            log.info(describe(record, epochs))
            on_epoch(record)
            if epoch % checkpoint_every == 0 or epoch == epochs:
                on_checkpoint(None)
    return "completed"
