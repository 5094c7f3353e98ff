"""Fresh run and sweep directories, claimed when a run or sweep really starts, and taken back when
a run is refused before it began.

The names come from conf/config.yaml's resolvers: `optqual_fresh_dir` (a run's or sweep's
directory: `path`, or `path_2`, `path_3`, ... when a run or sweep started in the same second
took it) and `optqual_job_dir` (a sweep job's directory, named by what varies:
optqual/runs/jobs.py). A name is only shown, and nothing created, until `start_claiming`
(optqual/launch/callbacks.py), so `--cfg hydra --resolve` writes nothing.
"""

import itertools
import os
from pathlib import Path

from omegaconf import OmegaConf

from optqual.config.schema import experiment_title
from optqual.files.layout import LOCK
from optqual.runs.jobs import job_dirname

_claimed: dict[str, str] = {}  # this process's claims: Hydra resolves the same dir more than once
_claiming = False  # until a run or sweep starts, names are only shown (`--cfg hydra --resolve`)
_made: list[Path] = []  # the folders made for them, in the order made: a run refused at once takes them back


def make_dirs(path: Path) -> None:
    """`mkdir -p path`, remembering the folders it made (`discard_unstarted` removes them when empty)."""
    missing = [folder for folder in (path, *path.parents) if not folder.exists()]
    path.mkdir(parents=True, exist_ok=True)
    _made.extend(reversed(missing))


def start_claiming() -> None:
    """From now on `fresh_dir` creates the directories it names."""
    global _claiming
    _claiming = True


def fresh_dir(path: str) -> str:
    """`path`, or `path_2`, `path_3`, ...: the first that does not exist yet, created at once.

    mkdir is atomic (on NFS too), so two runs or sweeps started in the same second
    never share a directory. Before `start_claiming`, `path` itself, and nothing is created.
    """
    key = os.path.abspath(path)  # the same relative path is another directory in another working directory
    if not _claiming:
        return path
    if key not in _claimed:
        base = Path(path)
        try:
            make_dirs(base.parent)
            for n in itertools.count(1):
                candidate = base if n == 1 else base.with_name(f"{base.name}_{n}")
                try:
                    candidate.mkdir()
                except FileExistsError:
                    continue
                _made.append(candidate)
                _claimed[key] = str(candidate)
                break
        except OSError:  # it cannot be created: check_writable says why, naming the key
            return path
    return _claimed[key]


def discard_unstarted(run_dir: Path) -> None:
    """Remove a run directory that holds nothing yet but its released lock (a launch writes its record
    only once accepted, optqual/launch/record.py), and the folders made for it that are empty now
    (outputs/runs/<date>/)."""
    if run_dir.is_dir() and {entry.name for entry in run_dir.iterdir()} <= {LOCK}:
        (run_dir / LOCK).unlink(missing_ok=True)
        run_dir.rmdir()
        for folder in reversed(_made):
            if folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()


def register_resolvers() -> None:
    """The resolvers conf/config.yaml uses to name run, sweep and job directories: what the run belongs
    to (optqual_experiment), then what varies."""
    if not OmegaConf.has_resolver("optqual_job_dir"):
        OmegaConf.register_new_resolver("optqual_job_dir", job_dirname)
    if not OmegaConf.has_resolver("optqual_fresh_dir"):
        OmegaConf.register_new_resolver("optqual_fresh_dir", fresh_dir, use_cache=True)
    if not OmegaConf.has_resolver("optqual_experiment"):
        OmegaConf.register_new_resolver("optqual_experiment",
                                        lambda name, model, data: experiment_title(name, {"model": model, "data": data}))
