"""Every model option as published: parameter counts, option-A shortcuts, ResNet-18's CIFAR stem,
the MLP, timm models, the model/data fit, and the profile's MAC count against a hand count."""

import copy

import pytest
import torch
from torch import nn

from conftest import compose_run
from optqual.engine.loop import grad_norm_every
from optqual.errors import ConfigError
from optqual.models import build_model, check
from optqual.models.cifar_resnet import CifarResNet
from optqual.models.layout import to_training_layout
from optqual.models.profile import macs_per_image, macs_per_parameter, timings

CIFAR = {"num_classes": 10, "channels": 3, "image_size": 32}

# He et al. (2016), table 6: the CIFAR-10 networks' parameters, rounded as the paper prints them;
# the exact counts are those of the reference implementations of option A.
PUBLISHED = {"resnet20": (0.27e6, 269_722), "resnet32": (0.46e6, 464_154), "resnet44": (0.66e6, 658_586),
             "resnet56": (0.85e6, 853_018), "resnet110": (1.7e6, 1_727_962), "resnet8": (None, 78_042),
             "resnet18_cifar": (11.17e6, 11_173_962)}


GREY = {"num_classes": 10, "channels": 1, "image_size": 28}


def built(option: str, *overrides: str, facts: dict = CIFAR) -> nn.Module:
    """The model option for data with these facts (an npz states none: the facts are the file's)."""
    data = "data=cifar10" if facts == CIFAR else "data=npz"
    return build_model(compose_run(f"model={option}", data, *overrides).model, facts)


def parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("option", sorted(PUBLISHED))
def test_every_cifar_network_has_its_published_parameter_count(option):
    rounded, exact = PUBLISHED[option]
    count = parameters(built(option))
    assert count == exact
    if rounded is not None:  # the paper's figure to its printed precision
        digits = 2 if rounded < 1e6 or option == "resnet18_cifar" else 1
        assert round(count / 1e6, digits) == pytest.approx(rounded / 1e6)


def test_option_a_shortcut_is_the_zero_padded_subsampled_identity():
    block = CifarResNet(blocks_per_stage=1, shortcut="A").stage2[0]
    x = torch.randn(2, 16, 8, 8)
    out = block.shortcut(x)
    assert out.shape == (2, 32, 4, 4) and not list(block.shortcut.parameters())
    assert torch.equal(out[:, 8:24], x[:, :, ::2, ::2]) and not out[:, :8].any() and not out[:, 24:].any()


def test_resnet18_cifar_is_torchvisions_with_a_cifar_stem():
    model = built("resnet18_cifar")
    assert (model.conv1.kernel_size, model.conv1.stride, model.conv1.padding) == ((3, 3), (1, 1), (1, 1))
    assert isinstance(model.maxpool, nn.Identity)
    captured = {}
    model.layer1.register_forward_hook(lambda module, inputs, output: captured.update(layer1=output.shape))
    assert model.eval()(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    assert captured["layer1"] == (2, 64, 32, 32)  # full resolution into the first stage


# Modules whose CUDA backward raises under torch.use_deterministic_algorithms(True) (torch's own list)
REFUSED_ON_CUDA = (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d, nn.AvgPool3d, nn.MaxPool3d, nn.FractionalMaxPool2d,
                   nn.ReflectionPad2d, nn.ReplicationPad2d, nn.Upsample)


@pytest.mark.parametrize("option, overrides", [("resnet18_cifar", ()), ("timm", ("model.name=resnet18",)), ("timm", ("model.name=resnest14d",))])
def test_library_models_have_their_global_pool_replaced_for_deterministic_cuda(option, overrides):
    model = built(option, *overrides)
    assert not [name for name, m in model.named_modules() if isinstance(m, REFUSED_ON_CUDA)]
    x = torch.randn(2, 3, 32, 32)
    assert model.eval()(x).shape == (2, 10)


def test_mlp_is_its_layers():
    model = built("mlp", "model.hidden=[64,32]", "model.batch_norm=true", "model.dropout=0.1",
                  facts=GREY)
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert [(l.in_features, l.out_features) for l in linears] == [(784, 64), (64, 32), (32, 10)]
    assert sum(isinstance(m, nn.BatchNorm1d) for m in model.modules()) == 2
    assert sum(isinstance(m, nn.Dropout) for m in model.modules()) == 2
    assert parameters(built("mlp", facts=GREY)) == (784 * 512 + 512) + (512 * 256 + 256) + (256 * 10 + 10)


def test_models_take_channels_and_classes_from_the_data():
    cfg = compose_run("model=resnet20", "data=cifar100")
    assert (cfg.model.num_classes, cfg.model.in_channels) == (100, 3)
    mnist = compose_run("model=resnet18_cifar", "data=mnist")
    assert mnist.model.in_channels is None  # MNIST's channels are the images': 1, or 3 with to_rgb
    grey = build_model(mnist.model, GREY)
    assert grey.conv1.in_channels == 1 and grey.eval()(torch.randn(2, 1, 28, 28)).shape == (2, 10)
    timm_grey = built("timm", facts={"num_classes": 37, "channels": 1, "image_size": 64})
    assert timm_grey.eval()(torch.randn(2, 1, 64, 64)).shape == (2, 37)


def test_an_explicit_model_value_that_contradicts_the_data_is_one_line():
    with pytest.raises(ConfigError, match=r"^model.num_classes=100: the data has num_classes 10"):
        check(compose_run("model.num_classes=100"))
    with pytest.raises(ConfigError, match=r"^model.in_channels=3: the data has channels 1"):
        build_model(compose_run("model.in_channels=3").model, {"num_classes": 10, "channels": 1, "image_size": 28})


def test_unknown_timm_model_is_one_line():
    with pytest.raises(ConfigError, match=r"^model.name=resnet_nope: not a timm model"):
        check(compose_run("model=timm", "model.name=resnet_nope"))


def test_pretrained_weights_offline_without_a_cache_are_one_line(tmp_path, monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HOME", str(tmp_path))  # an empty cache
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    with pytest.raises(ConfigError, match=r"^model.pretrained=true: no weights for resnet18 in the Hugging Face cache"):
        built("timm", "model.pretrained=true")


def hand_counted_macs(model: nn.Module, size: int) -> int:
    """Every conv's out_h * out_w * k_h * k_w * in/groups * out, plus each linear's in * out,
    with each conv's output size taken from a forward hook."""
    total, shapes = 0, {}
    hooks = [m.register_forward_hook(lambda m, i, o: shapes.__setitem__(m, o.shape)) for m in model.modules() if isinstance(m, nn.Conv2d)]
    model.eval()(torch.zeros(1, 3, size, size))
    for hook in hooks:
        hook.remove()
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            _, _, h, w = shapes[module]
            total += h * w * module.kernel_size[0] * module.kernel_size[1] * module.in_channels // module.groups * module.out_channels
        elif isinstance(module, nn.Linear):
            total += module.in_features * module.out_features
    return total


@pytest.mark.parametrize("option", ["resnet8", "resnet20", "resnet18_cifar"])
def test_macs_per_image_match_a_hand_count(option):
    cfg = compose_run(f"model={option}")
    assert macs_per_image(cfg.model, CIFAR) == hand_counted_macs(build_model(cfg.model, CIFAR), 32)


@pytest.mark.parametrize("option, overrides, facts, every", [
    ("mlp", (), GREY, 8), ("mlp", ("model.batch_norm=true", "model.hidden=[1024,1024,1024]"), CIFAR, 8),
    ("resnet8", (), CIFAR, 1), ("resnet20", (), CIFAR, 1), ("resnet18_cifar", (), CIFAR, 1),
    ("timm", ("model.name=resnet18",), CIFAR, 1),  # ImageNet stem: 3.3 multiply-adds per parameter at 32 px
])
def test_auto_grad_norms_are_sampled_on_fully_connected_models_only(option, overrides, facts, every):
    """grad_norm_every=auto: every 8th step where the step is too small to hide the norms' pass."""
    cfg = compose_run(f"model={option}", "data=cifar10" if facts == CIFAR else "data=npz", *overrides)
    assert grad_norm_every(cfg.grad_norm_every, macs_per_parameter(cfg.model, facts)) == every
    assert grad_norm_every(3, macs_per_parameter(cfg.model, facts)) == 3  # a number is taken as it is


def test_timings_report_latency_percentiles_and_throughput():
    result = timings(built("resnet8"), CIFAR, torch.device("cpu"), calls=20, batch=64, batch_calls=2)
    latency = result["latency_ms"]
    assert 0 < latency["p50"] <= latency["p95"] and latency["mean"] > 0 and result["throughput_img_s"] > 0


def test_a_strided_pointwise_conv_worked_around_on_avx2_computes_the_same(monkeypatch):
    """oneDNN crashes on AVX2 in the weight gradient of a 1x1 stride-2 conv of few channels in
    channels_last (optqual/models/layout.py): where it would, the layer convolves the subsampled
    input instead. Same outputs and gradients as the strided conv (computed in NCHW, which is safe)."""
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX2")
    torch.manual_seed(0)
    model = build_model(compose_run("model.widths=[4,8,8]", "model.shortcut=B").model, {"num_classes": 10, "channels": 3, "image_size": 32})
    reference = copy.deepcopy(model)  # NCHW, as it was built
    patched = to_training_layout(model, torch.device("cpu"))
    assert patched == ["stage2.0.shortcut.conv"]  # the one 1x1 stride-2 conv of 4 channels
    x = torch.randn(8, 3, 32, 32)
    for net, images in ((model, x.contiguous(memory_format=torch.channels_last)), (reference, x)):
        net(images).square().sum().backward()
    torch.testing.assert_close(model(x.contiguous(memory_format=torch.channels_last)), reference(x))
    for (name, a), b in zip(model.named_parameters(), reference.parameters()):  # two layouts sum in other orders
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-4, atol=1e-4, msg=name)
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX512")
    assert to_training_layout(copy.deepcopy(reference), torch.device("cpu")) == []  # elsewhere nothing changes
