"""Results do not move when the code does: six recipes, trained on fixed data, against references
recorded before the package was restructured (tests/reference_runs.json).

A reference holds, per recipe, the SHA-256 of final_model.pt and of history.csv's loss and accuracy
columns, and the numbers behind them, keyed by the CPU model and library versions it was recorded
with (tests/fingerprints.py): on that machine the checksums must match, elsewhere the test says so
and compares the numbers within the stated tolerances.

    python tests/test_reference_runs.py --record      # add this machine's reference (on the code to compare against)
"""

import argparse
import json
import sys
import tempfile
import warnings
from pathlib import Path

import pytest

from conftest import launched, write_mnist_raw, write_npz
from fingerprints import assert_close, assert_same_or_close, fingerprint, machine

REFERENCE = Path(__file__).with_name("reference_runs.json")
# each recipe on fixed tiny data (or fixed MNIST-format files), 2 epochs, one thread, no dashboard
RECIPES = {
    "sgd": [],
    "adamw_cosine": ["optimizer=adamw", "scheduler=cosine"],
    "sam": ["optimizer=sam"],
    "randaugment_cutmix": ["augment=randaugment", "batch_mix=cutmix"],
    "group_lasso_quantizer": ["regularizer=group_lasso_channels", "regularizer.strength=0.01", "quantizer=deadzone",
                              "sparsity.pictures_every=100"],
    "mlp_mnist": ["model=mlp", "data=mnist", "data.download=false"],
}
COMMON = ["epochs=2", "eval_every=1", "data.batch_size=64", "threads=1", "trackio.enabled=false"]


def recipe_overrides(name: str, workdir: Path) -> list[str]:
    if name == "mlp_mnist":
        root = workdir / "mnist"
        if not root.exists():
            write_mnist_raw(root / "MNIST" / "raw", n_train=600, n_test=200, seed=5)
        data = [f"data.root={root}"]
    else:
        npz = workdir / "tiny.npz"
        if not npz.exists():
            write_npz(npz, n_train=600, n_test=200, seed=7)
        data = ["data=npz", f"data.path={npz}"]
    return [*data, *COMMON, *RECIPES[name]]


def train(name: str, workdir: Path) -> dict:
    launched(workdir, *recipe_overrides(name, workdir), f"hydra.run.dir={name}")
    return fingerprint(workdir / name)


def references() -> list[dict]:
    return json.loads(REFERENCE.read_text())["references"]


def reference_for_this_machine() -> dict:
    """This machine's reference, or else the first recorded (compared within the tolerances)."""
    recorded = references()
    return next((entry for entry in recorded if entry["machine"] == machine()), recorded[0])


@pytest.mark.parametrize("name", RECIPES)
def test_a_recipe_trains_to_its_recorded_reference(name, tmp_path_factory):
    workdir = tmp_path_factory.getbasetemp() / "reference_runs"
    workdir.mkdir(exist_ok=True)
    reference = reference_for_this_machine()
    if not assert_same_or_close(name, train(name, workdir), reference["runs"][name], reference["machine"]):
        warnings.warn(f"{name}: no reference recorded on this machine ({machine()}): compared within the tolerances with "
                      f"the one recorded on {reference['machine']}, not bit for bit")


@pytest.mark.slow
@pytest.mark.parametrize("name", ["sgd", "group_lasso_quantizer"])
def test_the_tolerances_hold_for_another_summation_order(name, monkeypatch, tmp_path):
    """Two threads instead of one: the kind of change another CPU model makes (not bit-identical, but close)."""
    monkeypatch.setattr(sys.modules[__name__], "COMMON", [option.replace("threads=1", "threads=2") for option in COMMON])
    found, expected = train(name, tmp_path), references()[0]["runs"][name]
    assert found["final_model_sha256"] != expected["final_model_sha256"]
    assert_close(name, found, expected)


def record() -> None:
    """Train every recipe and add (or replace) this machine's reference."""
    with tempfile.TemporaryDirectory() as folder:
        runs = {name: train(name, Path(folder)) for name in RECIPES}
    here = machine()
    recorded = [entry for entry in (references() if REFERENCE.is_file() else []) if entry["machine"] != here]
    REFERENCE.write_text(json.dumps({"references": [*recorded, {"machine": here, "runs": runs}]}, indent=1) + "\n")
    print(f"recorded {len(runs)} runs for {here['cpu']} in {REFERENCE}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--record", action="store_true", help="train every recipe and record this machine's reference")
    if parser.parse_args().record:
        record()
    else:
        sys.exit(pytest.main([__file__]))
