"""The shared primitives: im2col/col2im and correlate/correlate_transpose are adjoint pairs."""
import numpy as np
import pytest

from minidae import speed
from minidae.nn.functional import correlate, correlate_transpose
from minidae.nn.im2col import col2im, conv_output_size, conv_transpose_output_size


def geometries(count=25, seed=5):
    rng = np.random.default_rng(seed)
    while count:
        kernel, stride = tuple(rng.integers(1, 5, 2).tolist()), tuple(rng.integers(1, 4, 2).tolist())
        padding, hw = tuple(rng.integers(0, 5, 2).tolist()), tuple(rng.integers(1, 12, 2).tolist())
        if all(h + 2 * p >= k for h, p, k in zip(hw, padding, kernel)):
            count -= 1
            yield kernel, stride, padding, hw


@pytest.mark.parametrize("kernel, stride, padding, hw", list(geometries()))
def test_adjoint_pairs(xp, kernel, stride, padding, hw):
    """<im2col(x), c> = <x, col2im(c)> and <W * x, z> = <x, W^T * z>, for the core functions and for what runs."""
    rng = np.random.default_rng(0)
    out_hw = tuple(conv_output_size(*args) for args in zip(hw, kernel, stride, padding))
    x = xp.asarray(rng.normal(size=(2, 3, *hw)))
    for gather, scatter in ((speed.bound("im2col"), speed.bound("col2im")), (speed.core("im2col"),
                                                                             speed.core("col2im"))):
        cols = gather(x, kernel, stride, padding, out_hw)
        c = xp.asarray(rng.normal(size=cols.shape))
        assert np.isclose(float((cols * c).sum()), float((x * scatter(c, x.shape, kernel, stride, padding,
                                                                       out_hw)).sum()))
    weight = xp.asarray(rng.normal(size=(4, 3, *kernel)))
    Y, _ = correlate(x, weight, stride, padding, (1, 1), 1, out_hw)
    Z = xp.asarray(rng.normal(size=Y.shape))
    dx = correlate_transpose(Z, weight, out_hw, x.shape, stride, padding, (1, 1), 1)
    assert np.isclose(float((Y * Z).sum()), float((x * dx).sum()))


def test_size_rules_invert_each_other():
    for kernel, stride, padding, hw in geometries(200, seed=6):
        for size, k, s, p in zip(hw, kernel, stride, padding):
            for output_padding in range(s):
                grown = conv_transpose_output_size(size, k, s, p, output_padding)
                if grown >= 1 and grown + 2 * p >= k:
                    assert conv_output_size(grown, k, s, p) == size


@pytest.mark.parametrize("kernel, padding, hw", [((3, 3), (2, 2), (8, 8)), ((3, 3), (4, 4), (16, 16)),
                                                 ((2, 3), (0, 1), (7, 5)), ((2, 2), (1, 0), (5, 6))])
def test_col2im_of_tiling_windows_equals_the_accumulating_loop(kernel, padding, hw):
    """stride = kernel takes a shortcut on NumPy (assignments instead of adds); col2im must give, as its core
    loop does, the numbers of the definition: every column entry added onto the pixel its window tap covers."""
    stride = kernel
    out_hw = tuple(conv_output_size(s, k, st, p) for s, k, st, p in zip(hw, kernel, stride, padding))
    cols = np.random.default_rng(0).normal(size=(3 * kernel[0] * kernel[1], out_hw[0] * out_hw[1] * 2))
    reference = np.zeros((2, 3, hw[0] + 2 * padding[0] + kernel[0], hw[1] + 2 * padding[1] + kernel[1]))
    c = cols.reshape(3, kernel[0], kernel[1], out_hw[0], out_hw[1], 2)
    for i in range(out_hw[0]):
        for j in range(out_hw[1]):
            for a in range(kernel[0]):
                for b in range(kernel[1]):
                    reference[:, :, i * stride[0] + a, j * stride[1] + b] += c[:, a, b, i, j].T
    reference = reference[:, :, padding[0]:padding[0] + hw[0], padding[1]:padding[1] + hw[1]]
    for function in (col2im, speed.core("col2im")):
        assert np.array_equal(function(cols, (2, 3, *hw), kernel, stride, padding, out_hw), reference)
