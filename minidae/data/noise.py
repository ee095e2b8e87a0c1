"""Corruptions for denoising: each maps clean images in [0, 1] to noisy ones, on NumPy or CuPy.

Every model takes ``rng`` (a ``Generator`` of the array's backend) or ``seed`` (a fresh
generator of that backend, seeded), else the backend's shared generator
(``minidae.backend.rng()``). The noise is drawn in the image's dtype.

    gaussian          y = clip(x + std * n),  n ~ N(0, 1)          (the spec's randn noise, docs/spec.md)
    mask              y = x * b,              b ~ Bernoulli(1 - p)  (a fraction p of pixels zeroed)
    salt_and_pepper   y = 0 w.p. p/2, 1 w.p. p/2, else x
    speckle           y = clip(x + std * x * n)                    (multiplicative, as in SAR/ultrasound)
    none              y = x                                         (a plain autoencoder; the level is ignored)
"""
import math

import numpy

from .. import backend

__all__ = ["gaussian", "mask", "salt_and_pepper", "speckle", "none", "NOISES", "LEVEL_RANGES", "check_noise",
           "apply_noise"]

LEVEL_RANGES = {"gaussian": (0, float("inf")), "mask": (0, 1), "salt_and_pepper": (0, 1),
                "speckle": (0, float("inf")), "none": (0, float("inf"))}  # what each model's level may be


def check_noise(name, level):
    """Raise ValueError unless ``name`` is a noise model and ``level`` lies in its range."""
    if name not in LEVEL_RANGES:
        raise ValueError(f"unknown noise {name!r}: choose from {', '.join(LEVEL_RANGES)}")
    low, high = LEVEL_RANGES[name]
    if not (math.isfinite(level) and low <= level <= high):
        raise ValueError(f"{name}: level must lie in [{low}, {high}], got {level}")


def _generator(x, rng, seed):
    if rng is not None:
        return rng
    if seed is not None:
        return backend.array_module(x).random.default_rng(seed)
    return backend.rng()


def _check(x, name, level):
    if not numpy.issubdtype(x.dtype, numpy.floating):  # CuPy arrays carry NumPy dtypes too
        raise ValueError(f"{name}: expects floating-point images in [0, 1], got dtype {x.dtype}")
    check_noise(name, level)


def gaussian(x, std, clip=True, rng=None, seed=None):
    """Additive Gaussian noise of standard deviation ``std``, clipped to [0, 1] unless clip=False."""
    _check(x, "gaussian", std)
    y = x + std * _generator(x, rng, seed).standard_normal(x.shape, dtype=x.dtype)
    return backend.array_module(x).clip(y, 0, 1) if clip else y


def mask(x, p, rng=None, seed=None):
    """Zero each pixel independently with probability ``p``."""
    _check(x, "mask", p)
    keep = _generator(x, rng, seed).random(x.shape, dtype=x.dtype) >= p
    return x * keep


def salt_and_pepper(x, p, rng=None, seed=None):
    """Replace each pixel with probability ``p``: by 0 (pepper) or 1 (salt), equally often."""
    _check(x, "salt_and_pepper", p)
    xp = backend.array_module(x)
    u = _generator(x, rng, seed).random(x.shape, dtype=x.dtype)
    return xp.where(u < p / 2, xp.zeros((), x.dtype), xp.where(u < p, xp.ones((), x.dtype), x))


def speckle(x, std, clip=True, rng=None, seed=None):
    """Multiplicative Gaussian noise: x + std * x * n, clipped to [0, 1] unless clip=False."""
    _check(x, "speckle", std)
    y = x + std * x * _generator(x, rng, seed).standard_normal(x.shape, dtype=x.dtype)
    return backend.array_module(x).clip(y, 0, 1) if clip else y


def none(x, level=0.0, rng=None, seed=None):
    """No corruption: the input itself (for plain autoencoders)."""
    _check(x, "none", level)
    return x


NOISES = {"gaussian": gaussian, "mask": mask, "salt_and_pepper": salt_and_pepper, "speckle": speckle, "none": none}
CLIPPED = ("gaussian", "speckle")  # the models whose result may leave [0, 1], clipped unless clip=False


def apply_noise(name, x, level, rng=None, seed=None, clip=True):
    """``NOISES[name](x, level, ...)`` with a clear error for an unknown name; ``clip`` (default True)
    applies to the Gaussian and speckle models, whose output can leave [0, 1]."""
    check_noise(name, level)
    if name in CLIPPED:
        return NOISES[name](x, level, clip=clip, rng=rng, seed=seed)
    return NOISES[name](x, level, rng=rng, seed=seed)
