"""REPAIR (Jordan et al. 2022): an interpolated network's hidden channels lose variance (their
weights average units that are not quite alike), which is most of the barrier that remains
after alignment. REPAIR gives each channel of the interpolated network the statistics that
interpolate the endpoints': mean_goal = (1 - a) mean_A + a mean_B, std_goal the same of the
stds, measured on the same images (with the endpoints' batch-norm statistics recomputed on them,
as at every point of the line, so that the repaired line ends at the same two networks).

Where: after each hidden conv or linear layer, at its batch norm's output where one follows it
(the statistics the next layer sees), else at the layer's own output. Each point gets a
batch-norm correction with affine weights std_goal and mean_goal; batch norm's running
statistics, the network's own and the corrections', are then recomputed on the images in one
pass (torch.optim.swa_utils.update_bn: in train mode each correction normalizes by the
batch's statistics, with the earlier points already corrected), so that in eval mode every
point has, up to the difference between batches and their average, the goal's statistics.
"""

import copy

import torch
import torch.fx
from torch import nn
from torch.optim.swa_utils import update_bn

from optqual.analysis.alignment import NORMS, Alignment, channels_last
from optqual.models.graph import first_input

Statistics = dict[str, tuple[torch.Tensor, torch.Tensor]]  # module name: per-channel (mean, std)


def correction_points(alignment: Alignment) -> list[str]:
    """The modules whose outputs REPAIR corrects: each hidden layer's batch norm where one reads it alone, else the layer."""
    graph = alignment.graph
    nodes = {node.target: node for node in graph.graph.nodes if node.op == "call_module"}
    points = []
    for name in alignment.hidden_layers:
        users = list(nodes[name].users)
        follows = users[0] if len(users) == 1 and users[0].op == "call_module" else None
        if follows is not None and isinstance(graph.get_submodule(follows.target), NORMS) and first_input(follows) is nodes[name]:
            points.append(follows.target)
        else:
            points.append(name)
    return points


def channel_statistics(model: nn.Module, points: list[str], batches: list[torch.Tensor]) -> Statistics:
    """Per point, the mean and std of each channel over the images and positions, in eval mode, in float64."""
    sums: dict[str, list[torch.Tensor]] = {}

    def record(name: str, output: torch.Tensor) -> None:
        values = channels_last(output)
        count = torch.tensor(float(len(values)), dtype=torch.float64)
        update = [count, values.sum(0), values.square().sum(0)]
        sums[name] = [x + y for x, y in zip(sums[name], update)] if name in sums else update

    hooks = [model.get_submodule(name).register_forward_hook(lambda m, args, out, name=name: record(name, out)) for name in points]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for images in batches:
                model(images)
    finally:
        for hook in hooks:
            hook.remove()
        model.train(was_training)
    statistics = {}
    for name, (count, total, squares) in sums.items():
        mean = total / count
        statistics[name] = (mean, (squares / count - mean.square()).clamp_min(0).sqrt())
    return statistics


def interpolate(a: Statistics, b: Statistics, alpha: float) -> Statistics:
    return {name: (torch.lerp(a[name][0], b[name][0], alpha), torch.lerp(a[name][1], b[name][1], alpha)) for name in a}


def repaired(model: nn.Module, goal: Statistics, batches: list[torch.Tensor]) -> nn.Module:
    """A copy of `model` with each point's channels corrected to the goal's statistics, in eval mode."""
    fixed = copy.deepcopy(model)
    for name, (mean, std) in goal.items():
        parent, _, child = name.rpartition(".")
        module = fixed.get_submodule(name)
        sample = next(p for p in module.parameters())
        correction = nn.BatchNorm2d(len(mean)) if sample.ndim == 4 or isinstance(module, nn.BatchNorm2d) else nn.BatchNorm1d(len(mean))
        with torch.no_grad():
            correction.weight.copy_(std)
            correction.bias.copy_(mean)
        setattr(fixed.get_submodule(parent) if parent else fixed, child, nn.Sequential(module, correction.to(sample.device)))
    update_bn(batches, fixed)
    return fixed.eval()
