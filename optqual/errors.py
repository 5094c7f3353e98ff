"""The one error type for a config value that cannot work, the check that raises it, and
Hydra's instantiation with its failures reported as that error."""

from typing import Any

from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig


class ConfigError(ValueError):
    """A config value that cannot work; the message names the key and the value."""


def require(ok: bool, key: str, value: Any, why: str) -> None:
    if not ok:
        raise ConfigError(f"{key}={value}: {why}")


def build(node: DictConfig, key: str, **kwargs) -> Any:
    """hydra.utils.instantiate on the config `node` found at `key`, a failure reported as that key's config error."""
    try:
        return instantiate(node, _convert_="all", **kwargs)
    except InstantiationException as err:
        cause = err.__cause__
        raise (cause if isinstance(cause, ConfigError) else ConfigError(f"{key}: {cause or err}")) from err
