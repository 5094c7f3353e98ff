"""The measures of `analyze` and `compare`, one module each, found by name with a uniform entry.

A measure's module ends with `register(Measure(...))`: its name (its key under `analysis` in
conf/analyze.yaml, and conf/analysis/<name>.yaml holds its settings), its schema and checks,
whether it measures one run or a pair, and its figures. The function its YAML's `_target_`
names takes the solution (or the two) and its settings and returns a JSON-able result; `figures`,
when a measure has pictures, takes the result and the solution(s) and returns name -> figure.
Adding a measure touches its module, its YAML, its docs and its tests.
"""

import sys
from dataclasses import dataclass
from typing import Callable

from omegaconf import DictConfig

from optqual.plugins import import_submodules


@dataclass(frozen=True)
class Measure:
    name: str  # its key under `analysis` (conf/analysis/<name>.yaml)
    schema: type  # the dataclass of its settings, stored as schema/analysis/<name>
    check: Callable[[DictConfig], None]  # its settings' values, before any work
    pairwise: bool = False  # of two runs (compare), not of one
    figures: Callable[..., dict] | None = None  # (result, solution(s)) -> {file name: matplotlib figure}
    fits: Callable[..., None] | None = None  # (settings, solution): before any work, raises ConfigError where it cannot measure it


_MEASURES: dict[str, Measure] = {}


def register(measure: Measure) -> Measure:
    if measure.name in _MEASURES:
        raise ValueError(f"two measures are named {measure.name!r}")
    _MEASURES[measure.name] = measure
    return measure


def measures() -> dict[str, Measure]:
    """Every measure, by name (each module of this package is imported, and registers its own)."""
    import_submodules(sys.modules[__name__])
    return dict(sorted(_MEASURES.items()))
