"""The pages of the site that are generated from the code at build time, so that they cannot drift:
the configuration reference (every key of every group and option, from the schemas and conf/'s
YAML) and the command line's help texts. mkdocs-gen-files runs this file (mkdocs.yml); the
functions are also what tests/test_docs.py checks.
"""

import argparse
import dataclasses
import inspect
import re
import subprocess
import sys
import typing
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig, ListConfig, OmegaConf
from ruamel.yaml import YAML

from optqual.__main__ import command_line
from optqual.analysis.analyze import ANALYZE, register_schemas
from optqual.components.registry import components
from optqual.config.schema import CORE_GROUPS, register_with_hydra
from optqual.files.layout import config_dir
from optqual.ranges import declared_ranges

RUN = "config"


def file_comment(path: Path) -> str:
    """The comment a YAML file opens with: what the option is."""
    lines = []
    for line in path.read_text().splitlines():
        if not line.startswith("#"):
            break
        if not line.startswith("# @package"):
            lines.append(line.lstrip("#").strip())
    return " ".join(lines)


def key_comments(path: Path) -> dict[str, str]:
    """The comment on each key's line of a YAML file (with the lines that continue it at the same
    column), by dotted key."""
    comments: dict[str, str] = {}

    def walk(node, prefix: str) -> None:
        if not hasattr(node, "ca"):
            return
        for key, value in node.items():
            dotted = f"{prefix}{key}"
            token = (node.ca.items.get(key) or [None, None, None])[2]
            if token is not None:
                first, *rest = token.value.split("\n")
                lines = [first] + [line for line in rest if line.startswith(" " * token.column + "#")]
                comments[dotted] = " ".join(line.strip().lstrip("#").strip() for line in lines)
            if isinstance(value, dict):
                walk(value, dotted + ".")

    walk(YAML().load(path), "")
    return comments


def schema_comments(schema) -> dict[str, str]:
    """The comment beside each field of a schema dataclass (and of its bases) in its source."""
    comments: dict[str, str] = {}
    for cls in reversed(getattr(schema, "__mro__", ())):
        if dataclasses.is_dataclass(cls) and cls.__module__ != "types":  # make_dataclass's have no source
            for line in inspect.getsource(cls).splitlines():
                found = re.match(r"\s+(\w+)\s*:[^#]*#\s*(.*)$", line)
                if found:
                    comments[found[1]] = found[2]
    return comments


def type_name(annotation) -> str:
    if annotation in (typing.Any, None):
        return "any"
    return annotation.__name__ if isinstance(annotation, type) else str(annotation).replace("typing.", "")


def written(value) -> str:
    """A default as YAML writes it."""
    return "null" if value is None else str(value).lower() if isinstance(value, bool) else str(value)


def leaves(node: DictConfig, prefix: str = "") -> list[tuple[str, str, str, str, str]]:
    """(dotted key, type, default as written, range, the schema's comment) of every leaf of a composed node."""
    rows = []
    schema = OmegaConf.get_type(node) if OmegaConf.is_dict(node) else None
    ranges, comments = (declared_ranges(schema), schema_comments(schema)) if schema else ({}, {})
    for key in node:
        child = node._get_node(key)
        dotted = f"{prefix}{key}"
        if isinstance(child, DictConfig) and not child._is_none() and not child._is_missing() and len(child) > 0:
            rows += leaves(child, dotted + ".")
            continue
        value = child._value()
        shown = OmegaConf.to_container(child, resolve=False) if isinstance(child, (DictConfig, ListConfig)) else value
        interval = ranges.get(key)
        rows.append((dotted, type_name(child._metadata.ref_type), written(shown), interval.text if interval else "",
                     comments.get(key, "")))
    return rows


def cell(text: str) -> str:
    """Text in a table cell: its bars escaped, and <layer> shown rather than read as HTML."""
    return text.replace("|", "\\|").replace("<", "&lt;").replace(">", "&gt;")


def key_table(node: DictConfig, comments: dict[str, str], skip: tuple[str, ...] = ()) -> list[str]:
    """A row per key: the YAML's comment on it, else its schema's."""
    rows = []
    for key, kind, default, interval, schema_comment in leaves(node):
        if key.split(".")[0] not in skip:
            in_code = default.replace("|", "\\|")  # a code span shows its text as it is: bars only
            rows.append(f"| `{key}` | {kind} | `{in_code}` | {interval} | {cell(comments.get(key) or schema_comment)} |")
    return ["| key | type | default | range | what it is |", "| --- | --- | --- | --- | --- |", *rows] if rows else ["It sets no key."]


def option_section(conf: Path, group: str, option: str, node: DictConfig, default: str | None) -> list[str]:
    path = conf / group / f"{option}.yaml"
    marker = " (the default)" if option == default else ""
    return [f"### `{group}={option}`{marker}", "", file_comment(path), "", *key_table(node, key_comments(path)), ""]


def group_options(group: str) -> list[str]:
    return sorted(GlobalHydra.instance().config_loader().get_group_options(group))


def composed(name: str, overrides: list[str]) -> DictConfig:
    return compose(name, overrides=overrides)


def subgroup_node(group: str, option: str) -> DictConfig | None:
    """The node of `group=option`; a subgroup (regularizer/schedule) under a parent option that has it."""
    parent, _, leaf = group.rpartition("/")
    if not parent:
        return composed(RUN, [f"{group}={option}"])[group]
    for parent_option in group_options(parent):
        cfg = composed(RUN, [f"{parent}={parent_option}", f"{group}={option}"])
        node = OmegaConf.select(cfg, group.replace("/", "."))
        if node is not None:
            return node
    return None


def group_sections(conf: Path, group: str, summary: str, default: str | None) -> list[str]:
    options = group_options(group)
    lines = [f"## `{group}`", "", summary, "", "Options: " + ", ".join(f"`{option}`" for option in options)
             + (f"; the default is `{default}`." if default else "."), ""]
    for option in options:
        node = subgroup_node(group, option)
        if node is not None:
            lines += option_section(conf, group, option, node, default)
    for subgroup in sorted(GlobalHydra.instance().config_loader().list_groups(group)):
        lines += group_sections(conf, f"{group}/{subgroup}", f"Under `{group}`: `{group}/{subgroup}=OPTION`.", None)
    return lines


def run_level(conf: Path) -> list[str]:
    cfg = composed(RUN, [])
    groups = {*CORE_GROUPS, *(component.name for component in components() if component.default is not None)}
    return ["## Run-level keys", "", "Set on the command line as `KEY=VALUE` (conf/config.yaml).", "",
            *key_table(cfg, key_comments(conf / "config.yaml"), skip=tuple(groups)), ""]


def presets(conf: Path) -> list[str]:
    lines = ["## `experiment`: presets", "", "`experiment=NAME` sets several groups and keys at once (conf/experiment/); "
             "anything on the command line after it still wins.", "", "| preset | what it is |", "| --- | --- |"]
    for option in group_options("experiment"):
        lines.append(f"| `experiment={option}` | {cell(file_comment(conf / 'experiment' / f'{option}.yaml'))} |")
    return lines + [""]


def launchers(conf: Path) -> list[str]:
    lines = ["## `hydra/launcher`: where the jobs of a sweep run", "", "| launcher | what it is |", "| --- | --- |"]
    for path in sorted((conf / "hydra" / "launcher").glob("*.yaml")):
        lines.append(f"| `hydra/launcher={path.stem}` | {cell(file_comment(path))} |")
    return lines + [""]


def analysis(conf: Path) -> list[str]:
    cfg = composed(ANALYZE, [])
    lines = ["# Analysis settings", "", "`python -m optqual analyze DIR KEY=VALUE ...` and `compare` compose conf/analyze.yaml.", "",
             "## Keys of `analyze`", "", *key_table(cfg, key_comments(conf / "analyze.yaml"), skip=("analysis",)), ""]
    for group, summary in (("effort", "How much work each measure does."), ("analysis", "The measures (`analysis=[weights,sharpness]`).")):
        lines += [f"## `{group}`", "", summary, ""]
        for option in group_options(group):
            path = conf / group / f"{option}.yaml"
            node = composed(ANALYZE, [f"{group}=[{option}]" if group == "analysis" else f"{group}={option}"])
            set_by_option = [key for key in YAML(typ="safe").load(path) or {} if key != "defaults"]
            node = node.analysis[option] if group == "analysis" else OmegaConf.masked_copy(node, set_by_option)
            lines += [f"### `{option}`", "", file_comment(path), "", *key_table(node, key_comments(path), skip=("analysis",)), ""]
    return lines


def configuration_reference(conf: Path | None = None) -> str:
    """Every key of every group and option of conf/, with its type, default, range and comment, as Markdown."""
    conf = (conf or config_dir()).resolve()
    register_with_hydra()
    register_schemas()
    with initialize_config_dir(str(conf), version_base="1.3"):
        lines = ["# Configuration reference", "",
                 "Generated from the schemas (optqual/config/schema.py and each component's module) and the YAML files of conf/ "
                 "when the site is built: each option's keys with their type, the value the option gives them, the range the "
                 "schema allows, and the comment beside the key in its YAML file.", "", *run_level(conf)]
        for group in CORE_GROUPS:
            lines += group_sections(conf, group, f"A core group: `{group}=OPTION`.", default_choice(group))
        for component in components():
            if component.default is not None:
                lines += group_sections(conf, component.name, component.summary + ".", component.default)
        lines += presets(conf) + launchers(conf) + analysis(conf)
    GlobalHydra.instance().clear()
    return "\n".join(lines) + "\n"


def default_choice(group: str) -> str:
    """The option conf/config.yaml's defaults list picks for a core group."""
    for entry in YAML(typ="safe").load(config_dir() / "config.yaml")["defaults"]:
        if isinstance(entry, dict) and group in entry:
            return entry[group]
    return ""


def cli_reference() -> str:
    """`--help` of `python -m optqual` and of each of its commands, and of `python launch.py`."""
    parser = command_line()
    lines = ["# Command line", "", "Generated from the code when the site is built.", "", "## `python -m optqual`", "",
             "```text", parser.format_help().rstrip(), "```", ""]
    commands = next(action for action in parser._actions if isinstance(action, argparse._SubParsersAction))
    for name, sub in commands.choices.items():
        if name == "train":
            help_text = subprocess.run([sys.executable, "-m", "optqual", "train", "--help"], capture_output=True, text=True,
                                       check=True).stdout
            lines += ["## `python launch.py` (`python -m optqual train`)", "", "```text", help_text.rstrip(), "```", ""]
        else:
            lines += [f"## `python -m optqual {name}`", "", "```text", sub.format_help().rstrip(), "```", ""]
    return "\n".join(lines) + "\n"


def measurements_index(docs: Path) -> str:
    """The dated measurement pages, newest first, each with its title."""
    lines = ["# Measurements", "", "Each page is dated and holds the commands that produced its figures, the machine they ran on "
             "and what they printed.", ""]
    for page in sorted((docs / "measurements").glob("2*.md"), reverse=True):
        title = page.read_text().splitlines()[0].lstrip("#").strip()
        lines.append(f"- {page.stem[:10]}: [{title}]({page.name})")
    return "\n".join(lines) + "\n"


if __name__ in ("__main__", "<run_path>"):  # mkdocs-gen-files runs it as a script
    import mkdocs_gen_files

    for page, text in (("reference/configuration.md", configuration_reference()), ("reference/cli.md", cli_reference()),
                       ("measurements/index.md", measurements_index(Path(__file__).parent))):
        with mkdocs_gen_files.open(page, "w") as file:
            file.write(text)
