"""Configs saved by earlier versions of optqual, read as this version composes them.

A run's config is saved with it (.hydra/config.yaml, checkpoint.pt), and `resume` continues a
run only with the config it was started with. When a module moves, the `_target_`s saved
before the move name the old place: they are read as the new one, so a run started before
the move resumes, and every tool reads it, as if it had been started now.
"""

from typing import Any

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


def moved(tree: Any) -> Any:
    """`tree` (plain containers) with every `_target_` that moved pointing where it is now."""
    if isinstance(tree, dict):
        return {key: MOVED.get(value, value) if key == "_target_" else moved(value) for key, value in tree.items()}
    if isinstance(tree, list):
        return [moved(item) for item in tree]
    return tree


def upgrade(config: dict) -> dict:
    """A run config (plain containers, as saved) in the form this optqual composes."""
    config = moved(config)
    policy = config.get("augment")
    # a policy's stream was seeded by its own `seed: ${seed}` before the registry gave it the run's: the same numbers
    if isinstance(policy, dict) and policy.get("seed", "absent") in ("${seed}", config.get("seed")):  # as saved, or resolved
        config["augment"] = {key: value for key, value in policy.items() if key != "seed"}
    return config
