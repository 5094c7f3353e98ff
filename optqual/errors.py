"""The one error type for a config value that cannot work, the check that raises it, the
suggestion for a name mistyped, and Hydra's instantiation with its failures reported as that error."""

import difflib
import inspect
from collections.abc import Iterable
from typing import Any

from hydra.errors import InstantiationException
from hydra.utils import get_object, instantiate
from omegaconf import DictConfig


class ConfigError(ValueError):
    """A config value that cannot work; the message names the key and the value."""


def require(ok: bool, key: str, value: Any, why: str) -> None:
    if not ok:
        raise ConfigError(f"{key}={value}: {why}")


def did_you_mean(given: str, keys: Iterable[str]) -> str:
    """" (did you mean KEY?)" for the dotted key among `keys` closest to `given` by difflib's ratio
    (at least 0.6, case aside), or "". Where `given`'s parent is among the keys' parents, only its
    siblings are compared, by their last names: `optimizer.foo` is not close to `optimizer.lr` for
    the long prefix they share."""
    keys = list(keys)
    parent, _, name = given.rpartition(".")
    siblings = {key.rpartition(".")[2].lower(): key for key in keys if key.rpartition(".")[0] == parent}
    compared = siblings or {key.lower(): key for key in keys}
    close = difflib.get_close_matches((name if siblings else given).lower(), list(compared), n=1)  # adamW is adamw
    return f" (did you mean {compared[close[0]]}?)" if close else ""


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
