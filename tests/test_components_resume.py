"""Every optimizer, schedule and component (regularizers included) repeats bit for bit, and a run stopped in the middle
of an epoch (SIGKILL: back to the last epoch's checkpoint; SIGTERM: a checkpoint at the step)
and resumed ends exactly where an uninterrupted run ends. Runs in this process (conftest.py)."""

import json

import pytest

from conftest import assert_same_run, launch_here, launched, stopped_after, tiny_overrides

# One entry per component class; each adds its overrides to a tiny three-epoch run (6 steps an epoch)
COMPONENTS = {
    "sgd": [],
    "nesterov": ["optimizer=nesterov"],
    "adam": ["optimizer=adam"],
    "adamw": ["optimizer=adamw"],
    "rmsprop": ["optimizer=rmsprop"],
    "lion": ["optimizer=lion"],
    "sam": ["optimizer=sam"],
    "asam_adamw": ["optimizer=sam", "optimizer.adaptive=true", "optimizer.rho=0.5", "optimizer@optimizer.base=adamw"],
    "muon": ["optimizer=muon"],
    "muon_sgd_rest": ["optimizer=muon", "optimizer@optimizer.rest=sgd"],
    "sam_muon": ["optimizer=sam", "optimizer@optimizer.base=muon"],
    "no_weight_decay": ["optimizer.no_weight_decay=true"],
    "cosine_warmup": ["scheduler=cosine", "scheduler.warmup_epochs=1.5", "scheduler.eta_min=0.001"],
    "step": ["scheduler=step", "scheduler.step_size=4", "scheduler.unit=step"],
    "multistep": ["scheduler=multistep", "scheduler.milestones=[1.5,2.5]"],
    "plateau_warmup": ["scheduler=plateau", "scheduler.patience=0", "scheduler.warmup_epochs=0.5"],
    "onecycle": ["scheduler=onecycle", "scheduler.cycle_momentum=true"],
    "early_stopping": ["early_stopping.patience=1", "early_stopping.min_delta=1.0", "epochs=4"],
    "clipping": ["clip_grad_norm=0.5"],
    "label_smoothing": ["loss.label_smoothing=0.1"],
    "cutmix": ["batch_mix=cutmix"],  # prob 0.5: batches mixed and not
    "mixup_cutmix_smoothed": ["batch_mix=mixup_cutmix", "batch_mix.prob=0.8", "loss.label_smoothing=0.1"],
    "randaugment": ["augment=randaugment"],
    "autoaugment": ["augment=autoaugment"],
    "trivialaugment": ["augment=trivialaugment"],
    "random_erasing": ["random_erasing.p=0.5"],
    "sparsity_penalty": ["regularizer=group_lasso_blocks", "regularizer/schedule=linear_warmup", "regularizer.schedule.delay=1",
                         "regularizer.schedule.ramp=1", "regularizer.strength=0.01"],
    "quantizer": ["quantizer=deadzone", "optimizer=adamw", "quantizer.weight_decay_dz=1", "regularizer=l1_kernel",
                  "regularizer/schedule=cosine_anneal"],
    "batch_size_schedule": ["data.batch_size_schedule={0:32,1:16,2:48}", "scheduler=cosine", "scheduler.warmup_epochs=1.5"],
}


@pytest.mark.parametrize("component", COMPONENTS)
def test_repeats_and_resumes_bit_for_bit(component, tmp_path, tiny_npz):
    overrides = [*tiny_overrides(tiny_npz), "epochs=3", "trackio.enabled=false", *COMPONENTS[component]]
    launched(tmp_path, *overrides, "hydra.run.dir=reference")
    launched(tmp_path, *overrides, "hydra.run.dir=repeat")
    assert_same_run(tmp_path / "reference", tmp_path / "repeat")

    with stopped_after(epoch=2, steps=3, how="kill"):
        assert launch_here(tmp_path, *overrides, "hydra.run.dir=killed").returncode == -9
    launched(tmp_path, *overrides, "hydra.run.dir=killed", "hydra.output_subdir=null")  # what `resume` runs
    assert_same_run(tmp_path / "reference", tmp_path / "killed")

    if json.loads((tmp_path / "reference" / "metrics.json").read_text())["epochs"] >= 3:
        with stopped_after(epoch=3, steps=2, how="term"):
            assert launch_here(tmp_path, *overrides, "hydra.run.dir=termed").returncode == 128 + 15
        assert json.loads((tmp_path / "termed" / "metrics.json").read_text())["status"] == "interrupted"
        launched(tmp_path, *overrides, "hydra.run.dir=termed", "hydra.output_subdir=null")
        assert_same_run(tmp_path / "reference", tmp_path / "termed")
