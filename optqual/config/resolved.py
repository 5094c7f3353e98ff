"""The config a run was built with, as one file that rebuilds its model: every interpolation
resolved, and what the data decided filled in.

A data option may leave the number of classes, the channels or the image size to the data
(an npz file, MNIST with `to_rgb`): the composed config then says null, and the model's
inputs interpolate it. Once the data is read, its facts fill those keys and the model's
inputs (optqual/models: `inputs_from_data`), so the run's resolved_config.yaml alone builds
its model and reads its data again.
"""

from typing import Any, Mapping

from omegaconf import DictConfig, OmegaConf

from optqual.models import DATA_FACTS, inputs_from_data


def resolved_config(cfg: DictConfig, facts: Mapping[str, Any]) -> dict:
    """`cfg` resolved, with the data's facts (ImageData.facts: num_classes, channels, image_size)
    in place of its nulls and the model's inputs that the data decides."""
    filled = OmegaConf.create(OmegaConf.to_container(cfg, resolve=False))
    for fact in DATA_FACTS.values():
        if filled.data.get(fact) is None and facts.get(fact) is not None:
            filled.data[fact] = facts[fact]
    for key, value in inputs_from_data(filled.model, facts).items():  # what an explicit null in the model left open
        filled.model[key] = value
    return OmegaConf.to_container(filled, resolve=True)
