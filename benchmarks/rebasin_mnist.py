"""Ainsworth et al. 2022 ("Git Re-Basin", fig. 2) on MNIST: two solutions of an MLP with three hidden
layers of 512, from different initializations, are separated by a high loss on the straight line
between them, and once B's units are permuted to match A's by weight matching the line is all but
flat (in the paper the matched curves stay near the endpoints' loss, the naive ones rise past 1).

Here: two seeds each of SGD (momentum 0.9, cosine schedule) and Adam (lr 1e-3; the paper's
optimizer for this network), trained on the full MNIST of ../shared/data (54,000 training images,
batch 500 as in the paper, fewer epochs), then `python -m optqual analyze SWEEP analysis=[interpolation]
pairs=all`: every pair's loss along the line, naive, weight-matched and weight-matched + REPAIR.
The verdict, for every pair of different seeds, within SGD, within Adam and across the two: the
weight-matched train-loss barrier is at most 0.1 and at most a tenth of the naive one. Equal-seed
pairs (an SGD and an Adam run from the same initial weights) are printed apart.

    python benchmarks/rebasin_mnist.py            # about 10 minutes on the 2-core CPU
    python benchmarks/rebasin_mnist.py --quick    # 1 epoch, 3 points per line: checks the script, not the result
"""

import argparse
import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from optqual.analysis.measures.interpolation import LINES  # noqa: E402  (the checkout's optqual, also when not installed)
from optqual.files.figures import pyplot, save_figure  # noqa: E402

EPOCHS = 10
BARRIER = 0.1  # the largest weight-matched train-loss barrier called "close to zero"
SHARE = 0.1  # ... and its largest share of the naive barrier


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data", help="torchvision's MNIST/raw lies under it")
    parser.add_argument("--workdir", type=Path, default=Path("outputs/benchmarks/rebasin_mnist"), help="where the sweep goes")
    parser.add_argument("--figure", type=Path, default=REPO / "docs" / "research" / "rebasin_mnist.png")
    parser.add_argument("--quick", action="store_true", help="one epoch, three points per line on 2,000 train images: checks the script, not the result")
    return parser.parse_args()


def run(command: list[str], log: Path) -> None:
    with open(log, "w") as out:
        subprocess.run([sys.executable, *command], check=True, stdout=out, stderr=subprocess.STDOUT, cwd=REPO)


def main() -> int:
    args = arguments()
    sweep = args.workdir.resolve() / "sweep"
    args.workdir.mkdir(parents=True, exist_ok=True)
    epochs = 1 if args.quick else EPOCHS
    if not (sweep / "multirun.yaml").is_file():
        print(f"training 4 runs ({epochs} epochs each) into {sweep}", flush=True)
        run(["launch.py", "-m", "optimizer=sgd,adam", "seed=0,1", "model=mlp", "model.hidden=[512,512,512]", "data=mnist",
             f"data.root={args.data.resolve()}", "data.download=false", "data.batch_size=500", "scheduler=cosine",
             "optimizer.weight_decay=0", f"epochs={epochs}", "eval_every=null", "trackio.enabled=false",
             f"hydra.sweep.dir={sweep}"], args.workdir / "train.log")
    print("analyzing the pairs: naive, weight-matched, weight-matched + REPAIR", flush=True)
    points, train_images = (3, 2000) if args.quick else (11, 10000)
    run(["-m", "optqual", "analyze", str(sweep), "analysis=[interpolation]", "pairs=all", "analysis.interpolation.align=weights",
         f"analysis.interpolation.points={points}", f"analysis.interpolation.train_images={train_images}"], args.workdir / "analyze.log")
    pairs = {}
    for path in sorted((sweep / "analysis" / "pairs").glob("*/interpolation.json")):
        a, b = path.parent.name.split("__")
        pairs[a, b] = json.loads(path.read_text())["result"]
    draw(pairs, args.figure)
    return verdict(pairs)


def seed(name: str) -> str:
    return dict(part.split("=") for part in name.split(","))["seed"]


def kind(a: str, b: str) -> str:
    optimizers = sorted({part.split("=")[1] for name in (a, b) for part in name.split(",") if part.startswith("optimizer=")})
    within = f"within {optimizers[0]}" if len(optimizers) == 1 else f"across {' / '.join(optimizers)}"
    return within + (", same seed" if seed(a) == seed(b) else "")


def verdict(pairs: dict) -> int:
    print(f"\n{'pair':58} {'naive':>8} {'matched':>8} {'+REPAIR':>8}   train-loss barriers (test set in brackets)")
    reproduced = True
    for (a, b), result in pairs.items():
        naive, matched = result["barrier_train_loss"], result["aligned_barrier_train_loss"]
        independent = seed(a) != seed(b)
        ok = matched <= BARRIER and matched <= SHARE * naive
        reproduced &= ok or not independent
        mark = ("ok" if ok else "NOT close to zero") if independent else "(shared initialization: not judged)"
        print(f"{a + ' / ' + b:58} {naive:8.3f} {matched:8.3f} {result['repaired_barrier_train_loss']:8.3f}   "
              f"[{result['barrier_test_loss']:.3f}, {result['aligned_barrier_test_loss']:.3f}, {result['repaired_barrier_test_loss']:.3f}] "
              f"{kind(a, b)}: {mark}")
    print(f"verdict: {'REPRODUCED' if reproduced else 'NOT REPRODUCED'}: for every pair of different seeds the weight-matched "
          f"barrier is at most {BARRIER} and at most {SHARE:.0%} of the naive one (Ainsworth et al. 2022, fig. 2: near zero)")
    return 0 if reproduced else 1


def draw(pairs: dict, path: Path) -> None:
    """A panel per pair of different seeds: train loss along the line, naive, matched and matched + REPAIR."""
    independent = [(pair, result) for pair, result in pairs.items() if seed(pair[0]) != seed(pair[1])]
    plt = pyplot()
    figure, axes = plt.subplots(1, len(independent), figsize=(4 * len(independent), 3.8), layout="constrained", sharey=True, squeeze=False)
    for axis, ((a, b), result) in zip(axes[0], independent):
        for line, curve in result["curves"].items():
            axis.plot([p["alpha"] for p in curve], [p["train_loss"] for p in curve], marker=".", label=LINES[line])
        axis.set(xlabel="a: (1 - a) A + a B", title=f"{kind(a, b)}\nA {a}\nB {b}")
        axis.title.set_fontsize("small")
    axes[0][0].set_ylabel("train loss")
    path.parent.mkdir(parents=True, exist_ok=True)
    save_figure(figure, axes[0], "MNIST MLP (3 x 512): the loss between two solutions, before and after weight matching", path)
    print(f"figure: {path}")


if __name__ == "__main__":
    sys.exit(main())
