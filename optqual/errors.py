"""The one error type for a config value that cannot work, and the check that raises it."""

from typing import Any


class ConfigError(ValueError):
    """A config value that cannot work; the message names the key and the value."""


def require(ok: bool, key: str, value: Any, why: str) -> None:
    if not ok:
        raise ConfigError(f"{key}={value}: {why}")
