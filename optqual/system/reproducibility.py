"""One seed controls everything: model init, data order, augmentation, numpy and random.

Each consumer of randomness (the data order, each component that draws) has its own stream,
derived from the run's seed with numpy's SeedSequence, so that the data order does not reuse
the numbers that initialised the weights, and turning a component on changes no other stream.
"""

import hashlib
import os
import random

import numpy as np
import torch

# the streams every run so far drew from, spawned in this order: child k of SeedSequence(seed) is the
# k-th; a stream added later is keyed by its name instead, so these keep their numbers forever
FIRST_STREAMS = ("data", "batch_mix", "augment", "random_erasing")
DATA_STREAM = "data"  # the data order's and the dataset's own augmentation's: the training loop's


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


def spawn_key(stream: str) -> int:
    """The stream's child of the run's SeedSequence: its place among the first streams, or a 64-bit
    number from its name beyond them."""
    if stream in FIRST_STREAMS:
        return FIRST_STREAMS.index(stream)
    return len(FIRST_STREAMS) + int.from_bytes(hashlib.sha256(stream.encode()).digest()[:8], "big")


def stream_generator(seed: int, stream: str, device: torch.device = torch.device("cpu")) -> torch.Generator:
    """A generator on `device` seeded with the run's `stream`: independent of the others and of the weights."""
    child = np.random.SeedSequence(seed, spawn_key=(spawn_key(stream),))
    generator = torch.Generator(device=device)
    generator.manual_seed(int(child.generate_state(1, dtype=np.uint64)[0]))
    return generator
