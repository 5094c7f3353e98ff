"""Every numeric value of a run config has a valid range, declared once beside its schema field,
and a value outside it (infinities and NaN included) is refused in one line before any work."""

import dataclasses
import math
import typing

import pytest
from omegaconf import DictConfig, ListConfig, OmegaConf

from conftest import REPO, compose_run, launch_here, tiny_overrides
from optqual.components.registry import components
from optqual.config.checks import check_config
from optqual.config.schema import CORE_GROUPS, run_schema
from optqual.errors import ConfigError
from optqual.ranges import Interval, declared_ranges

GROUPS = {group: sorted(p.stem for p in (REPO / "conf" / group).glob("*.yaml"))
          for group in ("optimizer", "model", "data", *(c.name for c in components() if c.default is not None))}


def schemas() -> set[type]:
    """The run schema, every schema of the core groups and of every component, and the schemas within them."""
    found: set[type] = set()

    def add(schema: type) -> None:
        if schema not in found:
            found.add(schema)
            for field in dataclasses.fields(schema):
                if dataclasses.is_dataclass(field.type):
                    add(field.type)

    add(run_schema())
    for schema in [*(s for group in CORE_GROUPS.values() for s in group.values()), *(s for c in components() for s in c.schemas.values())]:
        add(schema)
    return found


def numeric(annotation: typing.Any) -> bool:
    """int or float, alone or in an Optional, a List or a Dict's values."""
    if annotation in (int, float):
        return True
    return any(numeric(argument) for argument in typing.get_args(annotation) if argument is not type(None))


def test_every_numeric_field_of_every_schema_declares_its_range():
    undeclared = [f"{schema.__qualname__}.{field.name}" for schema in schemas() for field in dataclasses.fields(schema)
                  if numeric(field.type) and field.name not in declared_ranges(schema)]
    assert undeclared == []


@pytest.mark.parametrize("text, inside, outside", [
    ("[0, 1)", [0, 0.5, 1 - 1e-12], [-1e-12, 1, math.inf, math.nan, True]),
    ("(0, inf)", [1e-300, 1e300, 3], [0, -1, math.inf, -math.inf, math.nan]),
    ("[16, inf)", [16, 17], [15, math.inf]),
    ("(-inf, inf)", [-1e300, 0, 1e300], [math.inf, -math.inf, math.nan]),
    ("[0, 1]", [0, 1], [-0.1, 1.1]),
])
def test_an_interval_holds_the_finite_numbers_its_notation_says(text, inside, outside):
    interval = Interval(text)
    assert all(value in interval for value in inside)
    assert not any(value in interval for value in outside)


def bad_values(interval: Interval, integer: bool) -> list:
    """Just outside each finite end, and, for a float, the infinities and NaN."""
    low, high = interval.bounds
    bad = []
    if math.isfinite(low):
        bad.append(low if interval.text[0] == "(" else low - 1)
    if math.isfinite(high):
        bad.append(high if interval.text[-1] == ")" else high + 1)
    return [int(value) for value in bad] if integer else bad + [math.inf, -math.inf, math.nan]


def ranged_values(node: DictConfig, key: str = ""):
    """(key, interval, whether the field holds ints, whether it holds several values) for every ranged field within `node`."""
    schema = OmegaConf.get_type(node)
    ranges = declared_ranges(schema)
    types = {field.name: field.type for field in dataclasses.fields(schema)} if dataclasses.is_dataclass(schema) else {}
    for name in node:
        child = f"{key}.{name}" if key else str(name)
        if name in ranges:
            integer = int in (types[name], *typing.get_args(types[name]), *(a for t in typing.get_args(types[name]) for a in typing.get_args(t)))
            yield child, ranges[name], integer, isinstance(node[name], (ListConfig, DictConfig))
        elif isinstance(node[name], DictConfig):
            yield from ranged_values(node[name], child)


CASES = [(group, option) for group, options in GROUPS.items() for option in options]


@pytest.mark.parametrize("group, option", CASES)
def test_every_value_out_of_its_range_is_refused_naming_key_value_and_range(group, option, tmp_path):
    """For every option of every group: each ranged value of the composed run, set just outside its
    range (and, for a float, to +-inf and NaN), is refused by the run's checks in one line."""
    cfg = compose_run(f"{group}={option}", *([f"data.path={tmp_path / 'x.npz'}"] if option == "npz" else []))
    tried = 0
    for key, interval, integer, several in ranged_values(cfg):
        if key.split(".")[0] != group and group != "optimizer":  # the run-level values: tried with the optimizers
            continue
        for bad in bad_values(interval, integer):
            changed = cfg.copy()
            value = OmegaConf.select(changed, key)
            if several and not value:
                continue  # an empty list or dict has no value to spoil
            target = f"{key}.{next(iter(value))}" if isinstance(value, DictConfig) else f"{key}.0" if several else key
            OmegaConf.update(changed, target, bad, merge=False)
            with pytest.raises(ConfigError) as refused:
                check_config(changed)
            message = str(refused.value)
            assert message.startswith(f"{key}=") and message.endswith(f" in {interval.text}") and "\n" not in message, message
            tried += 1
    assert tried > 0 or group in ("augment", "snapshots")  # crop_flip has no numeric value; snapshots.at is a list or a word


@pytest.mark.parametrize("override, message", [
    ("optimizer.momentum=1.5", "optimizer.momentum=1.5: must lie in [0, 1)"),
    ("optimizer.lr=inf", "optimizer.lr=inf: must be a finite number in (0, inf)"),
])
def test_the_launch_of_an_out_of_range_value_is_refused_before_any_work(tmp_path, tiny_npz, override, message):
    refused = launch_here(tmp_path, *tiny_overrides(tiny_npz), "trackio.enabled=false", override)
    assert refused.returncode == 1
    assert refused.stderr.splitlines() == [f"optqual: error: {message}"]
    assert not (tmp_path / "outputs").exists()
