"""The commands the README shows run as written: each training command composes (its keys and
options exist), each tool command parses, and the facts it states about the configs are theirs."""

import re
import shlex

import pytest
from omegaconf import OmegaConf

from conftest import REPO, compose_run
from optqual.__main__ import command_line
from optqual.config.checks import check_known_keys
from optqual.launch.arguments import check_arguments, overrides_of
from optqual.launch.overrides import check_command


def readme_commands() -> list[list[str]]:
    """Every `python launch.py ...` and `python -m optqual ...` line of the README's code blocks."""
    text = (REPO / "README.md").read_text()
    blocks = re.findall(r"```(?:bash)?\n(.*?)```", text, re.S)
    lines = [line for block in blocks for line in block.replace("\\\n", " ").splitlines()]
    return [shlex.split(line, comments=True) for line in lines if line.startswith(("python launch.py", "python -m optqual"))]


COMMANDS = readme_commands()


@pytest.mark.parametrize("words", [words for words in COMMANDS if words[1] == "launch.py"], ids=" ".join)
def test_every_training_command_of_the_readme_composes(words):
    argv = words[2:]
    check_arguments(argv)
    check_command(argv)
    if "-m" not in argv and "--help" not in argv:
        check_known_keys(compose_run(*overrides_of(argv)))


@pytest.mark.parametrize("words", [words for words in COMMANDS if words[1] == "-m"], ids=" ".join)
def test_every_tool_command_of_the_readme_parses(words):
    args, unknown = command_line().parse_known_args(words[3:])
    assert not [word for word in unknown if word.startswith("-")], unknown
    assert not unknown or hasattr(args, "overrides"), unknown


def written(value: str) -> object:
    """A value as the README writes it: true, false, a number, or a list of numbers."""
    if value in ("true", "false"):
        return value == "true"
    return [float(v) for v in value.strip("[]").split(",")] if value.startswith("[") else float(value)


def test_the_readme_states_the_optimizer_defaults_their_configs_have():
    """Each `key value` of the README's optimizer table is the value its conf/optimizer/ option composes to."""
    rows = [line for line in (REPO / "README.md").read_text().splitlines() if re.match(r"\| `\w+` \| (lr|rho|`sgd` with)", line)]
    checked = []
    for row in rows:
        option, defaults = re.match(r"\| `(\w+)` \| ([^|]*)\|", row).groups()
        composed = OmegaConf.to_container(compose_run(f"optimizer={option}").optimizer)
        for key, value in re.findall(r"\b(\w+) (\[[^\]]*\]|true|false|[-+]?[\d.]+(?:e[-+]?\d+)?)\b", defaults):
            if key in composed:
                assert composed[key] == written(value), f"README: {option} {key} {value}; conf/optimizer/{option}.yaml: {composed[key]}"
                checked.append((option, key))
    assert len(rows) == 8 and len(checked) == 23, checked  # every number of the table but the rationale in brackets
