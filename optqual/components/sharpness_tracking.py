"""The `track` group: the sharpness of the training loss during training, against the stability
threshold of the run's own optimizer (`track.sharpness.every=50`).

Before every `every`-th update u (u = 0, every, 2 every, ...) it estimates, at the weights the
update will move, the top eigenvalue of the training loss's Hessian and, for an optimizer with a
diagonal preconditioner (Adam, AdamW, RMSprop), the top eigenvalue of P^-1 H with the P that
update will apply; and the threshold that the optimizer's current learning rate and momentum
imply (optqual/optim/stability.py: 2 / lr for gradient descent, 38 / lr for Adam at beta1 = 0.9).
`ratio` is the sharpness the optimizer is regulated by over its threshold: about 1 at the edge of
stability (Cohen et al. 2021; 2022).

The loss is the run's plain loss (optqual/losses.py) over a fixed, seeded sample of `subset`
training images (the whole training set when it is smaller, as under `data.full_batch`: then
it is the loss gradient descent descends), unaugmented, with the model in eval mode (batch norm
uses its running statistics, dropout is off), as the end-point measure of `analyze` takes it:
one fixed function of the weights. Lanczos starts from the previous estimate's eigenvector, so
an estimate takes a few Hessian-vector products (optqual/curvature.py).

Training is untouched: the products run on a copy of the model, draw from no random stream of
the run, and leave batch-norm statistics and the optimizer's state as they were; the weights and
history of a run are bit-identical with tracking on and off (tests/test_sharpness_tracking.py).
The estimates go to `sharpness.csv` (a row each, written at every epoch's end), the epoch's last
one to history.csv and the dashboards (`sharpness.hessian`, `.preconditioned`, `.threshold`,
`.ratio`), and `sharpness.png` draws them when
training ends. The warm starts are part of the training state, so a resumed run continues them
exactly.
"""

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import torch
from omegaconf import DictConfig
from torch import nn

from optqual.components.extension import Extension
from optqual.components.registry import BuildContext, Component, register
from optqual.curvature import HessianVectorProducts, lanczos_top_eigenvalues
from optqual.data.images import ImageData
from optqual.files.atomic import write_csv
from optqual.files.figures import pyplot, save_figure
from optqual.files.layout import SHARPNESS, SHARPNESS_FIGURE
from optqual.losses import LossFunction, plain_loss
from optqual.optim.stability import PRECONDITIONED, stability
from optqual.ranges import within


@dataclass
class SharpnessTrackSchema:
    every: Optional[int] = within(None, "[1, inf)")  # updates between estimates; null: off
    subset: int = within(1024, "[1, inf)")  # training images the loss is taken over (all of them when fewer)
    seed: int = within(0, "[0, 4294967296)")  # which images: the same sample for every run that shares the split
    max_products: int = within(20, "[2, inf)")  # Hessian-vector products one eigenvalue may take
    tolerance: float = within(1e-3, "(0, 1)")  # relative residual at which Lanczos stops (bounds the relative error)
    chunk: int = within(64, "[1, inf)")  # images per product chunk: speed and memory, not results (64: the fastest on a CPU)


@dataclass
class TrackSchema:
    sharpness: SharpnessTrackSchema = field(default_factory=SharpnessTrackSchema)


SCHEMAS = {"track": TrackSchema}


class SharpnessTracker(Extension):
    """Estimates before every `every`-th update, kept as rows and written to sharpness.csv."""

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer, data: ImageData, loss: LossFunction, run_dir: Path,
                 every: int, subset: int, seed: int, max_products: int, tolerance: float, chunk: int):
        self.model, self.optimizer, self.loss, self.run_dir = model, optimizer, loss, run_dir
        self.every, self.max_products, self.tolerance, self.seed = every, max_products, tolerance, seed
        self.chunks = data.train_sample(subset, seed, chunk)
        self.updates = 0  # optimizer updates done
        self.rows: list[dict] = []  # one per estimate
        self.starts: dict[str, torch.Tensor] = {}  # per operator: the last eigenvector, where the next Lanczos starts
        self.written = 0  # rows in sharpness.csv

    def on_batch(self, images: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Before the update: the weights it moves, the learning rate and preconditioner it applies."""
        if self.updates % self.every == 0:
            started = time.perf_counter()
            row = self.estimate()
            self.rows.append(row | {"seconds": time.perf_counter() - started})
        self.updates += 1
        return images, targets

    def top_eigenvalue(self, operator: str, preconditioner: list[torch.Tensor] | None) -> tuple[float, int]:
        hvp = HessianVectorProducts(self.model, self.chunks, self.loss, preconditioner)
        generator = torch.Generator(device=self.chunks[0][0].device).manual_seed(self.seed)  # the first start only
        top = lanczos_top_eigenvalues(hvp, hvp.dim, 1, self.max_products, self.tolerance, generator, start=self.starts.get(operator))
        if torch.isfinite(top["vector"]).all():
            self.starts[operator] = top["vector"]
        return top["eigenvalues"][0], top["products"]

    def estimate(self) -> dict:
        regime = stability(self.optimizer)
        sharpness, products = self.top_eigenvalue("hessian", None)
        row = {"update": self.updates, "lr": self.optimizer.param_groups[0]["lr"], "sharpness": sharpness,
               "preconditioned_sharpness": math.nan, "threshold": regime.threshold, "regulated_by": regime.regulated or "",
               "ratio": math.nan, "products": products}
        if regime.regulated == PRECONDITIONED and regime.preconditioner is not None:
            trained = [p for p in self.model.parameters() if p.requires_grad]
            row["preconditioned_sharpness"], more = self.top_eigenvalue(PRECONDITIONED, [regime.preconditioner[p] for p in trained])
            row["products"] += more
        if regime.regulated is not None:
            row["ratio"] = row["preconditioned_sharpness" if regime.regulated == PRECONDITIONED else "sharpness"] / regime.threshold
        return row

    def on_epoch_end(self, record: dict) -> bool:
        new = self.rows[self.written :]
        for row in new:
            row["epoch"] = record["epoch"]
        if new:
            last = new[-1]
            record.update({"sharpness.hessian": last["sharpness"], "sharpness.preconditioned": last["preconditioned_sharpness"],
                           "sharpness.threshold": last["threshold"], "sharpness.ratio": last["ratio"]})
            write_csv(self.run_dir / SHARPNESS, self.rows)
            self.written = len(self.rows)
        return False

    def results(self) -> dict:
        """sharpness.png, and the tracking's figures for metrics.json."""
        if self.rows:
            draw(self.rows, type(self.optimizer).__name__, stability(self.optimizer).rule, self.run_dir / SHARPNESS_FIGURE)
        return {"sharpness_tracking": {"estimates": len(self.rows), "products": sum(row["products"] for row in self.rows),
                                       "threshold_rule": stability(self.optimizer).rule}}

    def state_dict(self) -> dict:
        return {"updates": self.updates, "rows": self.rows, "starts": self.starts, "written": self.written}

    def load_state_dict(self, state: dict) -> None:
        self.updates, self.rows, self.starts, self.written = state["updates"], state["rows"], state["starts"], state["written"]


def draw(rows: list[dict], optimizer: str, rule: str, path: Path) -> None:
    """Each tracked sharpness over the updates, beside the threshold it is regulated by."""
    plt = pyplot()
    preconditioned = any(math.isfinite(row["preconditioned_sharpness"]) for row in rows)
    figure, axes = plt.subplots(1, 2 if preconditioned else 1, figsize=(11 if preconditioned else 6, 4.2), squeeze=False, layout="constrained")
    axes = axes[0]
    updates = [row["update"] for row in rows]
    regulated = rows[-1]["regulated_by"]
    panels = [("sharpness", "lambda_max(H)", "hessian")] + ([("preconditioned_sharpness", "lambda_max(P^-1 H)", PRECONDITIONED)]
                                                             if preconditioned else [])
    for axis, (key, label, operator) in zip(axes, panels):
        axis.plot(updates, [row[key] for row in rows], marker=".", label=label)
        if regulated == operator:
            axis.plot(updates, [row["threshold"] for row in rows], "--", color="black", label=f"stability threshold, now {rule}")
        axis.set(xlabel="optimizer update", ylabel=label, title=f"{label}: the {'regulated ' if regulated == operator else ''}sharpness")
    save_figure(figure, axes, f"Sharpness during training ({optimizer}), estimated before every {updates[1] - updates[0] if len(updates) > 1 else 1}th update", path)


def build_tracker(node: DictConfig, context: BuildContext) -> SharpnessTracker | None:
    options = node.sharpness
    if options.every is None:
        return None
    return SharpnessTracker(context.model, context.optimizer, context.data, plain_loss(context.config.loss), context.run_dir, **options)


register(Component(
    name="track",
    summary="the training loss's sharpness (and Adam's preconditioned sharpness) every N updates, against the optimizer's threshold",
    order=35,  # on_batch, after the batch is mixed: before the update whose weights, lr and preconditioner it measures
    schemas=SCHEMAS,
    default="default",
    build=build_tracker,
    extension=SharpnessTracker,
    examples={"track_sharpness": ["track.sharpness.every=4", "track.sharpness.subset=64"]},
))
