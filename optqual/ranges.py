"""The valid range of every numeric value of a config, declared once beside its schema field, and
the one check that reads them.

A schema declares a field's range with `within`: `momentum: float = within(0.0, "[0, 1)")`.
`check_ranges` walks a composed config, finds each node's schema (OmegaConf keeps it, whichever
YAML option or override made the node) and refuses, in one line naming the key, a value outside
its range, infinite or NaN: every range is of finite numbers. Each element of a list field
(betas, widths) and each value of a dict field (layer_weights) lies in the field's range; null,
where the field allows it, means "off" and is not checked. What relates two values (min_decay <=
decay, warmup_epochs < epochs) stays in the component's own check. tests/test_ranges.py checks
that every numeric field of every schema declares its range.
"""

import copy
import dataclasses
import math
import re
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from optqual.errors import ConfigError

RANGE = "optqual.range"  # the field metadata key


@dataclasses.dataclass(frozen=True)
class Interval:
    """An interval of finite numbers in the usual notation: "[0, 1)", "(0, inf)", "[1, inf)"."""

    text: str

    def __post_init__(self) -> None:
        if not re.fullmatch(r"[\[(]\s*[-+\w.]+\s*,\s*[-+\w.]+\s*[\])]", self.text):
            raise ValueError(f"not an interval: {self.text!r}")

    @property
    def bounds(self) -> tuple[float, float]:
        low, high = self.text[1:-1].split(",")
        return float(low), float(high)

    def __contains__(self, value: Any) -> bool:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            return False
        low, high = self.bounds
        above = value >= low if self.text[0] == "[" else value > low
        below = value <= high if self.text[-1] == "]" else value < high
        return above and below


def within(default: Any, interval: str) -> Any:
    """A dataclass field with `default` (a list or dict is copied for each instance) whose values lie in `interval`."""
    metadata = {RANGE: Interval(interval)}
    if isinstance(default, (list, dict)):
        return dataclasses.field(default_factory=lambda: copy.deepcopy(default), metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def declared_ranges(schema: Any) -> dict[str, Interval]:
    """The ranges `schema`'s fields declare, by field name (none for a node without a schema)."""
    if not dataclasses.is_dataclass(schema):
        return {}
    return {field.name: field.metadata[RANGE] for field in dataclasses.fields(schema) if RANGE in field.metadata}


def check_ranges(node: DictConfig, key: str = "") -> None:
    """Refuse the first value of `node`, or of a node within it, outside the range its schema declares."""
    ranges = declared_ranges(OmegaConf.get_type(node))
    for name in node:
        child = f"{key}.{name}" if key else str(name)
        if OmegaConf.is_interpolation(node, name):
            continue  # checked at the key it copies, which the user sets (model.num_classes: ${data.num_classes})
        value = node[name]
        if name in ranges and value is not None:
            several = isinstance(value, (ListConfig, DictConfig))
            items = list(value.values() if isinstance(value, DictConfig) else value) if several else [value]
            if not all(item in ranges[name] for item in items):
                shown = OmegaConf.to_container(value) if several else value
                finite = all(isinstance(item, (int, float)) and math.isfinite(item) for item in items)
                what, how = "each must" if several else "must", "lie" if finite else "be a finite number"
                raise ConfigError(f"{child}={shown}: {what} {how} in {ranges[name].text}")
        elif isinstance(value, DictConfig):
            check_ranges(value, child)
