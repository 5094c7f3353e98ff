"""The dashboards of a 2x2 sweep (SGD and AdamW, seeds 0 and 1) as a new user first opens them, in a
real headless browser: docs/dashboards/sweep_as_first_opened.png (Trackio) and
docs/dashboards/tensorboard.png (TensorBoard).

    python scripts/dashboard_screenshot.py [--data ../shared/data/cifar10_head.npz] [--sweep SWEEP_DIR]

Trains the sweep (4 epochs, about a minute on 2 cores, both dashboards on) in a temporary
directory unless --sweep names one, serves its Trackio dashboard with `python -m optqual
dashboard --no-browser` and its TensorBoard with `tensorboard --logdir SWEEP_DIR`, and takes the
screenshots with Chromium (Debian's `chromium` package: apt-get install chromium).
"""

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync", "--window-size=1600,1000",
            "--virtual-time-budget=15000"]  # the flags that keep Chromium off a closed network


def train_sweep(data: Path, workdir: Path) -> Path:
    sweep = workdir / "outputs" / "multirun" / "sweep" / "2x2_resnet8_npz"
    subprocess.run([sys.executable, "-m", "optqual", "train", "-m", "data=npz", f"data.path={data.resolve()}", "epochs=4", "eval_every=1",
                    "optimizer=sgd,adamw", "seed=0,1", "tensorboard.enabled=true", f"hydra.sweep.dir={sweep}"], cwd=workdir, check=True)
    return sweep


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "cifar10_head.npz")
    parser.add_argument("--sweep", type=Path, help="a sweep that logged to Trackio (default: train one)")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "dashboards" / "sweep_as_first_opened.png")
    parser.add_argument("--tensorboard-out", type=Path, default=REPO / "docs" / "dashboards" / "tensorboard.png")
    parser.add_argument("--port", type=int, default=7871)
    parser.add_argument("--tensorboard-port", type=int, default=6107)
    args = parser.parse_args()
    if shutil.which("chromium") is None:
        sys.exit("dashboard_screenshot: needs Chromium: apt-get install chromium")
    with tempfile.TemporaryDirectory() as workdir:
        sweep = args.sweep or train_sweep(args.data, Path(workdir))
        server = subprocess.Popen([sys.executable, "-m", "optqual", "dashboard", str(sweep), "--no-browser", "--port", str(args.port)],
                                  stdout=subprocess.PIPE, text=True)
        try:
            url = server.stdout.readline().rsplit(": ", 1)[1].strip()
            profile = Path(workdir) / "chromium"
            subprocess.run([*CHROMIUM, f"--user-data-dir={profile}", f"--screenshot={args.out.resolve()}", url], check=True,
                           capture_output=True)
        finally:
            server.terminate()
            server.wait()
        print(f"wrote {args.out} ({url.split('&write_token')[0]}...)")
        # TensorBoard's runs are the jobs' tensorboard/ folders; smoothing 0 draws the epochs as logged
        server = subprocess.Popen([str(Path(sys.executable).with_name("tensorboard")), "--logdir", str(sweep), "--port",
                                   str(args.tensorboard_port), "--reload_interval", "0"], stderr=subprocess.PIPE, text=True)
        try:
            for line in server.stderr:
                if "TensorBoard" in line and "http://" in line:
                    break
            url = f"http://localhost:{args.tensorboard_port}/?smoothing=0#timeseries"
            subprocess.run([*CHROMIUM, f"--user-data-dir={Path(workdir) / 'chromium_tb'}",
                            f"--screenshot={args.tensorboard_out.resolve()}", url], check=True, capture_output=True)
        finally:
            server.terminate()
            server.wait()
        print(f"wrote {args.tensorboard_out} ({url})")


if __name__ == "__main__":
    main()
