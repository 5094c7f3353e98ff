"""The one error type for a config value that cannot work, the check that raises it, and
Hydra's instantiation with its failures reported as that error."""

import inspect
from typing import Any

from hydra.errors import InstantiationException
from hydra.utils import get_object, instantiate
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


def check_arguments(node: DictConfig, key: str) -> None:
    """That the `_target_` of the config `node` at `key` takes every key the node gives it, checked
    without building anything: a key added with `+` is refused before the data is loaded, and in
    every job of a sweep before the first starts."""
    target = get_object(node._target_)
    try:
        inspect.signature(target).bind_partial(**{name: None for name in node if not str(name).startswith("_")})
    except TypeError as err:
        raise ConfigError(f"{key}: {getattr(target, '__qualname__', node._target_)}() {err}") from None
