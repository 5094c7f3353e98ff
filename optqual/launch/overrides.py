"""Hydra's composition errors in one line that says what to type.

Hydra reports an option or key that does not exist in several lines, with its config search
path; a typo gets no suggestion. Here the same error is one line that names the closest option
or key that exists (`optimizer=adamW` -> `optimizer=adamw`, `optimiser.lr=0.1` ->
`optimizer.lr=0.1`). The command line is composed once before Hydra runs it (`check_command`,
from optqual/train.py), and each job of a sweep when the sweep starts (optqual/launch/callbacks.py).
"""

import re

from hydra.core.config_loader import ConfigLoader
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override
from hydra.errors import HydraException, MissingConfigException
from hydra.initialize import initialize_config_dir
from hydra.types import RunMode
from omegaconf.errors import OmegaConfBaseException

from optqual.files.layout import config_dir
from optqual.config.checks import WHERE_ANALYSIS_KEYS_ARE, WHERE_KEYS_ARE, dotted_keys
from optqual.errors import ConfigError, did_you_mean
from optqual.launch.arguments import overrides_of

CONFIG_NAME = "config"
KEYS_OF = {CONFIG_NAME: ("run", WHERE_KEYS_ARE), "analyze": ("analysis", WHERE_ANALYSIS_KEYS_ARE)}  # what each config is, its help
# flags after which Hydra does not compose conf/config.yaml as given (another config, or no run at all)
OWN_COMPOSITION = {"--config-path", "-cp", "--config-name", "-cn", "--config-dir", "-cd", "--help", "-h", "--hydra-help",
                   "--version", "--shell-completion", "-sc", "--info", "-i", "--experimental-rerun"}


def first_line(err: BaseException) -> str:
    return str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__


def values(override: Override) -> list[str]:
    """The options an override names: each of a sweep's, each of a list's (`analysis=[weights,cka]`), or its one."""
    if override.is_discrete_sweep():
        return list(override.sweep_string_iterator())
    value = override.value()
    return [str(item) for item in value] if isinstance(value, list) else [override.get_value_element_as_str()]


def explain(err: HydraException, overrides: list[str], loader: ConfigLoader, mode: RunMode = RunMode.RUN,
            config_name: str = CONFIG_NAME) -> str:
    """`err`, raised composing `config_name` with `overrides`, in one line with the fix."""
    parsed = OverridesParser.create().parse_overrides(overrides)
    group, _, option = str(getattr(err, "missing_cfg_file", None)).rpartition("/")
    if isinstance(err, MissingConfigException) and group:  # a group's option that does not exist
        options = err.options or loader.get_group_options(group)
        given = next((o.get_key_element() for o in parsed if o.key_or_group == group and option in values(o)), group)
        hint = did_you_mean(option, options).replace("mean ", f"mean {given}=")  # optimizer@optimizer.base=adamw
        return f"{given}={option}: no such option{hint}; the options of {group}: {', '.join(options)}"
    named = re.match(r"Could not (?:override|delete from config\.) '([^']+)'|Error merging override (\S+)", str(err))
    override = next((o for o in parsed if named and (o.key_or_group == named[1] or o.input_line == named[2])), None)
    if override is None:
        return first_line(err)
    if named[2]:  # a value of the wrong type
        return f"{override.input_line}: {first_line(err.__cause__ or err)}"
    key = override.key_or_group
    others = [str(o.input_line) for o in parsed if o is not override]
    try:
        known = dotted_keys(loader.load_configuration(config_name, others, mode))
    except (HydraException, OmegaConfBaseException):
        known = dotted_keys(loader.load_configuration(config_name, [], mode))
    known = [name for name in known if not name.startswith("hydra.")]
    what, where = KEYS_OF[config_name]
    if key in known and override.is_delete():
        return f"{override.input_line}: a key of the {what}'s schema cannot be removed; set it instead ({key}=...)"
    if key in known:
        return f"{override.input_line}: {first_line(err.__cause__ or err)}"
    hint = did_you_mean(key, known)
    hint = hint.replace("mean ", "mean ~") if override.is_delete() else hint.replace("?)", f"={override.get_value_element_as_str()}?)")
    return f"{override.input_line}: the {what} has no key {key}{hint}; {where}"


def check_command(argv: list[str]) -> None:
    """Compose the command line as Hydra is about to (a sweep without its swept values, which each
    job's check composes) and raise ConfigError, in one line, for what Hydra would refuse."""
    if OWN_COMPOSITION & set(argv):
        return
    mode = RunMode.MULTIRUN if {"-m", "--multirun"} & set(argv) else RunMode.RUN
    overrides = overrides_of(argv)
    with initialize_config_dir(str(config_dir()), version_base="1.3"):
        loader = GlobalHydra.instance().config_loader()
        try:
            loader.load_configuration(CONFIG_NAME, overrides, mode)
        except HydraException as err:
            raise ConfigError(explain(err, overrides, loader, mode)) from None
