"""Modules that register themselves are found by importing them: every module of a package, once.

A component (optqual/components/registry.py) or an analysis measure
(optqual/analysis/measures/__init__.py) declares itself in its own module, so adding one touches
no list: the packages that hold them are imported whole, in name order, before anything reads
what was registered.
"""

import importlib
import pkgutil
from types import ModuleType


def import_submodules(package: ModuleType) -> list[ModuleType]:
    """Import every module of `package` (not its subpackages' modules), in name order."""
    return [importlib.import_module(f"{package.__name__}.{info.name}")
            for info in sorted(pkgutil.iter_modules(package.__path__), key=lambda info: info.name) if not info.ispkg]
