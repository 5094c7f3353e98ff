"""The record of a launch, written only once the launch is accepted: .hydra/ (the composed config,
Hydra's own settings, the command-line overrides) and launch.log.

Hydra writes neither here (conf/config.yaml: `hydra.output_subdir: null`, and the job log config
`hydra/job_logging: optqual`, to the console only). It would write them when the job starts,
before optqual has claimed the directory or read its checkpoint, so a launch refused there
(another config into a finished run's directory, a run another process trains) rewrote the
record of the run it was refused for. optqual writes them once the run is accepted: a fresh
directory gets its record all at once (a directory renamed into place, so a kill leaves all of
it or none); a directory that holds a run keeps its record, and a launch into it must be that run.
"""

import contextlib
import logging
import logging.handlers
import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable, Iterator

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from optqual.config.diff import config_diff
from optqual.config.upgrade import upgrade
from optqual.errors import ConfigError
from optqual.files.layout import HYDRA_DIR, LOG

LOG_FORMAT = "[%(asctime)s][%(name)s][%(levelname)s] - %(message)s"  # Hydra's own, as on the console


def composed(path: Path) -> dict:
    """A saved composed config (.hydra/config.yaml), as this optqual composes it, resolved."""
    return OmegaConf.to_container(OmegaConf.create(upgrade(OmegaConf.to_container(OmegaConf.load(path)))), resolve=True)


PLACEMENT_KEYS = {"jobs_per_gpu"}  # where a run's job is placed, not what it computes: a relaunch may change it


def check_same_run(run_dir: Path, saved: dict, cfg: DictConfig) -> None:
    """Refuse, in one line, a launch whose config is not the one `run_dir`'s run was started with."""
    changed = [change for change in config_diff(saved, OmegaConf.to_container(cfg, resolve=True)) if change[0] not in PLACEMENT_KEYS]
    if changed:
        listed = ", ".join(f"{key}: {before!r} -> {now!r}" for key, before, now in changed[:3])
        raise ConfigError(f"{run_dir} holds a run of another config ({listed}): continue it with "
                          f"python -m optqual resume {run_dir}, or launch into another directory")


def write_record(run_dir: Path, cfg: DictConfig) -> None:
    """`run_dir`/.hydra of this launch, as Hydra writes it, all at once."""
    temp = Path(tempfile.mkdtemp(dir=run_dir, prefix=f"{HYDRA_DIR}.", suffix=".tmp"))  # a kill's leftover: files/atomic.remove_leftovers
    try:
        for name, node in (("config.yaml", cfg), ("hydra.yaml", HydraConfig.instance().cfg),
                           ("overrides.yaml", HydraConfig.get().overrides.task)):
            with open(temp / name, "w", encoding="utf-8") as file:
                file.write(OmegaConf.to_yaml(node))
                file.flush()
                os.fsync(file.fileno())
        os.chmod(temp, 0o755)  # mkdtemp makes it 0700
        temp.rename(run_dir / HYDRA_DIR)
    except BaseException:
        shutil.rmtree(temp, ignore_errors=True)
        raise


@contextlib.contextmanager
def run_log() -> Iterator[Callable[[Path], None]]:
    """The job's log lines from its start, kept until `write_in(run_dir)` once the launch is accepted,
    then written with all that follow to `run_dir`/launch.log (appended: a resumed run continues it)."""
    root = logging.getLogger()
    kept = logging.handlers.MemoryHandler(capacity=1_000_000, flushLevel=logging.CRITICAL + 1)  # flushed only by write_in
    root.addHandler(kept)
    written: list[logging.Handler] = []

    def write_in(run_dir: Path) -> None:
        file = logging.FileHandler(run_dir / LOG)
        file.setFormatter(logging.Formatter(LOG_FORMAT))
        kept.setTarget(file)
        kept.flush()
        root.removeHandler(kept)
        root.addHandler(file)
        written.append(file)

    try:
        yield write_in
    finally:
        for handler in (kept, *written):
            root.removeHandler(handler)
            handler.close()
