"""optqual from a regular (not editable) install, run from another directory: training, with the same
results as the checkout's launch.py, resume, and the tools."""

import json
import os
import shutil
import signal
import subprocess
import sys
import sysconfig
import time
import venv
from pathlib import Path

import pytest

from conftest import REPO, assert_same_run, launch_here, launch_ok, stopped_after, tiny_overrides

pytestmark = pytest.mark.slow  # `make test-fast` leaves these out

OFFLINE = {**os.environ, "PIP_NO_INDEX": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1"}


def installed_environment(tmp_path: Path) -> Path:
    """A fresh virtual environment holding optqual as `pip install .` installs it (a wheel, from a
    copy of the project's files) and borrowing this environment's dependencies (torch and the
    rest) through a .pth file: no download, no editable link back to the checkout. Its python."""
    source = tmp_path / "source"
    source.mkdir()
    for part in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / part, source / part)
    for part in ("optqual", "conf"):
        shutil.copytree(REPO / part, source / part, ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path / "wheel"),
                    str(source)], env=OFFLINE, check=True, capture_output=True)
    (wheel,) = (tmp_path / "wheel").glob("optqual-*.whl")
    environment = tmp_path / "env"
    venv.create(environment, with_pip=False)
    python = environment / "bin" / "python"
    site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True).stdout.strip())
    (site / "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")  # a plain path: its editable link stays off
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "-q", str(wheel)],
                   env=OFFLINE, check=True, capture_output=True)
    return python


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    return installed_environment(tmp_path_factory.mktemp("install"))


def test_training_from_a_regular_install_equals_the_checkouts_and_its_tools_work_there(tmp_path, tiny_npz, installed):
    overrides = [*tiny_overrides(tiny_npz), "epochs=6", "trackio.enabled=false"]
    command = [str(installed.with_name("optqual")), "train", *overrides, "hydra.run.dir=run"]  # the console script
    process = subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and not (tmp_path / "run" / "history.csv").is_file():
        time.sleep(0.05)
    process.send_signal(signal.SIGTERM)  # checkpointed at the next step
    assert process.wait(timeout=300) == 128 + signal.SIGTERM, process.stderr.read()
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["status"] == "interrupted"
    for tool in (["resume", "run"], ["summarize", "run"], ["analyze", "run", "analysis=[weights,calibration]", "probe_size=32"]):
        result = subprocess.run([str(installed), "-m", "optqual", *tool], cwd=tmp_path, capture_output=True, text=True)
        assert result.returncode == 0, (tool, result.stderr[-3000:])
    assert (tmp_path / "run" / "summary.md").is_file() and (tmp_path / "run" / "analysis" / "calibration.json").is_file()

    launch_ok(tmp_path, *overrides, "hydra.run.dir=checkout")  # python -m optqual train, the checkout's
    assert_same_run(tmp_path / "run", tmp_path / "checkout")
    assert subprocess.run([sys.executable, str(REPO / "launch.py"), *overrides, "hydra.run.dir=launch_py"], cwd=tmp_path).returncode == 0
    assert_same_run(tmp_path / "run", tmp_path / "launch_py")


def test_the_tools_work_from_a_regular_install_and_any_directory(tmp_path, tiny_npz, installed):
    work = tmp_path / "work"
    work.mkdir()
    with stopped_after(2, 1, "kill"):  # the sweep's first job killed in its second epoch; the second never started
        assert launch_here(work, "-m", *tiny_overrides(tiny_npz), "seed=0,1", "hydra.sweep.dir=sweep", "trackio.enabled=false").returncode < 0

    python = installed
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()

    def optqual(*args: str) -> subprocess.CompletedProcess:
        result = subprocess.run([str(python), "-m", "optqual", *args], cwd=elsewhere, capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, result.stderr[-3000:]
        return result

    where = subprocess.run([str(python), "-c", "import optqual; print(optqual.__file__); print(optqual.config_dir())"],
                           cwd=elsewhere, capture_output=True, text=True, check=True).stdout.split()
    assert all(path.startswith(str(python.parents[1])) for path in where), where  # the installed copy, conf/ inside it

    assert "2 jobs: 1 failed, 1 pending" in optqual("summarize", str(work / "sweep")).stdout  # killed here: failed
    resumed = optqual("resume", str(work / "sweep")).stdout  # with the checkout that started the sweep, where it was started
    assert "seed=0: failed, resuming" in resumed and "seed=1: not started, starting it" in resumed, resumed
    assert "2 jobs: 2 completed" in (work / "sweep" / "summary.md").read_text()
    assert "seed" in optqual("diff", str(work / "sweep" / "seed=0"), str(work / "sweep" / "seed=1")).stdout
    run = work / "sweep" / "seed=0"
    optqual("analyze", str(run), "analysis=[weights]", "probe_size=32", "train_subset=64")  # conf/analyze.yaml from the install
    assert (run / "analysis" / "weights.json").is_file()
    assert not list(elsewhere.iterdir()), "the tools write into the directories they are given, not the working directory"
