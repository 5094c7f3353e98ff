"""Activations of a solution on the probe set (the first N test images): per stage, the mean
activation norm and the share of dead units; the embedding's effective rank.

A model's stages are its top-level modules before the classifier (for CifarResNet: stem,
stage1, stage2, stage3, pool); the embedding is the classifier's input (the last linear
layer's), the pooled features. Per stage output: the mean over images of the L2 norm of the
image's flattened activation, and the share of dead units: channels (features, for a flat
output) that are zero for every probe image at every position, a ReLU that never fires.
The embedding's effective rank (Roy & Vetterli 2007) is exp of the entropy of the
normalized singular values of the N x C embedding matrix, centered over images: C when
all directions carry equal weight, 1 when one does.
"""

import math
from dataclasses import dataclass
from typing import Optional

import torch
from omegaconf import DictConfig
from torch import nn

from optqual.analysis.measures import Measure, register
from optqual.analysis.solution import Solution
from optqual.errors import require

EMBEDDING = "embedding"


@dataclass
class ActivationsSchema:
    _target_: str = "optqual.analysis.measures.activations.measure"
    _partial_: bool = True
    probe_size: Optional[int] = None  # null: set when the runs are loaded (optqual/analysis/analyze.py)


def check(node: DictConfig) -> None:
    require(node.probe_size is None or node.probe_size > 0, "analysis.activations.probe_size", node.probe_size, "must be a positive number of images")


def classifier(model: nn.Module) -> nn.Module:
    return [module for module in model.modules() if isinstance(module, nn.Linear)][-1]


@torch.no_grad()
def stage_outputs(model: nn.Module, images: torch.Tensor, batch: int = 256) -> dict[str, torch.Tensor]:
    """Each stage's output and the embedding, for all `images` (in eval mode), keyed by name. A stage whose
    output is the embedding itself (the pooling before the classifier, an MLP's last hidden layer) is kept
    once, as the embedding: a mean over stages would count it twice."""
    head = classifier(model)
    stages = [(name, module) for name, module in model.named_children() if module is not head]
    outputs: dict[str, list[torch.Tensor]] = {name: [] for name, _ in stages} | {EMBEDDING: []}
    hooks = [module.register_forward_hook(lambda m, i, out, name=name: outputs[name].append(out.float()))
             for name, module in stages]
    hooks.append(head.register_forward_pre_hook(lambda m, inputs: outputs[EMBEDDING].append(inputs[0].float())))
    try:
        model.eval()
        for start in range(0, len(images), batch):
            model(images[start : start + batch])
    finally:
        for hook in hooks:
            hook.remove()
    joined = {name: torch.cat(chunks) for name, chunks in outputs.items() if chunks}
    embedding = joined[EMBEDDING]
    return {name: output for name, output in joined.items()
            if name == EMBEDDING or output.flatten(1).shape != embedding.shape or not torch.equal(output.flatten(1), embedding)}


def effective_rank(matrix: torch.Tensor) -> float:
    """exp(entropy of the normalized singular values) of `matrix` (rows: samples), centered over rows."""
    singular = torch.linalg.svdvals(matrix.double() - matrix.double().mean(dim=0))
    p = singular / singular.sum()
    p = p[p > 0]
    return math.exp(float(-(p * p.log()).sum()))


def dead_share(output: torch.Tensor) -> float:
    """Share of channels (dimension 1) that are zero for every image and position."""
    per_channel = output.abs().transpose(0, 1).reshape(output.shape[1], -1).amax(dim=1)
    return float((per_channel == 0).double().mean())


def measure(solution: Solution, probe_size: int) -> dict:
    images, _ = solution.probe(probe_size)
    outputs = stage_outputs(solution.model, images)
    stages = [{"stage": name, "shape": list(output.shape[1:]),
               "mean_norm": float(output.double().flatten(1).norm(dim=1).mean()), "dead_share": dead_share(output)}
              for name, output in outputs.items() if name != EMBEDDING]
    embedding = outputs[EMBEDDING]
    return {
        "embedding_effective_rank": effective_rank(embedding),
        "embedding_dim": embedding.shape[1],
        "embedding_dead_share": dead_share(embedding),
        "mean_dead_share": sum(stage["dead_share"] for stage in stages) / len(stages),
        "probe_images": len(images),
        "stages": stages,
    }


register(Measure(name="activations", schema=ActivationsSchema, check=check))
