"""A finished run read back as the solution its optimizer found: the model with its weights,
the weights it started from, and the run's own data, for the measures of optqual/analysis/.

The model is rebuilt from the run's saved config and put in eval mode; the data is read
through the run's own data option, relative paths resolved from the directory the run was
started in, and the split checked against the run's split_indices.npz. Two fixed sets
serve every measure and every run alike: the probe (the first `probe_size` test images)
and the train subset (a seeded sample of the run's training images, unaugmented).
"""

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import torch
from omegaconf import DictConfig

from optqual.data.images import ImageData
from optqual.errors import ConfigError
from optqual.files.layout import FINAL, INITIAL
from optqual.losses import LossFunction, plain_loss
from optqual.runs.reader import RunDirError
from optqual.runs.results import load_run


class NotAnalyzable(ValueError):
    """A run directory whose solution cannot be analyzed (incomplete, diverged, no weights); says why."""


@dataclass
class Solution:
    run_dir: Path
    config: DictConfig  # the run's composed config
    metrics: dict  # the run's metrics.json
    model: torch.nn.Module  # eval mode, the analyzed weights loaded
    initial: dict[str, torch.Tensor] | None  # initial_model.pt, when the run saved one
    data: ImageData
    device: torch.device
    weights_sha256: str  # of the analyzed weights file: a result computed on other weights is stale
    weights: str = FINAL  # the name of the analyzed weights (<weights>_model.pt in the run directory)
    memo: dict = field(default_factory=dict)  # what pairwise measures compute once per run (kernels, predictions)

    @classmethod
    def load(cls, run_dir: str | Path, weights: str, device: torch.device) -> "Solution":
        """The run's model with its weights called `weights` (final, best, ema, ...: `<weights>_model.pt`)."""
        run_dir = Path(run_dir)
        run = load_run(run_dir)
        job = run.job
        if not job.status.has_results:
            raise NotAnalyzable(f"{run_dir}: status {job.status}, no result to analyze")
        path = job.weights(weights)
        if not path.is_file():
            raise NotAnalyzable(f"{run_dir}: no {path.name} (its weights: {', '.join(run.weights()) or 'none'})")
        try:
            data = run.data(device)
        except RunDirError as err:
            raise NotAnalyzable(str(err)) from err
        config = job.config
        model = run.model(weights)
        initial_path = job.weights(INITIAL)
        initial = torch.load(initial_path, map_location="cpu", weights_only=True) if initial_path.is_file() else None
        model = model.to(device, memory_format=torch.channels_last).eval()  # the layout the run trained in, fastest forward
        return cls(run_dir, config, job.metrics, model, initial, data, device, hashlib.sha256(path.read_bytes()).hexdigest(), weights)

    @property
    def name(self) -> str:
        return self.run_dir.name

    def probe(self, size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The first `size` test images, normalized as in evaluation, and their labels."""
        if size > len(self.data.test_labels):
            raise ConfigError(f"probe_size={size}: larger than the test set ({len(self.data.test_labels)} images)")
        return next(self.data.eval_batches("test", size))

    def train_subset(self, size: int, seed: int, chunk: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """A seeded sample of `size` of the run's training images (all of them if fewer), unaugmented
        and normalized, in chunks of `chunk`; the same sample for every run that shares the split."""
        return self.data.train_sample(size, seed, chunk)

    @property
    def loss(self) -> LossFunction:
        """The run's plain loss (optqual/losses.py): cross-entropy, or the square loss of a `loss=mse` run."""
        return plain_loss(self.config.loss)


def check_comparable(a: Solution, b: Solution) -> None:
    """Both solutions are the same architecture, tested on the same images."""
    shapes_a = {key: tuple(value.shape) for key, value in a.model.state_dict().items()}
    shapes_b = {key: tuple(value.shape) for key, value in b.model.state_dict().items()}
    if shapes_a != shapes_b:
        differing = sorted(key for key in shapes_a.keys() | shapes_b.keys() if shapes_a.get(key) != shapes_b.get(key))
        raise ConfigError(f"{a.run_dir} and {b.run_dir} have different architectures ({len(differing)} tensors differ, "
                          f"first {differing[0]}: {shapes_a.get(differing[0])} vs {shapes_b.get(differing[0])})")
    if not torch.equal(a.data.test_labels, b.data.test_labels):
        raise ConfigError(f"{a.run_dir} and {b.run_dir} were tested on different test sets")
