"""A sweep's jobs as its command line defines them, and the names of their directories.

Used while a sweep starts (the job directory resolver of conf/config.yaml, the job count of a
parallel sweep) and by the tools that read sweeps back. A sweep's jobs are expanded as Hydra's
basic sweeper expands them, once, when the sweep starts (optqual/launch/callbacks.py, with
Hydra's config loader), and saved in its directory: a `glob(...)` sees conf/ as it was then,
and the tools never expand it again.
"""

import hashlib
import itertools
from pathlib import Path

from hydra.core.config_loader import ConfigLoader
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override
from omegaconf import DictConfig, ListConfig, OmegaConf

from optqual.errors import ConfigError
from optqual.files.atomic import write_text
from optqual.files.layout import JOBS, MULTIRUN

MAX_NAME = 120  # keep job directory names far below file system limits


def command_line(hydra_cfg: DictConfig, config_loader: ConfigLoader | None = None) -> list[Override]:
    """A sweep's overrides as its sweeper reads them: `hydra.sweeper.params`, then the command line.
    Only expanding a `glob(...)` of a config group needs the config loader."""
    params = OmegaConf.select(hydra_cfg, "sweeper.params") or {}
    given = [f"{key}={value}" for key, value in params.items()] + list(hydra_cfg.overrides.task)
    return OverridesParser.create(config_loader=config_loader).parse_overrides(given)


def knows_jobs_up_front(hydra_cfg: DictConfig) -> bool:
    """Hydra's basic sweeper knows every job before the first starts; Optuna and the like do not."""
    return str(OmegaConf.select(hydra_cfg, "sweeper._target_")).endswith(".BasicSweeper")


def job_overrides(hydra_cfg: DictConfig, config_loader: ConfigLoader) -> list[list[str]]:
    """Every job's overrides, in the basic sweeper's order: the product of each key's values
    (lists, range, choice, glob), the first key varying slowest; a key given twice keeps its
    first place and its last values. Public Hydra API only: the parsed overrides expand themselves."""
    values: dict[str, list[str]] = {}
    for override in command_line(hydra_cfg, config_loader):
        key = override.get_key_element()
        if not override.is_sweep_override():
            values[key] = [f"{key}={override.get_value_element_as_str()}"]
        elif override.is_discrete_sweep():
            values[key] = [f"{key}={value}" for value in override.sweep_string_iterator()]
        else:
            raise ConfigError(f"{override.input_line}: the basic sweeper runs lists, range(), choice() and glob(); "
                              "interval() needs a sweeper that samples (such as Optuna's)")
    return [list(job) for job in itertools.product(*values.values())]


def save_jobs(sweep_dir: Path, jobs: list[list[str]]) -> None:
    sweep_dir.mkdir(parents=True, exist_ok=True)
    write_text(sweep_dir / JOBS, OmegaConf.to_yaml(jobs))


def expected_overrides(sweep_dir: Path) -> list[list[str]]:
    """Every job's overrides, as saved when the sweep started ([] when its sweeper does not know them)."""
    saved = sweep_dir / JOBS
    return [list(job) for job in OmegaConf.load(saved)] if saved.is_file() else []


def swept_keys(sweep_dir: Path) -> set[str]:
    """Keys given several values on the sweep's command line."""
    saved = sweep_dir / MULTIRUN
    if not saved.is_file():
        return set()
    return {o.key_or_group for o in command_line(OmegaConf.load(saved).hydra) if o.is_sweep_override()}


def job_dirname(sweep_dir: str, job_overrides: ListConfig, job_num: int) -> str:
    """A sweep job's directory: the overrides that vary across the sweep, e.g. `optimizer=adamw,seed=1`.

    Overrides shared by every job (data.path=..., epochs=15) are left to .hydra/overrides.yaml.
    Unlike Hydra's `override_dirname` the name is never empty (`job0` for a sweep in which
    nothing varies) and stays one path component even when a value holds '/'.
    """
    overrides = OverridesParser.create().parse_overrides(list(job_overrides))
    varying = swept_keys(Path(sweep_dir))
    shown = [o for o in overrides if o.key_or_group in varying]  # none vary: job<N>, the rest is in overrides.yaml
    name = ",".join(sorted(f"{o.get_key_element()}={o.get_value_element_as_str()}" for o in shown))
    name = name.replace("/", "_").replace("\\", "_")
    if not name or name in {".", ".."}:
        return f"job{job_num}"
    if len(name) > MAX_NAME:
        name = f"{name[:MAX_NAME]}-{hashlib.sha1(name.encode()).hexdigest()[:8]}"
    return name


def override_values(overrides: list[str]) -> dict[str, str]:
    """`key` (with its +/~ prefix) to value, as Hydra parses the overrides."""
    return {o.get_key_element(): o.get_value_element_as_str() for o in OverridesParser.create().parse_overrides(overrides)}
