"""Run directories left by earlier versions of optqual keep working with this one.

Each fixture under tests/legacy_runs/ is a run directory an earlier optqual left when SIGTERM stopped
it in the middle of an epoch, made by tests/legacy_runs/make.py with that version checked out:
`running_sums` by the optqual of 2026-11-22, whose checkpoint kept the epoch in progress as running
sums; `components` by the optqual before the package was restructured into layers (older module
paths in every `_target_`, older names of the training state's parts), with every component on.
Its checkout is updated in place (the run's conf/ is this checkout's) and `resume` continues it:
the run ends as that version ended the same recipe without a stop, bit for bit on the machine the
fixture was made on, within the tolerances of tests/fingerprints.py elsewhere.
"""

import json
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from conftest import REPO, cli, launch_here
from fingerprints import assert_same_or_close, fingerprint, machine
from legacy_runs.data import write_data
from optqual.runs.reader import read_run

pytestmark = pytest.mark.slow  # `make test-fast` leaves these out

LEGACY = Path(__file__).with_name("legacy_runs")
FIXTURES = sorted(path.name for path in LEGACY.iterdir() if (path / "expected.json").is_file())
# Since 2026-11-22 an epoch's mean loss is summed once in float64 from every step's figure; before, it
# was a float32 running sum: the epoch continued from running sums agrees with the uninterrupted run of
# that version to float32 rounding, in its last digits (the weights are bit for bit the same)
HISTORY_RTOL = {"running_sums": 1e-6}


def unpack(name: str, workdir: Path) -> Path:
    """The fixture's run directory in `workdir`, as if started there with this checkout."""
    workdir.mkdir(parents=True, exist_ok=True)
    write_data(workdir)
    run = workdir / "run"
    shutil.copytree(LEGACY / name / "run", run)
    saved = OmegaConf.load(run / ".hydra" / "hydra.yaml")
    saved.hydra.runtime.cwd = str(workdir)
    for source in saved.hydra.runtime.config_sources:
        if source.provider == "main":
            source.path = str(REPO / "conf")
    OmegaConf.save(saved, run / ".hydra" / "hydra.yaml")
    return run


@pytest.mark.parametrize("name", FIXTURES)
def test_a_run_stopped_by_an_earlier_optqual_resumes_to_the_end_that_optqual_reached(name, tmp_path):
    expected = json.loads((LEGACY / name / "expected.json").read_text())
    run = unpack(name, tmp_path)
    result = subprocess.run([sys.executable, "-m", "optqual", "resume", str(run)], cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads((run / "metrics.json").read_text())["status"] == "completed"
    if not assert_same_or_close(name, fingerprint(run), expected["fingerprint"], expected["machine"], HISTORY_RTOL.get(name, 0.0)):
        warnings.warn(f"{name} was made on {expected['machine']}, this is {machine()}: compared within the tolerances")


def test_every_tool_reads_a_run_an_earlier_optqual_finished(tmp_path):
    run = unpack("components", tmp_path)
    assert cli("resume", str(run), cwd=tmp_path).returncode == 0
    (run / "resolved_config.yaml").unlink()  # as the earlier optqual left it: only .hydra/config.yaml and metrics.json
    for command in (["summarize", str(run)], ["diff", str(run), str(run)], ["profile", str(run), "--calls", "3"],
                    ["analyze", str(run), "analysis=[weights,calibration]", "probe_size=40"]):
        result = cli(*command, cwd=tmp_path)
        assert result.returncode == 0, (command, result.stderr[-2000:])
    assert (run / "analysis" / "weights.json").is_file() and (run / "profile.json").is_file() and (run / "summary.md").is_file()


def test_a_component_added_since_reads_as_off_and_turning_it_on_is_another_run(tmp_path):
    """The fixtures were configured before the EMA component existed: they resume with it off, and
    a resume that turns it on would no longer be the run they started as."""
    run = unpack("components", tmp_path)
    assert read_run(run).config.ema.decay is None
    overrides = [*json.loads((LEGACY / "components" / "expected.json").read_text())["overrides"], "ema.decay=0.9"]
    refused = launch_here(tmp_path, *overrides, "experiment_name=resnet8_cifar10_baseline", "hydra.run.dir=run", "hydra.output_subdir=null")
    assert refused.returncode == 1 and "holds a run of another config (ema.decay: None -> 0.9)" in refused.stderr  # as resume pins it
