"""What the two edge-of-stability reproductions share (benchmarks/eos_gradient_descent.py and
benchmarks/eos_adam.py): their setup, the runs, the verdict and the figure.

The setup is Cohen et al.'s: their `fc-tanh` (an MLP with two hidden layers of 200 and tanh,
`model=mlp model.activation=tanh`), the square loss on one-hot targets (`loss=mse`), full-batch
training (`data.full_batch=true`) on a fixed subset of CIFAR-10 (here 2,000 real images of
../shared/data/cifar10_head.npz, standardized by their own per-channel statistics, unaugmented).
Each run tracks its sharpness every 25 updates on the whole training set, i.e. on the very loss
it descends. The verdict is the paper's: the median of sharpness / threshold over the last
30% of the estimates lies within [0.9, 1.2] for every step size.
"""

import argparse
import statistics
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import optqual  # noqa: E402  (the checkout's optqual, also when it is not installed)
from optqual.files.figures import pyplot, save_figure  # noqa: E402

BAND = (0.9, 1.2)  # the band of the median ratio over the last 30% of training (the issue's, from the papers' figures)
LAST = 0.3
TRAIN_IMAGES = 2000
EVERY = 25  # updates between sharpness estimates
# Lanczos' stopping residual: at the edge the top eigenvalues crowd, and an estimate took 10-37 products at 1e-3;
# 1e-2 bounds the relative error by 1% (the error itself is about the residual squared over the gap)
TOLERANCE = 1e-2


def reproduce(description: str, figure: str, step_sizes: dict[str, tuple[float, int]], optimizer: list[str], name: str,
              column: str, label: str, claim: str, title: str) -> int:
    """Train a run per step size (label -> (eta, updates)) with `optimizer`'s overrides, print the verdict
    on `column` (`label`) against the claim, draw the figure; the exit status: 0 when reproduced."""
    args = arguments(description, figure)
    runs = {}
    for step, (eta, updates) in step_sizes.items():
        overrides = [*setup(args.data), *optimizer, f"optimizer.lr={eta}", f"epochs={updates // 10 if args.quick else updates}"]
        runs[step] = train(args.workdir, f"{name}_lr{eta:.5g}", overrides)
    reproduced = verdict(runs, label, claim)
    draw(runs, column, label, title, args.figure)
    return 0 if reproduced else 1


def arguments(description: str, figure: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "cifar10_head.npz")
    parser.add_argument("--workdir", type=Path, default=Path("outputs/benchmarks"), help="where the runs go")
    parser.add_argument("--figure", type=Path, default=REPO / "docs" / "research" / figure)
    parser.add_argument("--quick", action="store_true", help="a tenth of the updates: checks the script, not the result")
    return parser.parse_args()


def setup(data: Path) -> list[str]:
    """The overrides of Cohen et al.'s fc-tanh, square loss, full batch of TRAIN_IMAGES images."""
    return ["data=npz", f"data.path={data.resolve()}", f"data.train_size={TRAIN_IMAGES}", "data.full_batch=true", "data.augment=null",
            "data.mean=null", "data.std=null", "model=mlp", "model.hidden=[200,200]", "model.activation=tanh", "loss=mse",
            "eval_every=null", "checkpoint_every=100000", "trackio.enabled=false",
            f"track.sharpness.every={EVERY}", f"track.sharpness.subset={TRAIN_IMAGES}", "track.sharpness.chunk=1000",
            f"track.sharpness.tolerance={TOLERANCE}"]


def train(workdir: Path, name: str, overrides: list[str]) -> "optqual.runs.results.LoadedRun":
    """One run in workdir/name (its console output in workdir/name.log), read back; a run that
    completed there before is read back as it is (the verdict and the figure again, no training)."""
    run_dir = (workdir / name).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    if not (run_dir.is_dir() and optqual.load_run(run_dir).status == "completed"):
        with open(workdir / f"{name}.log", "w") as log:
            subprocess.run([sys.executable, "-m", "optqual", "train", *overrides, f"hydra.run.dir={run_dir}"], check=True, stdout=log,
                           stderr=subprocess.STDOUT, cwd=REPO)
    run = optqual.load_run(run_dir)
    tracking = run.sharpness.seconds.sum()
    print(f"{name}: {len(run.history)} updates, {run.metrics['wall_seconds']:.0f} s ({tracking:.0f} s of it estimating the "
          f"sharpness {len(run.sharpness)} times, {run.sharpness.products.sum()} Hessian-vector products), train loss "
          f"{run.history.train_loss.iloc[-1]:.4f}, train accuracy {run.history.train_acc.iloc[-1]:.3f}", flush=True)
    return run


def verdict(runs: dict[str, "optqual.runs.results.LoadedRun"], regulated: str, paper: str) -> bool:
    """The median ratio over the last 30% of each run's estimates, against BAND; printed, and whether all are inside."""
    inside = True
    for label, run in runs.items():
        ratios = run.sharpness.ratio.dropna()
        tail = ratios.iloc[int(len(ratios) * (1 - LAST)) :]
        median = statistics.median(tail)
        ok = BAND[0] <= median <= BAND[1]
        inside &= ok
        print(f"{label}: median {regulated} / threshold over the last {LAST:.0%} of training = {median:.3f} "
              f"(range {tail.min():.3f}-{tail.max():.3f}, {len(tail)} estimates): {'inside' if ok else 'OUTSIDE'} [{BAND[0]}, {BAND[1]}]")
    print(f"verdict: {'REPRODUCED' if inside else 'NOT REPRODUCED'}: {paper}")
    return inside


def draw(runs: dict[str, "optqual.runs.results.LoadedRun"], column: str, label: str, title: str, path: Path) -> None:
    """The regulated sharpness of each run against its threshold, and the training loss, over the updates."""
    plt = pyplot()
    figure, axes = plt.subplots(1, 2, figsize=(11, 4.2), layout="constrained")
    for (name, run), color in zip(runs.items(), ("tab:blue", "tab:orange", "tab:green")):
        rows = run.sharpness
        axes[0].plot(rows["update"], rows[column], color=color, label=f"{label}, {name}")
        axes[0].plot(rows["update"], rows["threshold"], "--", color=color, label=f"its threshold, {name}")
        axes[1].plot(run.history.epoch, run.history.train_loss, color=color, label=name)
    axes[0].set(xlabel="update (full batch)", ylabel=label, title="sharpness and stability threshold")
    axes[1].set(xlabel="update (full batch)", ylabel="training loss (square loss)", yscale="log", title="training loss")
    path.parent.mkdir(parents=True, exist_ok=True)
    save_figure(figure, axes, title, path)
    print(f"figure: {path}")
