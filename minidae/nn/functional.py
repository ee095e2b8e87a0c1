"""The maths of every layer: its forward and backward as short functions of arrays (as torch.nn.functional).

Each layer has a pair, and every pair keeps one convention (CS231n's ``out, cache``):

* ``f(x, ..., weight, bias, arguments)`` returns ``(y, saved)``: the output, and what the backward needs from
  this forward (an array, a tuple, or None where it needs nothing but the parameters and arguments);
* ``f_backward(dy, saved, ..., weight_grad=None, bias_grad=None)`` returns dL/dx and *adds* dL/dparam into the
  gradient arrays it is given (None skips one); with ``input_grad=False`` (where a layer takes it) it skips
  dL/dx and returns None, as PyTorch does for an input nobody needs the gradient of.

The losses' forwards give one term l_i per element (their modules reduce them: mean, sum or none) and their
backwards take dl = dL/dl_i, a number or an array. The modules of :mod:`minidae.nn` parse PyTorch's arguments,
hold the parameters, keep ``saved`` on the call's context, and call these. Nothing here parses arguments or
checks shapes; nothing here is a speed device: the few functions marked ``@replaceable`` (and im2col, col2im and
the GEMMs they call) have faster equal versions on NumPy and CuPy (:mod:`minidae.speed`), bound in their place
when the backend is chosen; what you read is what those compute, and ``minidae.plain_maths()`` runs this.

Notation as in :mod:`minidae.nn.im2col`: x (N, C, H, W), y (N, O, OH, OW), dy = dL/dy; cols = im2col(x) (the
windows as columns), Y, dY and x_rows the GEMM layouts (one row per channel); ⊙ the elementwise product;
padding given as (top, bottom, left, right) to conv2d, conv2d_backward and pad, as (top, left) to correlate and
correlate_transpose, and as (PH, PW), on each side, to the transposed convolution and the pooling.

>>> import numpy as np
>>> y, positive = relu(np.array([-1.0, 2.0]))
>>> y.tolist(), relu_backward(np.array([5.0, 5.0]), positive).tolist()
([0.0, 2.0], [0.0, 5.0])
"""
from collections import namedtuple

import numpy

from .. import backend
from ..backend import replaceable
from .im2col import (col2im, conv_output_size, grouped_matmul, grouped_matmul_add, im2col, nchw_to_rows,
                     rows_to_nchw)

__all__ = ["linear", "linear_backward", "conv2d", "conv2d_backward", "conv_transpose2d", "conv_transpose2d_backward",
           "correlate", "correlate_transpose", "pad", "pad_backward", "max_pool2d", "max_pool2d_backward",
           "max_winners", "max_pool2d_indices", "avg_pool2d", "avg_pool2d_backward", "avg_pool2d_divisor",
           "interpolation_matrix", "resize", "resize_backward", "resize_nearest", "relu", "relu_backward", "leaky_relu",
           "leaky_relu_backward", "tanh", "tanh_backward", "sigmoid", "sigmoid_backward", "log_softmax",
           "log_softmax_backward", "softmax", "softmax_backward", "cross_entropy", "cross_entropy_backward",
           "nll_loss", "nll_loss_backward", "batch_norm", "Normalised",
           "batch_norm_backward", "dropout", "dropout_backward", "mse_loss", "mse_loss_backward", "l1_loss",
           "l1_loss_backward", "binary_cross_entropy", "binary_cross_entropy_backward",
           "binary_cross_entropy_with_logits", "binary_cross_entropy_with_logits_backward", "BCE_EPSILON"]

_xp = backend.array_module


def _per_channel(v):
    """A (C,) array shaped (1, C, 1, 1), to broadcast over (N, C, H, W)."""
    return v.reshape(1, -1, 1, 1)


# ---------------------------------------------------------------------------------------------- Linear

def linear(x, weight, bias):
    """y = x W^T + b:  x (N, in), W (out, in), b (out,) or None -> (y (N, out), saved x)."""
    y = backend.matmul(x, weight.T)
    if bias is not None:
        y += bias
    return y, x


def linear_backward(dy, x, weight, weight_grad=None, bias_grad=None, input_grad=True):
    """dL/dW += dy^T x,  dL/db += sum_n dy[n];  returns dL/dx = dy W."""
    if weight_grad is not None:
        backend.matmul_add(weight_grad, dy.T, x)
    if bias_grad is not None:
        backend.add_row_sums(bias_grad, dy.T)  # bias_grad += sum_n dy[n]
    return backend.matmul(dy, weight) if input_grad else None


# ---------------------------------------------------------------------------------------------- Convolution:
# one adjoint pair, W * x and W^T * z, used both ways round by Conv2d and ConvTranspose2d.

def correlate(x, weight, stride, padding, dilation, groups, out_hw):
    """Y = W * x as rows: W2 @ cols per group, with cols = im2col(x). x (N, C, H, W), W (O, C/G, KH, KW),
    padding (top, left) -> (Y (O, OH*OW*N), cols (C*KH*KW, OH*OW*N))."""
    cols = im2col(x, weight.shape[2:], stride, padding, out_hw, dilation)
    return grouped_matmul(weight.reshape(weight.shape[0], -1), cols, groups), cols


@replaceable
def correlate_transpose(Z, weight, windows_hw, out_shape, stride, padding, dilation, groups):
    """W^T * z, the adjoint of :func:`correlate`: Z (O, OH*OW*N), one row per channel of a correlation's
    output over its OH x OW windows (``windows_hw``) -> col2im(W2^T @ Z) per group, of ``out_shape``
    (N, C, H, W): each column of W2^T @ Z is added back onto the window it belongs to."""
    dcols = grouped_matmul(weight.reshape(weight.shape[0], -1), Z, groups, transpose_a=True)
    return col2im(dcols, out_shape, weight.shape[2:], stride, padding, windows_hw, dilation)


@replaceable
def conv2d(x, weight, bias, stride, padding, dilation, groups):
    """y = W * x + b:  x (N, C, H, W), W (O, C/G, KH, KW), b (O,) or None -> (y (N, O, OH, OW), saved cols)."""
    (n, _, h, w), (top, bottom, left, right) = x.shape, padding
    out_hw = tuple(conv_output_size(size + before + after, k, s, 0, d) for size, before, after, k, s, d in
                   zip((h, w), (top, left), (bottom, right), weight.shape[2:], stride, dilation))
    Y, cols = correlate(x, weight, stride, (top, left), dilation, groups, out_hw)
    y = rows_to_nchw(Y, n, *out_hw)
    if bias is not None:
        y += _per_channel(bias)
    return y, cols


@replaceable
def conv2d_backward(dy, cols, weight, x_shape, stride, padding, dilation, groups, weight_grad=None, bias_grad=None,
                    input_grad=True):
    """dL/dW += dY @ cols^T (per group),  dL/db += sum over (n, i, j) of dy;  returns dL/dx = W^T * dy."""
    dY = nchw_to_rows(dy)
    if weight_grad is not None:
        grouped_matmul_add(weight_grad, dY, cols, groups)
    if bias_grad is not None:
        backend.add_row_sums(bias_grad, dY)  # bias_grad += the sum of each row of dY
    if not input_grad:
        return None
    return correlate_transpose(dY, weight, dy.shape[2:], x_shape, stride, padding[::2], dilation, groups)


def conv_transpose2d(x, weight, bias, out_hw, stride, padding, dilation, groups):
    """y = W^T * x + b (Conv2d's input gradient, with x where Conv2d has dy): x (N, C, H, W),
    W (C, O/G, KH, KW), padding (PH, PW) -> (y (N, O, OH, OW), saved x_rows = x as rows (C, H*W*N))."""
    n, c_in, h, w = x.shape
    x_rows = nchw_to_rows(x)
    y = correlate_transpose(x_rows, weight, (h, w), (n, weight.shape[1] * groups, *out_hw), stride, padding,
                            dilation, groups)
    if bias is not None:
        y += _per_channel(bias)
    return y, x_rows


def conv_transpose2d_backward(dy, x_rows, weight, x_hw, stride, padding, dilation, groups, weight_grad=None,
                              bias_grad=None, input_grad=True):
    """dL/dx = W * dy (Conv2d's forward, with dy where Conv2d has x),  dL/dW += x_rows @ im2col(dy)^T (per
    group),  dL/db += sum over (n, i, j) of dy."""
    dx_rows, dy_cols = correlate(dy, weight, stride, padding, dilation, groups, x_hw)
    if weight_grad is not None:
        grouped_matmul_add(weight_grad, x_rows, dy_cols, groups)
    if bias_grad is not None:
        backend.add_row_sums(bias_grad, nchw_to_rows(dy))
    return rows_to_nchw(dx_rows, dy.shape[0], *x_hw) if input_grad else None


_NUMPY_PAD_MODE = {"reflect": "reflect", "replicate": "edge", "circular": "wrap"}


def pad(x, padding, mode):
    """x (N, C, H, W) padded by (top, bottom, left, right) with copies of its own pixels ("reflect",
    "replicate", "circular"): y[..., i, j] = x[..., rows[i], columns[j]]. Returns (y, (rows, columns))."""
    top, bottom, left, right = padding
    rows, columns = (numpy.pad(numpy.arange(size), pads, mode=_NUMPY_PAD_MODE[mode])
                     for size, pads in zip(x.shape[2:], ((top, bottom), (left, right))))
    xp = _xp(x)
    return x.take(xp.asarray(rows), axis=2).take(xp.asarray(columns), axis=3), (rows, columns)


def pad_backward(dy, index, x_hw):
    """Adjoint of :func:`pad`: dL/dx[..., r, c] = the sum of dy over the positions that copied (r, c).
    As matrices the gather is y = R x C^T with one-hot R (HP, H) and C (WP, W), so dL/dx = R^T dy C."""
    xp, (rows, columns), (h, w) = _xp(dy), index, x_hw
    r = xp.asarray(rows[:, None] == numpy.arange(h), dtype=dy.dtype)
    c = xp.asarray(columns[:, None] == numpy.arange(w), dtype=dy.dtype)
    return xp.matmul(xp.matmul(r.T, dy), c)


# ---------------------------------------------------------------------------------------------- Pooling

def max_pool2d(x, kernel, stride, padding, dilation, out_hw):
    """y[n, c, i, j] = max over window (i, j) of xpad (x padded with -inf, so padding never wins).
    Returns (y, winners): one_hot(argmax) of every window, (C, KH*KW, OH*OW*N) booleans."""
    (n, c), taps, windows_count = x.shape[:2], kernel[0] * kernel[1], out_hw[0] * out_hw[1] * x.shape[0]
    windows = im2col(x, kernel, stride, padding, out_hw, dilation, fill=-numpy.inf).reshape(c, taps, windows_count)
    y = windows.max(axis=1)
    return rows_to_nchw(y, n, *out_hw), max_winners(windows, y)


@replaceable
def max_winners(windows, best):
    """one_hot(argmax over the taps) of ``windows`` (C, T, L), given ``best``, their maximum over the taps:
    True at the first tap (row-major order) equal to the maximum, or, in a window holding a NaN (whose
    maximum is NaN), at its last NaN, which is the tap PyTorch's max pooling picks."""
    xp, taps = _xp(windows), windows.shape[1]
    first_max = (windows == best[:, None]).argmax(axis=1)
    nan = windows != windows
    last_nan = taps - 1 - nan[:, ::-1].argmax(axis=1)
    winner = xp.where(nan.any(axis=1), last_nan, first_max)
    return xp.arange(taps).reshape(1, taps, 1) == winner[:, None]


def max_pool2d_backward(dy, winners, x_shape, kernel, stride, padding, dilation):
    """dL/dx = col2im(winners ⊙ dL/dy): each gradient goes to its window's winner, summed where windows overlap."""
    dY = nchw_to_rows(dy)
    dwindows = winners * dY[:, None]
    return col2im(dwindows.reshape(winners.shape[0] * winners.shape[1], dY.shape[1]), x_shape, kernel, stride,
                  padding, dy.shape[2:], dilation)


def max_pool2d_indices(winners, x_shape, kernel, stride, padding, dilation, out_hw):
    """Each winner's flat position h * W + w in its input plane, (N, C, OH, OW) int64 (PyTorch's indices)."""
    xp, (n, c, _, w), (oh, ow) = _xp(winners), x_shape, out_hw
    tap = winners.argmax(axis=1).reshape(c, oh, ow, n)
    rows = xp.arange(oh).reshape(1, oh, 1, 1) * stride[0] - padding[0] + (tap // kernel[1]) * dilation[0]
    columns = xp.arange(ow).reshape(1, 1, ow, 1) * stride[1] - padding[1] + (tap % kernel[1]) * dilation[1]
    return rows_to_nchw((rows * w + columns).astype(xp.int64).reshape(c, -1), n, oh, ow)


def avg_pool2d(x, kernel, stride, padding, out_hw, divisor):
    """y[n, c, i, j] = (sum over window (i, j) of xpad, x padded with zeros) / divisor[i, j]. Returns
    (y, saved x's shape)."""
    (n, c), (oh, ow) = x.shape[:2], out_hw
    windows = im2col(x, kernel, stride, padding, out_hw).reshape(c, kernel[0] * kernel[1], oh * ow * n)
    sums = windows.sum(axis=1).reshape(c, oh, ow, n)
    return rows_to_nchw((sums / divisor[:, :, None]).reshape(c, -1), n, oh, ow), x.shape


def avg_pool2d_backward(dy, x_shape, kernel, stride, padding, divisor):
    """dL/dx = col2im(dL/dy / divisor, repeated over the taps): each position of window (i, j) gets
    dy[i, j] / divisor[i, j]."""
    (n, c, oh, ow), taps = dy.shape, kernel[0] * kernel[1]
    scaled = (nchw_to_rows(dy).reshape(c, oh, ow, n) / divisor[:, :, None]).reshape(c, 1, oh * ow * n)
    repeated = _xp(dy).broadcast_to(scaled, (c, taps, oh * ow * n))
    return col2im(repeated.reshape(c * taps, oh * ow * n), x_shape, kernel, stride, padding, (oh, ow))


def avg_pool2d_divisor(hw, out_hw, kernel, stride, padding, count_include_pad, divisor_override, dtype):
    """divisor[i, j] of each window (a host array (OH, OW)): divisor_override if given; else with
    count_include_pad the window's size clipped to the padded input; else the real pixels it covers."""
    if divisor_override is not None:
        return numpy.full(out_hw, divisor_override, dtype=dtype)
    sizes = []
    for size, out, k, s, p in zip(hw, out_hw, kernel, stride, padding):
        start = numpy.arange(out) * s - p
        end = numpy.minimum(start + k, size + p)
        if not count_include_pad:
            start, end = numpy.maximum(start, 0), numpy.minimum(end, size)
        sizes.append(end - start)
    return (sizes[0][:, None] * sizes[1][None, :]).astype(dtype)


def interpolation_matrix(size, out, factor, mode, align_corners, dtype):
    """A (out, size) with y = A x along one axis, as torch.nn.Upsample: "nearest" copies input row
    min(floor(i s), size - 1), s = 1 / factor or size / out (computed in float32, as PyTorch): A is one-hot;
    "bilinear" takes (1 - l) of row h0 and l of row min(h0 + 1, size - 1), where src = (i + 0.5) s - 0.5
    (clamped at 0), or i (size - 1) / (out - 1) with align_corners, h0 = floor(src), l = src - h0."""
    a = numpy.zeros((out, size), dtype=dtype)
    if mode == "nearest":
        scale = numpy.float32(1.0 / factor) if factor is not None else numpy.float32(size) / numpy.float32(out)
        index = numpy.minimum(numpy.floor(numpy.arange(out, dtype=numpy.float32) * scale).astype(numpy.int64),
                              size - 1)
        a[numpy.arange(out), index] = 1
        return a
    if align_corners:  # in the data's precision, as PyTorch
        src = numpy.arange(out, dtype=dtype) * (dtype(size - 1) / dtype(out - 1) if out > 1 else dtype(0))
    else:
        scale = dtype(1.0 / factor) if factor is not None else dtype(size) / dtype(out)
        src = numpy.maximum((numpy.arange(out, dtype=dtype) + dtype(0.5)) * scale - dtype(0.5), 0)
    low = src.astype(numpy.int64)
    frac = (src - low).astype(dtype)
    numpy.add.at(a, (numpy.arange(out), low), 1 - frac)
    numpy.add.at(a, (numpy.arange(out), numpy.minimum(low + 1, size - 1)), frac)
    return a


def resize(x, a_h, a_w):
    """y = A_h x A_w^T for every plane of x (N, C, H, W): A_h (P, H), A_w (Q, W) -> (N, C, P, Q), as two GEMMs.
    Returns (y, None): the backward needs only A_h and A_w."""
    n, c, h, w = x.shape
    p, q = a_h.shape[0], a_w.shape[0]
    t = backend.matmul(x.reshape(n * c * h, w), a_w.T).reshape(n, c, h, q)    # along W
    t = t.transpose(0, 1, 3, 2).reshape(n * c * q, h)
    return backend.matmul(t, a_h.T).reshape(n, c, q, p).transpose(0, 1, 3, 2), None


@replaceable
def resize_backward(dy, a_h, a_w):
    """dL/dx = A_h^T dL/dy A_w: the transpose of the linear map of :func:`resize`."""
    return resize(dy, a_h.T, a_w.T)[0]


def resize_nearest(x, rows, columns):
    """:func:`resize` for one-hot A_h, A_w (mode "nearest"), as the gather y[..., i, j] = x[..., rows[i],
    columns[j]] (rows[i]: where row i of A_h is 1): the same numbers, and exact where x holds inf or NaN
    (the GEMM would add 0 * inf = NaN). Returns (y, None), as :func:`resize`."""
    return x.take(rows, axis=2).take(columns, axis=3), None


# ---------------------------------------------------------------------------------------------- Activations

@replaceable
def relu(x):
    """(y = max(x, 0), the mask [x > 0] its backward multiplies by); NaN stays NaN."""
    return _xp(x).maximum(x, 0), x > 0


def relu_backward(dy, positive):
    """dL/dx = dL/dy ⊙ [x > 0] (0 at the kink, as PyTorch)."""
    return dy * positive


def leaky_relu(x, negative_slope):
    """(y = x where x > 0 else negative_slope x, the mask [x > 0])."""
    positive = x > 0
    return _xp(x).where(positive, x, x * negative_slope), positive


def leaky_relu_backward(dy, positive, negative_slope):
    """dL/dx = dL/dy where x > 0, else negative_slope dL/dy (as PyTorch, also at 0)."""
    return _xp(dy).where(positive, dy, dy * negative_slope)


def tanh(x):
    """(y = tanh(x), saved y)."""
    y = _xp(x).tanh(x)
    return y, y


def tanh_backward(dy, y):
    """dL/dx = dL/dy ⊙ (1 - y^2), y = tanh(x)."""
    return dy * (1 - y * y)


@replaceable
def sigmoid(x):
    """(y = 1 / (1 + exp(-x)), saved y), through e = exp(-|x|) <= 1, which never overflows:
    y = 1 / (1 + e) for x >= 0, e / (1 + e) for x < 0 (finite at +-1000, full precision in both tails)."""
    xp = _xp(x)
    e = xp.exp(-xp.abs(x))
    y = xp.where(x >= 0, 1, e) / (1 + e)
    return y, y


@replaceable
def sigmoid_backward(dy, y):
    """dL/dx = dL/dy ⊙ y ⊙ (1 - y), y = sigmoid(x)."""
    return dy * y * (1 - y)


def log_softmax(x, axis=1):
    """(y = x - log sum_j exp(x_j) along ``axis``, saved y), with the maximum subtracted first (finite for any
    finite x)."""
    xp = _xp(x)
    shifted = x - x.max(axis=axis, keepdims=True)
    y = shifted - xp.log(xp.exp(shifted).sum(axis=axis, keepdims=True))
    return y, y


def log_softmax_backward(dy, y, axis=1):
    """dL/dx = dL/dy - softmax(x) sum_j dL/dy_j, with softmax(x) = exp(y)."""
    return dy - _xp(y).exp(y) * dy.sum(axis=axis, keepdims=True)


def softmax(x, axis=1):
    """(y = exp(x) / sum_j exp(x_j) along ``axis``, saved y), with the maximum subtracted first."""
    e = _xp(x).exp(x - x.max(axis=axis, keepdims=True))
    y = e / e.sum(axis=axis, keepdims=True)
    return y, y


def softmax_backward(dy, y, axis=1):
    """dL/dx = y ⊙ (dL/dy - sum_j dL/dy_j y_j)."""
    return y * (dy - (dy * y).sum(axis=axis, keepdims=True))


# ---------------------------------------------------------------------------------------------- Normalisation

Normalised = namedtuple("Normalised", "xhat inv_std mean var batch_stats")
Normalised.__doc__ = "What batch_norm saves: x-hat, 1 / sqrt(var + eps), the statistics used, and whether the batch's."


def batch_norm(x, weight, bias, eps, running=None):
    """Each channel c normalised over its m = N H W values, then scaled and shifted:
    xhat = (x - mean[c]) / sqrt(var[c] + eps),  y = weight[c] xhat + bias[c]  (y = xhat without weight),
    with (mean, var) = ``running`` (evaluation), or the batch's own statistics when it is None (training: the mean
    and the biased variance over n, h, w). Returns (y, saved Normalised(xhat, inv_std, mean, var, batch_stats))."""
    xp, c = _xp(x), x.shape[1]
    if running is not None:
        mean, var = running
    elif x.size:
        mean = x.mean(axis=(0, 2, 3))
        var = ((x - _per_channel(mean)) ** 2).mean(axis=(0, 2, 3))
    else:  # an empty batch has no statistics (nothing is normalised)
        mean, var = xp.zeros(c, x.dtype), xp.ones(c, x.dtype)
    inv_std = 1 / xp.sqrt(var + eps)
    xhat = (x - _per_channel(mean)) * _per_channel(inv_std)
    y = xhat if weight is None else xhat * _per_channel(weight) + _per_channel(bias)
    return y, Normalised(xhat, inv_std, mean, var, running is None)


def batch_norm_backward(dy, saved, weight, weight_grad=None, bias_grad=None):
    """With s = weight[c] / sqrt(var[c] + eps) and means over the m = N H W values of channel c:
    dL/dbias += sum dy,  dL/dweight += sum dy ⊙ xhat,  dL/dx = s (dy - mean dy - xhat mean(dy ⊙ xhat))
    with batch statistics (mean and var depend on x), dL/dx = s dy with running ones."""
    xhat, inv_std = saved.xhat, saved.inv_std
    sum_dy, sum_dy_xhat = dy.sum(axis=(0, 2, 3)), (dy * xhat).sum(axis=(0, 2, 3))
    if bias_grad is not None:
        bias_grad += sum_dy
    if weight_grad is not None:
        weight_grad += sum_dy_xhat
    scale = _per_channel(inv_std if weight is None else inv_std * weight)
    if not saved.batch_stats:
        return dy * scale
    m = max(dy.shape[0] * dy.shape[2] * dy.shape[3], 1)
    return (dy - _per_channel(sum_dy / m) - xhat * _per_channel(sum_dy_xhat / m)) * scale


# ---------------------------------------------------------------------------------------------- Dropout

def dropout(x, keep, p):
    """y = x ⊙ S, S = keep / (1 - p) in x's dtype (keep: booleans, True with probability 1 - p; S = 0 when
    p = 1); returns (y, S)."""
    scale = keep.astype(x.dtype)
    if p < 1:
        scale /= x.dtype.type(1 - p)
    return x * scale, scale


def dropout_backward(dy, scale):
    """dL/dx = dL/dy ⊙ S (the forward's very mask and scale)."""
    return dy * scale


# ---------------------------------------------------------------------------------------------- Losses:
# each forward gives one term l_i per element (per sample for the class losses), which the loss module reduces;
# each backward takes dl = dL/dl_i (the reduction's factor, a number, or an array) and returns dL/dpred.

BCE_EPSILON = float(numpy.float32(1e-12))  # PyTorch keeps its 1e-12 as a C float: 9.99999996e-13


@replaceable
def mse_loss(pred, target):
    """(l_i = (p_i - t_i)^2, saved p - t)."""
    diff = pred - target
    return diff * diff, diff


@replaceable
def mse_loss_backward(dl, diff):
    """dL/dp_i = dL/dl_i 2 (p_i - t_i)."""
    return diff * (2 * dl)


def l1_loss(pred, target):
    """(l_i = |p_i - t_i|, saved p - t)."""
    diff = pred - target
    return _xp(diff).abs(diff), diff


def l1_loss_backward(dl, diff):
    """dL/dp_i = dL/dl_i sign(p_i - t_i) (0 where they are equal, as PyTorch)."""
    return _xp(diff).sign(diff) * dl


def cross_entropy(logits, q):
    """l_n = -sum_c q[n, c] log softmax(logits)[n, c] over the classes (axis 1), for logits (N, C, ...) and the
    target as weights q (N, C, ...): one-hot class indices times the class weights, smoothed, or class
    probabilities. Returns (l, saved log softmax(logits))."""
    log_probs, _ = log_softmax(logits, 1)
    return -(q * log_probs).sum(axis=1), log_probs


def cross_entropy_backward(dl, log_probs, q):
    """dL/dlogits[n, c] = dL/dl_n (softmax[n, c] sum_j q[n, j] - q[n, c])."""
    xp = _xp(q)
    return (xp.exp(log_probs) * q.sum(axis=1, keepdims=True) - q) * xp.expand_dims(dl, 1)


def nll_loss(log_probs, q):
    """(l_n = -sum_c q[n, c] log_probs[n, c], None): -w[y_n] log_probs[n, y_n] for one-hot weights q; the
    backward needs only q."""
    return -(q * log_probs).sum(axis=1), None


def nll_loss_backward(dl, q):
    """dL/dlog_probs[n, c] = -dL/dl_n q[n, c]."""
    return -q * _xp(q).expand_dims(dl, 1)


def binary_cross_entropy(p, t):
    """(l_i = -(t_i log p_i + (1 - t_i) log(1 - p_i)), each log clamped at -100 as PyTorch, saved (p, t))."""
    xp = _xp(p)
    with numpy.errstate(divide="ignore"):  # log(0) = -inf is expected; the clamp handles it
        return -(t * xp.maximum(xp.log(p), -100) + (1 - t) * xp.maximum(xp.log(1 - p), -100)), (p, t)


def binary_cross_entropy_backward(dl, saved):
    """dL/dp_i = dL/dl_i (p_i - t_i) / max(p_i (1 - p_i), BCE_EPSILON)  (PyTorch's formula, with its epsilon)."""
    p, t = saved
    return (p - t) / _xp(p).maximum(p * (1 - p), BCE_EPSILON) * dl


def binary_cross_entropy_with_logits(x, t, pos_weight=None):
    """(l_i = (1 - t_i) x_i + c_i softplus(-x_i), saved (x, t)), c_i = 1 + (pos_weight - 1) t_i, with
    softplus(-x) = log(1 + exp(-x)) = log(1 + exp(-|x|)) + max(-x, 0): no exponential overflows (finite at +-1000)."""
    xp = _xp(x)
    softplus_of_minus_x = xp.log1p(xp.exp(-xp.abs(x))) + xp.maximum(-x, 0)
    c = 1 if pos_weight is None else 1 + (pos_weight - 1) * t
    return (1 - t) * x + c * softplus_of_minus_x, (x, t)


def binary_cross_entropy_with_logits_backward(dl, saved, pos_weight=None):
    """dL/dx_i = dL/dl_i ((1 - t_i) + c_i (sigmoid(x_i) - 1))  (= dL/dl_i (sigmoid(x_i) - t_i) without pos_weight)."""
    x, t = saved
    c = 1 if pos_weight is None else 1 + (pos_weight - 1) * t
    return ((1 - t) + c * (sigmoid(x)[0] - 1)) * dl
