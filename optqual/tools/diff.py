"""`python -m optqual diff`: what differed between runs, key by key, in the configs they were built
with (optqual/runs/reader.py), for two runs or a whole sweep."""

from pathlib import Path

from omegaconf import OmegaConf

from optqual.config.diff import ABSENT, config_diff, flatten
from optqual.files.layout import is_run_dir
from optqual.runs.reader import Job, RunDirError, read_run, read_sweep


def hardware(job: Job) -> dict:
    """metrics.json's `hardware` (empty for a run from before it was recorded)."""
    return {"hardware": job.metrics.get("hardware") or {}}


def format_diff(run_a: str, run_b: str) -> str:
    """The config keys that differ, and then the hardware (which alone can change a CPU result)."""
    a, b = read_run(run_a), read_run(run_b)
    recorded = bool(hardware(a)["hardware"]) and bool(hardware(b)["hardware"])  # runs from before the record: unknown, not different
    changes = config_diff(a.config, b.config) + (config_diff(hardware(a), hardware(b)) if recorded else [])
    if not changes:
        return "identical"
    width = max(len(key) for key, _, _ in changes)
    lines = [f"{'key':<{width}}  A -> B"]
    lines += [f"{key:<{width}}  {value_a!r} -> {value_b!r}" for key, value_a, value_b in changes]
    lines += ["", f"A: {run_a}", f"   overrides: {' '.join(a.overrides) or '(none)'}"]
    lines += [f"B: {run_b}", f"   overrides: {' '.join(b.overrides) or '(none)'}"]
    return "\n".join(lines)


def format_sweep_diff(sweep_dir: str) -> str:
    """The config keys that vary across a sweep's jobs, each value once, in the order the job directories sort."""
    if is_run_dir(Path(sweep_dir)):
        raise RunDirError(f"{sweep_dir} is a single run: give a sweep directory, or two runs to compare")
    jobs = read_sweep(sweep_dir)
    configs = [flatten(OmegaConf.to_container(job.config)) for job in jobs if job.path is not None and job.unreadable is None]
    keys = sorted({key for config in configs for key in config})
    varying = {key: list(dict.fromkeys(repr(config.get(key, ABSENT)) for config in configs)) for key in keys}
    varying = {key: values for key, values in varying.items() if len(values) > 1}
    pending = sum(job.path is None for job in jobs)
    unreadable = [job.unreadable for job in jobs if job.unreadable is not None]
    head = f"{len(configs)} jobs in {sweep_dir}" + (f" ({pending} more not started)" if pending else "")
    head += "".join(f"\nleft out, unreadable: {reason}" for reason in unreadable)
    if not varying:
        return f"{head}: identical configs"
    width = max(len(key) for key in varying)
    lines = [f"{head}; {len(varying)} config keys vary:", ""]
    lines += [f"{key:<{width}}  {', '.join(values)}" for key, values in varying.items()]
    return "\n".join(lines)
