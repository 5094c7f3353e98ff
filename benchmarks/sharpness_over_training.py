"""What sharpness over training costs on the 2-core CPU, and the trajectories of a 2x2 sweep.

    python benchmarks/sharpness_over_training.py [--data ../shared/data/cifar10_head.npz] [--workdir DIR]

1. ResNet-8 on the 4,577 real training images of cifar10_head.npz, 3 epochs (108 updates), SGD
   and AdamW, each trained with `track.sharpness.every=25` (5 estimates on 1,024 images) and
   without: the wall seconds of each, and what the estimates took (sharpness.csv's seconds).
2. The 2x2 sweep `optimizer=sgd,adamw seed=0,1`, 4 epochs, tracking every 36 updates (once an
   epoch) and `snapshots.at=log:3`, then `analyze SWEEP --snapshots effort=quick`: its seconds,
   and its trajectories.png copied to docs/research/trajectories_2x2.png.

Prints one JSON line with every figure. A run that completed in --workdir before is reused.
"""

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import optqual  # noqa: E402


def timed(command: list[str], cwd: Path, log: Path) -> float:
    started = time.perf_counter()
    with open(log, "w") as out:
        subprocess.run(command, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, check=True)
    return round(time.perf_counter() - started, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "cifar10_head.npz")
    parser.add_argument("--workdir", type=Path, default=Path("outputs/benchmarks/sharpness_over_training"))
    args = parser.parse_args()
    work = args.workdir.resolve()
    work.mkdir(parents=True, exist_ok=True)
    train = [sys.executable, "-m", "optqual", "train", "data=npz", f"data.path={args.data.resolve()}", "trackio.enabled=false"]
    report = {}
    for optimizer in ("sgd", "adamw"):
        for tracked in (False, True):
            name = f"{optimizer}_{'tracked' if tracked else 'plain'}"
            extra = ["track.sharpness.every=25"] if tracked else []
            if not (work / name / "metrics.json").is_file():
                timed([*train, "epochs=3", "eval_every=3", f"optimizer={optimizer}", *extra, f"hydra.run.dir={work / name}"], work,
                      work / f"{name}.log")
            run = optqual.load_run(work / name)
            report[name] = {"wall_seconds": round(run.metrics["wall_seconds"], 1), "train_seconds": round(run.metrics["train_seconds"], 1)}
            if tracked:
                report[name] |= {"estimates": len(run.sharpness), "estimate_seconds": round(float(run.sharpness.seconds.sum()), 1),
                                 "products": int(run.sharpness.products.sum()), "last_ratio": round(float(run.sharpness.ratio.iloc[-1]), 3)}
    sweep = work / "sweep_2x2"
    if not (sweep / "optimizer=adamw,seed=1" / "metrics.json").is_file():
        report["sweep_seconds"] = timed([*train[:4], "-m", *train[4:], "optimizer=sgd,adamw", "seed=0,1", "epochs=4", "eval_every=1",
                                         "track.sharpness.every=36", "snapshots.at=log:3", f"hydra.sweep.dir={sweep}"], work,
                                        work / "sweep.log")
    report["analyze_snapshots_seconds"] = timed([sys.executable, "-m", "optqual", "analyze", str(sweep), "--snapshots", "effort=quick",
                                                 "--force"], work, work / "analyze.log")
    figure = REPO / "docs" / "research" / "trajectories_2x2.png"
    shutil.copyfile(sweep / "analysis" / "trajectories.png", figure)
    report["figure"] = str(figure.relative_to(REPO))
    print(json.dumps(report))


if __name__ == "__main__":
    main()
