"""The pruning study (optqual/sparsity/): penalties, coefficient schedules, the dead-zone quantizer
and the report, each against an independent computation: loops in float64, the quantizer's
formulas as the issue and the CoDeQ paper write them, torch's own LR schedulers, a hand count of
ResNet-20's MACs and torch's FlopCounterMode. Resume with them on: tests/test_components_resume.py."""

import csv
import json
import math
from collections import OrderedDict

import numpy as np
import pytest
import torch
from torch import nn
from torch.optim.lr_scheduler import CosineAnnealingLR, LinearLR

from conftest import compose_run, launched, tiny_overrides
from optqual.config.checks import check_config
from optqual.data.images import EpochSteps
from optqual.errors import ConfigError
from optqual.models import build_model
from optqual.models.layers import plain_state_dict
from optqual.models.profile import macs_per_image
from optqual.optim.build import build_optimizer
from optqual.sparsity.quantizer import DeadZoneQuantizer, attach_quantizers, percentile, quantizer_groups
from optqual.sparsity.regularizer import build_penalty
from optqual.sparsity.regularizer_schedule import build_coefficient
from optqual.sparsity.report import SparsityReport, Structure, measure

FACTS = {"channels": 3, "num_classes": 10, "image_size": 32}
EXAMPLE = torch.zeros(1, 3, 32, 32)


def coefficients(*overrides: str, epochs: int = 30, steps: int = 10) -> list[float]:
    cfg = compose_run("regularizer=group_lasso_channels", f"epochs={epochs}", *overrides)
    factor = build_coefficient(cfg.regularizer.schedule, EpochSteps(epochs, ((1, steps),)))
    return [factor(update) for update in range(steps * epochs)]


def test_linear_warmup_is_off_then_ramps_then_holds():
    values = coefficients("regularizer/schedule=linear_warmup", "regularizer.schedule.delay=10", "regularizer.schedule.ramp=10")
    # update u is taken in epoch u // 10 + 1
    assert values[:101] == [0.0] * 101  # epochs 1-10, and the ramp's first update
    assert values[150] == pytest.approx(0.5) and values[101] == pytest.approx(0.01)
    assert values[200:] == [1.0] * 100
    assert all(a <= b for a, b in zip(values, values[1:]))


def test_cosine_anneal_is_torchs_cosine_run_upwards_after_the_delay():
    values = coefficients("regularizer/schedule=cosine_anneal", "regularizer.schedule.delay=5")
    assert values[:51] == [0.0] * 51
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    cosine = CosineAnnealingLR(optimizer, T_max=250)
    lrs = []
    for _ in range(250):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        cosine.step()
    assert values[50:] == pytest.approx([1 - lr for lr in lrs], abs=1e-9)


def test_linear_warmup_ramp_is_torchs_linear_lr_line():
    values = coefficients("regularizer/schedule=linear_warmup", "regularizer.schedule.delay=0", "regularizer.schedule.ramp=4")
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    line = LinearLR(optimizer, start_factor=1e-12, total_iters=40)
    lrs = []
    for _ in range(60):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        line.step()
    assert values[:60] == pytest.approx(lrs, abs=1e-9)


def test_constant_schedule_and_epochs_under_a_batch_size_schedule():
    assert coefficients("regularizer/schedule=constant", "regularizer.schedule.value=0.5", epochs=3) == [0.5] * 30
    cfg = compose_run("regularizer=l1_kernel", "regularizer/schedule=linear_warmup", "regularizer.schedule.delay=1",
                      "regularizer.schedule.ramp=1")
    factor = build_coefficient(cfg.regularizer.schedule, EpochSteps(3, ((1, 4), (2, 2), (3, 8))))  # epochs of 4, 2 and 8 updates
    assert [factor(u) for u in range(14)] == [0, 0, 0, 0, 0, 0.5, 1, 1, 1, 1, 1, 1, 1, 1]


def small_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(OrderedDict(first=nn.Conv2d(3, 8, 3), relu=nn.ReLU(), second=nn.Conv2d(8, 5, 3), flatten=nn.Flatten(),
                                     head=nn.Linear(5 * 28 * 28, 2)))


def penalty_by_loops(model: nn.Module, kind: str, skip: set[str] = frozenset(), weights: dict = {}, block: int = 3) -> float:
    total = 0.0
    for name, module in model.named_modules():
        if not isinstance(module, nn.Conv2d) or name in skip:
            continue
        w = module.weight.detach().double().numpy()
        if kind == "group_lasso_channels":
            groups = [w[f] for f in range(w.shape[0])]
        elif kind == "group_lasso_blocks":
            groups = [w[f : f + block] for f in range(0, w.shape[0], block)]
        else:
            groups = [w[f, c] for f in range(w.shape[0]) for c in range(w.shape[1])]
        total += weights.get(name, 1.0) * sum(math.sqrt(float((g ** 2).sum())) for g in groups)
    return total


@pytest.mark.parametrize("kind", ["group_lasso_channels", "group_lasso_blocks", "l1_kernel"])
def test_penalties_equal_a_direct_computation(kind):
    model = small_model()
    cfg = compose_run(f"regularizer={kind}", "regularizer.block_size=3")  # 8 filters: blocks of 3, 3 and 2
    value = build_penalty(cfg.regularizer, model, EpochSteps(1, ((1, 10),))).value().item()
    assert value == pytest.approx(penalty_by_loops(model, kind), rel=1e-6)
    excluded = compose_run(f"regularizer={kind}", "regularizer.block_size=3", "regularizer.exclude=[fir*]",
                           "++regularizer.layer_weights={second: 2.5}")
    value = build_penalty(excluded.regularizer, model, EpochSteps(1, ((1, 10),))).value().item()
    assert value == pytest.approx(penalty_by_loops(model, kind, skip={"first"}, weights={"second": 2.5}), rel=1e-6)


def test_excluded_layers_get_no_gradient_from_the_penalty():
    model = small_model()
    cfg = compose_run("regularizer=group_lasso_channels", "regularizer.exclude=[first]")
    build_penalty(cfg.regularizer, model, EpochSteps(1, ((1, 10),))).value().backward()
    assert model.first.weight.grad is None and model.second.weight.grad.abs().sum() > 0


def history(run_dir) -> list[dict]:
    with open(run_dir / "history.csv", newline="") as file:
        return list(csv.DictReader(file))


@pytest.mark.slow
def test_a_run_records_both_terms_and_the_coefficient(tmp_path, tiny_npz):
    launched(tmp_path, *tiny_overrides(tiny_npz), "epochs=4", "trackio.enabled=false", "regularizer=group_lasso_channels",
             "regularizer.strength=0.01", "regularizer/schedule=linear_warmup", "regularizer.schedule.delay=1",
             "regularizer.schedule.ramp=2", "hydra.run.dir=run")
    rows = history(tmp_path / "run")
    steps = 6  # 170 training images in batches of 32
    # the coefficient of each epoch's last update (u = 6 e - 1): 0 in epoch 1, then the ramp over updates 6..18
    assert [float(row["reg.coefficient"]) for row in rows] == pytest.approx([0.0, 0.01 * 5 / 12, 0.01 * 11 / 12, 0.01])
    assert float(rows[0]["reg_loss"]) == 0.0 and float(rows[0]["reg.penalty"]) > 0
    # within the constant last epoch the added term is the coefficient times the penalty
    assert float(rows[3]["reg_loss"]) == pytest.approx(0.01 * float(rows[3]["reg.penalty"]), rel=1e-6)
    assert float(rows[3]["train_loss"]) == pytest.approx(float(rows[3]["train_ce"]))  # train_loss stays the cross-entropy
    assert steps * 4 == 24
    report = json.loads((tmp_path / "run" / "metrics.json").read_text())["sparsity"]
    assert report["mac_ratio_structured"] == 1.0 and report["epoch"] == 4


def quantize_by_formulas(w: np.ndarray, theta_dz: float, theta_bit: float) -> np.ndarray:
    """The issue's formulas in float64, step by step."""
    absmax = np.quantile(np.abs(w), 0.99)
    bits = round(2 + 6 * abs(math.tanh(theta_bit)))
    d = 2 * absmax * (1 - abs(math.tanh(theta_dz)))
    levels = 2 ** (bits - 1) - 1
    s = (absmax - d / 2) / (levels - 0.5) + 1e-8
    shift = d / 2 - s / 2
    q = np.clip(np.round(np.sign(w) * np.maximum(np.abs(w) - shift, 0) / s), -levels, levels)
    return s * q + shift * np.sign(q), d, bits


@pytest.mark.parametrize("theta_dz,theta_bit", [(3.0, 3.0), (0.5, 0.3), (0.05, 1.0)])
def test_quantizer_forward_follows_the_formulas(theta_dz, theta_bit):
    w = torch.randn(32, 16, 3, 3, generator=torch.Generator().manual_seed(1))
    quantizer = DeadZoneQuantizer()
    with torch.no_grad():
        quantizer.theta_dz.fill_(theta_dz)
        quantizer.theta_bit.fill_(theta_bit)
        out = quantizer(w).double().numpy()
    expected, d, bits = quantize_by_formulas(w.double().numpy(), theta_dz, theta_bit)
    assert quantizer.bits().item() == bits
    assert np.abs(out - expected).max() < 1e-5
    dead = np.abs(w.numpy()) < d / 2 - 1e-6  # away from the edge, where float32 and float64 may round apart
    assert (out[dead] == 0).all() and len(np.unique(out)) <= 2 ** bits - 1


@pytest.mark.parametrize("shape", [(16, 3, 3, 3), (64, 64, 3, 3), (10, 64), (7,)])
def test_the_quantizers_percentile_is_torchs_quantile(shape):
    values = torch.randn(shape, generator=torch.Generator().manual_seed(3)).abs().flatten()
    for q in (0.99, 0.5, 0.0, 1.0):
        assert percentile(values, q).item() == pytest.approx(torch.quantile(values, q).item(), rel=1e-6, abs=0)


def test_quantizer_gradients_reach_both_logits():
    layer = nn.Conv2d(16, 32, 3)
    parametrize_cfg = compose_run("quantizer=deadzone").quantizer
    attach_quantizers(parametrize_cfg, nn.Sequential(layer))
    quantizer = layer.parametrizations.weight[0]
    (layer.weight ** 2).sum().backward()
    for theta in (quantizer.theta_dz, quantizer.theta_bit):
        assert theta.grad is not None and torch.isfinite(theta.grad) and theta.grad != 0
    assert layer.parametrizations.weight.original.grad.abs().sum() > 0  # straight through to the weights


def test_quantizer_keeps_8_bits_at_init_and_lowering_the_logits_prunes_more():
    w = torch.randn(64, 64, 3, 3, generator=torch.Generator().manual_seed(2))
    quantizer = DeadZoneQuantizer(3.0)
    with torch.no_grad():
        assert quantizer.bits().item() == 8 and (quantizer(w) == 0).float().mean() < 0.015  # |w| < 0.5% of absmax
        zeros, bits = [], []
        for logit in (3.0, 2.0, 1.0, 0.5, 0.2, 0.05):
            quantizer.theta_dz.fill_(logit)
            quantizer.theta_bit.fill_(logit)
            zeros.append((quantizer(w) == 0).float().mean().item())
            bits.append(quantizer.bits().item())
    assert zeros == sorted(zeros) and zeros[-1] > 0.9
    assert bits == sorted(bits, reverse=True) and bits[0] == 8 and bits[-1] == 2


def quantized_resnet20(*overrides: str) -> tuple[nn.Module, object]:
    cfg = compose_run("model=resnet20", "quantizer=deadzone", "optimizer=adamw", *overrides)
    torch.manual_seed(0)
    model = build_model(cfg.model, FACTS)
    attach_quantizers(cfg.quantizer, model)
    return model, cfg


def test_quantizer_groups_carry_their_own_lr_and_decay_and_weights_keep_plain_names():
    model, cfg = quantized_resnet20("quantizer.lr_dz=0.02", "quantizer.weight_decay_bit=0.5", "quantizer.exclude=[stem.*,fc]")
    optimizer = build_optimizer(model, cfg.optimizer, 1.0, quantizer_groups(cfg.quantizer, model))
    groups = {group["name"]: group for group in optimizer.param_groups}
    assert set(groups) == {"all", "quantizer.dz", "quantizer.bit"}
    assert len(groups["quantizer.dz"]["params"]) == 18  # 19 convs and fc, less the stem and fc
    assert (groups["quantizer.dz"]["lr"], groups["quantizer.bit"]["weight_decay"]) == (0.02, 0.5)
    assert groups["all"]["lr"] == 1e-3 and sum(p.numel() for p in groups["all"]["params"]) == 269_722
    muon = compose_run("optimizer=muon").optimizer
    groups = {g["name"]: g for g in build_optimizer(model, muon, 1.0, quantizer_groups(cfg.quantizer, model)).param_groups}
    assert len(groups["muon"]["params"]) == 18  # the hidden convs, found under their plain names


def test_weight_files_hold_the_quantized_network_under_plain_names():
    model, cfg = quantized_resnet20()
    with torch.no_grad():
        for q in model.modules():
            if isinstance(q, DeadZoneQuantizer):
                q.theta_dz.fill_(0.3)
                q.theta_bit.fill_(0.4)
    plain = build_model(cfg.model, FACTS)
    plain.load_state_dict(plain_state_dict(model))
    model.eval(), plain.eval()
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(model(x), plain(x))
        assert (plain.stage2[0].conv1.weight == 0).float().mean() > 0.3
    assert model(x).shape == (4, 10)  # the quantized model still runs after its weights were read out


# ResNet-20 (He et al. 2016, option A) as the paper draws it: (layer, out, in, kernel, output positions)
RESNET20 = ([("stem.conv", 16, 3, 9, 1024)]
            + [(f"stage1.{b}.conv{c}", 16, 16, 9, 1024) for b in range(3) for c in (1, 2)]
            + [("stage2.0.conv1", 32, 16, 9, 256), ("stage2.0.conv2", 32, 32, 9, 256)]
            + [(f"stage2.{b}.conv{c}", 32, 32, 9, 256) for b in (1, 2) for c in (1, 2)]
            + [("stage3.0.conv1", 64, 32, 9, 64), ("stage3.0.conv2", 64, 64, 9, 64)]
            + [(f"stage3.{b}.conv{c}", 64, 64, 9, 64) for b in (1, 2) for c in (1, 2)]
            + [("fc", 10, 64, 1, 1)])
ZEROED = {"stage1.0.conv1": [0, 3], "stage2.0.conv2": [0], "stage2.1.conv1": [5],
          "stage3.0.conv2": [7], "stage3.1.conv2": [7], "stage3.2.conv2": [7]}
# what those dead filters make useless, by hand: a block's conv1 feeds its conv2; option A pads channels 0-7 and
# 24-31 in stage 2 and 0-15 and 48-63 in stage 3 with zeros, so a dead conv2 filter there kills the residual
# stream's channel until a later block's conv2 brings it back (stage 2's channel 0 at block 1; stage 3's
# channel 7 never: all three conv2 filters 7 are dead)
USELESS_INPUTS = {"stage1.0.conv2": 2, "stage2.1.conv2": 1, "stage2.1.conv1": 1, "stage3.1.conv1": 1, "stage3.2.conv1": 1, "fc": 1}
STEM_ZEROS = 10  # single weights of stem filter 2: unstructured only


def hand_pruned_resnet20() -> nn.Module:
    torch.manual_seed(0)
    model = build_model(compose_run("model=resnet20").model, FACTS)
    with torch.no_grad():
        for name, filters in ZEROED.items():
            model.get_submodule(name).weight[filters] = 0
        model.stem.conv.weight.view(16, -1)[2, :STEM_ZEROS] = 0
    return model


def test_report_counts_a_hand_pruned_resnet20_exactly():
    report = measure(hand_pruned_resnet20(), Structure(hand_pruned_resnet20(), EXAMPLE), 0.0)
    rows = {row["layer"]: row for row in report["layers"]}
    assert list(rows) == [layer for layer, *_ in RESNET20]
    dense = structured = nonzero = 0
    for layer, out, inp, kernel, positions in RESNET20:
        dead_out, dead_in = len(ZEROED.get(layer, [])), USELESS_INPUTS.get(layer, 0)
        zeros = dead_out * inp * kernel + (STEM_ZEROS if layer == "stem.conv" else 0)
        assert (rows[layer]["dead_out"], rows[layer]["dead_in"], rows[layer]["zero_weights"]) == (dead_out, dead_in, zeros), layer
        dense += out * inp * kernel * positions
        structured += (out - dead_out) * (inp - dead_in) * kernel * positions
        nonzero += (out * inp * kernel - zeros) * positions
    assert dense == 40_551_040  # ResNet-20's 40.55M MACs at 32x32, as the literature quotes it
    assert (report["macs_dense"], report["macs_structured"], report["macs_nonzero"]) == (dense, structured, nonzero)
    assert (report["bops_structured"], report["bops_nonzero"]) == (structured * 32 * 32, nonzero * 32 * 32)
    assert report["mac_ratio_structured"] == report["bop_ratio_structured"] == structured / dense
    assert report["dead_channels"] == 7


def test_a_dense_network_has_ratio_1_and_flop_counters_dense_macs():
    cfg = compose_run("model=resnet20")
    torch.manual_seed(0)
    model = build_model(cfg.model, FACTS)
    report = measure(model, Structure(model, EXAMPLE), 0.0)
    assert report["macs_dense"] == macs_per_image(cfg.model, FACTS)
    assert [report[key] for key in ("mac_ratio_structured", "mac_ratio_nonzero", "bop_ratio_structured", "bop_ratio_nonzero")] == [1.0] * 4
    assert report["dead_channels"] == 0 and report["unstructured_sparsity"] == 0.0


def test_the_report_traces_a_timm_model_and_follows_its_dead_filters():
    """A model the project did not write: timm's ResNet-18 traces (no fallback to dead outputs only), a dead
    conv1 filter makes its block's conv2 input useless, and the dense count is FlopCounterMode's."""
    cfg = compose_run("model=timm", "model.name=resnet18")
    torch.manual_seed(0)
    model = build_model(cfg.model, FACTS)
    with torch.no_grad():
        model.layer1[0].conv1.weight[[3, 9]] = 0
    structure = Structure(model, EXAMPLE)
    assert structure.graph is not None
    report = measure(model, structure, 0.0)
    rows = {row["layer"]: row for row in report["layers"]}
    assert (rows["layer1.0.conv1"]["dead_out"], rows["layer1.0.conv2"]["dead_in"]) == (2, 2)
    assert sum(row["dead_in"] for row in rows.values()) == 2  # the residual stream behind conv2 stays live
    assert report["macs_dense"] == macs_per_image(cfg.model, FACTS)
    conv2 = rows["layer1.0.conv2"]
    assert conv2["macs_structured"] == 64 * 62 * 9 * 8 * 8  # layer1 sees 8x8 after the ImageNet stem (stride 2, max-pool)


def test_bops_use_the_quantizers_bits():
    model, _ = quantized_resnet20("quantizer.exclude=[fc]")
    with torch.no_grad():
        for name, filters in ZEROED.items():
            model.get_submodule(name).parametrizations.weight.original[filters] = 0
        for q in model.modules():
            if isinstance(q, DeadZoneQuantizer):
                q.theta_bit.fill_(math.atanh(1 / 3))  # 2 + 6/3 = 4 bits
    report = measure(model, Structure(model, EXAMPLE), 0.0)
    rows = {row["layer"]: row for row in report["layers"]}
    assert {row["bits"] for name, row in rows.items() if name != "fc"} == {4} and rows["fc"]["bits"] == 32
    assert report["dead_channels"] == 7  # a zeroed original quantizes to zero
    expected = sum(row["macs_structured"] * row["bits"] * 32 for row in rows.values())
    assert report["bops_structured"] == expected and report["bop_ratio_structured"] == expected / (report["macs_dense"] * 1024)
    assert report["bop_ratio_structured"] < report["mac_ratio_structured"] / 7.9


def test_zero_threshold_counts_tiny_filters_as_dead():
    model = hand_pruned_resnet20()
    with torch.no_grad():
        model.stage1[1].conv1.weight[4] = 1e-4
    assert measure(model, Structure(model, EXAMPLE), 0.0)["dead_channels"] == 7
    assert measure(model, Structure(model, EXAMPLE), 1e-3)["dead_channels"] == 8


@pytest.mark.parametrize("overrides,message", [
    (["regularizer=group_lasso_channels", "regularizer.exclude=[stemm.*]"], "regularizer.exclude: 'stemm.*' matches no layer"),
    (["regularizer=group_lasso_channels", "++regularizer.layer_weights={nope: 2}"], "regularizer.layer_weights: 'nope' matches no layer"),
    (["regularizer=group_lasso_channels", "regularizer/schedule=linear_warmup", "regularizer.schedule.delay=200"],
     "regularizer.schedule.delay=200"),
    (["regularizer=group_lasso_blocks", "regularizer.block_size=0"], "regularizer.block_size=0"),
    (["regularizer=l1_kernel", "regularizer.strength=-1"], "regularizer.strength=-1"),
    (["quantizer=deadzone", "quantizer.lr_bit=0"], "quantizer.lr_bit=0"),
    (["quantizer=deadzone", "quantizer.exclude=[head]"], "quantizer.exclude: 'head' matches no layer"),
    (["sparsity.pictures_every=0"], "sparsity.pictures_every=0"),
])
def test_bad_sparsity_settings_are_one_line_errors(overrides, message):
    with pytest.raises(ConfigError, match=message.replace(".", r"\.").replace("*", r"\*").replace("[", r"\[")):
        check_config(compose_run(*overrides))


@pytest.mark.slow
def test_a_quantized_run_reports_and_draws_every_validation(tmp_path, tiny_npz):
    launched(tmp_path, *tiny_overrides(tiny_npz), "epochs=3", "eval_every=2", "trackio.enabled=false", "model=resnet20",
             "quantizer=deadzone", "quantizer.weight_decay_dz=2", "quantizer.lr_dz=0.2", "optimizer=adamw",
             "sparsity.pictures_every=2", "hydra.run.dir=run")
    run = tmp_path / "run"
    rows = history(run)
    assert [bool(row["sparsity.mac_ratio_nonzero"]) for row in rows] == [False, True, True]  # validations: epochs 2 and 3
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["sparsity"]["mac_ratio_nonzero"] < 0.5  # decay on the dead-zone logits pruned
    assert metrics["sparsity"]["test_acc"] == float(rows[-1]["sparsity.test_acc"]) == metrics["test_acc"]
    assert sorted(p.name for p in (run / "sparsity").iterdir()) == [
        "bits_e0003.png", "layer_sparsity_e0003.png", "liveness_e0003.png", "report_e0002.json", "report_e0003.json"]
    plain = build_model(compose_run("model=resnet20").model, FACTS)
    plain.load_state_dict(torch.load(run / "final_model.pt", weights_only=True))  # what `analyze` loads
    zeros = sum(int((m.weight == 0).sum()) for m in plain.modules() if isinstance(m, (nn.Conv2d, nn.Linear)))
    assert zeros == json.loads((run / "sparsity" / "report_e0003.json").read_text())["layers"][0]["zero_weights"] + sum(
        row["zero_weights"] for row in json.loads((run / "sparsity" / "report_e0003.json").read_text())["layers"][1:])


def test_the_reports_accuracy_is_that_of_the_network_it_counts(tmp_path):
    model = hand_pruned_resnet20()
    with torch.no_grad():
        model.stage1[1].conv1.weight[4] = 1e-4  # dead only under the threshold
    before = {name: p.clone() for name, p in model.named_parameters()}
    seen = []

    def test_accuracy() -> float:  # what the report's accuracy is measured on
        seen.append((model.stage1[1].conv1.weight[4] == 0).all().item())
        return 0.5

    report = SparsityReport(model, EXAMPLE, 1e-3, 1, tmp_path, test_accuracy, epochs=1)
    record = {"epoch": 1, "val_acc": 0.1}
    report.on_epoch_end(record)
    assert seen == [True] and record["sparsity.dead_channels"] == 8 and record["sparsity.test_acc"] == 0.5
    assert all(torch.equal(p, before[name]) for name, p in model.named_parameters())  # training goes on unpruned
    assert sorted(p.name for p in tmp_path.iterdir()) == ["layer_sparsity_e0001.png", "liveness_e0001.png", "report_e0001.json"]
    assert set(record.pop("pictures")) == {"sparsity/liveness", "sparsity/layer_sparsity"}
