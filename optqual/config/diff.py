"""The keys whose values differ between two configs: the resume check, and `python -m optqual diff`."""

from typing import Any

from omegaconf import DictConfig, OmegaConf


class _Absent:
    """Stands for a key that one of two configs does not have."""

    def __repr__(self) -> str:
        return "<absent>"


ABSENT = _Absent()


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    """Dotted keys to the leaf values of a config (a DictConfig, resolved, or plain containers);
    lists count as one value."""
    if isinstance(tree, DictConfig):
        tree = OmegaConf.to_container(tree, resolve=True)
    if not isinstance(tree, dict):
        return {prefix: tree}
    leaves = {}
    for key, value in tree.items():
        leaves.update(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    return leaves


def config_diff(a: Any, b: Any) -> list[tuple[str, Any, Any]]:
    """(dotted key, value in a, value in b) for every key whose value differs, sorted by key."""
    flat_a, flat_b = flatten(a), flatten(b)
    keys = sorted(flat_a.keys() | flat_b.keys())
    return [(k, flat_a.get(k, ABSENT), flat_b.get(k, ABSENT)) for k in keys if flat_a.get(k, ABSENT) != flat_b.get(k, ABSENT)]
