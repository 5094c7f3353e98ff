"""optqual: deterministic image-classification runs for comparing what optimizers find.

`optqual.load_run(path)` and `optqual.load_sweep(path)` read finished runs and sweeps into
Python and pandas (optqual/runs/results.py); they are imported on first use, so that the
command line does not pay for pandas and torch before it needs them.
"""

from optqual.files.layout import config_dir

__all__ = ["config_dir", "load_run", "load_sweep"]


def __getattr__(name: str):
    if name in ("load_run", "load_sweep"):
        from optqual.runs import results

        return getattr(results, name)
    raise AttributeError(f"module 'optqual' has no attribute {name!r}")
