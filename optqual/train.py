"""The training loop: cross-entropy, optimizer step, metrics accumulated on the device.

The hot loop never asks the device for a number: losses, correct counts and per-layer
gradient norms are summed into device tensors and read once per epoch.
"""

import contextlib
import logging
import time
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


def train_epoch(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    data: ImageData,
    generator: torch.Generator,
    grad_norms: LayerGradNorms,
    on_step: Callable[[], None],
    precision: str = "fp32",
) -> dict[str, float]:
    """One pass over the training set; returns mean loss, accuracy and mean per-layer grad norms."""
    model.train()
    device = data.train_labels.device
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.long)
    norm_sum = torch.zeros(len(grad_norms.layers), device=device)
    steps = 0
    for images, labels in data.train_batches(generator):
        with autocast(device, precision):
            logits = model(images)
            loss = F.cross_entropy(logits, labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        norm_sum += grad_norms()
        optimizer.step()
        loss_sum += loss.detach() * len(labels)
        correct += (logits.argmax(1) == labels).sum()
        steps += 1
        on_step()
    count = len(data.train_labels)
    record = {"train_loss": loss_sum.item() / count, "train_acc": correct.item() / count}
    record.update({f"grad_norm.{layer}": value / steps for layer, value in zip(grad_norms.layers, norm_sum.tolist())})
    return record


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
    precision: str = "fp32",
) -> None:
    """Train for `epochs`, validating every `eval_every` epochs and after the last.

    `on_epoch` receives each epoch's record as soon as it exists; keeping them is its job.
    """
    grad_norms = LayerGradNorms(model)
    bar = tqdm(total=epochs * data.steps_per_epoch(), unit="step", desc="train", disable=None)
    with bar, logging_redirect_tqdm():
        for epoch in range(1, epochs + 1):
            start = time.perf_counter()
            record = {"epoch": epoch, **train_epoch(model, optimizer, data, generator, grad_norms, bar.update, precision)}
            record["seconds"] = time.perf_counter() - start
            if epoch % eval_every == 0 or epoch == epochs:
                val = evaluate(model, data.eval_batches("val", EVAL_BATCH_SIZE), precision)
                record.update(val_loss=val["loss"], val_acc=val["acc"])
            bar.set_postfix(loss=f"{record['train_loss']:.3f}", acc=f"{record['train_acc']:.3f}")
            log.info(describe(record, epochs))
            on_epoch(record)
