"""Configs saved by earlier versions of optqual, read as this version composes them.

A run's config is saved with it (.hydra/config.yaml, resolved_config.yaml, checkpoint.pt), and
`resume` continues a run only with the config it was started with. Three things change under a
saved config: modules move, components are added, and defaults change. A run that got a default
since changed is resumed with that value pinned on its command line (`pinned_defaults`), so it
is composed as it was started: the same config, the same Trackio project. The `_target_`s saved before a move name
the old place: they are read as the new one. A component added after a run was configured is
absent from its config: the run had it off, as a component is added switched off, so it is read
with the component's default option. A run started before either change resumes, and every tool
reads it, as if it had been started now.
"""

import functools
from typing import Any

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

from optqual.files.layout import config_dir
from optqual.components.registry import components
from optqual.config.schema import register_with_hydra

# the package in layers (2026-12-06): every `_target_` that moved, old -> new
MOVED = {
    **{f"optqual.schedule.{name}": f"optqual.components.scheduler.{name}"
       for name in ("constant", "cosine", "step", "multistep", "plateau", "onecycle")},
    "optqual.schedule.constant_coefficient": "optqual.sparsity.regularizer_schedule.constant",
    "optqual.schedule.linear_warmup": "optqual.sparsity.regularizer_schedule.linear_warmup",
    "optqual.schedule.cosine_anneal": "optqual.sparsity.regularizer_schedule.cosine_anneal",
    **{f"optqual.policies.{name}": f"optqual.components.augment.{name}" for name in ("RandAugment", "TrivialAugmentWide", "AutoAugment")},
    **{f"optqual.augment.{name}": f"optqual.data.augment.{name}" for name in ("CropFlip", "ResizedCropFlip")},
    **{f"optqual.analysis.{name}.{function}": f"optqual.analysis.measures.{name}.{function}"
       for name, function in (("weights", "measure"), ("activations", "measure"), ("sharpness", "measure"), ("calibration", "measure"),
                              ("features", "measure"), ("interpolation", "compare"), ("similarity", "compare"))},
}


# keys added to a group's options since, with the value that does what a run saved before did (2026-12-07)
# (group, the _target_ of the one option that got them, or None for every option) -> {key: value}
ADDED_KEYS = {("data", None): {"full_batch": False, "train_size": None}, ("model", "optqual.models.mlp.MLP"): {"activation": "relu"}}


# run-level keys added since, with the value that does what a run saved before did (2026-12-07)
ADDED_RUN_KEYS = {"jobs_per_gpu": None, "compile_mode": "default"}


def with_added_keys(config: dict) -> dict:
    """`config` with each key added since it was saved, at the value that does what it did then."""
    config = {**ADDED_RUN_KEYS, **config}
    for (group, target), added in ADDED_KEYS.items():
        node = config.get(group)
        if isinstance(node, dict) and target in (None, node.get("_target_")):
            config[group] = {**added, **node}
    return config


def moved(tree: Any) -> Any:
    """`tree` (plain containers) with every `_target_` that moved pointing where it is now."""
    if isinstance(tree, dict):
        return {key: MOVED.get(value, value) if key == "_target_" else moved(value) for key, value in tree.items()}
    if isinstance(tree, list):
        return [moved(item) for item in tree]
    return tree


# run-level defaults that changed, and the value a run composed before the change got
CHANGED_DEFAULTS = {"experiment_name": "resnet8_cifar10_baseline"}  # 2026-12-07: null, read as <model>_<data>


def pinned_defaults(config: Any, overrides: list[str]) -> list[str]:
    """`key=value` for each default since changed that `config` (a run's, or a sweep's) got without
    setting it in `overrides`: what relaunches it as it was composed."""
    given = {override.split("=", 1)[0].lstrip("+~") for override in overrides}
    return [f"{key}={old}" for key, old in CHANGED_DEFAULTS.items() if key not in given and config.get(key) == old]


@functools.cache
def default_components() -> dict[str, Any]:
    """Each component group's node as this optqual composes a run with no overrides."""
    register_with_hydra()
    if GlobalHydra.instance().is_initialized():  # inside a run: its own conf/
        composed = compose("config")
    else:
        with initialize_config_dir(str(config_dir()), version_base="1.3"):
            composed = compose("config")
    return {component.name: OmegaConf.to_container(composed[component.name], resolve=True) for component in components()
            if component.default is not None}  # the others' keys are run-level settings, in every config


def upgrade(config: dict) -> dict:
    """A run config (plain containers, as saved) in the form this optqual composes."""
    absent = [component.name for component in components() if component.default is not None and component.name not in config]
    config = with_added_keys(moved(config) | {name: default_components()[name] for name in absent})
    loss = config.get("loss")
    if isinstance(loss, dict) and "name" not in loss:  # saved before `loss` was a group (2026-12-07): cross-entropy was the loss
        config["loss"] = {"name": "cross_entropy", **loss}
    policy = config.get("augment")
    # a policy's stream was seeded by its own `seed: ${seed}` before the registry gave it the run's: the same numbers
    if isinstance(policy, dict) and policy.get("seed", "absent") in ("${seed}", config.get("seed")):  # as saved, or resolved
        config["augment"] = {key: value for key, value in policy.items() if key != "seed"}
    return config
