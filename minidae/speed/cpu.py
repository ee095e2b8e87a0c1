"""The NumPy speed devices: faster versions of core functions, with the same results (tests/test_speed.py).

``im2col`` / ``col2im``
    The core loops copy (or add) one strided slice per kernel tap. Here they work on a channel-major,
    batch-innermost (C, H, W, N) buffer instead of (N, C, H, W): a strided spatial slice then still moves N
    contiguous numbers at a time. Only the border of the padded buffer is filled (the interior is
    overwritten anyway); col2im assigns the first tap's block instead of zero-filling and adding it when the
    stride is 1, and assigns every tap when the windows tile the input (stride = kernel, as the spec's
    conv4/conv5), since then no two windows overlap (the same numbers: 0 + v = v, except that an entry of
    -0.0 stays -0.0 where the core's add gives 0.0, which compares equal). col2im returns (N, C, H, W) arrays
    backed by (C, H, W, N) memory, which the next GEMM reads as rows without a copy.
``max_winners``
    first_maximum: the winner mask from a few passes over whole arrays (compare with the maximum, keep the
    first hit) instead of an argmax over the strided taps axis, 5 to 8 times faster (docs/performance.md).
``matmul``
    an outer product (shared dimension 1, as a batch-of-one weight gradient) as a broadcast multiply:
    OpenBLAS runs such GEMMs at about 1 GFLOP/s.
``resize_backward``
    nearest upsampling's backward by whole factors as the sum of each block, a strided slice per position in
    it, not two GEMMs with the one-hot interpolation matrices.
``adam_step`` / ``zero_grads``
    Adam's update applied once to flat arrays holding every parameter, gradient and moment (each
    ``p.data``, ``p.grad`` and moment becomes a view into them) instead of once per parameter: 16 NumPy
    calls instead of 16 per parameter, each writing into one of two scratch arrays instead of a new one,
    and zero_grad(set_to_none=False) is one fill. The operations are optim.adam's, in its order.
"""
import itertools

import numpy

from ..backend import CORE
from ..nn import functional
from ..nn.functional import correlate
from ..nn.im2col import nchw_to_rows, padded_extent, rows_to_nchw
from ..optim import optimizers
from . import register
from .flat import FlatAdam, zero_grads_for

__all__ = ["im2col", "col2im", "first_maximum", "matmul", "adam_step", "zero_grads", "resize_backward"]


def _bordered(shape, interior, fill, dtype):
    """An array of ``shape`` (C, HP, WP, N) whose rows and columns outside ``interior`` = (top, H, left, W)
    hold ``fill``; the interior is left for the caller to overwrite. The same array as a ``fill``-filled
    one once the caller has, with one pass over the borders instead of over all of it."""
    top, h, left, w = interior
    padded = numpy.empty(shape, dtype=dtype)
    padded[:, :top] = fill
    padded[:, top + h:] = fill
    padded[:, top:top + h, :left] = fill
    padded[:, top:top + h, left + w:] = fill
    return padded


def _padded_shape(x_shape, kernel, stride, padding, out_hw, dilation):
    n, c, h, w = x_shape
    return (c, padded_extent(h, padding[0], kernel[0], stride[0], dilation[0], out_hw[0]),
            padded_extent(w, padding[1], kernel[1], stride[1], dilation[1], out_hw[1]), n)


def im2col(x, kernel, stride, padding, out_hw, dilation=(1, 1), fill=0):
    """minidae.nn.im2col.im2col on a (C, H, W, N) buffer with only its border filled."""
    (kh, kw), (sh, sw), (ph, pw), (dh, dw), (oh, ow) = kernel, stride, padding, dilation, out_hw
    n, c, h, w = x.shape
    padded = _bordered(_padded_shape(x.shape, kernel, stride, padding, out_hw, dilation), (ph, h, pw, w), fill,
                       x.dtype)
    padded[:, ph:ph + h, pw:pw + w] = x.transpose(1, 2, 3, 0)
    cols = numpy.empty((c, kh, kw, oh, ow, n), dtype=x.dtype)
    for i in range(kh):
        for j in range(kw):
            cols[:, i, j] = padded[:, i * dh:i * dh + sh * oh:sh, j * dw:j * dw + sw * ow:sw]
    return cols.reshape(c * kh * kw, oh * ow * n)


def col2im(cols, x_shape, kernel, stride, padding, out_hw, dilation=(1, 1)):
    """minidae.nn.im2col.col2im on a (C, H, W, N) buffer, assigning where nothing has been added yet."""
    (kh, kw), (sh, sw), (ph, pw), (dh, dw), (oh, ow) = kernel, stride, padding, dilation, out_hw
    n, c, h, w = x_shape
    shape = _padded_shape(x_shape, kernel, stride, padding, out_hw, dilation)
    cols = cols.reshape(c, kh, kw, oh, ow, n)
    taps = [(i, j) for i in range(kh) for j in range(kw)]
    if (kh, kw) == (sh, sw) and (dh, dw) == (1, 1):  # windows tile the input: every pixel gets one entry at most
        padded = _bordered(shape, (0, oh * kh, 0, ow * kw), 0, cols.dtype)
        for i, j in taps:
            padded[:, i:oh * kh:kh, j:ow * kw:kw] = cols[:, i, j]
    else:
        if (sh, sw) == (1, 1):  # the first tap's windows form one block: assign it (= 0 + it), zero only the rest
            padded = _bordered(shape, (0, oh, 0, ow), 0, cols.dtype)
            padded[:, :oh, :ow] = cols[:, 0, 0]
            taps = taps[1:]
        else:
            padded = numpy.zeros(shape, dtype=cols.dtype)
        for i, j in taps:
            padded[:, i * dh:i * dh + sh * oh:sh, j * dw:j * dw + sw * ow:sw] += cols[:, i, j]
    return padded[:, ph:ph + h, pw:pw + w].transpose(3, 0, 1, 2)


def correlate_transpose(Z, weight, windows_hw, out_shape, stride, padding, dilation, groups):
    """functional.correlate_transpose, W^T * z, for a stride-1 correlation with fewer output channels O than input
    channels C (a last layer mapping 32 channels to 1), as the correlation of z with the kernel flipped and its
    channel axes swapped, padded by K - 1 - P: dx[h] = sum_k W[k] dy[h + P - k] = sum_k' W[K-1-k'] dypad[h + k'].
    It copies z's O*KH*KW rows through im2col instead of writing and adding back C*KH*KW (32 times less memory
    traffic for 32 -> 1 channels). The same sums, in another order: equal to float rounding (tests/test_speed.py).
    Elsewhere (strides, dilation, groups, O >= C, padding beyond K - 1) the core function."""
    o, c, kh, kw = weight.shape
    if (tuple(stride) != (1, 1) or tuple(dilation) != (1, 1) or groups != 1 or o >= c or padding[0] > kh - 1
            or padding[1] > kw - 1):
        return CORE["correlate_transpose"](Z, weight, windows_hw, out_shape, stride, padding, dilation, groups)
    n, _, h, w = out_shape
    flipped = numpy.ascontiguousarray(weight[:, :, ::-1, ::-1].transpose(1, 0, 2, 3))  # (C, O, KH, KW)
    dx_rows, _ = correlate(rows_to_nchw(Z, n, *windows_hw), flipped, (1, 1), (kh - 1 - padding[0], kw - 1 - padding[1]),
                           (1, 1), 1, (h, w))
    return rows_to_nchw(dx_rows, n, h, w)


class Taps:
    """What the tap-wise conv2d keeps for its backward instead of im2col's copy: the input padded, in (C, HP + 1,
    WP, N) memory seen as one row per channel (``flat``), and the output's size; a tap (i, j)'s view of every
    window is the column slice of ``flat`` that starts (i WP + j) N further."""

    __slots__ = ("flat", "out_hw", "wp", "n")

    def __init__(self, flat, out_hw, wp, n):
        self.flat, self.out_hw, self.wp, self.n = flat, out_hw, wp, n

    def tap(self, i, j):
        """The (C, OH*WP*N) view tap (i, j) of every window reads: output (oh, w, n) for w < OW, else wrap-around."""
        start = (i * self.wp + j) * self.n
        return self.flat[:, start:start + self.out_hw[0] * self.wp * self.n]


def conv2d(x, weight, bias, stride, padding, dilation, groups):
    """functional.conv2d for a stride-1 convolution with at most 4 output channels (a last layer mapping 32
    channels to 1), as a sum over the KH x KW kernel taps, y = sum_ij W[:, :, i, j] @ (xpad shifted by (i, j)),
    each shift a column slice of the padded input laid out (C, HP, WP, N): no im2col copy of C*KH*KW rows (2.6x
    faster for 32 -> 1 channels at 28 x 28; the output's WP - OW extra columns per row are computed and dropped).
    Its backward is :func:`conv2d_backward`'s, from the padded input it keeps (:class:`Taps`). The same sums in
    another order: equal to float rounding. Elsewhere the core function (im2col and one GEMM)."""
    o, c, kh, kw = weight.shape
    if (tuple(stride) != (1, 1) or tuple(dilation) != (1, 1) or groups != 1 or o > 4 or not x.size
            or functional.conv2d_backward is not conv2d_backward):
        return CORE["conv2d"](x, weight, bias, stride, padding, dilation, groups)
    (n, _, h, w), (top, bottom, left, right) = x.shape, padding
    hp, wp = h + top + bottom, w + left + right
    out_hw = (hp - kh + 1, wp - kw + 1)
    padded = _bordered((c, hp + 1, wp, n), (top, h, left, w), 0, x.dtype)  # one row more: the last tap's slice
    padded[:, top:top + h, left:left + w] = x.transpose(1, 2, 3, 0)
    saved = Taps(padded.reshape(c, -1), out_hw, wp, n)
    y = numpy.zeros((o, out_hw[0] * wp * n), dtype=x.dtype)
    for i in range(kh):
        for j in range(kw):
            y += weight[:, :, i, j] @ saved.tap(i, j)
    y = numpy.ascontiguousarray(y.reshape(o, out_hw[0], wp, n)[:, :, :out_hw[1]])  # (O, OH, OW, N): rows
    y = y.transpose(3, 0, 1, 2)
    if bias is not None:
        y += bias.reshape(1, -1, 1, 1)
    return y, saved


def conv2d_backward(dy, cols, weight, x_shape, stride, padding, dilation, groups, weight_grad=None, bias_grad=None,
                    input_grad=True):
    """functional.conv2d_backward after the tap-wise :func:`conv2d`: dL/dW[:, :, i, j] += dY (as WP-wide rows,
    zeros in the extra columns) @ (tap (i, j)'s view)^T, the bias's gradient as the core's, and dL/dx as
    functional.correlate_transpose (for these layers, the flipped-kernel correlation). After the core conv2d
    (``cols`` an array) the core function."""
    if not isinstance(cols, Taps):
        return CORE["conv2d_backward"](dy, cols, weight, x_shape, stride, padding, dilation, groups, weight_grad,
                                       bias_grad, input_grad)
    (o, _, kh, kw), (oh, ow), dY = weight.shape, cols.out_hw, nchw_to_rows(dy)
    if weight_grad is not None:
        rows = numpy.zeros((o, oh, cols.wp, cols.n), dtype=dy.dtype)
        rows[:, :, :ow] = dY.reshape(o, oh, ow, cols.n)
        rows = rows.reshape(o, -1)
        for i in range(kh):
            for j in range(kw):
                weight_grad[:, :, i, j] += rows @ cols.tap(i, j).T
    if bias_grad is not None:
        functional.backend.add_row_sums(bias_grad, dY)
    if not input_grad:
        return None
    return functional.correlate_transpose(dY, weight, dy.shape[2:], x_shape, stride, padding[::2], dilation, groups)


def first_maximum(windows, best):
    """minidae.nn.functional.max_winners as a few passes over whole arrays: True at the first tap equal to
    the maximum, and in a window with NaNs at its last NaN (the winner mask, without an argmax)."""
    hits = _only_one(windows == best[:, None], range(windows.shape[1]))  # none in a NaN window: its max is NaN
    hits |= _only_one(windows != windows, reversed(range(windows.shape[1])))  # NaN != NaN
    return hits


def _only_one(mask, taps):
    """Clear every True of ``mask`` (C, T, L) along T but the first one met in the order ``taps``."""
    taps = list(taps)
    seen = mask[:, taps[0]].copy()
    for tap in taps[1:]:
        mask[:, tap] &= ~seen
        seen |= mask[:, tap]
    return mask


def matmul(a, b):
    """``a @ b``, as a broadcast multiply when the shared dimension is 1 (an outer product: each element is
    one product, the same number either way); as ``(b.T @ a.T).T`` when b is a transposed row-major array with 64
    columns or more and a, either layout, has fewer rows than columns (a weight gradient dY @ cols^T, a Linear's
    x @ W^T: OpenBLAS runs the swapped product 1.1 to 3.6 times faster there, measured on AMD EPYC,
    docs/performance.md; the same dot products, summed in another order; the product comes back column-major,
    so a tall one, a Linear's weight gradient dy^T @ x, is left alone); otherwise ``a @ b`` itself."""
    if a.ndim == 2 and b.ndim == 2 and a.shape[1] == 1 == b.shape[0]:
        return a * b
    if (b.ndim == 2 and b.shape[1] >= 64 and a.ndim == 2 and 2 <= a.shape[0] < a.shape[1] and b.flags.f_contiguous
            and not b.flags.c_contiguous and (a.flags.c_contiguous or a.flags.f_contiguous)):
        return (b.T @ a.T).T
    return a @ b


# Adam's lines run over the flat arrays a block of this many elements at a time: the block's six arrays
# (parameters, gradients, two moments, two scratch arrays; 768 KB in float32) stay in the core's cache across the
# 17 passes instead of coming from memory for each (spec network: 2.5 -> 1.8 ms; fc_dae: 5.0 -> 3.6 ms;
# python benchmarks/adam_blocks.py).
BLOCK = 32768


def adam_step(optimizer):
    """optim.adam_step as optim.adam's lines over the flat arrays (FlatAdam), one group and one cache-sized
    block of elements at a time, each line computed into two scratch arrays instead of new ones: the same
    operations on the same numbers in the same order, so the same results, bit for bit, without the 10
    temporaries of 2.3 MB (spec network) a step allocates. The core function runs instead where the parameters
    cannot share flat arrays, a parameter has no gradient, or a group's parameters have taken different numbers
    of steps."""
    flat = None if any(p.grad is None for p in optimizer.params if p.requires_grad) else \
        FlatAdam.current(optimizer, numpy)
    steps = None if flat is None else flat.group_steps()
    if steps is None or None in steps:
        return CORE["adam_step"](optimizer)
    if len(flat.scratch_arrays) != 2 or flat.scratch_arrays[0].size != flat.arrays["data"].size:
        flat.scratch_arrays = [numpy.empty_like(flat.arrays["data"]) for _ in range(2)]
    flush = optimizers.flushing() and flat.arrays["data"].dtype.itemsize <= 4  # optim.flush_tiny, in cache
    for (group, start, end, first, last), t in zip(flat.groups, steps):
        flat.steps[first:last] += 1
        for i in range(start, end, BLOCK):
            j = min(end, i + BLOCK)
            a, (s1, s2) = {k: v[i:j] for k, v in flat.arrays.items()}, [s[i:j] for s in flat.scratch_arrays]
            _adam(a["data"], a["grad"], a["exp_avg"], a["exp_avg_sq"], t + 1, group["lr"], group["betas"],
                  group["eps"], group["weight_decay"], group["decoupled_weight_decay"], s1, s2)
            if flush and (t + 1) % optimizers.FLUSH_EVERY == 0:
                for array in (a["data"], a["exp_avg"], a["exp_avg_sq"]):
                    numpy.copyto(array, 0, where=numpy.abs(array, out=s1) < optimizers.FLUSH_BELOW)
    return None


def _adam(p, grad, m, v, t, lr, betas, eps, weight_decay, decoupled, s1, s2):
    """optim.adam's lines, each into scratch array s1 or s2."""
    b1, b2 = betas
    if weight_decay and decoupled:
        p *= 1 - lr * weight_decay
    g = numpy.add(grad, numpy.multiply(weight_decay, p, out=s1), out=s1) if weight_decay and not decoupled else grad
    numpy.add(numpy.multiply(b1, m, out=m), numpy.multiply(1 - b1, g, out=s2), out=m)   # m = b1 m + (1 - b1) g
    s2 = numpy.multiply(numpy.multiply(1 - b2, g, out=s2), g, out=s2)
    numpy.add(numpy.multiply(b2, v, out=v), s2, out=v)                                # v = b2 v + (1 - b2) g g
    m_hat = numpy.divide(m, 1 - b1 ** t, out=s2)
    v_hat = numpy.divide(v, 1 - b2 ** t, out=s1)
    denominator = numpy.add(numpy.sqrt(v_hat, out=s1), eps, out=s1)
    p -= numpy.divide(numpy.multiply(lr, m_hat, out=s2), denominator, out=s2)      # p -= lr m_hat / (...)


def _whole_repeats(a):
    """k where ``a`` (P, H) repeats every row of the identity k times (nearest upsampling by a whole factor k:
    rows k i to k i + k - 1 are one-hot at i), else None."""
    size = a.shape[1]
    k = a.shape[0] // size
    if k < 1 or a.shape[0] != k * size or not numpy.array_equal(a, numpy.eye(size, dtype=a.dtype).repeat(k, axis=0)):
        return None
    return k


def resize_backward(dy, a_h, a_w):
    """F.resize_backward, A_h^T dL/dy A_w, for nearest upsampling by whole factors (k_h, k_w): the sum of each
    k_h x k_w block of dy, one strided slice of dy per position in the block (no GEMM with the mostly-zero
    matrices; the same sums in another order, and exact where dy holds inf, which the GEMM turns into NaN with
    0 * inf); other matrices: the core function."""
    kh, kw = _whole_repeats(a_h), _whole_repeats(a_w)
    if kh is None or kw is None:
        return CORE["resize_backward"](dy, a_h, a_w)
    total = dy[:, :, 0::kh, 0::kw].copy()  # the block's first element, then the others added: kh kw strided passes
    for i, j in itertools.product(range(kh), range(kw)):
        if i or j:
            total += dy[:, :, i::kh, j::kw]
    return total


zero_grads = zero_grads_for(numpy)  # one fill of the flat gradients (minidae.speed.flat)


for _name, _function in (("im2col", im2col), ("col2im", col2im), ("correlate_transpose", correlate_transpose),
                         ("conv2d", conv2d), ("conv2d_backward", conv2d_backward),
                         ("max_winners", first_maximum), ("matmul", matmul), ("adam_step", adam_step),
                         ("zero_grads", zero_grads), ("resize_backward", resize_backward)):
    register(_name, "numpy", _function)
