"""One seed controls everything: model init, data order, augmentation, numpy and random.

Separate streams are derived from the run's seed with numpy's SeedSequence, so the data
order does not reuse the numbers that initialised the weights.
"""

import os
import random

import numpy as np
import torch


def make_deterministic(seed: int) -> None:
    """Seed every global generator and switch PyTorch to deterministic kernels."""
    # cuBLAS needs a fixed workspace for deterministic matmuls; it must be set before CUDA starts
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # also seeds every CUDA device
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False
    torch.use_deterministic_algorithms(True)
    # Deterministic mode also NaN-fills every new tensor, to expose kernels that read memory
    # they never wrote; ours write all of theirs (repeats are tested bit-identical), and the
    # fill costs 7% of a CPU step
    torch.utils.deterministic.fill_uninitialized_memory = False


STREAMS = ("data", "batch_mix", "augment", "random_erasing")  # the run's own generators, each on its own stream of the seed


def stream_generator(seed: int, stream: str, device: torch.device = torch.device("cpu")) -> torch.Generator:
    """A generator on device seeded with the run's `stream`: independent of the others and of the weights."""
    children = np.random.SeedSequence(seed).spawn(len(STREAMS))
    generator = torch.Generator(device=device)
    generator.manual_seed(int(children[STREAMS.index(stream)].generate_state(1, dtype=np.uint64)[0]))
    return generator


def data_generator(seed: int, device: torch.device) -> torch.Generator:
    """The generator for the data order and augmentation, living on the training device."""
    return stream_generator(seed, "data", device)
