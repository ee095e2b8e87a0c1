"""Naive reference versions of the windowed layers: read these first.

Each function is the obvious loop, written straight from the formula in its docstring: no
im2col, no GEMM, no memory-layout tricks, no GPU. They are slow (Python loops over every output
position) and exist for two reasons: to be read before the fast layers in
:mod:`minidae.nn.conv` and :mod:`minidae.nn.pooling`, which compute the same numbers through
im2col and one matrix product, and to check those layers (``tests/nn/test_reference.py``).
docs/backprop.md derives every formula here and shows each loop beside its fast version. They
share no code with the fast layers, not even the size rules (``pool_output_size`` here restates
``minidae.nn.im2col``'s), so that a mistake in one is caught by the other.

Plain functions on NumPy arrays, NCHW layout, any float dtype (float64 for checks). Sizes are
written in capitals, as in the formulas; loop indices in lower case:

    x (N, C, H, W)        the input; ``xpad`` is x with PH rows added above and below and PW
                          columns left and right (zeros for convolution and average pooling,
                          -inf for max pooling)
    weight                (O, C/G, KH, KW) for conv2d, (C, O/G, KH, KW) for conv_transpose2d
    stride, padding, dilation
                          (SH, SW), (PH, PW), (DH, DW): an int or an (h, w) pair
    y (N, O, OH, OW)      the output; dy = dL/dy, the gradient of the loss L with respect to y,
                          has y's shape, and every backward returns dL/d(its inputs) in the
                          inputs' shapes (dx, dweight, dbias)

A window's tap (kh, kw) at output position (i, j) reads xpad[SH i + DH kh, SW j + DW kw]: the
stride moves the window, the dilation spreads its taps apart. Each backward is the chain rule
applied to the forward's loop: wherever the forward adds a * v to y[...], the backward adds
dy[...] * a to dL/dv (and dy[...] * v to dL/da when a is a weight).

>>> import numpy as np
>>> x = np.array([[1.0, 2.0, 0.0], [3.0, 1.0, 2.0], [0.0, 1.0, 3.0]]).reshape(1, 1, 3, 3)
>>> weight = np.array([[1.0, -1.0], [2.0, 0.0]]).reshape(1, 1, 2, 2)
>>> conv2d_forward(x, weight, bias=np.array([1.0]))[0, 0].tolist()
[[6.0, 5.0], [3.0, 2.0]]
"""
import numpy as np

__all__ = ["conv2d_forward", "conv2d_backward", "conv_transpose2d_forward", "conv_transpose2d_backward",
           "pool_output_size", "max_pool2d_forward", "max_pool2d_backward", "avg_pool2d_forward",
           "avg_pool2d_backward"]


def _pair(value):
    """An int or an (h, w) pair -> an (h, w) tuple."""
    return (value, value) if isinstance(value, (int, np.integer)) else tuple(value)


def _window(i, j, kernel, stride, dilation):
    """The (rows, columns) slices of the padded input that output position (i, j) reads:
    rows SH i, SH i + DH, ..., SH i + DH (KH - 1), and the same for columns."""
    (KH, KW), (SH, SW), (DH, DW) = kernel, stride, dilation
    return (slice(SH * i, SH * i + DH * (KH - 1) + 1, DH),
            slice(SW * j, SW * j + DW * (KW - 1) + 1, DW))


# -------------------------------------------------------------------------------------------------
# Convolution


def conv2d_forward(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """2-D cross-correlation, as torch.nn.functional.conv2d (zero padding).

    x (N, C, H, W), weight (O, C/G, KH, KW), bias (O,) or None -> y (N, O, OH, OW),

        OH = floor((H + 2 PH - DH (KH - 1) - 1) / SH) + 1        (OW alike)

    With G groups the C input channels split into G blocks of C/G and the O output channels
    into G blocks of O/G; output channel o belongs to group g = o // (O/G) and sees only input
    block g:

        y[n, o, i, j] = bias[o] + sum_{c < C/G, kh < KH, kw < KW}
                        weight[o, c, kh, kw] * xpad[n, g C/G + c, SH i + DH kh, SW j + DW kw]
    """
    N, C, H, W = x.shape
    O, C_per_group, KH, KW = weight.shape
    (SH, SW), (PH, PW), (DH, DW) = _pair(stride), _pair(padding), _pair(dilation)
    OH = (H + 2 * PH - DH * (KH - 1) - 1) // SH + 1
    OW = (W + 2 * PW - DW * (KW - 1) - 1) // SW + 1
    xpad = np.pad(x, ((0, 0), (0, 0), (PH, PH), (PW, PW)))
    y = np.zeros((N, O, OH, OW), dtype=x.dtype)
    for n in range(N):
        for o in range(O):
            g = o // (O // groups)
            group_channels = slice(g * C_per_group, (g + 1) * C_per_group)
            for i in range(OH):
                for j in range(OW):
                    rows, columns = _window(i, j, (KH, KW), (SH, SW), (DH, DW))
                    y[n, o, i, j] = np.sum(weight[o] * xpad[n, group_channels, rows, columns])
    if bias is not None:
        y += bias.reshape(1, O, 1, 1)
    return y


def conv2d_backward(dy, x, weight, stride=1, padding=0, dilation=1, groups=1):
    """Gradients of :func:`conv2d_forward`: returns (dx, dweight, dbias).

    dy = dL/dy (N, O, OH, OW); x and weight as given to the forward. Each y[n, o, i, j] is a sum
    of products weight[o, c, kh, kw] * xpad[n, g C/G + c, SH i + DH kh, SW j + DW kw], so by the
    chain rule each product hands dy[n, o, i, j] times the *other* factor to each factor:

        dweight[o, c, kh, kw] = sum_{n, i, j} dy[n, o, i, j] * xpad[n, g C/G + c, SH i + DH kh, SW j + DW kw]
        dxpad[n, g C/G + c, SH i + DH kh, SW j + DW kw] += dy[n, o, i, j] * weight[o, c, kh, kw]
                                                           (for every o, i, j, kh, kw)
        dbias[o] = sum_{n, i, j} dy[n, o, i, j]

    A pixel read by several windows receives the sum of their contributions. dx is dxpad with
    the padding cut off (the padding is constant, so its gradient goes nowhere).
    """
    N, C, H, W = x.shape
    O, C_per_group, KH, KW = weight.shape
    OH, OW = dy.shape[2:]
    (SH, SW), (PH, PW), (DH, DW) = _pair(stride), _pair(padding), _pair(dilation)
    xpad = np.pad(x, ((0, 0), (0, 0), (PH, PH), (PW, PW)))
    dxpad = np.zeros_like(xpad)
    dweight = np.zeros_like(weight)
    for n in range(N):
        for o in range(O):
            g = o // (O // groups)
            group_channels = slice(g * C_per_group, (g + 1) * C_per_group)
            for i in range(OH):
                for j in range(OW):
                    rows, columns = _window(i, j, (KH, KW), (SH, SW), (DH, DW))
                    dweight[o] += dy[n, o, i, j] * xpad[n, group_channels, rows, columns]
                    dxpad[n, group_channels, rows, columns] += dy[n, o, i, j] * weight[o]
    dx = dxpad[:, :, PH:PH + H, PW:PW + W]
    dbias = dy.sum(axis=(0, 2, 3))
    return dx, dweight, dbias


def conv_transpose2d_forward(x, weight, bias=None, stride=1, padding=0, output_padding=0, dilation=1, groups=1):
    """2-D transposed convolution, as torch.nn.functional.conv_transpose2d.

    x (N, C, H, W), weight (C, O/G, KH, KW), bias (O,) or None -> y (N, O, OH, OW),

        OH = (H - 1) SH - 2 PH + DH (KH - 1) + output_padding_h + 1        (OW alike)

    Where a convolution *gathers* a window into one output, this *scatters* one input pixel
    over a window: every x[n, c, i, j] adds a copy of its kernel, scaled by itself, onto the
    output, at the positions a convolution's window (i, j) would have read. Input channel c
    belongs to group g = c // (C/G) and writes only output block g:

        ypad[n, g O/G + o, SH i + DH kh, SW j + DW kw] += x[n, c, i, j] * weight[c, o, kh, kw]
        y = ypad without its first PH rows and PW columns (and as many at the far end, less
            output_padding), plus bias[o]

    This is exactly dxpad of :func:`conv2d_backward` with x in the place of dy: a transposed
    convolution is the input gradient of a convolution.
    """
    N, C, H, W = x.shape
    _, O_per_group, KH, KW = weight.shape
    O = O_per_group * groups
    (SH, SW), (PH, PW), (DH, DW) = _pair(stride), _pair(padding), _pair(dilation)
    OPH, OPW = _pair(output_padding)
    OH = (H - 1) * SH - 2 * PH + DH * (KH - 1) + OPH + 1
    OW = (W - 1) * SW - 2 * PW + DW * (KW - 1) + OPW + 1
    ypad = np.zeros((N, O, OH + 2 * PH, OW + 2 * PW), dtype=x.dtype)
    for n in range(N):
        for c in range(C):
            g = c // (C // groups)
            group_channels = slice(g * O_per_group, (g + 1) * O_per_group)
            for i in range(H):
                for j in range(W):
                    rows, columns = _window(i, j, (KH, KW), (SH, SW), (DH, DW))
                    ypad[n, group_channels, rows, columns] += x[n, c, i, j] * weight[c]
    y = ypad[:, :, PH:PH + OH, PW:PW + OW]
    if bias is not None:
        y = y + bias.reshape(1, O, 1, 1)
    return y


def conv_transpose2d_backward(dy, x, weight, stride=1, padding=0, dilation=1, groups=1):
    """Gradients of :func:`conv_transpose2d_forward`: returns (dx, dweight, dbias).

    dy = dL/dy (N, O, OH, OW) (its size carries the output_padding, so that is not needed
    here); x and weight as given to the forward. dypad is dy padded back to ypad's size with
    zeros (the rows and columns the forward cut off do not reach the loss). Each product
    x[n, c, i, j] * weight[c, o, kh, kw] was added to one element of ypad, so:

        dx[n, c, i, j] = sum_{o, kh, kw} dypad[n, g O/G + o, SH i + DH kh, SW j + DW kw] * weight[c, o, kh, kw]
        dweight[c, o, kh, kw] = sum_{n, i, j} dypad[n, g O/G + o, SH i + DH kh, SW j + DW kw] * x[n, c, i, j]
        dbias[o] = sum_{n, i, j} dy[n, o, i, j]

    dx is a convolution of dy with the same weight (the forward of :func:`conv2d_forward`,
    gathering a window of dypad per input pixel): the two layers are each other's backward.
    """
    N, C, H, W = x.shape
    _, O_per_group, KH, KW = weight.shape
    OH, OW = dy.shape[2:]
    (SH, SW), (PH, PW), (DH, DW) = _pair(stride), _pair(padding), _pair(dilation)
    dypad = np.zeros((N, dy.shape[1], OH + 2 * PH, OW + 2 * PW), dtype=dy.dtype)
    dypad[:, :, PH:PH + OH, PW:PW + OW] = dy
    dx = np.zeros_like(x)
    dweight = np.zeros_like(weight)
    for n in range(N):
        for c in range(C):
            g = c // (C // groups)
            group_channels = slice(g * O_per_group, (g + 1) * O_per_group)
            for i in range(H):
                for j in range(W):
                    rows, columns = _window(i, j, (KH, KW), (SH, SW), (DH, DW))
                    window = dypad[n, group_channels, rows, columns]
                    dx[n, c, i, j] = np.sum(window * weight[c])
                    dweight[c] += window * x[n, c, i, j]
    dbias = dy.sum(axis=(0, 2, 3))
    return dx, dweight, dbias


# -------------------------------------------------------------------------------------------------
# Pooling


def pool_output_size(size, kernel, stride, padding, dilation=1, ceil_mode=False):
    """floor (or, with ceil_mode, ceil) of (size + 2 padding - dilation (kernel - 1) - 1) / stride, plus 1.

    In ceil mode the last window may hang over the far edge of the padded input; a window that
    would *start* inside the far padding is dropped (as PyTorch).
    """
    span = size + 2 * padding - dilation * (kernel - 1) - 1
    out = (-(-span // stride) if ceil_mode else span // stride) + 1
    if ceil_mode and (out - 1) * stride >= size + padding:
        out -= 1
    return out


def _pool_geometry(x, kernel_size, stride, padding, dilation, ceil_mode):
    """kernel, stride, padding, dilation as pairs (stride defaults to the kernel), and (OH, OW)."""
    kernel = _pair(kernel_size)
    stride = kernel if stride is None else _pair(stride)
    padding, dilation = _pair(padding), _pair(dilation)
    out = tuple(pool_output_size(size, k, s, p, d, ceil_mode)
                for size, k, s, p, d in zip(x.shape[2:], kernel, stride, padding, dilation))
    return kernel, stride, padding, dilation, out


def _max_pool_padded(x, kernel, stride, padding, dilation, out):
    """xpad for max pooling: x inside -inf, large enough for every window (ceil_mode's last one too)."""
    N, C, H, W = x.shape
    (KH, KW), (SH, SW), (PH, PW), (DH, DW), (OH, OW) = kernel, stride, padding, dilation, out
    rows = max(H + 2 * PH, (OH - 1) * SH + DH * (KH - 1) + 1)
    columns = max(W + 2 * PW, (OW - 1) * SW + DW * (KW - 1) + 1)
    xpad = np.full((N, C, rows, columns), -np.inf, dtype=x.dtype)
    xpad[:, :, PH:PH + H, PW:PW + W] = x
    return xpad


def max_pool2d_forward(x, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False):
    """Max pooling, as torch.nn.functional.max_pool2d: x (N, C, H, W) -> y (N, C, OH, OW).

        y[n, c, i, j] = max_{kh < KH, kw < KW} xpad[n, c, SH i + DH kh, SW j + DW kw]

    stride defaults to the kernel size; the padding is -inf, so it never wins; OH is
    :func:`pool_output_size`.
    """
    kernel, stride, padding, dilation, (OH, OW) = _pool_geometry(x, kernel_size, stride, padding, dilation,
                                                                   ceil_mode)
    xpad = _max_pool_padded(x, kernel, stride, padding, dilation, (OH, OW))
    N, C = x.shape[:2]
    y = np.zeros((N, C, OH, OW), dtype=x.dtype)
    for n in range(N):
        for c in range(C):
            for i in range(OH):
                for j in range(OW):
                    rows, columns = _window(i, j, kernel, stride, dilation)
                    y[n, c, i, j] = np.max(xpad[n, c, rows, columns])
    return y


def max_pool2d_backward(dy, x, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False):
    """dL/dx of :func:`max_pool2d_forward`, dy (N, C, OH, OW) -> dx (N, C, H, W).

    y[n, c, i, j] *is* one element of its window, the winner (kh*, kw*): moving any other
    element a little changes nothing, so the derivative is 1 for the winner and 0 for the rest:

        dxpad[n, c, SH i + DH kh*, SW j + DW kw*] += dy[n, c, i, j]

    On ties the first winner in row-major order over (kh, kw) takes it all, in a window with NaNs
    the last NaN (as PyTorch; :func:`_max_pool_winner`); overlapping windows that share a winner add up.
    """
    kernel, stride, padding, dilation, (OH, OW) = _pool_geometry(x, kernel_size, stride, padding, dilation,
                                                                   ceil_mode)
    xpad = _max_pool_padded(x, kernel, stride, padding, dilation, (OH, OW))
    dxpad = np.zeros_like(xpad)
    (SH, SW), (PH, PW), (DH, DW) = stride, padding, dilation
    N, C, H, W = x.shape
    for n in range(N):
        for c in range(C):
            for i in range(OH):
                for j in range(OW):
                    rows, columns = _window(i, j, kernel, stride, dilation)
                    kh, kw = _max_pool_winner(xpad[n, c, rows, columns], range(rows.start - PH, rows.stop - PH, DH),
                                              range(columns.start - PW, columns.stop - PW, DW), (H, W))
                    dxpad[n, c, SH * i + DH * kh, SW * j + DW * kw] += dy[n, c, i, j]
    return dxpad[:, :, PH:PH + H, PW:PW + W]


def _max_pool_winner(window, rows, columns, x_hw):
    """(kh, kw) of the window's winner by PyTorch's rule: walk the taps that lie inside the input (``rows`` and
    ``columns`` are their input coordinates) in row-major order, starting at the first, and move to every
    later tap that is larger or NaN. Ties go to the first maximum, a window with NaNs to its last NaN, and
    the padding never wins (even where every real value is -inf)."""
    taps = [(kh, kw) for kh in range(window.shape[0]) for kw in range(window.shape[1])
            if 0 <= rows[kh] < x_hw[0] and 0 <= columns[kw] < x_hw[1]]
    best = taps[0]
    for tap in taps[1:]:
        if window[tap] > window[best] or np.isnan(window[tap]):
            best = tap
    return best


def _avg_window(i, j, x_hw, kernel, stride, padding, count_include_pad):
    """(rows, columns) of x that window (i, j) covers, and its divisor.

    The window spans rows SH i - PH ... SH i - PH + KH - 1, cut at the far edge of the padded
    input (ceil_mode's last window may hang over it). count_include_pad divides by the size of
    that cut window, padding included; otherwise by the number of real pixels it covers.
    """
    (H, W), (KH, KW), (SH, SW), (PH, PW) = x_hw, kernel, stride, padding
    top, left = SH * i - PH, SW * j - PW
    bottom, right = min(top + KH, H + PH), min(left + KW, W + PW)
    inside = (slice(max(top, 0), min(bottom, H)), slice(max(left, 0), min(right, W)))
    if count_include_pad:
        divisor = (bottom - top) * (right - left)
    else:
        divisor = (min(bottom, H) - max(top, 0)) * (min(right, W) - max(left, 0))
    return inside, divisor


def avg_pool2d_forward(x, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True):
    """Average pooling, as torch.nn.functional.avg_pool2d: x (N, C, H, W) -> y (N, C, OH, OW).

        y[n, c, i, j] = (sum of x over window (i, j), padding counting as 0) / d[i, j]

    with the divisor d[i, j] of :func:`_avg_window`; stride defaults to the kernel size.
    """
    kernel, stride, padding, _, (OH, OW) = _pool_geometry(x, kernel_size, stride, padding, 1, ceil_mode)
    N, C, H, W = x.shape
    y = np.zeros((N, C, OH, OW), dtype=x.dtype)
    for n in range(N):
        for c in range(C):
            for i in range(OH):
                for j in range(OW):
                    (rows, columns), d = _avg_window(i, j, (H, W), kernel, stride, padding, count_include_pad)
                    y[n, c, i, j] = np.sum(x[n, c, rows, columns]) / d
    return y


def avg_pool2d_backward(dy, x, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True):
    """dL/dx of :func:`avg_pool2d_forward`, dy (N, C, OH, OW) -> dx (N, C, H, W).

    y[n, c, i, j] is a sum of its window's pixels, each with coefficient 1 / d[i, j], so each
    pixel of the window receives that share of dy, summed where windows overlap:

        dx[n, c, window (i, j)] += dy[n, c, i, j] / d[i, j]
    """
    kernel, stride, padding, _, (OH, OW) = _pool_geometry(x, kernel_size, stride, padding, 1, ceil_mode)
    N, C, H, W = x.shape
    dx = np.zeros_like(x)
    for n in range(N):
        for c in range(C):
            for i in range(OH):
                for j in range(OW):
                    (rows, columns), d = _avg_window(i, j, (H, W), kernel, stride, padding, count_include_pad)
                    dx[n, c, rows, columns] += dy[n, c, i, j] / d
    return dx
