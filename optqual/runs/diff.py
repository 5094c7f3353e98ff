"""What differed between runs: their saved composed configs, key by key, for two runs or a whole sweep."""

import json
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from optqual.config import ABSENT, config_diff, flatten
from optqual.runs.rundir import METRICS
from optqual.runs.sweep import NotASweepDir, is_run_dir, read_jobs


class NotARunDir(ValueError):
    pass


class NotComparable(ValueError):
    pass


def load_run(run_dir: str | Path) -> tuple[DictConfig, list[str]]:
    """The composed config and the command-line overrides Hydra saved in a run directory."""
    hydra_dir = Path(run_dir) / ".hydra"
    if not (hydra_dir / "config.yaml").is_file():
        raise NotARunDir(f"{run_dir} is not a run directory (no .hydra/config.yaml)")
    overrides_file = hydra_dir / "overrides.yaml"
    overrides = list(OmegaConf.load(overrides_file)) if overrides_file.is_file() else []
    return OmegaConf.load(hydra_dir / "config.yaml"), overrides


def load_hardware(run_dir: str | Path) -> DictConfig:
    """metrics.json's `hardware` (empty for a run from before it was recorded)."""
    metrics = Path(run_dir) / METRICS
    recorded = json.loads(metrics.read_text()).get("hardware") if metrics.is_file() else None
    return OmegaConf.create({"hardware": recorded or {}})


def format_diff(run_a: str, run_b: str) -> str:
    """The config keys that differ, and then the hardware (which alone can change a CPU result)."""
    (cfg_a, overrides_a), (cfg_b, overrides_b) = load_run(run_a), load_run(run_b)
    hardware_a, hardware_b = load_hardware(run_a), load_hardware(run_b)
    recorded = bool(hardware_a.hardware) and bool(hardware_b.hardware)  # runs from before the record: unknown, not different
    changes = config_diff(cfg_a, cfg_b) + (config_diff(hardware_a, hardware_b) if recorded else [])
    if not changes:
        return "identical"
    width = max(len(key) for key, _, _ in changes)
    lines = [f"{'key':<{width}}  A -> B"]
    lines += [f"{key:<{width}}  {value_a!r} -> {value_b!r}" for key, value_a, value_b in changes]
    lines += ["", f"A: {run_a}", f"   overrides: {' '.join(overrides_a) or '(none)'}"]
    lines += [f"B: {run_b}", f"   overrides: {' '.join(overrides_b) or '(none)'}"]
    return "\n".join(lines)


def format_sweep_diff(sweep_dir: str) -> str:
    """The config keys that vary across a sweep's jobs, each with its values in job order."""
    if is_run_dir(Path(sweep_dir)):
        raise NotComparable(f"{sweep_dir} is a single run: give a sweep directory, or two runs to compare")
    try:
        jobs = read_jobs(sweep_dir)
    except NotASweepDir as err:
        raise NotComparable(str(err)) from None
    configs = [flatten(load_run(job.path)[0]) for job in jobs if job.path is not None]
    keys = sorted({key for config in configs for key in config})
    varying = {key: list(dict.fromkeys(repr(config.get(key, ABSENT)) for config in configs)) for key in keys}
    varying = {key: values for key, values in varying.items() if len(values) > 1}
    pending = len(jobs) - len(configs)
    head = f"{len(configs)} jobs in {sweep_dir}" + (f" ({pending} more not started)" if pending else "")
    if not varying:
        return f"{head}: identical configs"
    width = max(len(key) for key in varying)
    lines = [f"{head}; {len(varying)} config keys vary:", ""]
    lines += [f"{key:<{width}}  {', '.join(values)}" for key, values in varying.items()]
    return "\n".join(lines)
