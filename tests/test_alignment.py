"""Aligning two networks' hidden units (optqual/analysis/alignment.py): a network and a randomly
permuted copy of itself compute the same function, and both matching methods find the
permutation back exactly, for every model family; weight matching's objective never falls and
reaches a brute-force search's optimum where one assignment decides it; a model whose graph
alignment does not follow is refused in one line."""

import itertools

import pytest
import torch
from torch import nn

from optqual.analysis.alignment import Alignment, NotAlignable, activation_matching, objective, weight_matching
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
