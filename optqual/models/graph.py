"""How channels flow through a model's graph (torch.fx): the one vocabulary of the analyses that
follow a channel from the layer that makes it to the layers that read it, the sparsity report
(optqual/sparsity/report.py: which inputs a dead channel reaches) and the alignment of two
networks' hidden units (optqual/analysis/alignment.py: which weights one permutation moves).

Traced with shapes from one example input. What keeps each channel in place: batch norm,
activations, pooling, dropout, indexing that keeps every channel, flatten of a (N, C, 1, 1)
tensor; a sum ties its operands' channels together; F.pad on the channel dimension (the
option-A shortcut) adds zero channels on both sides.
"""

import math
from typing import Optional

import torch
import torch.fx
from torch import nn
from torch.fx.passes.shape_prop import ShapeProp

from optqual.models.pooling import GlobalAvgPool

CHANNEL_KEEPING = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.GELU, nn.SiLU,
                   nn.Hardswish, nn.Sigmoid, nn.Tanh, nn.Identity, nn.Dropout, nn.MaxPool2d, nn.AvgPool2d,
                   nn.AdaptiveAvgPool2d, GlobalAvgPool)
ELEMENTWISE = {"relu", "relu_", "relu6", "leaky_relu", "gelu", "silu", "hardswish", "sigmoid", "tanh", "dropout",
               "contiguous", "clone", "mean", "avg_pool2d", "max_pool2d", "adaptive_avg_pool2d"}
SUMS = {"add", "add_", "iadd", "__add__"}


class KeepPools(torch.fx.Tracer):
    def is_leaf_module(self, module: nn.Module, name: str) -> bool:
        return isinstance(module, GlobalAvgPool) or super().is_leaf_module(module, name)


def trace(model: nn.Module, example: torch.Tensor) -> torch.fx.GraphModule:
    """The model's graph, every node's output shape in its meta (raises what fx raises for a model it cannot trace)."""
    graph = torch.fx.GraphModule(model, KeepPools().trace(model))
    ShapeProp(graph).propagate(example)
    return graph


def op_name(node: torch.fx.Node) -> str:
    return node.target if isinstance(node.target, str) else getattr(node.target, "__name__", "")


def first_input(node: torch.fx.Node) -> Optional[torch.fx.Node]:
    return node.args[0] if node.args and isinstance(node.args[0], torch.fx.Node) else None


def shape(node: torch.fx.Node) -> Optional[torch.Size]:
    meta = node.meta.get("tensor_meta") if isinstance(node, torch.fx.Node) else None
    return getattr(meta, "shape", None)


def keeps_channels(first: Optional[torch.fx.Node], node: torch.fx.Node) -> bool:
    before, after = shape(first), shape(node)
    return before is not None and after is not None and len(before) > 1 and len(after) > 1 and before[1] == after[1]


def keeps_all_channels(index) -> bool:
    return isinstance(index, tuple) and len(index) >= 2 and all(i == slice(None) for i in index[:2])


def flattened_positions(first: Optional[torch.fx.Node], node: torch.fx.Node) -> Optional[int]:
    """(N, C, *spatial) -> (N, C x spatial): the positions each channel becomes, None for any other flatten."""
    before, after = shape(first), shape(node)
    if before is None or after is None or len(after) != 2 or after[1] != math.prod(before[1:]):
        return None
    return math.prod(before[2:])


def channel_padding(first: torch.fx.Node, node: torch.fx.Node) -> Optional[tuple[int, int]]:
    """F.pad with zeros: the channels it adds before and after the input's, None for any other padding."""
    pad = node.args[1] if len(node.args) > 1 else node.kwargs.get("pad")
    value = node.args[3] if len(node.args) > 3 else node.kwargs.get("value", 0)
    mode = node.args[2] if len(node.args) > 2 else node.kwargs.get("mode", "constant")
    before = shape(first)
    if before is None or mode != "constant" or value not in (0, None) or len(pad) != 2 * (len(before) - 1):
        return None
    return pad[-2], pad[-1]
