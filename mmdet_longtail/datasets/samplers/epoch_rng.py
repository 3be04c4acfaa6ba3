"""The random generator of one epoch of a sampler."""
import numpy as np


def epoch_random_generator(seed: int, epoch: int) -> np.random.Generator:
    """A generator that is a pure function of ``(seed, epoch)``.

    Every rank builds the same one, and a resumed run gets the one an
    uninterrupted run used for that epoch.
    """
    return np.random.default_rng([int(seed) % 2**63, int(epoch)])
