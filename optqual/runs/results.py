"""The Python API for finished runs and sweeps: `optqual.load_run(path)` and `optqual.load_sweep(path)`.

    import optqual
    sweep = optqual.load_sweep("outputs/multirun/2026-12-07/10-00-00_mlp_mnist")
    sweep.groupby("optimizer").test_acc.agg(["mean", "std"])
    run = optqual.load_run(sweep.path[0])
    run.history.plot(x="epoch", y=["train_loss", "val_loss"])
    model = run.model("final")                   # the run's model, its final weights loaded, on the CPU
    run.evaluate("final")                        # {"loss": ..., "acc": ...} on its test set: its own test_acc

Both read through optqual/runs/reader.py, the reader every tool uses, so a notebook sees a
run exactly as `summarize` does: its status (a killed run reads `stopped`), the config it was
built with, and its weights. A run's model is built from its resolved config and the data's
facts metrics.json recorded, so it needs neither the data nor a GPU; `data()` reads the run's
own data again (relative paths from the directory the run was started in).
"""

import functools
import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from omegaconf import DictConfig, OmegaConf

from optqual.data.images import ImageData
from optqual.engine.loop import EVAL_BATCH_SIZE, evaluate
from optqual.errors import ConfigError, build
from optqual.files.layout import ANALYSIS_DIR, FINAL, SHARPNESS, SPLIT
from optqual.losses import plain_loss
from optqual.models import build_model
from optqual.runs.reader import Job, RunDirError, config_columns, read_run, read_sweep
from optqual.status import RunStatus


@functools.lru_cache(maxsize=4)
def read_data(data_yaml: str, device: str) -> ImageData:
    """The dataset of a data config (as YAML, paths absolute), read once per process and device."""
    return build(OmegaConf.create(data_yaml), "data", device=torch.device(device))


def absolute_paths(data: DictConfig, started_in: Path) -> DictConfig:
    """`root` and `path` of a data option as the run saw them: relative to where it was started."""
    resolved = data.copy()
    for key in ("root", "path"):
        if key in resolved and not Path(resolved[key]).is_absolute():
            resolved[key] = str((started_in / resolved[key]).resolve())
    return resolved


class LoadedRun:
    """A run directory, read: what it was built with, what it recorded, and its weights as models."""

    def __init__(self, job: Job):
        self.job = job
        self.path: Path = job.path
        self.name: str = job.name

    def __repr__(self) -> str:
        return f"LoadedRun({str(self.path)!r}, status={self.status})"

    @property
    def config(self) -> DictConfig:
        """The config the run was built with, resolved (resolved_config.yaml)."""
        return self.job.config

    @property
    def metrics(self) -> dict:
        """metrics.json: its results, how it ended, and the facts of its data and machine."""
        return self.job.metrics

    @property
    def status(self) -> RunStatus:
        """completed, stopped_early, diverged, failed, interrupted, stopped (killed), running, ..."""
        return self.job.status

    @functools.cached_property
    def history(self) -> pd.DataFrame:
        """history.csv, a row per epoch (NaN where a column is empty, e.g. epochs without validation)."""
        rows = self.job.history()
        return pd.DataFrame(rows, dtype=float).astype({"epoch": int}) if rows else pd.DataFrame()

    @functools.cached_property
    def sharpness(self) -> pd.DataFrame:
        """sharpness.csv, a row per estimate during training (`track.sharpness.every`): the update,
        the lr, lambda_max(H), Adam's lambda_max(P^-1 H), the optimizer's threshold and their ratio;
        empty when the run tracked none."""
        path = self.path / SHARPNESS
        return pd.read_csv(path) if path.is_file() else pd.DataFrame()

    def analysis(self) -> dict[str, Any]:
        """The results of `python -m optqual analyze` on this run: {measure: result}."""
        results = {}
        for path in sorted((self.path / ANALYSIS_DIR).glob("*.json")):
            try:
                results[path.stem] = json.loads(path.read_text())["result"]
            except (OSError, ValueError, KeyError, TypeError) as err:
                raise RunDirError(f"{path}: cannot read it ({type(err).__name__}: {err})") from None
        return results

    def weights(self) -> list[str]:
        """The names of the weights the run saved (final, initial, best, ema, ...)."""
        return sorted(path.name.removesuffix("_model.pt") for path in self.path.glob("*_model.pt"))

    def model(self, weights: str = FINAL) -> torch.nn.Module:
        """The run's model with its weights called `weights` loaded, on the CPU, in eval mode."""
        path = self.job.weights(weights)
        if not path.is_file():
            raise RunDirError(f"{self.path}: no {path.name} (its weights: {', '.join(self.weights()) or 'none'})")
        model = build_model(self.config.model, self.metrics.get("data") or {})
        model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        return model.eval()

    def data(self, device: str | torch.device = "cpu") -> ImageData:
        """The run's own data, split as it was for the run, on `device`."""
        started_in = Path(self.job.hydra.runtime.cwd)
        try:
            data = read_data(OmegaConf.to_yaml(absolute_paths(self.config.data, started_in)), str(device))
        except ConfigError as err:
            raise RunDirError(f"{self.path}: its data cannot be read: {err}") from err
        with np.load(self.path / SPLIT) as split:
            if not (np.array_equal(split["train"], data.train_indices) and np.array_equal(split["val"], data.val_indices)):
                raise RunDirError(f"{self.path}: the data no longer splits as it did for the run ({SPLIT} differs)")
        return data

    def evaluate(self, weights: str = FINAL, split: str = "test", device: str | torch.device = "cpu") -> dict[str, float]:
        """Mean loss and accuracy (a fraction) of the weights on `split` (test, val or train), in the
        run's precision: for the final weights on the test set, the run's own test_loss and test_acc."""
        data = self.data(device)
        model = self.model(weights).to(device, memory_format=torch.channels_last)  # the layout the run evaluated in
        with torch.no_grad():
            return evaluate(model, data.eval_batches(split, EVAL_BATCH_SIZE), self.config.precision, plain_loss(self.config.loss))


def load_run(path: str | Path) -> LoadedRun:
    """The run in the directory `path` (one launched by `python launch.py` or a job of a sweep)."""
    return LoadedRun(read_run(path))


def scalars(prefix: str, value: Any) -> dict[str, Any]:
    """The numbers, strings and booleans of a nested result, as `prefix.key.subkey` columns."""
    if isinstance(value, dict):
        return {name: scalar for key, item in value.items() for name, scalar in scalars(f"{prefix}.{key}", item).items()}
    return {prefix: value} if isinstance(value, (int, float, str, bool)) or value is None else {}


def load_sweep(path: str | Path) -> pd.DataFrame:
    """A row per job of the sweep (or the one run) in `path`: `job`, `path`, the config keys that
    vary (`optimizer` and `seed` always), the scalars of metrics.json (`epochs`: those trained),
    `status` as summarize reads it, and the analysis results (`<measure>.<key>`) where the run
    was analyzed (`analysis_error` names a result file that cannot be read). A pending job has
    only its keys."""
    jobs = read_sweep(path)
    keys = config_columns(jobs)
    rows = []
    for job, columns in zip(jobs, keys):
        row = {"job": job.name, "path": str(job.path) if job.path else None, **columns}
        row |= {key: value for key, value in job.metrics.items() if not isinstance(value, (dict, list))} | {"status": str(job.status)}
        if job.path is not None and job.unreadable is None:
            try:
                for measure, result in LoadedRun(job).analysis().items():
                    row |= scalars(measure, result)
            except RunDirError as err:  # one damaged result hides none of the others' rows
                row["analysis_error"] = str(err)
        rows.append(row)
    return pd.DataFrame(rows)
