"""Each private or internal API optqual/compat.py uses does, on the pinned versions, what the public
definitions say it does: a library upgrade that changes one fails here, by name."""

import os
import subprocess
import sys
from collections import defaultdict

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from optqual.compat import (augmentation_ops, compiled_graphs, cpu_features, geometric_matrix, parameter_norms, share_state,
                            skipped_step)
from test_policies import images, magnitudes_for, torchvision_op


def test_parameter_norms_are_each_tensors_l2_norm():
    tensors = [torch.randn(shape, generator=torch.Generator().manual_seed(i)) for i, shape in enumerate([(16, 3, 3, 3), (16,), (10, 64), ()])]
    assert torch.equal(parameter_norms(tensors), torch.stack([torch.linalg.vector_norm(t) for t in tensors]))


def linspace(top: float, bins: int) -> torch.Tensor:
    return torch.linspace(0.0, top, bins)


@pytest.mark.parametrize("policy, bins, size", [("randaugment", 31, 32), ("trivialaugment", 31, 32), ("autoaugment", 10, 28)])
def test_the_op_tables_are_the_papers(policy, bins, size):
    """RandAugment and AutoAugment: Cubuk et al.'s ranges (translations 150/331 of the image, as in
    their 331-px ImageNet code); TrivialAugment Wide: Mueller & Hutter's wider ones."""
    wide = policy == "trivialaugment"
    geometric, enhance = (0.99, 0.99) if wide else (0.3, 0.9)
    expected = {
        "ShearX": (linspace(geometric, bins), True), "ShearY": (linspace(geometric, bins), True),
        "TranslateX": (linspace(32.0 if wide else 150 / 331 * size, bins), True),
        "TranslateY": (linspace(32.0 if wide else 150 / 331 * size, bins), True),
        "Rotate": (linspace(135.0 if wide else 30.0, bins), True),
        **{op: (linspace(enhance, bins), True) for op in ("Brightness", "Color", "Contrast", "Sharpness")},
        "Posterize": (8 - (torch.arange(bins) / ((bins - 1) / (6 if wide else 4))).round().int(), False),
        "Solarize": (torch.linspace(255.0, 0.0, bins), False),
        "AutoContrast": (torch.tensor(0.0), False), "Equalize": (torch.tensor(0.0), False),
        **({"Invert": (torch.tensor(0.0), False)} if policy == "autoaugment" else {"Identity": (torch.tensor(0.0), False)}),
    }
    table = augmentation_ops(policy, bins, size)
    assert table.keys() == expected.keys()
    for op, (magnitudes, signed) in expected.items():
        assert torch.equal(table[op][0], magnitudes) and table[op][1] == signed, op


@pytest.mark.parametrize("name", ["ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate"])
def test_the_geometric_matrix_is_the_one_torchvisions_public_op_warps_with(name):
    batch = images(6)
    for magnitude in magnitudes_for(name, 6).tolist():
        theta = torch.tensor(geometric_matrix(name, magnitude, 32, 32), dtype=torch.float32).view(1, 2, 3)
        grid = F.affine_grid(theta.expand(6, 2, 3) * torch.tensor([[1.0, 1.0, 1 / 16], [1.0, 1.0, 1 / 16]]), [6, 3, 32, 32], align_corners=False)
        ours = F.grid_sample(batch.float(), grid, mode="nearest", align_corners=False).round().to(torch.uint8)  # torch's own grid
        assert torch.equal(ours, torch.stack([torchvision_op(image, name, magnitude) for image in batch]))


@pytest.mark.slow
def test_trackio_reads_back_what_a_run_logged_and_the_directory_it_read_when_imported(tmp_path):
    write = ("import trackio; trackio.init(project='p', name='r', auto_log_cpu=False, auto_log_gpu=False); "
             "trackio.log({'loss/train': 0.5}, step=1); trackio.log({'loss/train': 0.25}, step=2); trackio.finish()")
    read = ("import json, trackio; from optqual.compat import trackio_dir, trackio_logged; "
            "print(json.dumps([str(trackio_dir()), [(row['step'], row['loss/train']) for row in trackio_logged('p', 'r')]]))")
    env = {**os.environ, "TRACKIO_DIR": str(tmp_path)}
    subprocess.run([sys.executable, "-c", write], env=env, check=True, capture_output=True)
    out = subprocess.run([sys.executable, "-c", read], env=env, check=True, capture_output=True, text=True).stdout
    assert out.strip().splitlines()[-1] == f'["{tmp_path}", [[1, 0.5], [2, 0.25]]]'


def test_an_optimizer_pointed_at_shared_groups_steps_them_and_keeps_its_state_in_the_shared_dict():
    torch.manual_seed(0)
    shared, alone = nn.Linear(4, 3), nn.Linear(4, 3)
    alone.load_state_dict(shared.state_dict())
    for model in (shared, alone):
        model.weight.grad, model.bias.grad = torch.ones_like(model.weight), torch.full_like(model.bias, 0.5)
    state: dict = defaultdict(dict)  # as an optimizer keeps it
    inner = torch.optim.AdamW([torch.zeros(1, requires_grad=True)], lr=0.1)  # built over other parameters first
    groups = [{**inner.defaults, "params": list(shared.parameters())}]
    share_state(inner, groups, state).step()
    reference = torch.optim.AdamW(alone.parameters(), lr=0.1)
    reference.step()
    assert torch.equal(shared.weight, alone.weight) and torch.equal(shared.bias, alone.bias)
    assert set(state) == set(shared.parameters()) and torch.equal(state[shared.weight]["exp_avg"], reference.state[alone.weight]["exp_avg"])


def test_the_instruction_sets_agree_with_the_capability_torch_dispatches_to():
    found = cpu_features()
    assert set(found) <= {"avx2", "avx512", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_fp16"}
    capability = torch.backends.cpu.get_cpu_capability()
    assert ("avx512" in found) == (capability == "AVX512") or capability == "DEFAULT"
    assert ("avx2" in found) == (capability in ("AVX2", "AVX512")) or capability == "DEFAULT"


def test_compiled_graphs_counts_each_compilation_and_nothing_for_a_shape_seen_before():
    function = torch.compile(lambda x: x.sin() + 1, backend="eager")  # dynamo counts the graphs whatever compiles them
    before = compiled_graphs()
    function(torch.ones(8))
    function(torch.ones(8))
    assert compiled_graphs() - before == 1
    function(torch.ones(5))  # another batch size: compiled once more, with the size dynamic
    function(torch.ones(3))
    assert compiled_graphs() - before == 2


@pytest.mark.parametrize("gradient, skipped", [(1.0, 0), (float("inf"), 1), (float("nan"), 1)])
def test_skipped_step_is_what_the_scaler_did_with_the_step(gradient, skipped):
    weight = torch.nn.Parameter(torch.ones(3))
    optimizer = torch.optim.SGD([weight], lr=0.5)
    scaler = torch.amp.GradScaler("cpu", init_scale=4.0)
    scaler.scale((weight * gradient).sum()).backward()
    scaler.step(optimizer)
    flag = skipped_step(scaler, optimizer)
    scaler.update()
    assert int(flag) == skipped
    assert torch.equal(weight.detach(), torch.ones(3)) == bool(skipped)  # a skipped step left the weight
    assert scaler.get_scale() == (2.0 if skipped else 4.0)  # and halved the scale
