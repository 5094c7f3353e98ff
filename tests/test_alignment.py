"""Aligning two networks' hidden units (optqual/analysis/alignment.py): a network and a randomly
permuted copy of itself compute the same function, and both matching methods find the
permutation back exactly, for every model family; weight matching's objective never falls and
reaches a brute-force search's optimum where one assignment decides it; a model whose graph
alignment does not follow is refused in one line; REPAIR's statistics are those of its definition."""

import itertools

import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from optqual.analysis.alignment import Alignment, NotAlignable, activation_matching, objective, weight_matching
from optqual.analysis.measures.interpolation import fits
from optqual.analysis.repair import channel_statistics, correction_points, interpolate, repaired
from optqual.errors import ConfigError
from optqual.models.cifar_resnet import CifarResNet
from optqual.models.mlp import MLP
from optqual.models.resnet18_cifar import resnet18_cifar

FAMILIES = {
    "mlp": lambda: MLP(hidden=(64, 32)),
    "mlp_batch_norm_tanh": lambda: MLP(hidden=(32, 16, 8), batch_norm=True, activation="tanh"),
    "resnet8_option_b": lambda: CifarResNet(),
    "resnet14_option_a": lambda: CifarResNet(2, shortcut="A"),  # zero-padded shortcuts: channels permute within cells
    "resnet18_cifar": resnet18_cifar,
}


def trained_like(build) -> nn.Module:
    """The family's network with batch-norm statistics and affine weights that are not their initial constants."""
    torch.manual_seed(0)
    model = build()
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d)):
                for tensor in (module.weight, module.bias, module.running_mean):
                    tensor.normal_()
                module.running_var.uniform_(0.5, 2.0)
    return model.eval()


@pytest.mark.parametrize("family", FAMILIES)
def test_a_randomly_permuted_copy_computes_the_same_and_is_aligned_back_exactly(family):
    model = trained_like(FAMILIES[family])
    images = torch.randn(16, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    alignment = Alignment(model, images[:2])
    state = model.state_dict()
    shuffled = alignment.apply(state, alignment.random(torch.Generator().manual_seed(1)))
    copy = trained_like(FAMILIES[family])
    copy.load_state_dict(shuffled)
    assert any(not torch.equal(shuffled[k], state[k]) for k in state)  # it moved
    with torch.no_grad():
        torch.testing.assert_close(copy(images), model(images), rtol=1e-4, atol=1e-4)  # the same function
    by_weights, objectives = weight_matching(alignment, state, shuffled)
    by_activations = activation_matching(alignment, model, copy, [images])
    for found in (by_weights, by_activations):
        back = alignment.apply(shuffled, found)
        assert all(torch.equal(back[k], state[k]) for k in state)
    assert objectives[-1] == pytest.approx(objective(alignment, state, state, alignment.identity()))


def test_the_spaces_of_a_resnet_are_its_residual_streams_and_block_interiors():
    """ResNet-8 (option B): the stem joins stage 1's stream; one permutation per stage stream and per block interior."""
    alignment = Alignment(CifarResNet().eval(), torch.zeros(2, 3, 32, 32))
    sizes = sorted(p.size for p in alignment.permutables.values())
    assert sizes == [16, 16, 32, 32, 64, 64]
    stream1 = next(p for p in alignment.permutables.values() if any(a.tensor == "stem.conv.weight" and a.dim == 0 for a in p.axes))
    tensors = {(a.tensor, a.dim) for a in stream1.axes}
    assert {("stage1.0.bn2.weight", 0), ("stage2.0.conv1.weight", 1), ("stage2.0.shortcut.conv.weight", 1)} <= tensors


def test_option_a_shortcuts_keep_the_old_channels_in_their_own_cells():
    """ResNet with zero-padded shortcuts: stage 3's stream holds stage 2's (at 16..48), which holds stage 1's (at 24..40)."""
    alignment = Alignment(CifarResNet(shortcut="A").eval(), torch.zeros(2, 3, 32, 32))
    stream3 = next(p for p in alignment.permutables.values() if any(a.tensor == "fc.weight" for a in p.axes))
    assert sorted(sorted(c.tolist()) for c in stream3.cells) == sorted([
        list(range(24, 40)), [*range(16, 24), *range(40, 48)], [*range(0, 16), *range(48, 64)]])


def brute_force(alignment: Alignment, a: dict, b: dict) -> float:
    roots = list(alignment.permutables)
    best = -float("inf")
    for choice in itertools.product(*(itertools.permutations(range(alignment.permutables[r].size)) for r in roots)):
        best = max(best, objective(alignment, a, b, {r: torch.tensor(p) for r, p in zip(roots, choice)}))
    return best


@pytest.mark.parametrize("hidden", [(5,), (4, 3)])
def test_weight_matching_never_loses_ground_and_reaches_the_brute_force_optimum(hidden):
    """One hidden layer: one assignment, solved exactly; two: coordinate descent, at most the optimum (here it reaches it)."""
    def build(seed: int) -> MLP:
        torch.manual_seed(seed)
        return MLP(hidden=hidden, in_channels=1, image_size=2, num_classes=3)

    a, b = build(0).state_dict(), build(1).state_dict()
    alignment = Alignment(build(0), torch.zeros(2, 1, 2, 2))
    _, objectives = weight_matching(alignment, a, b)
    assert all(later >= earlier - 1e-12 for earlier, later in zip(objectives, objectives[1:]))
    assert objectives[-1] > objectives[0]
    assert objectives[-1] == pytest.approx(brute_force(alignment, a, b), rel=1e-12)


class Grouped(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, groups=1)
        self.depthwise = nn.Conv2d(8, 8, 3, groups=8)
        self.fc = nn.Linear(8, 10)

    def forward(self, x):
        return self.fc(self.depthwise(self.conv(x)).mean(dim=(2, 3)))


class Concatenating(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b, self.fc = nn.Conv2d(3, 4, 1), nn.Conv2d(3, 4, 1), nn.Linear(8, 10)

    def forward(self, x):
        return self.fc(torch.cat([self.a(x), self.b(x)], dim=1).mean(dim=(2, 3)))


@pytest.mark.parametrize("model, words", [(Grouped(), "depthwise"), (Concatenating(), "cat")])
def test_a_graph_alignment_does_not_follow_is_refused_in_one_line(model, words):
    with pytest.raises(NotAlignable) as refused:
        Alignment(model.eval(), torch.zeros(2, 3, 8, 8))
    message = str(refused.value)
    assert "\n" not in message and message.startswith(f"cannot align {type(model).__name__}") and words in message


def test_interpolation_refuses_such_a_model_in_one_line_naming_the_way_around():
    class Unalignable:
        model = Concatenating().eval()

        def probe(self, size: int):
            return torch.zeros(size, 3, 8, 8), torch.zeros(size, dtype=torch.long)

    with pytest.raises(ConfigError) as refused:
        fits(OmegaConf.create({"align": "weights"}), Unalignable())
    message = str(refused.value)
    assert "\n" not in message and message.startswith("analysis.interpolation.align=weights: cannot align Concatenating")
    assert "align=none interpolates without aligning" in message
    fits(OmegaConf.create({"align": "none"}), Unalignable())  # no alignment asked for: nothing to refuse


def test_repair_gives_each_hidden_channel_the_interpolation_of_the_endpoints_statistics():
    """An MLP without batch norm, halfway between two networks: each hidden layer's pre-activations, computed
    by hand, have the mean and std (1 - a) s_A + a s_B after REPAIR, and not before."""
    def build(seed: int) -> MLP:
        torch.manual_seed(seed)
        return MLP(hidden=(16, 8), in_channels=1, image_size=4, num_classes=3).eval()

    a, b = build(0), build(1)
    images = torch.randn(512, 1, 4, 4, generator=torch.Generator().manual_seed(2))

    def pre_activations(model: MLP) -> list[torch.Tensor]:  # by hand, in float64: Linear, ReLU, Linear
        x = images.flatten(1).double()
        first = x @ model.hidden1[0].weight.double().T + model.hidden1[0].bias.double()
        second = first.relu() @ model.hidden2[0].weight.double().T + model.hidden2[0].bias.double()
        return [first, second]

    alignment = Alignment(a, images[:2])
    points = correction_points(alignment)
    assert points == ["hidden1.0", "hidden2.0"]
    halfway = build(0)
    with torch.no_grad():
        for p, pa, pb in zip(halfway.parameters(), a.parameters(), b.parameters()):
            p.copy_(torch.lerp(pa, pb, 0.5))
    goal = interpolate(channel_statistics(a, points, [images]), channel_statistics(b, points, [images]), 0.5)
    fixed = repaired(halfway, goal, [images])
    for layer, (name, ends) in enumerate(zip(points, zip(pre_activations(a), pre_activations(b)))):
        wanted_mean = (ends[0].mean(0) + ends[1].mean(0)) / 2
        wanted_std = (ends[0].std(0, unbiased=False) + ends[1].std(0, unbiased=False)) / 2
        torch.testing.assert_close(goal[name][0], wanted_mean)
        torch.testing.assert_close(goal[name][1], wanted_std)
        mean, std = channel_statistics(fixed, [name], [images])[name]
        # within batch norm's own slack: its running variance is unbiased (n/(n-1)), the batch's is not, and the
        # second layer's statistics were gathered with the first corrected by the batch's, not the running ones
        torch.testing.assert_close(mean, wanted_mean, rtol=0, atol=1e-3)
        torch.testing.assert_close(std, wanted_std, rtol=2e-3, atol=1e-4)
        before = pre_activations(halfway)[layer].std(0, unbiased=False)
        assert (before - wanted_std).abs().max() > 0.01  # it had something to repair
