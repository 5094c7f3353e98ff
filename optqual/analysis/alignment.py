"""Aligning the hidden units of two networks of one architecture (Entezari et al. 2021; Ainsworth
et al. 2022, "Git Re-Basin"): permuting a layer's units, and the inputs of the layers that read
them with them, leaves the network's function unchanged, so two solutions are compared only
after B's units are permuted to match A's.

Where the permutations live is read from the model's graph (optqual/models/graph.py), not from
a table per architecture. Each tensor's channel dimension belongs to a *space*: a conv or
linear layer starts one for its outputs; batch norm, activations, pooling, dropout and a
flatten of (N, C, 1, 1) carry it; a sum merges its operands' spaces (a ResNet's residual
stream: one permutation across a stage's blocks, its shortcuts with it); a zero-padded
shortcut (option A) embeds its input's space in a larger one, whose old channels keep their
own permutation while the new ones permute among themselves (*cells*). The input and the
logits are fixed. A model with any other operation on a permutable channel is refused in one
line, before any work.

- weight matching (Ainsworth et al., Algorithm 1): coordinate descent over the spaces in a
  seeded random order; each step maximizes sum_t <W_A^t, P W_B^t> over the permutation of one
  space with the others held (scipy.optimize.linear_sum_assignment per cell), until no step
  improves. Every trained parameter counts, batch norm's affine weights included; its running
  statistics are moved, not matched (they are not weights: Ainsworth et al. match parameters).
- activation matching (Ainsworth et al. sec. 3.1; Li et al. 2016): for each space, the
  correlation of A's and B's channels over the probe images and positions, summed over the
  places the space is seen, and the assignment that maximizes it.
"""

import operator
import random
from dataclasses import dataclass, field
from typing import Iterator

import torch
import torch.fx
from scipy.optimize import linear_sum_assignment
from torch import nn

from optqual.models.graph import (CHANNEL_KEEPING, ELEMENTWISE, SUMS, channel_padding, first_input, flattened_positions,
                                  keeps_all_channels, keeps_channels, op_name, shape, trace)

LAYERS = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)
NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


class NotAlignable(ValueError):
    """The model's graph has an operation on a permutable channel that alignment does not know."""


@dataclass
class Axis:
    tensor: str  # a key of the model's state_dict
    dim: int
    offset: int  # where the tensor's channels sit in its space's root
    size: int


@dataclass
class Space:
    size: int
    parent: int | None = None
    offset: int = 0  # into the parent
    embedded: bool = False  # a padded shortcut's input: its channels keep their own permutation
    fixed: bool = False  # the input's or the logits' channels


@dataclass
class Permutable:
    """One permutation to find: its size, the tensor axes it moves, and its cells (it maps each cell onto itself)."""
    size: int
    axes: list[Axis] = field(default_factory=list)
    cells: list[torch.Tensor] = field(default_factory=list)
    sites: list[str] = field(default_factory=list)  # graph nodes whose channels live here (activation matching)


class Spaces:
    """Union-find over channel spaces, each child at an offset into its parent."""

    def __init__(self):
        self.nodes: list[Space] = []

    def new(self, size: int, fixed: bool = False) -> int:
        self.nodes.append(Space(size, fixed=fixed))
        return len(self.nodes) - 1

    def find(self, space: int) -> tuple[int, int]:
        offset = 0
        while self.nodes[space].parent is not None:
            offset += self.nodes[space].offset
            space = self.nodes[space].parent
        return space, offset

    def merge(self, a: int, b: int, where: str) -> None:
        (root_a, off_a), (root_b, off_b) = self.find(a), self.find(b)
        if root_a == root_b and off_a == off_b:
            return
        if root_a == root_b or off_a or off_b or self.nodes[root_a].size != self.nodes[root_b].size:
            raise NotAlignable(f"{where} adds channels that sit at different places of one permutation")
        self.nodes[root_b].parent = root_a
        self.nodes[root_a].fixed |= self.nodes[root_b].fixed

    def embed(self, inner: int, size: int, offset: int, where: str) -> int:
        root, at = self.find(inner)
        if at:
            raise NotAlignable(f"{where} pads channels that already sit inside a larger permutation")
        outer = self.new(size, fixed=self.nodes[root].fixed)
        self.nodes[root].parent, self.nodes[root].offset, self.nodes[root].embedded = outer, offset, True
        return outer


class Alignment:
    """The permutations of a model (its architecture; any weights of it), found once from one example input."""

    def __init__(self, model: nn.Module, example: torch.Tensor):
        name = type(model).__name__
        try:
            self.graph = trace(model, example)
        except Exception as err:  # noqa: BLE001 -- fx refuses models in many ways; each is one line here
            raise NotAlignable(f"cannot align {name}: torch.fx cannot trace it ({str(err).splitlines()[0]})") from None
        spaces, of_node = Spaces(), {}
        axes: list[tuple[int, str, int]] = []  # (space, tensor, dim)
        layer_spaces: dict[str, int] = {}  # conv and linear layers: the space of their outputs
        for node in self.graph.graph.nodes:
            try:
                of_node[node] = self.space_of(node, spaces, of_node, axes, layer_spaces)
            except NotAlignable as err:
                raise NotAlignable(f"cannot align {name}: {err}") from None
        for node in self.graph.graph.nodes:
            if node.op == "output":
                spaces.nodes[spaces.find(of_node[first_input(node)])[0]].fixed = True
        self.permutables: dict[int, Permutable] = {}
        for space, tensor, dim in axes:
            root, offset = spaces.find(space)
            if not spaces.nodes[root].fixed:
                permutable = self.permutables.setdefault(root, Permutable(spaces.nodes[root].size))
                permutable.axes.append(Axis(tensor, dim, offset, spaces.nodes[space].size))
        for node, space in of_node.items():
            if space is not None and spaces.find(space)[0] in self.permutables:
                self.permutables[spaces.find(space)[0]].sites.append(node.name)
        self.site_offsets = {node.name: spaces.find(space)[1] for node, space in of_node.items() if space is not None}
        for root, permutable in self.permutables.items():
            permutable.cells = cells(spaces, root)
        self.hidden_layers = [name for name, space in layer_spaces.items() if spaces.find(space)[0] in self.permutables]
        self.parameters = {name for name, p in model.named_parameters() if p.requires_grad}  # what weight matching matches
        self.axes_of: dict[str, list[tuple[int, Axis]]] = {}
        for root, permutable in self.permutables.items():
            for axis in permutable.axes:
                self.axes_of.setdefault(axis.tensor, []).append((root, axis))

    def space_of(self, node: torch.fx.Node, spaces: Spaces, of_node: dict, axes: list, layer_spaces: dict) -> int | None:
        """The space of the node's channel dimension (None: not a tensor with channels), noting the weights it reads."""
        first = first_input(node)
        where = f"{node.op} {op_name(node) or node.target} ({node.name})"
        if node.op == "output" or shape(node) is None or len(shape(node)) < 2:
            return None
        if node.op == "placeholder":
            return spaces.new(shape(node)[1], fixed=True)

        def channels(source: torch.fx.Node) -> int:
            if of_node.get(source) is None:
                raise NotAlignable(f"{where} reads {source}, which has no channel dimension alignment follows")
            return of_node[source]

        if node.op == "call_module":
            module = self.graph.get_submodule(node.target)
            if isinstance(module, LAYERS):
                if getattr(module, "groups", 1) != 1:
                    raise NotAlignable(f"{where} is a grouped convolution")
                axes.append((channels(first), f"{node.target}.weight", 1))
                out = layer_spaces[node.target] = spaces.new(module.weight.shape[0])
                axes.append((out, f"{node.target}.weight", 0))
                if module.bias is not None:
                    axes.append((out, f"{node.target}.bias", 0))
                return out
            if isinstance(module, NORMS):
                for tensor in ("weight", "bias", "running_mean", "running_var"):
                    if getattr(module, tensor, None) is not None:
                        axes.append((channels(first), f"{node.target}.{tensor}", 0))
                return channels(first)
            if isinstance(module, CHANNEL_KEEPING) and not list(module.parameters(recurse=False)):
                return channels(first)
            if isinstance(module, nn.Flatten):
                return self.flattened(first, node, spaces, channels(first), where)
            raise NotAlignable(f"{where}: a {type(module).__name__} on permutable channels")
        if node.op in ("call_function", "call_method"):
            name = op_name(node)
            operands = [arg for arg in node.args if isinstance(arg, torch.fx.Node)]
            if name in SUMS or node.target is operator.add:
                for other in operands[1:]:
                    spaces.merge(channels(operands[0]), channels(other), where)
                return channels(operands[0])
            if name in ELEMENTWISE and keeps_channels(first, node) and len(operands) == 1:
                return channels(first)
            if name == "getitem" and keeps_all_channels(node.args[1]):
                return channels(first)
            if name == "flatten":
                return self.flattened(first, node, spaces, channels(first), where)
            if name == "pad" and (padding := channel_padding(first, node)) is not None:
                return spaces.embed(channels(first), shape(node)[1], padding[0], where)
        raise NotAlignable(f"{where} moves channels in a way alignment does not follow")

    @staticmethod
    def flattened(first, node, spaces: Spaces, space: int, where: str) -> int:
        positions = flattened_positions(first, node)
        if positions == 1 or (positions is not None and spaces.nodes[spaces.find(space)[0]].fixed):
            return space if positions == 1 else spaces.new(shape(node)[1], fixed=True)
        raise NotAlignable(f"{where} flattens permutable channels with their positions")

    def permuted(self, tensor: str, value: torch.Tensor, permutations: dict[int, torch.Tensor], skip: int | None = None) -> torch.Tensor:
        """One tensor of a state with its permutable axes permuted (new[i] = old[permutation[i]]), except those of space `skip`."""
        for root, axis in self.axes_of.get(tensor, []):
            if root != skip:
                index = (permutations[root][axis.offset : axis.offset + axis.size] - axis.offset).to(value.device)
                value = value.index_select(axis.dim, index)
        return value

    def apply(self, state: dict[str, torch.Tensor], permutations: dict[int, torch.Tensor]) -> dict[str, torch.Tensor]:
        """`state` with every permutable axis permuted."""
        return {name: self.permuted(name, value, permutations) for name, value in state.items()}

    def identity(self) -> dict[int, torch.Tensor]:
        return {root: torch.arange(p.size) for root, p in self.permutables.items()}

    def random(self, generator: torch.Generator) -> dict[int, torch.Tensor]:
        """A uniformly random permutation of each space that maps each of its cells onto itself."""
        found = {}
        for root, permutable in self.permutables.items():
            permutation = torch.arange(permutable.size)
            for cell in permutable.cells:
                permutation[cell] = cell[torch.randperm(len(cell), generator=generator)]
            found[root] = permutation
        return found


def cells(spaces: Spaces, root: int) -> list[torch.Tensor]:
    """The root's channels grouped by the embedded spaces that hold them: each group permutes only within itself."""
    labels = [frozenset()] * spaces.nodes[root].size
    for index, space in enumerate(spaces.nodes):
        if space.embedded:
            top, offset = spaces.find(index)
            if top == root:
                for channel in range(offset, offset + space.size):
                    labels[channel] = labels[channel] | {index}
    groups: dict[frozenset, list[int]] = {}
    for channel, label in enumerate(labels):
        groups.setdefault(label, []).append(channel)
    return [torch.tensor(group) for group in groups.values()]


def assign(similarity: torch.Tensor, cells: list[torch.Tensor]) -> torch.Tensor:
    """The permutation that maximizes sum_i similarity[i, permutation[i]], each cell onto itself."""
    permutation = torch.arange(len(similarity))
    for cell in cells:
        rows, columns = linear_sum_assignment(similarity[cell][:, cell].numpy(), maximize=True)
        permutation[cell[rows]] = cell[columns]
    return permutation


def matrix(tensor: torch.Tensor, dim: int) -> torch.Tensor:
    return tensor.movedim(dim, 0).reshape(tensor.shape[dim], -1).double()


def weight_matching(alignment: Alignment, a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], seed: int = 0,
                    max_rounds: int = 100) -> tuple[dict[int, torch.Tensor], list[float]]:
    """Ainsworth et al.'s coordinate descent; the permutations and the objective after each round (never decreasing)."""
    permutations = alignment.identity()
    order = list(alignment.permutables)
    rng = random.Random(seed)
    objectives = [objective(alignment, a, b, permutations)]
    for _ in range(max_rounds):
        improved = False
        rng.shuffle(order)
        for root in order:
            permutable = alignment.permutables[root]
            similarity = torch.zeros(permutable.size, permutable.size, dtype=torch.float64)
            for axis in (axis for axis in permutable.axes if axis.tensor in alignment.parameters):  # not batch norm's statistics
                # B with its other spaces' axes in A's order already, this one's still free
                moved = alignment.permuted(axis.tensor, b[axis.tensor], permutations, skip=root)
                block = slice(axis.offset, axis.offset + axis.size)
                similarity[block, block] += matrix(a[axis.tensor], axis.dim) @ matrix(moved, axis.dim).T
            new = assign(similarity, permutable.cells)
            old = permutations[root]
            if similarity[torch.arange(len(new)), new].sum() > similarity[torch.arange(len(old)), old].sum() + 1e-12:
                permutations[root], improved = new, True
        objectives.append(objective(alignment, a, b, permutations))
        if not improved:
            break
    return permutations, objectives


def objective(alignment: Alignment, a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], permutations: dict[int, torch.Tensor]) -> float:
    """sum over the trained parameters with a permutable axis of <W_A, P W_B>."""
    matched = alignment.parameters & alignment.axes_of.keys()
    return float(sum((a[t].double() * alignment.permuted(t, b[t], permutations).double()).sum() for t in matched))


def channels_last(output: torch.Tensor) -> torch.Tensor:
    """(N, C, *positions) -> (N x positions, C) in float64: each channel's values over images and positions."""
    return output.detach().movedim(1, -1).reshape(-1, output.shape[1]).double()


class Recorder(torch.fx.Interpreter):
    """Runs the graph, keeping the named nodes' outputs as (samples, channels) in float64, channels last."""

    def __init__(self, graph: torch.fx.GraphModule, sites: set[str]):
        super().__init__(graph)
        self.sites, self.outputs = sites, {}

    def run_node(self, node: torch.fx.Node):
        result = super().run_node(node)
        if node.name in self.sites:
            self.outputs[node.name] = channels_last(result)
        return result


def site_activations(alignment: Alignment, model: nn.Module, batches: list[torch.Tensor]) -> Iterator[dict[str, torch.Tensor]]:
    """Per batch, every site's activations in `model` (eval mode)."""
    graph = torch.fx.GraphModule(model, alignment.graph.graph).eval()
    sites = {site for p in alignment.permutables.values() for site in p.sites}
    for images in batches:
        recorder = Recorder(graph, sites)
        with torch.no_grad():
            recorder.run(images)
        yield recorder.outputs


def activation_matching(alignment: Alignment, model_a: nn.Module, model_b: nn.Module, batches: list[torch.Tensor]) -> dict[int, torch.Tensor]:
    """For each space, the assignment of B's channels to A's that maximizes their summed correlation over its sites."""
    sums: dict[str, dict[str, torch.Tensor]] = {}
    for outputs_a, outputs_b in zip(site_activations(alignment, model_a, batches), site_activations(alignment, model_b, batches)):
        for site, x in outputs_a.items():
            y = outputs_b[site]
            totals = sums.setdefault(site, {"n": torch.zeros((), dtype=torch.float64), "a": 0, "b": 0, "aa": 0, "bb": 0, "ab": 0})
            totals["n"] += len(x)
            for key, value in (("a", x.sum(0)), ("b", y.sum(0)), ("aa", x.square().sum(0)), ("bb", y.square().sum(0)), ("ab", x.T @ y)):
                totals[key] = totals[key] + value
    permutations = {}
    for root, permutable in alignment.permutables.items():
        similarity = torch.zeros(permutable.size, permutable.size, dtype=torch.float64)
        for site in permutable.sites:
            t = sums[site]
            mean_a, mean_b = t["a"] / t["n"], t["b"] / t["n"]
            std_a = (t["aa"] / t["n"] - mean_a.square()).clamp_min(0).sqrt()
            std_b = (t["bb"] / t["n"] - mean_b.square()).clamp_min(0).sqrt()
            covariance = t["ab"] / t["n"] - torch.outer(mean_a, mean_b)
            correlation = covariance / torch.outer(std_a, std_b).clamp_min(1e-12)
            block = slice(alignment.site_offsets[site], alignment.site_offsets[site] + len(mean_a))
            similarity[block, block] += correlation
        permutations[root] = assign(similarity, permutable.cells)
    return permutations
