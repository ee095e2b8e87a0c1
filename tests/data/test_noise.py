"""Noise models: their statistics on large samples, determinism, dtype, and argument checks."""
import numpy as np
import pytest

from minidae import backend
from minidae.data import noise

N = 1_000_000


def flat(xp, value=0.5, dtype=np.float32):
    return xp.full(N, value, dtype=dtype)


def stats(y):
    y = backend.to_numpy(y).astype(np.float64)
    return y.mean(), y.var()


def test_gaussian_mean_and_variance(xp):
    mean, var = stats(noise.gaussian(flat(xp), 0.3, clip=False, seed=1))
    assert abs(mean - 0.5) < 3e-3 and abs(var - 0.09) < 2e-3


def test_gaussian_clipped_stays_in_unit_interval_and_matches_clipped_normal(xp):
    y = backend.to_numpy(noise.gaussian(flat(xp), 0.5, seed=2))
    assert y.min() == 0 and y.max() == 1
    assert abs((y == 1).mean() - 0.1587) < 3e-3  # P(0.5 + 0.5 n >= 1) = P(n >= 1)


def test_mask_zeroes_a_fraction_p(xp):
    y = backend.to_numpy(noise.mask(flat(xp), 0.3, seed=3))
    assert abs((y == 0).mean() - 0.3) < 3e-3 and set(np.unique(y)) == {0.0, 0.5}


def test_salt_and_pepper_fractions(xp):
    y = backend.to_numpy(noise.salt_and_pepper(flat(xp), 0.2, seed=4))
    assert abs((y == 0).mean() - 0.1) < 2e-3 and abs((y == 1).mean() - 0.1) < 2e-3
    assert abs((y == 0.5).mean() - 0.8) < 3e-3


def test_speckle_is_multiplicative(xp):
    mean, var = stats(noise.speckle(flat(xp, 0.4), 0.5, clip=False, seed=5))
    assert abs(mean - 0.4) < 3e-3 and abs(var - (0.4 * 0.5) ** 2) < 2e-3
    assert (backend.to_numpy(noise.speckle(flat(xp, 0.0), 0.5, seed=5)) == 0).all()  # black stays black


@pytest.mark.parametrize("name", [n for n in noise.NOISES if n != "none"])
def test_seeded_noise_is_repeatable_and_keeps_dtype(xp, name):
    x = xp.asarray(np.random.default_rng(0).uniform(size=(8, 1, 28, 28)), dtype=xp.float32)
    a, b = noise.apply_noise(name, x, 0.3, seed=9), noise.apply_noise(name, x, 0.3, seed=9)
    assert a.dtype == xp.float32 and bool((a == b).all())
    assert not bool((noise.apply_noise(name, x, 0.3, seed=10) == a).all())


@pytest.mark.parametrize("call, message", [
    (lambda: noise.mask(np.zeros(3, np.float32), 1.5), r"mask: level must lie in \[0, 1\]"),
    (lambda: noise.gaussian(np.zeros(3, np.float32), -1), "gaussian: level must lie in"),
    (lambda: noise.gaussian(np.zeros(3, np.uint8), 0.5), "expects floating-point images"),
    (lambda: noise.apply_noise("blur", np.zeros(3, np.float32), 0.5), "unknown noise 'blur'"),
])
def test_bad_arguments(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_none_is_the_identity_and_clip_false_leaves_gaussian_noise_unclipped(xp):
    x = xp.asarray(np.random.default_rng(0).uniform(size=(4, 1, 28, 28)), dtype=xp.float32)
    assert noise.apply_noise("none", x, 0.0) is x
    y = backend.to_numpy(noise.apply_noise("gaussian", x, 1.0, seed=3, clip=False))
    assert y.min() < -1 and y.max() > 2  # N(0, 1) on [0, 1] images, as the fc_dae reference feeds them
