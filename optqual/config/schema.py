"""The run config's schema: the run-level settings, the core groups (optimizer, model, data) and
every registered component (optqual/components/registry.py), stored in Hydra's ConfigStore.

The schema of each option of a group is stored under `schema/<group>/<name>`; each YAML option
pulls its schema in through its defaults list, so `epochs=abc` or `optimizer.lrr=0.1` is
refused by Hydra itself before a run directory exists. The run schema's own defaults list
holds every component's default option, so a component added to the registry is composed
into every run without an edit to conf/config.yaml.
"""

from dataclasses import dataclass, field, make_dataclass
from typing import Any, List, Mapping, Optional

from hydra.core.config_store import ConfigStore
from hydra.core.global_hydra import GlobalHydra
from omegaconf import MISSING, OmegaConf

import optqual.components
import optqual.sparsity
from optqual import losses, models
from optqual.components.registry import components
from optqual.data import sources
from optqual.optim import build as optim
from optqual.plugins import import_submodules
from optqual.ranges import within

CORE_GROUPS = {"optimizer": optim.SCHEMAS, "model": models.SCHEMAS, "data": sources.SCHEMAS, "loss": losses.SCHEMAS}  # what a run trains
COMPONENT_PACKAGES = (optqual.components, optqual.sparsity)  # every module of these is imported: its components register


@dataclass
class TrackioSchema:
    enabled: bool = True
    dir: str = "outputs/trackio"


@dataclass
class TensorBoardSchema:
    enabled: bool = False


@dataclass
class SummarySchema:
    tune: List[str] = field(default_factory=list)  # keys a sweep's summary tunes on validation (optqual/tools/summary.py)


@dataclass
class RunSettings:
    """The run-level settings and the core groups; conf/config.yaml gives their values."""

    seed: int = within(42, "[0, 4294967296)")  # numpy's global generator takes 32-bit seeds
    epochs: int = within(200, "[1, inf)")
    eval_every: Optional[int] = within(10, "[1, inf)")  # null: never validate
    checkpoint_every: int = within(1, "[1, inf)")
    grad_norm_every: Any = "auto"  # per-layer gradient norms on steps 0, N, 2N, ... of each epoch; auto: 1, or 8 for a fully connected model
    experiment_name: Optional[str] = None  # the Trackio project and the name of run and sweep directories (experiment_title)
    device: str = "auto"
    threads: Optional[int] = within(None, "[1, inf)")
    jobs_per_gpu: Optional[int] = within(None, "[1, inf)")  # a local sweep's jobs on one GPU at once (optqual/launch/placement.py)
    precision: str = "fp32"
    compile: bool = False
    compile_mode: str = "default"  # torch.compile's mode (optqual/config/checks.py: COMPILE_MODES)
    clip_grad_norm: Optional[float] = within(None, "(0, inf)")  # a run-level key of a component (optqual/components/clip_grad_norm.py)
    lr_scale: float = within(1.0, "(0, inf)")
    optimizer: Any = MISSING
    model: Any = MISSING
    data: Any = MISSING
    loss: Any = MISSING


def experiment_title(name: Optional[str], choices: Mapping[str, Any]) -> str:
    """What a run belongs to: `experiment_name` when set (each preset sets its own), else its model and
    data (`mlp_mnist`): the Trackio project, and the start of run and sweep directory names, so that
    unrelated runs never share a dashboard project."""
    return name or f"{choices['model']}_{choices['data']}"


@dataclass
class Reporting:
    """The dashboards and the sweep summary: after the components in a composed config."""

    trackio: TrackioSchema = field(default_factory=TrackioSchema)
    tensorboard: TensorBoardSchema = field(default_factory=TensorBoardSchema)
    summary: SummarySchema = field(default_factory=SummarySchema)


def load_components() -> None:
    """Import every component's module: each registers itself."""
    for package in COMPONENT_PACKAGES:
        import_submodules(package)


def run_schema() -> type:
    """RunSettings, a field per component group, Reporting (a dataclass's fields come in the reverse
    order of its bases), and a defaults list of the groups' default options after the schema's own
    fields, so the composed config keeps this order."""
    grouped = [component for component in components() if component.default is not None]
    groups = make_dataclass("ComponentGroups", [(component.name, Any, MISSING) for component in grouped])
    defaults = ["_self_", *({component.name: component.default} for component in grouped)]
    return make_dataclass("RunSchema", [("defaults", List[Any], field(default_factory=lambda: list(defaults)))],
                          bases=(Reporting, groups, RunSettings))


def config_groups() -> str:
    """The groups a run composes, each with its options, then the components, for `--help`."""
    loader = GlobalHydra.instance().config_loader()

    def options(group: str) -> str:
        return ", ".join(sorted(loader.get_group_options(group)))

    lines = [f"{group}: {options(group)}" for group in (*CORE_GROUPS, "experiment")]
    lines += ["", "== Components == (each a group of conf/, or a run-level key; called in this order at the points shown)", ""]
    for component in components():
        several = component.default is not None and len(loader.get_group_options(component.name)) > 1
        choice = f"{options(component.name)} (default {component.default})" if several else "its keys"
        points = f"  [{', '.join(component.points)}]" if component.points else ""
        example = " ".join(next(iter(component.examples.values())))
        lines += [f"{component.name}: {choice}{points}", f"    {component.summary}; e.g. {example}"]
        subgroups = sorted(loader.list_groups(component.name)) if component.default is not None else []
        lines += [f"    {component.name}/{subgroup}: {options(f'{component.name}/{subgroup}')}" for subgroup in subgroups]
    return "\n".join(lines)


def register_with_hydra() -> None:
    """The schemas, in Hydra's config store; the resolver `--help` lists the groups with."""
    load_components()
    if not OmegaConf.has_resolver("optqual_config_groups"):
        OmegaConf.register_new_resolver("optqual_config_groups", config_groups)
    store = ConfigStore.instance()
    store.store(name="run_schema", node=run_schema())
    for group, schemas in CORE_GROUPS.items():
        for name, schema in schemas.items():
            store.store(group=f"schema/{group}", name=name, node=schema)
    for component in components():
        for name, schema in component.schemas.items():
            group, _, leaf = f"{component.name}/{name}".rpartition("/")
            store.store(group=f"schema/{group}", name=leaf, node=schema)
