"""Per-epoch metrics to Trackio, stored locally (offline) under `trackio.dir`."""

import contextlib
import os
from pathlib import Path
from typing import Callable, Iterator

from omegaconf import DictConfig, OmegaConf


@contextlib.contextmanager
def trackio_run(cfg: DictConfig, name: str, group: str, run_dir: Path, sweep: str | None) -> Iterator[Callable[[dict], None]]:
    """Open a Trackio run and yield its `log(record)`; the run is finished even if training fails.

    The run's config is the composed config plus `run_dir` (absolute) and `sweep` (the sweep's
    name, None for a single run), so the dashboard can filter one sweep's runs.
    With `trackio.enabled=false` the yielded function does nothing.
    """
    if not cfg.trackio.enabled:
        yield lambda record: None
        return
    # Trackio reads its data directory from the environment when it is imported
    os.environ["TRACKIO_DIR"] = str(Path(cfg.trackio.dir).resolve())
    import trackio

    config = OmegaConf.to_container(cfg, resolve=True)
    config.update(run_dir=str(run_dir.resolve()), sweep=sweep)
    trackio.init(project=cfg.experiment_name, name=name, group=group, config=config, auto_log_cpu=False, auto_log_gpu=False)
    try:
        yield lambda record: trackio.log({key: value for key, value in record.items() if key != "epoch"}, step=record["epoch"])
    finally:
        trackio.finish()
