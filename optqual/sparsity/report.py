"""What the network would cost after pruning: dead channels, sparsity, bit-widths, MACs and BOPs.

Measured on the weights the network computes with (`module.weight`: the quantized weights
under a quantizer), for every conv and linear layer, excluded ones included (they still run):

- a weight is zero when |w| <= `sparsity.zero_threshold` (default 0: exact zeros, which the
  quantizer's dead zone makes; group lasso under gradient descent leaves a pruned filter tiny
  but not exactly zero, so a run without a quantizer sets a threshold such as 1e-3);
- a layer's dead output channels are its all-zero filters (rows of a linear layer); the
  channel then carries a constant (its bias, or batch norm's shift) that the next layer
  can fold into its bias, so that layer's input channel is useless too. Which input channels
  a dead channel reaches is traced through the model's graph (torch.fx): through batch norm,
  activations, pooling, dropout, channel-keeping indexing and flatten, through a residual
  sum only where every operand is dead, and zero-padded channels (the option-A shortcut)
  are dead. Any other operation ends the trace (its outputs count as live), so the pruned
  count is never overstated; a model fx cannot trace counts only dead output channels;
- MACs per image: dense = out x in/groups x kernel x output positions; structured = live
  outputs x live inputs x kernel x positions (the network with dead channels removed);
  nonzero = non-zero weights x positions. Batch norm, activations, pooling and the residual
  sums are not counted (they are < 1% of a ResNet's MACs);
- BOPs = MACs x b_w x b_a, with b_w the layer's quantizer bits (32 without one) and
  b_a = 32: the quantizer here quantizes weights, not activations. Ratios are to the dense
  network at 32 x 32 bits.

`SparsityReport` runs this after every validation and the last epoch: the ratios go into the
history (`sparsity.*`), beside `sparsity.test_acc`, the test accuracy of the network the report
counts: with a threshold, every weight at or below it set to zero for the measurement (as
pruning papers plot accuracy against cost; never used to select anything), the per-layer table into the run's
`sparsity/report_eNNNN.json`, and every `pictures_every` reports the pictures
(optqual/sparsity/pictures.py) into `sparsity/` and the dashboards. metrics.json holds the
last report.
"""

import contextlib
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import torch
import torch.fx
from omegaconf import DictConfig
from torch import nn
from torch.nn.utils import parametrize

from optqual.components.extension import Extension
from optqual.components.registry import BuildContext, Component, register
from optqual.files.atomic import write_json
from optqual.files.layout import SPARSITY_DIR
from optqual.models.graph import (CHANNEL_KEEPING, ELEMENTWISE, SUMS, channel_padding, first_input, flattened_positions,
                                  keeps_all_channels, keeps_channels, op_name, shape, trace)
from optqual.models.layers import WEIGHTED, select_layers
from optqual.ranges import within
from optqual.sparsity import pictures
from optqual.sparsity.quantizer import quantizers

log = logging.getLogger(__name__)
FULL_PRECISION = 32  # bits of an unquantized weight, and of every activation
@dataclass
class SparsityReportSchema:
    enabled: Optional[bool] = None  # null: when a regularizer or a quantizer is on
    zero_threshold: float = within(0.0, "[0, inf)")
    pictures_every: int = within(1, "[1, inf)")  # reports between pictures (the last report always has them)


def output_positions(module: nn.Module, out: torch.Tensor) -> int:
    """Where a layer's filters are applied per image: a conv's output pixels, a linear layer's tokens (1 for (N, F))."""
    return out[0].numel() // (module.out_features if isinstance(module, nn.Linear) else module.out_channels)


class Structure:
    """What the weights do not say: each layer's output positions per image, and the model's graph
    (None when fx cannot trace it), found once from one example image."""

    def __init__(self, model: nn.Module, example: torch.Tensor):
        self.layers = select_layers(model, WEIGHTED)
        positions: dict[str, int] = {}

        def note(name: str, module: nn.Module, out: torch.Tensor) -> None:
            positions[name] = output_positions(module, out)

        hooks = [module.register_forward_hook(lambda m, args, out, name=name: note(name, m, out)) for name, module in self.layers]
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                model(example)
                self.graph = self.trace(model, example)
        finally:
            for hook in hooks:
                hook.remove()
            model.train(was_training)
        self.positions = positions

    @staticmethod
    def trace(model: nn.Module, example: torch.Tensor) -> Optional[torch.fx.GraphModule]:
        try:
            return trace(model, example)
        except Exception as err:  # noqa: BLE001 -- fx refuses many models in many ways; the report still counts filters
            log.warning("sparsity report: torch.fx cannot trace the model (%s): dead output channels are counted, "
                        "the input channels they make useless are not", str(err).splitlines()[0])
            return None

    def dead_inputs(self, dead_outputs: dict[str, torch.Tensor]) -> dict[str, Optional[torch.Tensor]]:
        """Per layer, which of its input channels carry a constant (True), or None where the trace cannot tell."""
        if self.graph is None:
            return {}
        dead: dict[torch.fx.Node, Optional[torch.Tensor]] = {}
        inputs: dict[str, Optional[torch.Tensor]] = {}
        for node in self.graph.graph.nodes:
            first = first_input(node)
            through = dead.get(first)
            if node.op == "call_module":
                module = self.graph.get_submodule(node.target)
                if node.target in dead_outputs:
                    inputs[node.target] = through
                    dead[node] = dead_outputs[node.target]
                elif isinstance(module, CHANNEL_KEEPING):
                    dead[node] = through
                elif isinstance(module, nn.Flatten):
                    dead[node] = flattened(through, first, node)
            elif node.op in ("call_function", "call_method"):
                name = op_name(node)
                if name in SUMS:
                    operands = [dead.get(arg) for arg in node.args if isinstance(arg, torch.fx.Node)]
                    dead[node] = None if any(o is None for o in operands) else torch.stack(operands).all(0)
                elif name in ELEMENTWISE and keeps_channels(first, node):
                    dead[node] = through
                elif name == "flatten":
                    dead[node] = flattened(through, first, node)
                elif name == "getitem" and keeps_all_channels(node.args[1]):
                    dead[node] = through
                elif name == "pad" and first is not None:
                    dead[node] = padded(through, first, node)
        return {name: mask for name, mask in inputs.items() if mask is not None}


def flattened(mask: Optional[torch.Tensor], first: Optional[torch.fx.Node], node: torch.fx.Node) -> Optional[torch.Tensor]:
    """(N, C, *spatial) -> (N, C x spatial): each channel's mask repeated over its positions."""
    positions = flattened_positions(first, node)
    return None if mask is None or positions is None else mask.repeat_interleave(positions)


def padded(mask: Optional[torch.Tensor], first: torch.fx.Node, node: torch.fx.Node) -> Optional[torch.Tensor]:
    """F.pad with zeros on the channel dimension: the new channels are dead."""
    padding = channel_padding(first, node)
    if padding is None:
        return None
    channels = mask if mask is not None else torch.zeros(shape(first)[1], dtype=torch.bool)
    return torch.cat([torch.ones(padding[0], dtype=torch.bool), channels.cpu(), torch.ones(padding[1], dtype=torch.bool)])


def measure(model: nn.Module, structure: Structure, zero_threshold: float) -> dict:
    """The report: per-layer rows and the network's totals and ratios (see the module docstring)."""
    bits = {name: int(q.bits().item()) for name, q in quantizers(model).items()}
    with torch.no_grad():
        weights = {name: module.weight.detach() for name, module in structure.layers}
    zeros = {name: w.abs() <= zero_threshold for name, w in weights.items()}
    dead_out = {name: z.flatten(1).all(1).cpu() for name, z in zeros.items()}
    dead_in = structure.dead_inputs(dead_out)
    rows = []
    for name, module in structure.layers:
        w, positions = weights[name], structure.positions[name]
        groups = getattr(module, "groups", 1)
        out_channels, in_per_group = w.shape[0], w.shape[1]
        kernel = math.prod(w.shape[2:])
        useless = dead_in.get(name)
        dead_inputs = 0 if useless is None or len(useless) != in_per_group * groups else int(useless.sum())
        dead_outputs, zero_weights = int(dead_out[name].sum()), int(zeros[name].sum())
        live_in = in_per_group if groups > 1 else in_per_group - dead_inputs
        rows.append({
            "layer": name, "out_channels": out_channels, "in_channels": in_per_group * groups,
            "dead_out": dead_outputs, "dead_in": dead_inputs, "dead_channels": dead_out[name].nonzero().flatten().tolist(),
            "weights": w.numel(), "zero_weights": zero_weights, "bits": bits.get(name, FULL_PRECISION),
            "macs_dense": out_channels * in_per_group * kernel * positions,
            "macs_structured": (out_channels - dead_outputs) * live_in * kernel * positions,
            "macs_nonzero": (w.numel() - zero_weights) * positions,
        })
    return {"layers": rows, **totals(rows)}


def totals(rows: list[dict]) -> dict:
    kinds = ("dense", "structured", "nonzero")
    macs = {kind: sum(row[f"macs_{kind}"] for row in rows) for kind in kinds}
    bops = {kind: sum(row[f"macs_{kind}"] * row["bits"] * FULL_PRECISION for row in rows) for kind in kinds[1:]}
    dense_bops = macs["dense"] * FULL_PRECISION ** 2  # the dense network at 32 x 32 bits
    weights = sum(row["weights"] for row in rows)
    return {
        **{f"macs_{kind}": macs[kind] for kind in kinds},
        "bops_dense": dense_bops,
        **{f"bops_{kind}": bops[kind] for kind in kinds[1:]},
        **{f"mac_ratio_{kind}": macs[kind] / macs["dense"] for kind in kinds[1:]},
        **{f"bop_ratio_{kind}": bops[kind] / dense_bops for kind in kinds[1:]},
        "dead_channels": sum(row["dead_out"] for row in rows),
        "unstructured_sparsity": sum(row["zero_weights"] for row in rows) / weights,
        "mean_bits": sum(row["bits"] * row["weights"] for row in rows) / weights,
    }


@contextlib.contextmanager
def thresholded(layers: list[tuple[str, nn.Module]], zero_threshold: float):
    """Within: every weight the report counts as zero is zero (the trained weights of unquantized
    layers; a quantizer's zeros are exact already). The weights are restored after."""
    kept = []
    with torch.no_grad():
        for _, module in layers:
            if zero_threshold > 0 and not parametrize.is_parametrized(module, "weight"):
                kept.append((module.weight, module.weight.clone()))
                module.weight[module.weight.abs() <= zero_threshold] = 0
    try:
        yield
    finally:
        with torch.no_grad():
            for weight, original in kept:
                weight.copy_(original)


HISTORY_KEYS = ("mac_ratio_structured", "mac_ratio_nonzero", "bop_ratio_structured", "bop_ratio_nonzero", "dead_channels",
                "unstructured_sparsity", "mean_bits")


class SparsityReport(Extension):
    """The report after every validation and after the last epoch (see the module docstring)."""

    def __init__(self, model: nn.Module, example: torch.Tensor, zero_threshold: float, pictures_every: int,
                 directory: Path, test_accuracy: Callable[[], float], epochs: int):
        self.model, self.zero_threshold, self.pictures_every = model, zero_threshold, pictures_every
        self.directory, self.test_accuracy, self.epochs = directory, test_accuracy, epochs
        self.structure = Structure(model, example)
        self.reports = 0
        self.last: dict | None = None

    def on_epoch_end(self, record: dict) -> bool:
        epoch = record["epoch"]
        if "val_acc" not in record and epoch != self.epochs:
            return False
        self.directory.mkdir(exist_ok=True)
        with thresholded(self.structure.layers, self.zero_threshold):
            report = {"epoch": epoch, **measure(self.model, self.structure, self.zero_threshold), "test_acc": self.test_accuracy()}
        record.update({f"sparsity.{key}": report[key] for key in HISTORY_KEYS + ("test_acc",)})
        write_json(self.directory / f"report_e{epoch:04d}.json", report)
        self.reports += 1
        if self.reports % self.pictures_every == 0 or epoch == self.epochs:
            record["pictures"] = pictures.draw(report, self.directory, quantized=bool(quantizers(self.model)))
        self.last = {key: value for key, value in report.items() if key != "layers"}
        return False

    def results(self) -> dict:
        """metrics.json's `sparsity`: the last report's totals (of the last epoch's weights, whatever best_model.pt holds)."""
        return {"sparsity": self.last}

    def state_dict(self) -> dict:
        return {"reports": self.reports, "last": self.last}

    def load_state_dict(self, state: dict) -> None:
        self.reports, self.last = state["reports"], state["last"]


SCHEMAS = {"sparsity": SparsityReportSchema}


def build_report(node: DictConfig, context: BuildContext) -> SparsityReport | None:
    """The report, after every validation on the weights validation saw; None when it is off (by
    default, on when a regularizer or a quantizer is)."""
    cfg = context.config
    enabled = node.enabled if node.enabled is not None else cfg.regularizer.penalty is not None or cfg.quantizer.kind is not None
    if not enabled:
        return None
    data = context.data
    image = torch.zeros(1, data.channels, data.image_size, data.image_size, device=data.train_labels.device)
    return SparsityReport(context.model, image.contiguous(memory_format=torch.channels_last), node.zero_threshold, node.pictures_every,
                          context.run_dir / SPARSITY_DIR, lambda: context.evaluate(context.model, "test")["acc"], cfg.epochs)


register(Component(
    name="sparsity",
    summary="the pruning report after every validation: MACs, BOPs, dead channels, pictures (on with a regularizer or quantizer)",
    order=90,
    schemas=SCHEMAS,
    default="default",
    build=build_report,
    extension=SparsityReport,
    examples={"sparsity": ["sparsity.enabled=true", "sparsity.zero_threshold=0.01"]},
))
