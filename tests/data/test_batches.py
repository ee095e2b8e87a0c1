"""NoisyBatches: shapes and ranges, per-epoch shuffling, determinism from the seed."""
import numpy as np
import pytest

from minidae import backend
from minidae.data import NoisyBatches


@pytest.fixture
def images():
    return np.random.default_rng(0).integers(0, 256, size=(150, 28, 28), dtype=np.uint8)


def collect(batches, epoch):
    return [(backend.to_numpy(noisy), backend.to_numpy(clean)) for noisy, clean in batches.epoch(epoch)]


def test_shapes_dtype_range_and_coverage(xp, images):
    batches = NoisyBatches(images, batch_size=64, noise="gaussian", level=0.5, seed=1)
    epoch = collect(batches, 0)
    assert len(batches) == len(epoch) == 3 and [len(c) for _, c in epoch] == [64, 64, 22]
    for noisy, clean in epoch:
        assert noisy.dtype == clean.dtype == np.float32 and clean.shape[1:] == (1, 28, 28)
        assert noisy.min() >= 0 and noisy.max() <= 1 and not np.array_equal(noisy, clean)
    seen = np.concatenate([c for _, c in epoch])[:, 0]
    as_bytes = lambda a: sorted(x.tobytes() for x in a)
    assert as_bytes(np.round(seen * 255).astype(np.uint8)) == as_bytes(images)  # every image once
    assert isinstance(batches.images, xp.ndarray) and batches.images.dtype == np.uint8


def test_same_seed_same_batches_other_epoch_other_order(xp, images):
    first, second = (NoisyBatches(images, 32, "salt_and_pepper", 0.2, seed=7) for _ in range(2))
    a, b = collect(first, 3), collect(second, 3)
    assert all(np.array_equal(x[0], y[0]) and np.array_equal(x[1], y[1]) for x, y in zip(a, b))
    assert not np.array_equal(collect(first, 4)[0][1], a[0][1])
    assert not np.array_equal(collect(NoisyBatches(images, 32, "salt_and_pepper", 0.2, seed=8), 3)[0][1], a[0][1])


def test_no_shuffle_and_drop_last(xp, images):
    batches = NoisyBatches(images, 64, "mask", 0.1, shuffle=False, drop_last=True)
    epoch = collect(batches, 0)
    assert len(epoch) == len(batches) == 2
    np.testing.assert_array_equal(epoch[0][1][:, 0], images[:64] / np.float32(255))


def test_bad_arguments(images):
    with pytest.raises(ValueError, match=r"float images must lie in \[0, 1\]"):
        NoisyBatches(images.astype(np.float32))  # 0..255 as floats: the forgotten / 255
    with pytest.raises(ValueError, match=r"NoisyBatches: expected images \(N, H, W\) or \(N, C, H, W\)"):
        NoisyBatches(images.astype(np.int32))
    with pytest.raises(ValueError, match="unknown noise"):
        NoisyBatches(images, noise="blur")
    with pytest.raises(ValueError, match="batch_size must be a positive integer"):
        NoisyBatches(images, batch_size=0)
