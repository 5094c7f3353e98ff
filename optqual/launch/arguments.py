"""The training command line, read before Hydra reads it: its overrides, and the one mistake Hydra
reports as a multi-line lexer error: a value with a space left unquoted (`data.path=/my data/x.npz`),
which the shell splits into an override and a word that is none."""

from optqual.errors import ConfigError

FLAGS_WITH_VALUES = {"--cfg", "-c", "--package", "-p", "--config-path", "-cp", "--config-name", "-cn", "--config-dir", "-cd",
                     "--experimental-rerun", "--info", "-i"}  # Hydra's flags that take the next word (--info optionally)


def check_arguments(argv: list[str]) -> None:
    """Refuse a word that is neither an override (KEY=VALUE, ~KEY) nor one of Hydra's flags, with the fix."""
    previous = None
    for word in argv:
        if previous in FLAGS_WITH_VALUES or word.startswith("-") or "=" in word or word.startswith("~"):
            previous = word
            continue
        if previous is not None and "=" in previous:
            key, value = previous.split("=", 1)
            raise ConfigError(f"{word!r} is not an override (KEY=VALUE): a value with a space needs quotes, e.g. {key}='{value} {word}'")
        raise ConfigError(f"{word!r} is not an override: write KEY=VALUE (python launch.py --help lists the keys)")


def overrides_of(argv: list[str]) -> list[str]:
    """The overrides among `argv`: the words that are neither a flag nor a flag's value."""
    return [word for previous, word in zip([None, *argv], argv) if previous not in FLAGS_WITH_VALUES and not word.startswith("-")]
