"""Per-epoch metrics to Trackio, stored locally (offline) under `trackio.dir`."""

import contextlib
import os
from pathlib import Path
from typing import Callable, Iterator

from omegaconf import DictConfig, OmegaConf

from optqual.errors import ConfigError
from optqual.runs.naming import MULTIRUN


def sweep_of(run_dir: Path) -> str | None:
    """The name of the sweep a run directory belongs to (its parent holds multirun.yaml), or None."""
    return run_dir.parent.name if (run_dir.parent / MULTIRUN).is_file() else None


@contextlib.contextmanager
def trackio_run(cfg: DictConfig, group: str, run_dir: Path, resume: bool) -> Iterator[Callable[[dict], None]]:
    """Open a Trackio run and yield its `log(record)`; the run is finished even if training fails.

    The run is named after its directory (`<sweep>/<job>` in a sweep), so every run has its
    own name and a resumed run (`resume`) appends to the one it started. Its config is the
    composed config plus `run_dir` (absolute) and `sweep` (the sweep's name, None for a
    single run), so the dashboard can filter one sweep's runs.
    With `trackio.enabled=false` the yielded function does nothing.
    """
    if not cfg.trackio.enabled:
        yield lambda record: None
        return
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
        yield lambda record: trackio.log({key: value for key, value in record.items() if key != "epoch"}, step=record["epoch"])
    finally:
        trackio.finish()
