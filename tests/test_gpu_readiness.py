"""What a GPU run depends on, tested on the CPU: job placement with faked GPUs and real locks, the
precision flags, fp16 with GradScaler, fp32 losses under autocast, refusals of a silent CPU and of a
resume on other hardware. The GPU itself is benchmarks/gpu_check.sh's."""

import json
import math
import os
import signal
import subprocess
import sys
import time
import types
import uuid
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

from conftest import compose_run, launch_ok, tiny_overrides, tiny_training
from optqual.build import build_run
from optqual.config.checks import check_config
from optqual.engine.checkpoint import CheckpointError, check_same_device, load_checkpoint
from optqual.engine.loop import EVAL_BATCH_SIZE, EpochProgress, evaluate
from optqual.errors import ConfigError
from optqual.launch import placement
from optqual.launch.placement import check_local_launcher, claimed_gpu, placed, slot_order, visible_gpus
from optqual.launch.record import check_same_run
from optqual.launch.resources import SUBMITIT_LOCAL
from optqual.recording import recorder
from optqual.system import devices, hardware
from optqual.system.machine import set_up_machine
from optqual.system.precision import precision_flags, set_precision

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def machine_as_it_was():
    """The tests below set up the machine (threads, precision) in this process: later tests find it as it was."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)
    set_precision("fp32")


# placement -------------------------------------------------------------------------------------------

def test_jobs_spread_over_every_gpu_before_any_gpu_takes_a_second(tmp_path):
    assert slot_order(2, 2) == [(0, 0), (1, 0), (0, 1), (1, 1)]
    with claimed_gpu(["0", "1"], 2, tmp_path) as a, claimed_gpu(["0", "1"], 2, tmp_path) as b, \
            claimed_gpu(["0", "1"], 2, tmp_path) as c, claimed_gpu(["0", "1"], 2, tmp_path) as d:
        assert [a, b, c, d] == [0, 1, 0, 1]
    with claimed_gpu(["0", "1"], 2, tmp_path) as again:  # every slot was given back
        assert again == 0


HOLD_A_SLOT = """
import sys, time
from pathlib import Path
from optqual.launch.placement import claimed_gpu
with claimed_gpu(["0", "1"], 1, Path(sys.argv[1])) as index:
    print(index, flush=True)
    time.sleep(600)
"""


def test_a_gpu_held_by_another_job_is_skipped_and_freed_when_that_job_is_killed(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", HOLD_A_SLOT, str(tmp_path)], stdout=subprocess.PIPE, text=True, cwd=REPO)
    try:
        assert holder.stdout.readline().strip() == "0"
        with claimed_gpu(["0", "1"], 1, tmp_path) as index:
            assert index == 1  # GPU 0's one slot is the other job's
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    with claimed_gpu(["0", "1"], 1, tmp_path) as index:  # the OS released the killed job's lock
        assert index == 0


def test_a_job_waits_for_a_slot_when_every_one_is_taken(tmp_path, monkeypatch):
    monkeypatch.setattr(placement, "POLL_SECONDS", 0.05)
    holder = subprocess.Popen([sys.executable, "-c", HOLD_A_SLOT.replace('["0", "1"]', '["0"]'), str(tmp_path)],
                              stdout=subprocess.PIPE, text=True, cwd=REPO)
    assert holder.stdout.readline().strip() == "0"
    killer = subprocess.Popen([sys.executable, "-c", f"import os, signal, time; time.sleep(1.0); os.kill({holder.pid}, signal.SIGKILL)"])
    started = time.perf_counter()
    with claimed_gpu(["0"], 1, tmp_path) as index:
        waited = time.perf_counter() - started
    holder.wait(), killer.wait()
    assert index == 0 and waited > 0.5


def test_a_local_sweeps_jobs_on_cuda_are_placed_and_anything_else_stays_where_it_was_put(tmp_path, monkeypatch):
    monkeypatch.setattr(placement, "visible_gpus", lambda: ["0", "1"])
    monkeypatch.setattr(placement, "lock_dir", lambda: tmp_path)
    with placed(torch.device("cuda"), 6, None) as (first, sharing), placed(torch.device("cuda"), 6, None) as (second, _):
        assert (first, second, sharing) == (torch.device("cuda", 0), torch.device("cuda", 1), 3)  # 6 jobs on 2 GPUs: 3 each
    with placed(torch.device("cuda"), 6, 2) as (_, sharing):
        assert sharing == 2  # jobs_per_gpu
    for device, jobs in ((torch.device("cuda"), 1), (torch.device("cuda", 1), 4), (torch.device("cpu"), 4)):
        with placed(device, jobs, None) as (kept, sharing):  # one job, a GPU named, the CPU
            assert (kept, sharing) == (device, jobs)


def test_gpus_are_named_as_cuda_visible_devices_names_them(monkeypatch):
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,GPU-5f1c")
    assert visible_gpus() == ["3", "GPU-5f1c"]  # two sweeps seeing the same GPUs share their locks
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    assert visible_gpus() == ["0", "1"]


def test_jobs_per_gpu_is_checked_and_is_no_part_of_what_a_run_is(tmp_path):
    with pytest.raises(ConfigError, match="jobs_per_gpu"):
        check_config(compose_run("jobs_per_gpu=0"))
    saved = OmegaConf.to_container(compose_run("jobs_per_gpu=4"), resolve=True)
    check_same_run(tmp_path, saved, compose_run("jobs_per_gpu=2"))  # a relaunch may pack differently
    with pytest.raises(ConfigError, match="seed"):
        check_same_run(tmp_path, saved, compose_run("jobs_per_gpu=4", "seed=1"))


def test_submitit_local_that_would_hide_every_gpu_is_refused_with_the_fix():
    launcher = OmegaConf.create({"_target_": SUBMITIT_LOCAL, "gpus_per_node": None})
    with pytest.raises(ConfigError, match="hydra.launcher.gpus_per_node=4"):
        check_local_launcher(launcher, "auto", 4)
    check_local_launcher(launcher, "cpu", 4)  # the CPU was asked for
    check_local_launcher(launcher, "auto", 0)  # no GPU to hide
    check_local_launcher(OmegaConf.create({"_target_": SUBMITIT_LOCAL, "gpus_per_node": 4}), "auto", 4)


# devices ---------------------------------------------------------------------------------------------

def test_auto_never_falls_back_to_the_cpu_silently_where_nvidia_gpus_are_present(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(devices, "nvidia_driver", lambda: "470.57.02")
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    with pytest.raises(ConfigError) as refused:
        devices.resolve_device("auto")
    message = str(refused.value)
    assert "driver 470.57.02" in message and "device=cpu" in message and "\n" not in message
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")  # GPUs hidden on purpose
    assert devices.resolve_device("auto") == torch.device("cpu")
    monkeypatch.setattr(devices, "nvidia_driver", lambda: None)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    assert devices.resolve_device("auto") == torch.device("cpu")  # a machine without NVIDIA GPUs


def test_a_run_is_resumed_only_on_the_hardware_it_trained_on(tmp_path):
    cpu = torch.device("cpu")
    check_same_device(tmp_path, {}, cpu)  # a checkpoint from before the device was recorded
    with pytest.raises(CheckpointError) as refused:
        check_same_device(tmp_path, {"device": {"type": "cuda", "name": "NVIDIA H100 80GB HBM3"}}, cpu)
    message = str(refused.value)
    assert "NVIDIA H100 80GB HBM3" in message and "device=cuda" in message and "\n" not in message
    with pytest.raises(CheckpointError, match="that CPU"):
        check_same_device(tmp_path, {"device": {"type": "cpu", "name": "Some Other CPU"}}, cpu)


# precision -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("precision, gpu_math", [("fp32", "ieee"), ("tf32", "tf32"), ("bf16", "ieee"), ("fp16", "ieee")])
def test_each_precision_sets_and_records_the_float32_math_it_says(precision, gpu_math):
    set_up_machine(0, threads=torch.get_num_threads(), precision=precision)
    assert torch.backends.cuda.matmul.fp32_precision == gpu_math and torch.backends.cudnn.conv.fp32_precision == gpu_math
    flags = precision_flags(precision)
    assert flags["matmul_fp32"] == flags["conv_fp32"] == gpu_math and flags["cpu_fp32"] == "ieee"
    assert flags["autocast"] == {"bf16": "bfloat16", "fp16": "float16"}.get(precision)
    assert flags["grad_scaler"] == (precision == "fp16")


def test_precision_options_are_checked():
    with pytest.raises(ConfigError, match="must be one of fp32, tf32, bf16, fp16"):
        check_config(compose_run("precision=fp8"))
    with pytest.raises(ConfigError, match="compile_mode"):
        check_config(compose_run("compile_mode=fastest"))


def test_reported_losses_are_taken_in_fp32_under_bf16(tiny_npz):
    training = tiny_training(tiny_npz, "precision=bf16")
    data, model = training.data, training.model
    found = evaluate(model, data.eval_batches("val", EVAL_BATCH_SIZE), "bf16")["loss"]
    total, count = 0.0, 0
    with torch.inference_mode():  # independently: each batch's bf16 logits, their cross-entropy in float64
        for images, labels in data.eval_batches("val", EVAL_BATCH_SIZE):
            with torch.autocast("cpu", dtype=torch.bfloat16):
                logits = model(images)
            assert logits.dtype == torch.bfloat16
            total += F.cross_entropy(logits.double(), labels, reduction="sum").item()
            count += len(labels)
    assert found == pytest.approx(total / count, rel=1e-6)


def fp16_training(npz: Path, *overrides: str):
    set_up_machine(7, threads=1)
    return tiny_training(npz, "precision=fp16", *overrides)


@pytest.mark.parametrize("optimizer", ["sgd", "sam"])
def test_fp16_trains_with_a_grad_scaler_and_repeats_bit_for_bit(tiny_npz, optimizer):
    runs = []
    for _ in range(2):
        training = fp16_training(tiny_npz, f"optimizer={optimizer}")
        records = []
        training.fit(records.append, lambda: None, 100)
        runs.append((records, {k: v.clone() for k, v in training.model.state_dict().items()}))
    (first, weights_a), (second, weights_b) = runs
    assert all(torch.equal(weights_a[k], weights_b[k]) for k in weights_a)
    drop = ("seconds",)
    assert [{k: v for k, v in r.items() if k not in drop} for r in first] == [{k: v for k, v in r.items() if k not in drop} for r in second]
    assert first[-1]["loss_scale"] == 2.0**16 and first[-1]["skipped_steps"] == 0


@pytest.mark.parametrize("optimizer", ["sgd", "sam"])
def test_an_overflowing_fp16_step_is_skipped_not_taken_and_the_scale_halves(tiny_npz, optimizer):
    """SAM too: its base step goes through the scaler, after SAM has put back the perturbed weights."""
    training = fp16_training(tiny_npz, f"optimizer={optimizer}")
    training.scaler = torch.amp.GradScaler("cpu", init_scale=2.0**40)  # fp16 gradients overflow at this scale
    before = {k: v.clone() for k, v in training.model.state_dict().items() if v.is_floating_point()}
    progress = EpochProgress.begin(1, training.data, training.generator)
    images, labels = training.data.train_batch(progress.order, 0, training.data.batch_size(1), training.generator)
    training.model.train()
    training.step(training.data.normalize(images), labels, progress)
    after = training.model.state_dict()
    weights = [k for k in before if "running" not in k]  # batch norm's statistics moved in the forward pass
    assert all(torch.equal(before[k], after[k]) for k in weights)
    assert training.scaler.get_scale() == 2.0**39 and torch.isfinite(progress.losses[0])
    assert [int(flag) for flag in progress.skipped] == [1]  # counted though its loss was finite
    training.step(training.data.normalize(images), labels, progress)  # at 2**39 fp16 overflows again
    training.scaler.update(2.0)
    training.step(training.data.normalize(images), labels, progress)
    assert [int(flag) for flag in progress.skipped] == [1, 1, 0]
    assert not all(torch.equal(before[k], training.model.state_dict()[k]) for k in weights)


def test_an_epoch_under_fp16_averages_the_steps_taken_and_counts_the_skipped(tiny_npz):
    training = fp16_training(tiny_npz)
    progress = EpochProgress.begin(1, training.data, training.generator)
    progress.step = 3
    progress.losses = [torch.tensor(1.0), torch.tensor(float("inf")), torch.tensor(3.0)]
    progress.ces = list(progress.losses)
    progress.correct = [torch.tensor(5)] * 3
    progress.grad_norms = [torch.zeros(len(training.grad_norms.params))]
    progress.skipped = [torch.tensor(0.0), torch.tensor(1.0), torch.tensor(1.0)]  # the third: its gradient overflowed
    count = 2 * 32 + 10  # two full batches of 32 and a last of 10
    record = progress.record(count, 32, training.grad_norms, training.scaler)
    assert record["train_loss"] == pytest.approx((1.0 * 32 + 3.0 * 10) / 42) and record["skipped_steps"] == 2
    progress.losses = progress.ces = [torch.tensor(float("nan"))] * 3  # no step taken: the run diverged
    assert math.isnan(progress.record(count, 32, training.grad_norms, training.scaler)["train_loss"])


def test_fp16_keeps_its_loss_scale_in_the_checkpoint(tiny_npz, tmp_path):
    cfg = compose_run(*[f"data.path={tiny_npz}", "data=npz"], "precision=fp16", "trackio.enabled=false")
    run = build_run(cfg, {"optimizer": "sgd", "scheduler": "none", "model": "resnet8", "data": "npz"}, tmp_path, torch.device("cpu"), 0.0)
    assert run.state.state_dict()["scaler"]["scale"] == 2.0**16


# records ---------------------------------------------------------------------------------------------

def test_the_speed_is_the_epochs_after_the_first_which_pays_for_compilation(tmp_path):
    record = recorder.RunRecorder(tmp_path, {"train_images": 100}, started=time.perf_counter())
    record.add_epoch({"epoch": 1, "train_loss": 2.0, "train_acc": 0.1, "seconds": 30.0})
    assert record.write_metrics("running")["train_images_per_s"] == pytest.approx(100 / 30)  # one epoch: all there is
    record.add_epoch({"epoch": 2, "train_loss": 2.0, "train_acc": 0.1, "seconds": 2.0})
    assert record.write_metrics("running")["train_images_per_s"] == 50.0


def test_a_run_on_a_gpu_records_which_physical_gpu_it_was(monkeypatch):
    """CUDA_VISIBLE_DEVICES renumbers the GPUs each job sees: `cuda:0` in two jobs may be two GPUs."""
    physical = uuid.UUID("6f1c2b1e-0d3a-4a52-9d6e-1f0c5b7a9e21")
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device: "NVIDIA H100 80GB HBM3")
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda device: types.SimpleNamespace(uuid=physical))
    record = hardware.hardware(torch.device("cuda", 0))
    assert record["gpu"] == "NVIDIA H100 80GB HBM3" and record["gpu_uuid"] == f"GPU-{physical}"
    assert "gpu_uuid" not in hardware.hardware(torch.device("cpu"))


def test_library_versions_need_no_trackio(monkeypatch):
    real = recorder.version
    monkeypatch.setattr(recorder, "version", lambda name: real(name) if name != "trackio" else
                        (_ for _ in ()).throw(recorder.PackageNotFoundError(name)))
    versions = recorder.library_versions()
    assert versions["trackio"] is None and versions["torch"] == real("torch")


def test_a_launch_records_the_precision_flags_and_the_device_in_its_checkpoint(tmp_path, tiny_npz):
    launch_ok(tmp_path, *tiny_overrides(tiny_npz), "epochs=1", "precision=tf32", "hydra.run.dir=run", "trackio.enabled=false")
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["precision_flags"]["matmul_fp32"] == "tf32" and metrics["compile_mode"] == "default"
    assert load_checkpoint(tmp_path / "run")["device"]["type"] == "cpu"
    assert os.path.isfile(tmp_path / "run" / "final_model.pt")
