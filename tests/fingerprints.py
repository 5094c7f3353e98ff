"""What two trainings of one recipe must share: the checksums of a finished run, the numbers behind
them, and the machine that made them.

CPU results are bit-identical on one CPU model and one set of library versions only. A run made
elsewhere is compared within tolerances instead. Another CPU model sums in another order, as another
thread count does: on the machine the references were recorded on, threads=2 instead of 1 moved the
reference recipes' losses by at most 1e-3 (relative), their accuracies by at most 2 of 60 validation
images and a weight tensor's norm by at most 0.01; the tolerances leave a factor of about 3-10 above
that (tests/test_reference_runs.py::test_the_tolerances_hold_for_another_summation_order).
"""

import csv
import hashlib
import io
import json
import platform
from importlib.metadata import version
from pathlib import Path

import pytest
import torch

from optqual.compat import cpu_features
from optqual.system.hardware import cpu_model

LIBRARIES = ("torch", "torchvision", "numpy", "timm", "pytorch-optimizer")
COLUMNS = ("train_loss", "train_ce", "train_acc", "val_loss", "val_acc")  # history's loss and accuracy columns
LOSS_RTOL = 1e-2  # on another machine: losses (and weight norms) within this relative tolerance
ACCURACY_ATOL = 0.1  # accuracies (a fraction) within this: near-ties on random labels flip either way
NORM_ATOL = 0.05  # a weight tensor's L2 norm within this (small batch-norm biases move most)


def machine() -> dict:
    """What a bit-identical comparison needs to hold: the CPU model, the instruction sets the math
    libraries dispatch on (a virtual machine may report two generations as the same "AMD EPYC"),
    and the library versions."""
    return {"cpu": cpu_model(), "cpu_capability": torch.backends.cpu.get_cpu_capability(), "cpu_isa": cpu_features(),
            "python": platform.python_version(), **{name: version(name) for name in LIBRARIES}}


def fingerprint(run: Path) -> dict:
    """The checksums of a finished run, and the numbers to compare within a tolerance elsewhere."""
    with open(run / "history.csv", newline="") as file:
        rows = [{key: row[key] for key in COLUMNS} for row in csv.DictReader(file)]
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    weights = torch.load(run / "final_model.pt", weights_only=True)
    metrics = json.loads((run / "metrics.json").read_text())
    return {
        "final_model_sha256": hashlib.sha256((run / "final_model.pt").read_bytes()).hexdigest(),
        "history_sha256": hashlib.sha256(text.getvalue().encode()).hexdigest(),
        "history": [{key: float(value) for key, value in row.items()} for row in rows],
        "test_acc": metrics["test_acc"],
        "test_loss": metrics["test_loss"],
        "weight_norms": {key: float(value.double().norm()) for key, value in weights.items() if value.is_floating_point()},
    }


def assert_close(name: str, found: dict, expected: dict) -> None:
    """The numbers of two fingerprints within the stated tolerances."""
    assert len(found["history"]) == len(expected["history"]), name
    for row, (got, want) in enumerate(zip(found["history"], expected["history"])):
        for key in COLUMNS:
            if key.endswith("acc"):
                assert abs(got[key] - want[key]) <= ACCURACY_ATOL, (name, row, key, got[key], want[key])
            else:
                assert got[key] == pytest.approx(want[key], rel=LOSS_RTOL), (name, row, key)
    assert abs(found["test_acc"] - expected["test_acc"]) <= ACCURACY_ATOL, name
    assert found["test_loss"] == pytest.approx(expected["test_loss"], rel=LOSS_RTOL), name
    assert found["weight_norms"].keys() == expected["weight_norms"].keys(), name
    for key, norm in expected["weight_norms"].items():
        assert found["weight_norms"][key] == pytest.approx(norm, rel=LOSS_RTOL, abs=NORM_ATOL), (name, key)


def assert_same_or_close(name: str, found: dict, expected: dict, made_on: dict, history_rtol: float = 0.0) -> bool:
    """Bit for bit when this machine is the one `expected` was made on (True), else within the
    tolerances (False: the caller says so). `history_rtol`: a known change in how history's means are
    summed, within which its columns agree on the same machine (the weights stay bit for bit)."""
    if made_on != machine():
        assert_close(name, found, expected)
        return False
    assert found["final_model_sha256"] == expected["final_model_sha256"], name
    if history_rtol:
        for got, want in zip(found["history"], expected["history"], strict=True):
            assert got == pytest.approx(want, rel=history_rtol), name
    else:
        assert found["history_sha256"] == expected["history_sha256"], name
    assert_close(name, found, expected)
    return True
