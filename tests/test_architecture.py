"""The layers of docs/architecture.md hold: lint-imports (import-linter, configured in pyproject.toml)
passes, and fails on an upward import with the offending line; every module is named in the layout."""

import ast
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

from conftest import REPO
from optqual.components.registry import components

LINT_IMPORTS = str(Path(sys.executable).with_name("lint-imports"))


def lint_imports(root: Path) -> subprocess.CompletedProcess:
    """import-linter on the optqual package and pyproject.toml in `root` (it imports from the working directory)."""
    return subprocess.run([LINT_IMPORTS, "--no-cache", "--no-logo"], cwd=root, capture_output=True, text=True)


def test_every_import_points_down_the_layers_and_no_two_modules_import_each_other():
    result = lint_imports(REPO)
    assert result.returncode == 0, result.stdout
    assert "Contracts: 2 kept, 0 broken." in result.stdout


def test_an_upward_import_fails_the_contract_naming_the_import_and_its_line(tmp_path):
    shutil.copytree(REPO / "optqual", tmp_path / "optqual", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "pyproject.toml", tmp_path)
    atomic = tmp_path / "optqual" / "files" / "atomic.py"
    lines = atomic.read_text().splitlines()
    atomic.write_text("\n".join(lines + ["from optqual.tools import summary  # noqa: E402  (files reaching up to the tools)"]) + "\n")
    result = lint_imports(tmp_path)
    assert result.returncode == 1
    assert f"- optqual.files.atomic -> optqual.tools.summary (l.{len(lines) + 1})" in result.stdout


def test_every_module_is_named_in_the_layout_or_is_a_component_with_its_page():
    """docs/architecture.md names every module (a package's __init__.py where it holds more than a
    docstring); a component's module may instead have its page, docs/components/<name>.md."""
    layout = (REPO / "docs" / "architecture.md").read_text()
    modules = sorted(path for path in (REPO / "optqual").rglob("*.py") if path.name != "__init__.py")
    pages = {component.name for component in components() if (REPO / "docs" / "components" / f"{component.name}.md").is_file()}
    unnamed = [module.relative_to(REPO) for module in modules
               if f"`{module.relative_to(REPO)}`" not in layout and not (module.parent.name == "components" and module.stem in pages)]
    assert unnamed == []


def test_an_install_ships_every_package():
    shipped = set(tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    packages = {".".join(path.parent.relative_to(REPO).parts) for path in (REPO / "optqual").rglob("__init__.py")}
    assert packages | {"optqual.conf"} == shipped


INTERNAL = ("trackio.sqlite_storage", "trackio.utils")  # other libraries' modules that are internal whatever their names


def other_libraries_private_parts(path: Path) -> list[str]:
    """`line: code` of every use in `path` of another library's private or internal API: an underscore
    name reached from an imported library (torch._foreach_norm, tv.RandAugment()._augmentation_space,
    `from x import _y`, `import x._y`), or one of its INTERNAL modules. Hydra's `_target_`-style keys
    are config, not API."""
    tree = ast.parse(path.read_text())
    imported: dict[str, str] = {}  # a name bound by an import: the module it came from
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported.update({(alias.asname or alias.name).split(".")[0]: alias.name for alias in node.names})
            found += [f"{node.lineno}: {ast.unparse(node)}" for alias in node.names if private(alias.name) or alias.name.startswith(INTERNAL)]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.module.startswith("optqual"):
            imported.update({alias.asname or alias.name: node.module for alias in node.names})
            if private(node.module) or node.module.startswith(INTERNAL) or any(private(alias.name) for alias in node.names):
                found.append(f"{node.lineno}: {ast.unparse(node)}")
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and private(node.attr):
            root = node.value
            while isinstance(root, (ast.Attribute, ast.Call, ast.Subscript)):
                root = root.func if isinstance(root, ast.Call) else root.value
            if isinstance(root, ast.Name) and root.id in imported and not imported[root.id].startswith("optqual"):
                found.append(f"{node.lineno}: {ast.unparse(node)}")
        elif isinstance(node, ast.Attribute) and ast.unparse(node).startswith(INTERNAL):
            found.append(f"{node.lineno}: {ast.unparse(node)}")
    return found


def private(name: str) -> bool:
    return any(part.startswith("_") and not part.endswith("_") for part in name.split("."))


def test_other_libraries_private_parts_are_used_in_compat_only():
    sources = [*(REPO / "optqual").rglob("*.py"), *(REPO / "benchmarks").glob("*.py"), REPO / "launch.py"]
    uses = {str(path.relative_to(REPO)): other_libraries_private_parts(path) for path in sources if path.name != "compat.py"}
    assert {path: lines for path, lines in uses.items() if lines} == {}
    assert other_libraries_private_parts(REPO / "optqual" / "compat.py")  # the guard sees them where they are
