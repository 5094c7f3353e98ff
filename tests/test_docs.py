"""The README and the documentation site say what the code does: each training command they show
composes as `--cfg job` would (its keys and options exist), each tool command parses, each file
they name exists, the facts they state about the configs are theirs, the generated configuration
reference lists every option, and the notebook runs from top to bottom."""

import re
import shlex
import shutil
import sys

import pytest
from omegaconf import OmegaConf

from conftest import REPO, compose_run
from optqual.__main__ import command_line
from optqual.config.checks import check_known_keys
from optqual.launch.arguments import check_arguments, overrides_of
from optqual.launch.overrides import check_command


sys.path.insert(0, str(REPO / "docs"))
import generate  # noqa: E402  (docs/generate.py: the site's generated pages)

PAGES = [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]


def documented_commands() -> list[list[str]]:
    """Every `python launch.py ...` and `python -m optqual ...` line of the code blocks of the README and the docs."""
    commands = []
    for page in PAGES:
        for block in re.findall(r"```(?:bash)?\n(.*?)```", page.read_text(), re.S):
            variables = dict(re.findall(r'^(\w+)="(.*)"$', block, re.M))  # COMMON="..." then python launch.py $COMMON ...
            for line in block.replace("\\\n", " ").splitlines():
                line = re.sub(r"\$(\w+)", lambda name: variables.get(name[1], name[0]), line.removeprefix("$ "))
                if line.startswith(("python launch.py", "python -m optqual")):
                    commands.append(tuple(shlex.split(line, comments=True)))
    return [list(words) for words in dict.fromkeys(commands)]  # a command shown on two pages is checked once


COMMANDS = documented_commands()


@pytest.mark.parametrize("words", [words for words in COMMANDS if words[1] == "launch.py"], ids=" ".join)
def test_every_documented_training_command_composes(words):
    argv = words[2:]
    check_arguments(argv)
    check_command(argv)
    if "-m" not in argv and "--help" not in argv:
        check_known_keys(compose_run(*overrides_of(argv)))


@pytest.mark.parametrize("words", [words for words in COMMANDS if words[1] == "-m"], ids=" ".join)
def test_every_documented_tool_command_parses(words):
    args, unknown = command_line().parse_known_args(words[3:])
    assert not [word for word in unknown if word.startswith("-")], unknown
    assert not unknown or hasattr(args, "overrides"), unknown


def written(value: str) -> object:
    """A value as the README writes it: true, false, a number, or a list of numbers."""
    if value in ("true", "false"):
        return value == "true"
    return [float(v) for v in value.strip("[]").split(",")] if value.startswith("[") else float(value)


def test_the_docs_state_the_optimizer_defaults_their_configs_have():
    """Each `key value` of the optimizer table is the value its conf/optimizer/ option composes to."""
    rows = [line for line in (REPO / "docs" / "optimizers.md").read_text().splitlines()
            if re.match(r"\| `\w+` \| (lr|rho|`sgd` with)", line)]
    checked = []
    for row in rows:
        option, defaults = re.match(r"\| `(\w+)` \| ([^|]*)\|", row).groups()
        composed = OmegaConf.to_container(compose_run(f"optimizer={option}").optimizer)
        for key, value in re.findall(r"\b(\w+) (\[[^\]]*\]|true|false|[-+]?[\d.]+(?:e[-+]?\d+)?)\b", defaults):
            if key in composed:
                assert composed[key] == written(value), f"docs/optimizers.md: {option} {key} {value}; conf/optimizer/{option}.yaml: {composed[key]}"
                checked.append((option, key))
    assert len(rows) == 8 and len(checked) == 23, checked  # every number of the table but the rationale in brackets


# a path of the repository as the pages write it: optqual/..., conf/..., docs/..., tests/..., benchmarks/..., scripts/...
REPO_PATH = re.compile(r"(?<![\w/.])((?:optqual|conf|docs|tests|benchmarks|scripts)/[\w./-]*\w)")


@pytest.mark.parametrize("page", PAGES, ids=lambda page: str(page.relative_to(REPO)))
def test_every_file_a_page_names_exists(page):
    named = set(REPO_PATH.findall(page.read_text()))
    missing = sorted(path for path in named if "<" not in path and "*" not in path and not (REPO / path).exists())
    assert not missing, f"{page.relative_to(REPO)} names files that do not exist: {missing}"


def test_the_readme_fits_on_a_few_screens():
    assert len((REPO / "README.md").read_text().splitlines()) <= 200, "the README links into docs/ for the rest"


@pytest.fixture(scope="module")
def reference() -> str:
    return generate.configuration_reference()


def test_the_configuration_reference_lists_every_option_of_every_group(reference):
    for group in ["optimizer", "model", "data", "scheduler", "augment", "batch_mix", "regularizer", "regularizer/schedule", "quantizer"]:
        for option in (REPO / "conf" / group).glob("*.yaml"):
            assert f"### `{group}={option.stem}`" in reference, f"{group}={option.stem}"
    for preset in (REPO / "conf" / "experiment").glob("*.yaml"):
        assert f"`experiment={preset.stem}`" in reference
    adamw = reference.split("### `optimizer=adamw`")[1].split("###")[0]
    assert "| `weight_decay` | float | `0.01` | [0, inf) |" in adamw
    assert "| `seed` | int | `42` | [0, 4294967296) | torch, numpy, random, data order and augmentation all follow this seed |" in reference


@pytest.mark.slow
def test_a_new_option_appears_in_the_reference_without_editing_a_page(tmp_path):
    conf = tmp_path / "conf"
    shutil.copytree(REPO / "conf", conf)
    (conf / "optimizer" / "heavy_ball.yaml").write_text(
        "# SGD with heavy momentum, a test's option.\ndefaults:\n  - sgd\n  - _self_\n\nmomentum: 0.99  # heavier than sgd's\n")
    reference = generate.configuration_reference(conf)
    section = reference.split("### `optimizer=heavy_ball`")[1].split("###")[0]
    assert "SGD with heavy momentum, a test's option." in section
    assert "| `momentum` | float | `0.99` | [0, 1) | heavier than sgd's |" in section


@pytest.mark.slow
def test_the_command_line_page_holds_every_commands_help():
    page = generate.cli_reference()
    for command in ("train", "summarize", "diff", "resume", "profile", "analyze", "compare", "dashboard"):
        assert f"python -m optqual {command}" in page
    assert "== Config groups ==" in page or "optimizer: adam, adamw" in page, "python launch.py --help lists the groups"


@pytest.mark.slow
def test_the_notebook_runs_from_top_to_bottom():
    import jupytext
    import nbclient

    notebook = jupytext.read(REPO / "docs" / "notebooks" / "first_look.md")
    nbclient.NotebookClient(notebook, timeout=600, kernel_name="python3").execute()
    printed = "".join(output.get("text", "") for cell in notebook.cells if cell.cell_type == "code" for output in cell.outputs)
    assert "they agree on" in printed
    assert any("image/png" in output.get("data", {}) for cell in notebook.cells if cell.cell_type == "code"
               for output in cell.outputs), "the curves are drawn"


def test_the_configuration_page_names_every_option_of_each_group_and_no_other():
    rows = re.findall(r"^\| `(\w+)` \| ([^|]*)\|", (REPO / "docs" / "configuration.md").read_text().split("| group | options |")[1]
                      .split("\n\n")[0], re.M)
    assert len(rows) == 10
    for group, cell in rows:
        named = set(re.findall(r"`(\w+)`", cell)) - {group}
        options = {path.stem for path in (REPO / "conf" / group).rglob("*.yaml")}
        assert named == options, f"docs/configuration.md, {group}: names {sorted(named)}; conf/{group}/ has {sorted(options)}"
