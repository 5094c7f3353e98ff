"""The optimizer options against their papers' updates, computed independently here; parameter
groups; the loop's hook points; bad optimizer configs."""

import functools
import re

import numpy as np
import pytorch_optimizer.optimizer.muon.base
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from conftest import compose_run
from optqual.data.augment import CropFlip
from optqual.config.checks import check_config
from optqual.data.images import to_device
from optqual.components.extension import Extension
from optqual.engine.hooks import Hooks
from optqual.engine.loop import EpochProgress, Training
from optqual.errors import ConfigError
from optqual.models.cifar_resnet import CifarResNet
from optqual.optim.build import build_optimizer, parameter_groups



class Small(nn.Module):
    """A stem conv, a norm, a hidden conv, a hidden linear (out > in) and a biased head."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.stem = nn.Conv2d(3, 4, 3, stride=4, bias=False)
        self.bn = nn.BatchNorm2d(4)
        self.conv = nn.Conv2d(4, 4, 3, stride=2, bias=False)
        self.hidden = nn.Linear(4, 8)
        self.head = nn.Linear(8, 10)

    def forward(self, x):
        x = self.conv(F.relu(self.bn(self.stem(x))))
        return self.head(F.relu(self.hidden(x.mean(dim=(2, 3)))))


def batch(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(16, 3, 32, 32, generator=generator), torch.randint(0, 10, (16,), generator=generator)


def training(model: nn.Module, optimizer: torch.optim.Optimizer, extensions: dict | None = None) -> tuple[Training, EpochProgress]:
    """The run's loop around `model`, to call its `step` on chosen batches."""
    rng = np.random.default_rng(0)
    arrays = {"x_train": rng.integers(0, 256, (20, 32, 32, 3), dtype=np.uint8), "y_train": rng.integers(0, 10, 20),
              "x_test": rng.integers(0, 256, (4, 32, 32, 3), dtype=np.uint8), "y_test": rng.integers(0, 10, 4)}
    data = to_device(arrays, torch.device("cpu"), batch_size=16, val_fraction=0.2, num_classes=10)
    loop = Training(model, optimizer, data, torch.Generator(), Hooks(extensions or {}), epochs=1, eval_every=1)
    return loop, EpochProgress.begin(1, data, loop.generator)


def gradients(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
    model.zero_grad()
    F.cross_entropy(model(images), labels).backward()
    return {name: p.grad.clone() for name, p in model.named_parameters()}


def test_no_weight_decay_exempts_norm_weights_and_biases():
    model = CifarResNet()
    groups = {g["name"]: g for g in parameter_groups(model, compose_run("optimizer.no_weight_decay=true").optimizer)}
    names = {id(p): name for name, p in model.named_parameters()}
    exempt = {names[id(p)] for p in groups["no_decay"]["params"]}
    assert exempt == {name for name in names.values() if ".bn" in name or "shortcut.1" in name or name == "fc.bias"}
    assert all(names[id(p)].endswith("weight") and p.ndim > 1 for p in groups["decay"]["params"])
    assert groups["no_decay"]["weight_decay"] == 0.0 and "weight_decay" not in groups["decay"]  # the option's own value
    optimizer = build_optimizer(model, compose_run("optimizer.no_weight_decay=true").optimizer)
    assert [(g["name"], g["weight_decay"]) for g in optimizer.param_groups] == [("decay", 1e-4), ("no_decay", 0.0)]


def test_muon_takes_the_hidden_matrices_and_its_rest_the_others():
    model = CifarResNet()
    groups = {g["name"]: g for g in parameter_groups(model, compose_run("optimizer=muon", "optimizer.rest.no_weight_decay=true").optimizer)}
    names = {id(p): name for name, p in model.named_parameters()}
    muon = {names[id(p)] for p in groups["muon"]["params"]}
    convs = {name for name in names.values() if name.endswith("weight") and "conv" in name or "shortcut.0" in name}
    assert muon == convs - {"stem.conv.weight"}  # every conv but the stem; the head is rest's
    assert {names[id(p)] for p in groups["rest.decay"]["params"]} == {"stem.conv.weight", "fc.weight"}
    assert groups["muon"]["use_muon"] and not groups["rest.no_decay"]["use_muon"]


def test_sam_step_is_the_papers_update_and_bn_statistics_move_once():
    images, labels = batch()
    model = Small()
    reference = Small()
    reference.load_state_dict(model.state_dict())
    rho, lr = 0.05, 0.1
    optimizer = build_optimizer(model, compose_run("optimizer=sam", f"optimizer.rho={rho}", f"optimizer.base.lr={lr}",
                                                   "optimizer.base.momentum=0", "optimizer.base.weight_decay=0").optimizer)
    loop, progress = training(model, optimizer)
    loop.step(images, labels, progress)

    # Foret et al. (2021), eq. 2: e = rho g / ||g||, then the base optimizer with the gradient at w + e
    g = gradients(reference, images, labels)
    norm = torch.sqrt(sum((v ** 2).sum() for v in g.values()))
    w0 = {name: p.detach().clone() for name, p in reference.named_parameters()}
    with torch.no_grad():
        for name, p in reference.named_parameters():
            p.add_(rho * g[name] / norm)
    g_adv = gradients(reference, images, labels)
    for name, p in model.named_parameters():
        torch.testing.assert_close(p.detach(), w0[name] - lr * g_adv[name], rtol=0, atol=1e-6, msg=name)

    # batch norm: running statistics and batch count as after one forward pass at w
    fresh = Small().train()
    fresh(images)
    assert torch.equal(model.bn.running_mean, fresh.bn.running_mean) and model.bn.num_batches_tracked.item() == 1


def test_asam_perturbs_in_the_weight_scaled_geometry():
    images, labels = batch(1)
    model, reference = Small(), Small()
    rho, lr = 0.5, 0.1
    optimizer = build_optimizer(model, compose_run("optimizer=sam", "optimizer.adaptive=true", f"optimizer.rho={rho}",
                                                   f"optimizer.base.lr={lr}", "optimizer.base.momentum=0", "optimizer.base.weight_decay=0").optimizer)
    loop, progress = training(model, optimizer)
    loop.step(images, labels, progress)
    # Kwon et al. (2021): e = rho T^2 g / ||T g|| with T = |w|
    g = gradients(reference, images, labels)
    w0 = {name: p.detach().clone() for name, p in reference.named_parameters()}
    norm = torch.sqrt(sum(((w0[n].abs() * v) ** 2).sum() for n, v in g.items()))
    with torch.no_grad():
        for name, p in reference.named_parameters():
            p.add_(rho * w0[name] ** 2 * g[name] / norm)
    g_adv = gradients(reference, images, labels)
    for name, p in model.named_parameters():
        torch.testing.assert_close(p.detach(), w0[name] - lr * g_adv[name], rtol=0, atol=1e-6, msg=name)


def newton_schulz(g: torch.Tensor, steps: int = 5) -> torch.Tensor:
    """Keller Jordan's quintic iteration (his Muon post), in float64 here."""
    a, b, c = 3.4445, -4.7750, 2.0315
    x = g.double() / (g.double().norm() + 1e-7)
    tall = x.size(0) > x.size(1)
    if tall:
        x = x.T
    for _ in range(steps):
        gram = x @ x.T
        x = a * x + (b * gram + c * gram @ gram) @ x
    return x.T if tall else x


@pytest.mark.parametrize("iteration_dtype, tolerance", [(torch.float32, 1e-4), (torch.bfloat16, 0.05)])
def test_muon_updates_hidden_matrices_by_orthogonalized_nesterov_momentum(monkeypatch, iteration_dtype, tolerance):
    """The whole update (momentum, Nesterov, flattening, orthogonalization, lr scale) against a
    float64 reference: exactly with the iteration in float32; within 5% in the bfloat16 it ships
    with (Jordan's choice too; bfloat16 rounding alone moves the iteration's result 2-4%)."""
    iterate = pytorch_optimizer.optimizer.muon.base.zero_power_via_newton_schulz_5
    monkeypatch.setattr(pytorch_optimizer.optimizer.muon.base, "zero_power_via_newton_schulz_5", functools.partial(iterate, dtype=iteration_dtype))
    images, labels = batch(2)
    model, reference = Small(), Small()
    lr, beta = 0.02, 0.95
    cfg = compose_run("optimizer=muon", "optimizer@optimizer.rest=sgd", "optimizer.rest.lr=0.1", "optimizer.rest.momentum=0",
                      "optimizer.rest.weight_decay=0")
    loop, progress = training(model, build_optimizer(model, cfg.optimizer))
    loop.step(images, labels, progress)

    g = gradients(reference, images, labels)
    trained = dict(model.named_parameters())
    for name, p in reference.named_parameters():
        w0 = p.detach()
        if name in ("conv.weight", "hidden.weight"):  # Muon: buffer (1-beta) g, Nesterov: (1-beta) g + beta * buffer
            expected = newton_schulz(((1 - beta) * g[name] + beta * (1 - beta) * g[name]).reshape(len(w0), -1)).float()
            scale = max(1.0, expected.shape[0] / expected.shape[1]) ** 0.5  # sqrt(max(1, rows / columns))
            update = ((w0 - trained[name].detach()) / (lr * scale)).reshape(expected.shape)
            assert (update - expected).norm() / expected.norm() < tolerance, name
        else:  # the rest: plain SGD
            torch.testing.assert_close(trained[name].detach(), w0 - 0.1 * g[name], rtol=0, atol=1e-7, msg=name)


def test_lion_is_the_sign_of_interpolated_momentum_with_decoupled_decay():
    model, reference = Small(), Small()
    lr, wd, (b1, b2) = 1e-3, 0.1, (0.9, 0.99)
    loop, progress = training(model, build_optimizer(model, compose_run("optimizer=lion", f"optimizer.lr={lr}", f"optimizer.weight_decay={wd}").optimizer))
    momentum = {name: torch.zeros_like(p) for name, p in reference.named_parameters()}
    for seed in (3, 4):  # the second step uses the momentum of the first
        images, labels = batch(seed)
        loop.step(images, labels, progress)
        g = gradients(reference, images, labels)
        with torch.no_grad():  # Chen et al. (2023), Algorithm 2
            for name, p in reference.named_parameters():
                update = torch.sign(b1 * momentum[name] + (1 - b1) * g[name])
                p.sub_(lr * (update + wd * p))
                momentum[name] = b2 * momentum[name] + (1 - b2) * g[name]
    for (name, p), (_, q) in zip(model.named_parameters(), reference.named_parameters()):
        torch.testing.assert_close(p.detach(), q.detach(), rtol=0, atol=1e-7, msg=name)


class Counting(Extension):
    """Counts the hook calls and adds an L2 term: for SGD, 0.5 * c * ||w||^2 is weight decay c."""

    def __init__(self, c: float):
        self.c, self.calls = c, {"on_batch": 0, "after_backward": 0, "after_step": 0}

    def on_batch(self, images, targets):
        self.calls["on_batch"] += 1
        return images, targets

    def loss_terms(self, model):
        return [0.5 * self.c * sum((p ** 2).sum() for p in model.parameters())]

    def after_backward(self):
        self.calls["after_backward"] += 1

    def after_step(self):
        self.calls["after_step"] += 1


@pytest.mark.parametrize("option, passes", [("sgd", 1), ("sam", 2)])
def test_hook_points_are_called_once_per_step_and_after_every_backward_pass(option, passes):
    model = Small()
    counting = Counting(0.0)
    loop, progress = training(model, build_optimizer(model, compose_run(f"optimizer={option}").optimizer), {"counting": counting})
    for seed in range(3):
        loop.step(*batch(seed), progress)
    assert counting.calls == {"on_batch": 3, "after_backward": 3 * passes, "after_step": 3}


def test_loss_terms_reach_the_gradient():
    c = 0.01
    with_term, plain = Small(), Small()
    loop, progress = training(with_term, build_optimizer(with_term, compose_run("optimizer.weight_decay=0").optimizer), {"l2": Counting(c)})
    reference, reference_progress = training(plain, build_optimizer(plain, compose_run(f"optimizer.weight_decay={c}").optimizer))
    for seed in range(3):
        loop.step(*batch(seed), progress)
        reference.step(*batch(seed), reference_progress)
    for (name, p), (_, q) in zip(with_term.named_parameters(), plain.named_parameters()):
        torch.testing.assert_close(p.detach(), q.detach(), rtol=1e-5, atol=1e-7, msg=name)


@pytest.mark.parametrize("every, sampled", [(1, [0, 1, 2, 3]), (3, [0, 3])])
def test_grad_norms_are_each_layers_mean_norm_over_the_sampled_steps(every, sampled):
    """History's grad_norm.<layer> against gradients taken here with plain autograd: a layer's
    weight and bias together, averaged over steps 0, N, 2N, ... of the epoch (N = grad_norm_every)."""
    rng = np.random.default_rng(0)
    arrays = {"x_train": rng.integers(0, 256, (40, 8, 8, 3), dtype=np.uint8), "y_train": rng.integers(0, 10, 40),
              "x_test": rng.integers(0, 256, (4, 8, 8, 3), dtype=np.uint8), "y_test": rng.integers(0, 10, 4)}
    data = to_device(arrays, torch.device("cpu"), batch_size=8, val_fraction=0.2, augment=CropFlip(padding=0, flip=False))
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(192, 16), nn.ReLU(), nn.Linear(16, 10))
    frozen = torch.optim.SGD(model.parameters(), lr=0.0)  # every step's gradient is at the same weights
    loop = Training(model, frozen, data, torch.Generator().manual_seed(0), Hooks({}), epochs=1, eval_every=None, grad_norm_every=every)
    progress = EpochProgress.begin(1, data, loop.generator)
    order = progress.order.clone()
    loop.train_epoch(progress, on_step=lambda: None, should_stop=lambda: False)
    record = loop.epoch_record(progress)
    expected = {"1": [], "3": []}
    for step in sampled:  # 32 training images: 4 steps of 8
        rows = order[step * 8 : (step + 1) * 8]
        loss = F.cross_entropy(model(data.normalize(data.train_images[rows])), data.train_labels[rows])
        w1, b1, w2, b2 = (g.double() for g in torch.autograd.grad(loss, list(model.parameters())))
        expected["1"].append(((w1 ** 2).sum() + (b1 ** 2).sum()).sqrt().item())
        expected["3"].append(((w2 ** 2).sum() + (b2 ** 2).sum()).sqrt().item())
    assert progress.step == 4 and [key for key in record if key.startswith("grad_norm.")] == ["grad_norm.1", "grad_norm.3"]
    for layer, norms in expected.items():
        assert record[f"grad_norm.{layer}"] == pytest.approx(np.mean(norms), rel=1e-6)
    assert record["grad_norm.1"] != pytest.approx(np.mean(expected["1"][:1]), rel=1e-3)  # more than step 0 counts


@pytest.mark.parametrize("overrides, message", [
    (["optimizer=sam", "optimizer@optimizer.base=sam"], "optimizer.base=sam: SAM needs a base optimizer to wrap, not SAM"),
    (["optimizer=sam", "~optimizer@optimizer.base"], "optimizer.base is required"),
    (["optimizer=muon", "optimizer@optimizer.rest=sam"], "optimizer.rest=optqual.optim.sam.sam: must be a plain optimizer"),
    (["optimizer=sam", "optimizer.rho=0"], "optimizer.rho=0.0: must lie in (0, inf)"),
    (["optimizer=sam", "optimizer.base.lr=-1"], "optimizer.base.lr=-1.0: must lie in (0, inf)"),
    (["optimizer=muon", "optimizer.momentum=1.5"], "optimizer.momentum=1.5: must lie in [0, 1)"),
    (["optimizer=lion", "optimizer.betas=[0.9,1.5]"], "optimizer.betas=[0.9, 1.5]: each must lie in [0, 1)"),
    (["optimizer=rmsprop", "optimizer.alpha=-1"], "optimizer.alpha=-1.0: must lie in [0, 1)"),
])
def test_bad_optimizers_are_config_errors(overrides, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        check_config(compose_run(*overrides))
