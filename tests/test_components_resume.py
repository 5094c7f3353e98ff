"""Every optimizer and every example of every registered component repeats bit for bit, and a run stopped in the middle
of an epoch (SIGKILL: back to the last epoch's checkpoint; SIGTERM: a checkpoint at the step)
and resumed ends exactly where an uninterrupted run ends. Runs in this process (conftest.py)."""

import json

import pytest

from conftest import assert_same_run, launch_here, launched, stopped_after, tiny_overrides
from optqual.components.registry import components

pytestmark = pytest.mark.slow  # `make test-fast` leaves these out

# Every option of the optimizer group and what the loop and the data do themselves, each with its overrides
# to a tiny three-epoch run (6 steps an epoch); then every example of every registered component
OWN = {
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
    "label_smoothing": ["loss.label_smoothing=0.1"],
    "square_loss_tanh_mlp": ["loss=mse", "model=mlp", "model.activation=tanh", "data.augment=null", "data.train_size=150"],
    "batch_size_schedule": ["data.batch_size_schedule={0:32,1:16,2:48}", "scheduler=cosine", "scheduler.warmup_epochs=1.5"],
}
COMPONENTS = {**OWN, **{f"{component.name}:{name}": list(overrides) for component in components() for name, overrides in component.examples.items()}}


@pytest.mark.parametrize("component", COMPONENTS)
def test_repeats_and_resumes_bit_for_bit(component, tmp_path, tiny_npz):
    overrides = [*tiny_overrides(tiny_npz), "epochs=3", "trackio.enabled=false", *COMPONENTS[component]]
    launched(tmp_path, *overrides, "hydra.run.dir=reference")
    # killed, it repeats its first epochs and resumes: equal to the reference, it repeats bit for bit too
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
