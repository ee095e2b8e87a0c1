"""(noisy, clean) mini-batches that live on the active backend.

The whole data set is copied to the backend once, as uint8 (47 MB for MNIST's training
set); each batch is gathered, converted to float32 in [0, 1] and corrupted there, so a GPU
epoch copies nothing from the host per step. Shuffling and noise for epoch ``e`` come from
a generator seeded by (seed, e): the same seed gives the same batches and the same noise,
on each backend's generator family, and a run resumed at an epoch boundary continues
exactly as if it had never stopped.
"""
import math

import numpy

from .. import backend
from .noise import apply_noise, check_noise

__all__ = ["NoisyBatches", "epoch_seed", "unit_images"]


def unit_images(images):
    """uint8 images (N, H, W) -> float32 (N, 1, H, W) in [0, 1] on the active backend."""
    xp = backend.xp
    return (xp.asarray(images).astype(xp.float32) / 255)[:, None]


def epoch_seed(seed, epoch):
    """An int seed for epoch ``epoch`` of a run seeded with ``seed`` (independent streams)."""
    return int(numpy.random.SeedSequence([seed, epoch]).generate_state(1)[0])


class NoisyBatches:
    """Iterate ``for noisy, clean in batches.epoch(e)``; each is float32 (B, 1, H, W).

    images: uint8 array (N, H, W) (NumPy or the backend's); noise: a name from
    ``minidae.data.noise.NOISES`` and its level.
    """

    def __init__(self, images, batch_size=64, noise="gaussian", level=0.5, seed=0, shuffle=True,
                 drop_last=False, clip=True):
        if images.ndim != 3 or images.dtype != numpy.uint8:
            raise ValueError(f"NoisyBatches: expected uint8 images (N, H, W), got {images.dtype} {images.shape}")
        if batch_size < 1:
            raise ValueError(f"NoisyBatches: batch_size must be positive, got {batch_size}")
        self.images = backend.xp.asarray(images)
        self.batch_size, self.noise, self.level = batch_size, noise, level
        self.seed, self.shuffle, self.drop_last, self.clip = seed, shuffle, drop_last, clip
        check_noise(noise, level)

    def __len__(self):
        count = len(self.images) / self.batch_size
        return math.floor(count) if self.drop_last else math.ceil(count)

    def epoch(self, epoch):
        """The (noisy, clean) batches of epoch ``epoch``, shuffled and corrupted by its own generator."""
        xp = backend.xp
        rng = xp.random.default_rng(epoch_seed(self.seed, epoch))
        n = len(self.images)
        order = xp.argsort(rng.random(n)) if self.shuffle else xp.arange(n)
        for b in range(len(self)):
            index = order[b * self.batch_size:(b + 1) * self.batch_size]
            clean = unit_images(self.images[index])
            yield apply_noise(self.noise, clean, self.level, rng=rng, clip=self.clip), clean
