"""Make a legacy-run fixture: a run directory left by an earlier optqual, stopped in the middle of an
epoch, and the fingerprint of the same recipe trained to the end without a stop by that optqual.

    python tests/legacy_runs/make.py CHECKOUT NAME EPOCH STEP OVERRIDE ...

CHECKOUT is a checkout of the earlier optqual (`git worktree add /tmp/old <commit>`), run with this
project's environment. In a scratch directory the recipe's data is written (tests/legacy_runs/data.py),
the recipe is trained once to the end (its fingerprint, tests/fingerprints.py, and the machine go into
NAME/expected.json) and once more with SIGTERM after step STEP of epoch EPOCH; that run's directory,
checkpointed at the step, becomes NAME/run/. tests/test_legacy_runs.py resumes it with this optqual.
"""

import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # tests/: fingerprints.py

from fingerprints import fingerprint, machine  # noqa: E402
from legacy_runs.data import write_data  # noqa: E402

# launch.py of CHECKOUT, run as a script is run (Hydra finds its conf/ beside it), optionally sent
# SIGTERM after a given step: the loop then checkpoints at that step and exits 143
DRIVER = """
import os, runpy, signal, sys
checkout, stop = sys.argv[1], sys.argv[2]
sys.path.insert(0, checkout)
sys.argv = [os.path.join(checkout, "launch.py"), *sys.argv[3:]]
from optqual.engine.loop import Training
if stop != "none":
    epoch, steps = map(int, stop.split())
    original = Training.step
    def step(self, images, labels, progress):
        original(self, images, labels, progress)
        if (progress.epoch, progress.step + 1) == (epoch, steps):
            signal.raise_signal(signal.SIGTERM)
    Training.step = step
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def run(checkout: Path, workdir: Path, stop: str, overrides: list[str]) -> int:
    command = [sys.executable, "-c", DRIVER, str(checkout), stop, *overrides]
    return subprocess.run(command, cwd=workdir, capture_output=True, text=True).returncode


def main() -> None:
    checkout, name, epoch, step, *overrides = sys.argv[1:]
    checkout = Path(checkout).resolve()
    out = HERE / name
    with tempfile.TemporaryDirectory() as folder:
        workdir = Path(folder)
        write_data(workdir)
        assert run(checkout, workdir, "none", [*overrides, "hydra.run.dir=reference"]) == 0
        assert run(checkout, workdir, f"{epoch} {step}", [*overrides, "hydra.run.dir=run"]) == 128 + 15
        shutil.rmtree(out, ignore_errors=True)
        shutil.copytree(workdir / "run", out / "run")
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=checkout, capture_output=True, text=True).stdout.strip()
        expected = {"made_by": commit, "overrides": overrides, "stopped_at": {"epoch": int(epoch), "step": int(step)},
                    "machine": machine(), "made_in": folder, "fingerprint": fingerprint(workdir / "reference")}
        (out / "expected.json").write_text(json.dumps(expected, indent=1) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
