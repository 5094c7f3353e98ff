"""How close optqual's training runs to the hardware's limit, against a textbook pipeline.

    python benchmarks/throughput.py                    # this machine's default device, fp32 and bf16
    python benchmarks/throughput.py --compile          # with torch.compile (minutes of compiling on a CPU)
    python benchmarks/throughput.py --device cpu --train-images 20480
    python benchmarks/throughput.py --optimizer sam --precisions fp32 --no-textbook   # any option of conf/optimizer/
    python benchmarks/throughput.py --model resnet20 --precisions fp32 --no-textbook  # any option of conf/model/
    python benchmarks/throughput.py --model mlp --data mnist --precisions fp32 --no-textbook  # and of conf/data/
    python benchmarks/throughput.py --model mlp --data mnist --precisions fp32 --no-textbook --ablate  # where the epoch's time goes
    python benchmarks/throughput.py --precisions fp32 --no-textbook clip_grad_norm=1.0     # any override of the run's config
    python benchmarks/throughput.py --precisions fp32 --no-textbook --variants optimizer=sam "scheduler=cosine clip_grad_norm=1"
    python benchmarks/throughput.py --precisions fp32 --no-textbook --variants loss.label_smoothing=0.1 batch_mix=cutmix augment=randaugment
    python benchmarks/throughput.py --model resnet20 --precisions fp32 --no-textbook --variants regularizer=group_lasso_channels quantizer=deadzone

Everything runs in one process on the same data (random uint8 images of the `--data` option's
shape, classes and augmentation, default cifar10: speed does not depend on content), the
same model (the `--model` option of conf/model/, default resnet8) and batch 128; optqual's measurements use the `--optimizer` option of
conf/optimizer/ (default sgd) and the `--scheduler` option, the textbook SGD:

1. ceiling    the bare train step (forward, backward, optimizer step; SAM's two passes) on
              one batch already on the device, in the precision and memory format optqual
              trains in;
2. optqual    optqual's real training epoch (`Training.train_epoch` of the model, optimizer and
              components a run builds, optqual/build.py: data order, augmentation and its
              policy, batch mixing, step with label smoothing, metrics, gradient norms, LR schedule);
3. textbook   torchvision transforms on PIL images in DataLoader workers, fp32, contiguous
              tensors, with the best worker count among those tried. Measured first, with
              the C library's malloc as a textbook script leaves it; then once more after
              optqual's `keep_freed_memory()`, to show how much of the lead that alone makes;
4. eval       optqual's evaluation (val + test) throughput;
5. variants   with --variants, optqual's epoch with other overrides (an option's cost per
              epoch), taking turns with the rest, and its ratio to optqual's epoch round by round;
6. ablations  with --ablate, optqual's epoch without a part of its step, over the ceiling: on
              one batch fetched once (what fetching, augmenting and normalizing every batch
              costs) and without the per-layer gradient norms (what they cost).

Each figure is the median of --repeats timed windows. The measurements take turns, window by
window, and each ratio (optqual over the ceiling, a variant over the epoch) is the median of
its round-by-round ratios, so a drift in the machine's speed does not bias it. Prints a
table, then one JSON line with the figures, the ratios and the projected wall time of the
full baseline (200 epochs, validation every 10, test at the end).
"""

import argparse
import dataclasses
import json
import resource
import statistics
import tempfile
import time
from pathlib import Path
from typing import Callable, TypeVar

import numpy as np
import torch
import torch.nn.functional as F
import torchvision.transforms as T
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import DictConfig
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from optqual import config_dir
from optqual.build import build_training
from optqual.config.schema import register_with_hydra
from optqual.data.images import ImageData, to_device
from optqual.engine.loop import EVAL_BATCH_SIZE, EpochProgress, LayerGradNorms, Training, evaluate
from optqual.models import build_model
from optqual.models.profile import synchronize
from optqual.optim.sam import running_stats_frozen, two_pass
from optqual.system.allocator import keep_freed_memory
from optqual.system.devices import resolve_device
from optqual.system.precision import autocast, set_precision
from optqual.system.reproducibility import DATA_STREAM, make_deterministic, stream_generator

BATCH = 128
BASELINE = {"epochs": 200, "eval_every": 10, "train": 45_000, "val": 5_000, "test": 10_000}


Work = tuple[int, Callable[[], None]]  # (images it processes, the call that processes them)
Name = TypeVar("Name")


def in_precision(precision: str, work: Work) -> Work:
    """`work` with its precision's float32 math set first (a flag set: nothing to time)."""
    images, call = work

    def run() -> None:
        set_precision(precision)
        call()

    return images, run


def rates(device: torch.device, works: dict[Name, Work], repeats: int) -> dict[Name, list[float]]:
    """Images/s of each work in each of `repeats` timed calls.

    The works take turns, one call each per round, so a drift in the shared machine's speed
    (+-10% over minutes) slows all of them alike instead of biasing their ratios.
    """
    seen = {name: [] for name in works}
    for _ in range(repeats):
        for name, (images, work) in works.items():
            synchronize(device)
            start = time.perf_counter()
            work()
            synchronize(device)
            seen[name].append(images / (time.perf_counter() - start))
    return seen


def random_images(n_train: int, n_eval: tuple[int, int], device: torch.device, data_cfg: DictConfig) -> tuple[dict[str, np.ndarray], ImageData]:
    """Random uint8 images of the data option's shape (speed does not depend on content): `n_train`
    to train on plus `n_eval` validation and test images, with the option's classes, statistics
    and augmentation; as arrays and resident on `device`."""
    rng = np.random.default_rng(0)
    size = data_cfg.image_size or 32
    channels = data_cfg.channels or (3 if data_cfg.get("to_rgb") else 1)
    classes = data_cfg.num_classes or 10
    n_val, n_test = n_eval
    arrays = {
        "x_train": rng.integers(0, 256, (n_train + n_val, size, size, channels), dtype=np.uint8),
        "y_train": rng.integers(0, classes, n_train + n_val),
        "x_test": rng.integers(0, 256, (n_test, size, size, channels), dtype=np.uint8),
        "y_test": rng.integers(0, classes, n_test),
    }
    split = n_val / (n_train + n_val)
    return arrays, to_device(arrays, device, batch_size=BATCH, val_fraction=split, num_classes=classes,
                             mean=data_cfg.mean, std=data_cfg.std, augment=instantiate(data_cfg.augment))


def run_config(optimizer: str, scheduler: str, epochs: int, overrides: list[str] = (), model: str = "resnet8",
               data: str = "cifar10") -> DictConfig:
    """The composed config of a run with these options and overrides (a run's defaults otherwise)."""
    register_with_hydra()
    with initialize_config_dir(str(config_dir()), version_base="1.3"):
        return compose("config", overrides=[f"model={model}", f"data={data}", f"optimizer={optimizer}", f"scheduler={scheduler}",
                                            f"epochs={epochs}", *overrides])


def run_training(cfg: DictConfig, data: ImageData, device: torch.device, precision: str, compile_model: bool) -> Training:
    """The model, optimizer and components a run of `cfg` in `precision` builds over `data` (optqual/build.py)."""
    torch.manual_seed(0)
    cfg = cfg.copy()
    cfg.precision, cfg.compile = precision, compile_model
    return build_training(cfg, data, device, Path(tempfile.gettempdir()))  # the pruning report writes only after an epoch


def textbook_sgd(model: torch.nn.Module) -> torch.optim.Optimizer:
    return torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)


def ceiling(data: ImageData, device: torch.device, precision: str, compile_model: bool, steps: int, cfg: DictConfig) -> Work:
    """The bare step of a run's model and optimizer on one resident, already augmented batch, `steps` times."""
    training = run_training(cfg, data, device, precision, compile_model)
    model, optimizer = training.model, training.optimizer
    images = data.normalize(data.augmentation(data.train_images[:BATCH], stream_generator(0, DATA_STREAM, device)))
    labels = data.train_labels[:BATCH]

    def loss() -> torch.Tensor:
        with autocast(device, precision):
            value = F.cross_entropy(model(images), labels)
        value.backward()
        return value

    def second_pass() -> torch.Tensor:
        with running_stats_frozen(model):
            return loss()

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        loss()
        if two_pass(optimizer):
            optimizer.step(second_pass)
        else:
            optimizer.step()

    def run(n: int) -> None:
        for _ in range(n):
            step()

    run(5)  # warm-up: allocator, kernels selection, compilation
    return steps * BATCH, lambda: run(steps)


@dataclasses.dataclass
class OneBatch(ImageData):
    """Every step gets the epoch's first batch, fetched once: the epoch without its data fetch."""

    batch: tuple[torch.Tensor, torch.Tensor] | None = None

    def train_batch(self, order: torch.Tensor, step: int, batch_size: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        if self.batch is None:
            self.batch = super().train_batch(order, step, batch_size, generator)
        return self.batch


class NoGradNorms(LayerGradNorms):
    """Zeros in place of the parameters' gradient norms: the epoch without taking them."""

    def __init__(self, model: torch.nn.Module):
        super().__init__(model)
        self.zeros = self.membership.new_zeros(len(self.params))

    def __call__(self) -> torch.Tensor:
        return self.zeros


ABLATIONS = ("on one batch", "without grad norms")


def optqual_epoch(data: ImageData, device: torch.device, precision: str, compile_model: bool, cfg: DictConfig,
                  ablation: str | None = None) -> Work:
    """optqual's own training epoch over the whole (benchmark) training set, with everything a run
    builds (and without a part of its step, with one of ABLATIONS)."""
    if ablation == "on one batch":
        data = OneBatch(**{field.name: getattr(data, field.name) for field in dataclasses.fields(ImageData)})
    loop = run_training(cfg, data, device, precision, compile_model)
    if ablation == "without grad norms":
        loop.grad_norms = NoGradNorms(loop.model)

    def epoch(loop: Training) -> None:
        progress = EpochProgress.begin(1, loop.data, loop.generator)
        loop.train_epoch(progress, on_step=lambda: None, should_stop=lambda: False)
        loop.epoch_record(progress)  # the epoch's one read of its metrics

    warm_up = dataclasses.replace(loop, data=dataclasses.replace(data, train_images=data.train_images[: 5 * BATCH],
                                                                 train_labels=data.train_labels[: 5 * BATCH]))
    warm_up.grad_norms = loop.grad_norms
    epoch(warm_up)  # the same model and optimizer: allocator, kernel selection, compilation
    return len(data.train_labels), lambda: epoch(loop)


def evaluation(data: ImageData, device: torch.device, precision: str, compile_model: bool, cfg: DictConfig) -> Work:
    """optqual's evaluation over the val and test sets."""
    model = run_training(cfg, data, device, precision, compile_model).model
    evaluate(model, data.eval_batches("val", EVAL_BATCH_SIZE), precision)  # warm-up

    def both() -> None:
        evaluate(model, data.eval_batches("val", EVAL_BATCH_SIZE), precision)
        evaluate(model, data.eval_batches("test", EVAL_BATCH_SIZE), precision)

    return len(data.val_labels) + len(data.test_labels), both


class PILImages(Dataset):
    """What a textbook CIFAR dataset does: a PIL image per item, torchvision transforms on it."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, mean: list[float], std: list[float]):
        self.images, self.labels = images, labels
        self.transform = T.Compose([
            T.RandomCrop(32, padding=4), T.RandomHorizontalFlip(), T.ToTensor(), T.Normalize(mean, std),
        ])

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int):
        return self.transform(Image.fromarray(self.images[index])), int(self.labels[index])


def textbook_epoch(data: ImageData, images: np.ndarray, labels: np.ndarray, device: torch.device, workers: int, cfg: DictConfig) -> Work:
    """A textbook epoch: DataLoader workers, fp32, contiguous tensors, loss.item() per step."""
    torch.manual_seed(0)
    model = build_model(cfg.model, data.facts()).to(device)
    optimizer = textbook_sgd(model)
    dataset = PILImages(images, labels, data.mean.tolist(), data.std.tolist())
    loader = DataLoader(dataset, batch_size=BATCH, shuffle=True, num_workers=workers, pin_memory=device.type == "cuda")

    def epoch() -> None:
        running = 0.0
        for x, y in loader:
            x, y = x.to(device), y.to(device)
            loss = F.cross_entropy(model(x), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            running += loss.item()

    return len(labels), epoch


def projected_baseline_seconds(train_rate: float, eval_rate: float) -> float:
    b = BASELINE
    validations = b["epochs"] // b["eval_every"] + (b["epochs"] % b["eval_every"] != 0)
    return b["epochs"] * b["train"] / train_rate + (validations * b["val"] + b["test"]) / eval_rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--precisions", default="fp32,bf16", help="comma-separated: fp32, tf32, bf16 (fp16's loss scaling is not in the bare step)")
    parser.add_argument("--model", default="resnet8", help="an option of conf/model/ for every measurement")
    parser.add_argument("--data", default="cifar10", help="an option of conf/data/: the images' shape, classes and augmentation")
    parser.add_argument("--optimizer", default="sgd", help="an option of conf/optimizer/ for optqual's ceiling and epoch")
    parser.add_argument("--scheduler", default="none", help="an option of conf/scheduler/ for optqual's epoch")
    parser.add_argument("--compile", action="store_true", help="torch.compile optqual's model (not the textbook's)")
    parser.add_argument("--train-images", type=int, default=10_240, help="images in the measured training epoch")
    parser.add_argument("--eval-images", type=int, nargs=2, metavar=("VAL", "TEST"), default=[BASELINE["val"], BASELINE["test"]],
                        help="images in the timed validation and test sets (the projection scales their rate to the baseline's)")
    parser.add_argument("--ceiling-steps", type=int, default=40)
    parser.add_argument("--workers", default="0,1,2", help="textbook DataLoader worker counts to try")
    parser.add_argument("--no-textbook", action="store_true", help="time optqual only (an option's cost, in a minute)")
    parser.add_argument("--repeats", type=int, default=3, help="timed repetitions per figure; the median is reported")
    parser.add_argument("--ablate", action="store_true", help="also time the epoch on one batch and without the gradient norms")
    parser.add_argument("--variants", nargs="*", default=[],
                        help="configs whose epoch to time beside the run's: each a space-separated list of overrides")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides of the run's config, e.g. clip_grad_norm=1.0")
    args = parser.parse_args()
    if args.data != "cifar10" and not args.no_textbook:
        parser.error("the textbook pipeline is CIFAR-10's: add --no-textbook to time another --data")

    device = resolve_device(args.device)
    cfg = run_config(args.optimizer, args.scheduler, BASELINE["epochs"], args.overrides, args.model, args.data)
    make_deterministic(0)
    n_train = args.train_images
    arrays, data = random_images(n_train, tuple(args.eval_images), device, cfg.data)
    uint8_bytes = sum(t.numel() for t in (data.train_images, data.val_images, data.test_images))
    resident_bytes = sum(t.numel() * t.element_size() for t in (data.train_images, data.val_images, data.test_images, data.train_labels, data.val_labels, data.test_labels))

    rows, figures = [], {"device": str(device), "threads": torch.get_num_threads(), "compile": args.compile, "train_images": n_train,
                         "repeats": args.repeats, "model": args.model, "data": args.data, "optimizer": args.optimizer, "scheduler": args.scheduler, "overrides": args.overrides}
    if not args.no_textbook:  # first, while the C library's allocator still has its defaults
        subset = data.train_indices  # the textbook trains on the same images, read from host memory
        x, y = arrays["x_train"][subset], arrays["y_train"][subset]
        textbook_windows = rates(device, {w: textbook_epoch(data, x, y, device, w, cfg) for w in map(int, args.workers.split(","))}, args.repeats)
        textbook = {w: statistics.median(speeds) for w, speeds in textbook_windows.items()}
        best_workers = max(textbook, key=textbook.get)
        rows += [(f"textbook, {w} workers (fp32)", speeds) for w, speeds in textbook_windows.items()]
        figures.update(textbook_img_s=textbook[best_workers], textbook_workers=best_workers)

    figures["keeps_freed_memory"] = keep_freed_memory()  # what setting up the machine for a run does (optqual/system/machine.py)
    if not args.no_textbook:  # the same textbook with that setting: how much of optqual's lead the setting alone makes
        kept = rates(device, {"kept": textbook_epoch(data, x, y, device, best_workers, cfg)}, args.repeats)["kept"]
        rows.append((f"textbook, {best_workers} workers, kept memory", kept))
        figures["textbook_kept_memory_img_s"] = statistics.median(kept)
    precisions = args.precisions.split(",")
    works = {}
    for precision in precisions:
        set_precision(precision)  # each work runs in its precision's float32 math (TF32 or not), set again before each call
        works["ceiling", precision] = ceiling(data, device, precision, args.compile, args.ceiling_steps, cfg)
        works["optqual epoch", precision] = optqual_epoch(data, device, precision, args.compile, cfg)
        works["eval val+test", precision] = evaluation(data, device, precision, args.compile, cfg)
        for ablation in ABLATIONS if args.ablate else ():
            works[f"epoch {ablation}", precision] = optqual_epoch(data, device, precision, args.compile, cfg, ablation)
        for variant in args.variants:
            variant_cfg = run_config(args.optimizer, args.scheduler, BASELINE["epochs"], [*args.overrides, *variant.split()], args.model, args.data)
            works[f"epoch, {variant}", precision] = optqual_epoch(data, device, precision, args.compile, variant_cfg)
    works = {(what, precision): in_precision(precision, work) for (what, precision), work in works.items()}
    windows = rates(device, works, args.repeats)
    speeds = {key: statistics.median(window_speeds) for key, window_speeds in windows.items()}
    rows += [(f"{what} ({precision})", window_speeds) for (what, precision), window_speeds in windows.items()]
    for precision in precisions:
        top, ours, ev = (speeds[what, precision] for what in ("ceiling", "optqual epoch", "eval val+test"))

        def per_round(what: str, base: str) -> list[float]:
            """`what`'s rate over `base`'s, round by round: adjacent windows, so the machine's drift cancels."""
            return [a / b for a, b in zip(windows[what, precision], windows[base, precision])]

        over_ceiling = per_round("optqual epoch", "ceiling")
        figures[precision] = {
            "ceiling_img_s": top, "optqual_img_s": ours, "eval_img_s": ev,
            "optqual_over_ceiling": statistics.median(over_ceiling), "optqual_over_ceiling_rounds": over_ceiling,
            "ablations_over_ceiling": {ablation: statistics.median(per_round(f"epoch {ablation}", "ceiling")) for ablation in ABLATIONS if args.ablate},
            "projected_baseline_s": projected_baseline_seconds(ours, ev),
            # each variant's epoch time over the run's
            "variants": {variant: {"img_s": speeds[f"epoch, {variant}", precision], "cost_rounds": per_round("optqual epoch", f"epoch, {variant}")}
                         for variant in args.variants},
        }
        for stats in figures[precision]["variants"].values():
            stats["cost"] = statistics.median(stats["cost_rounds"])

    if "fp32" in figures and "textbook_img_s" in figures:
        figures["optqual_over_textbook"] = figures["fp32"]["optqual_img_s"] / textbook[best_workers]
    if "fp32" in figures and "bf16" in figures:
        figures["bf16_over_fp32"] = figures["bf16"]["optqual_img_s"] / figures["fp32"]["optqual_img_s"]
        figures["bf16_over_fp32_rounds"] = [b / f for b, f in zip(windows["optqual epoch", "bf16"], windows["optqual epoch", "fp32"])]
    figures.update(
        peak_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        peak_gpu_mb=torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None,
        dataset_uint8_mb=uint8_bytes / 2**20, dataset_resident_mb=resident_bytes / 2**20,
        windows_img_s=dict(rows),  # every timed window: a median alone would hide a bimodal machine
    )

    # the range shows how much the shared machine's speed moved while a figure was taken
    print(f"{'measurement':<32}{'images/s':>12}{'windows: min-max':>20}")
    for name, speeds in rows:
        print(f"{name:<32}{statistics.median(speeds):>12.0f}{f'{min(speeds):.0f}-{max(speeds):.0f}':>20}")
    for precision in precisions:
        f = figures[precision]
        print(f"{precision}: optqual / ceiling {f['optqual_over_ceiling']:.2f} (rounds {', '.join(f'{r:.2f}' for r in f['optqual_over_ceiling_rounds'])});"
              f" projected 200-epoch baseline {f['projected_baseline_s'] / 60:.1f} min")
    for precision in precisions:
        for ablation, ratio in figures[precision]["ablations_over_ceiling"].items():
            print(f"{precision}: optqual epoch {ablation} / ceiling {ratio:.2f}")
        for variant, stats in figures[precision]["variants"].items():
            print(f"{precision}: {variant}: {stats['cost']:.2f}x the epoch's time (rounds {', '.join(f'{c:.2f}' for c in stats['cost_rounds'])})")
    if "optqual_over_textbook" in figures:
        print(f"optqual / textbook (fp32, textbook with {best_workers} workers): {figures['optqual_over_textbook']:.2f}")
    if "bf16_over_fp32" in figures:
        print(f"bf16 / fp32 (optqual epoch): {figures['bf16_over_fp32']:.2f}")
        print("  round by round:", ", ".join(f"{ratio:.2f}" for ratio in figures["bf16_over_fp32_rounds"]))
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
