"""Per-epoch metrics to the dashboards: Trackio (default; local, offline, under `trackio.dir`)
and TensorBoard (`tensorboard.enabled`; event files under the run's `tensorboard/`), either,
both or neither, each getting the same scalars.

Dashboards group charts into sections by the name's first `/` part and order sections
alphabetically, so the names put what a researcher reads first on top: `accuracy/` (train,
val, test side by side), `loss/` (train, train_ce, val, test), `lr/<group>`, then
`per_layer_grad_norm/<layer>` and `run/` (batch size, epoch seconds, ...). metrics.json and
history.csv keep their flat keys (`test_acc`, `grad_norm.<layer>`).
"""

import contextlib
import math
import os
from pathlib import Path
from typing import Callable, Iterator

from omegaconf import DictConfig, OmegaConf

from optqual.errors import ConfigError
from optqual.runs.naming import MULTIRUN

TENSORBOARD_DIR = "tensorboard"  # inside the run directory
Log = Callable[[dict], None]


def dashboard_name(key: str) -> str:
    """A history key's chart name: `val_acc` -> `accuracy/val`, `lr.decay` -> `lr/decay`, ..."""
    for flat, section in (("lr.", "lr"), ("grad_norm.", "per_layer_grad_norm")):
        if key.startswith(flat):
            return f"{section}/{key[len(flat):]}"
    split, _, metric = key.rpartition("_")
    if split and metric in ("acc", "loss"):
        return f"{'accuracy' if metric == 'acc' else 'loss'}/{split}"
    return "loss/train_ce" if key == "train_ce" else f"run/{key}"


def scalars(record: dict) -> dict[str, float]:
    """The record's numbers under their dashboard names (the epoch is the step, not a chart)."""
    return {dashboard_name(key): value for key, value in record.items()
            if key != "epoch" and isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)}


def sweep_of(run_dir: Path) -> str | None:
    """The name of the sweep a run directory belongs to (its parent holds multirun.yaml), or None."""
    return run_dir.parent.name if (run_dir.parent / MULTIRUN).is_file() else None


@contextlib.contextmanager
def trackio_run(cfg: DictConfig, group: str, run_dir: Path, resume: bool) -> Iterator[Log]:
    """Open a Trackio run and yield its `log(record)`; the run is finished even if training fails.

    The run is named after its directory (`<sweep>/<job>` in a sweep), so every run has its
    own name and a resumed run (`resume`) appends to the one it started. Its config is the
    composed config plus `run_dir` (absolute) and `sweep` (the sweep's name, None for a
    single run), so the dashboard can filter one sweep's runs.
    """
    # Trackio reads its data directory from the environment once, when it is imported
    wanted = Path(cfg.trackio.dir).resolve()
    os.environ["TRACKIO_DIR"] = str(wanted)
    import trackio
    import trackio.utils

    if Path(trackio.utils.TRACKIO_DIR).resolve() != wanted:  # only when runs share one process
        raise ConfigError(f"trackio.dir={cfg.trackio.dir}: this process already logs to {trackio.utils.TRACKIO_DIR}; "
                          "Trackio takes one directory per process")

    config = OmegaConf.to_container(cfg, resolve=True)
    sweep = sweep_of(run_dir)
    config.update(run_dir=str(run_dir.resolve()), sweep=sweep)
    name = run_dir.name if sweep is None else f"{sweep}/{run_dir.name}"
    trackio.init(project=cfg.experiment_name, name=name, group=group, config=config, resume="allow" if resume else "never",
                 auto_log_cpu=False, auto_log_gpu=False)
    try:
        yield lambda record: trackio.log(scalars(record), step=record["epoch"])
    finally:
        trackio.finish()


@contextlib.contextmanager
def tensorboard_run(run_dir: Path, resume: bool, epochs_done: int) -> Iterator[Log]:
    """A TensorBoard writer in the run's `tensorboard/`; a resumed run first drops what was logged
    after its checkpoint (`purge_step`), so no epoch appears twice."""
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(str(run_dir / TENSORBOARD_DIR), purge_step=epochs_done + 1 if resume else None)

    def log(record: dict) -> None:
        for name, value in scalars(record).items():
            writer.add_scalar(name, value, global_step=record["epoch"])
        writer.flush()

    try:
        yield log
    finally:
        writer.close()


@contextlib.contextmanager
def tracking(cfg: DictConfig, group: str, run_dir: Path, resume: bool, epochs_done: int) -> Iterator[Log]:
    """`log(record)` to every dashboard the config turns on (Trackio, TensorBoard, both, neither)."""
    with contextlib.ExitStack() as stack:
        logs = []
        if cfg.trackio.enabled:
            logs.append(stack.enter_context(trackio_run(cfg, group, run_dir, resume)))
        if cfg.tensorboard.enabled:
            logs.append(stack.enter_context(tensorboard_run(run_dir, resume, epochs_done)))

        def log_everywhere(record: dict) -> None:
            for log in logs:
                log(record)

        yield log_everywhere
