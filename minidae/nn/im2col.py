"""im2col / col2im and the convolution size rules, shared by every windowed layer.

Notation, used in every layer docstring: input ``x`` of shape (N, C, H, W), a kernel of
KH x KW taps moved with stride (SH, SW) over the input zero-padded by (PH, PW), output of
OH x OW positions:

    OH = floor((H + 2 PH - KH) / SH) + 1          (conv_output_size)

``im2col`` lays every window out as one column of a matrix of shape
(C*KH*KW, OH*OW*N); rows are ordered (c, kh, kw), exactly the order of a flattened
PyTorch Conv2d weight (O, C, KH, KW), and columns are ordered (oh, ow, n). A convolution
is then one GEMM, ``W.reshape(O, -1) @ cols``. ``col2im`` is its adjoint: it adds every
column back onto the window it came from (overlapping windows accumulate), which is the
input gradient of im2col.

Both are a loop over the KH*KW kernel offsets, each a strided slice copy (im2col) or a
strided slice add (col2im) covering the whole batch at once. They work on a
channel-major, batch-innermost (C, H, W, N) buffer: a strided spatial slice then still
moves N contiguous numbers at a time, which is what makes these loops fast in NumPy.
Layers keep exchanging ordinary (N, C, H, W) arrays; between convolutions they are
transposed views of (C, H, W, N) memory, so the layout change costs no copy there.

The two convolution primitives below are each other's adjoint, and that is the whole
story of Conv2d and ConvTranspose2d:

    conv2d(x, W)                 = rows_to_nchw(W2 @ im2col(x))          y = W * x
    conv2d_input_grad(dy, W, hw) = col2im(W2^T @ nchw_to_rows(dy))       dx = W^T * dy

Conv2d uses the first as its forward and the second as its backward; ConvTranspose2d
uses the second as its forward and the first as its backward.
"""
from .. import backend

__all__ = ["pair", "conv_output_size", "conv_transpose_output_size", "im2col", "col2im",
           "nchw_to_rows", "rows_to_nchw", "channel_major", "conv2d", "conv2d_input_grad", "conv2d_weight_grad"]


def pair(value, what, layer):
    """``value`` as an (h, w) pair of ints; ``what`` and ``layer`` name it in errors."""
    if isinstance(value, int):
        return (value, value)
    try:
        h, w = value
    except (TypeError, ValueError):
        raise ValueError(f"{layer}: {what} must be an int or an (h, w) pair, got {value!r}") from None
    if not (isinstance(h, int) and isinstance(w, int)):
        raise ValueError(f"{layer}: {what} must be an int or an (h, w) pair, got {value!r}")
    return (h, w)


def conv_output_size(size, kernel, stride, padding):
    """floor((size + 2 padding - kernel) / stride) + 1, for one spatial axis."""
    return (size + 2 * padding - kernel) // stride + 1


def conv_transpose_output_size(size, kernel, stride, padding, output_padding):
    """(size - 1) stride - 2 padding + kernel + output_padding, for one spatial axis.

    Conv2d maps this size back to ``size``: output_padding < stride picks which of the
    ``stride`` input sizes that a strided convolution maps onto ``size`` is meant.
    """
    return (size - 1) * stride - 2 * padding + kernel + output_padding


def im2col(x, kernel, stride, padding, out_hw):
    """Windows of ``x`` (N, C, H, W) as columns: returns (C*KH*KW, OH*OW*N)."""
    gpu = backend.accelerated(x, "im2col")
    if gpu is not None:  # on a GPU: this loop as one kernel (minidae/cuda.py)
        return gpu.im2col(x, kernel, stride, padding, (1, 1), out_hw)
    xp = backend.array_module(x)
    (kh, kw), (sh, sw), (ph, pw), (oh, ow) = kernel, stride, padding, out_hw
    n, c, h, w = x.shape
    padded = xp.zeros((c, h + 2 * ph, w + 2 * pw, n), dtype=x.dtype)
    padded[:, ph:ph + h, pw:pw + w] = x.transpose(1, 2, 3, 0)
    cols = xp.empty((c, kh, kw, oh, ow, n), dtype=x.dtype)
    for i in range(kh):
        for j in range(kw):
            cols[:, i, j] = padded[:, i:i + sh * oh:sh, j:j + sw * ow:sw]
    return cols.reshape(c * kh * kw, oh * ow * n)


def col2im(cols, x_shape, kernel, stride, padding, out_hw):
    """Adjoint of :func:`im2col`: add columns (C*KH*KW, OH*OW*N) back into (N, C, H, W)."""
    gpu = backend.accelerated(cols, "im2col")
    if gpu is not None:  # on a GPU: this loop as one kernel, a gather with no atomics (minidae/cuda.py)
        return gpu.col2im(cols, x_shape, kernel, stride, padding, (1, 1), out_hw)
    xp = backend.array_module(cols)
    (kh, kw), (sh, sw), (ph, pw), (oh, ow) = kernel, stride, padding, out_hw
    n, c, h, w = x_shape
    padded = xp.zeros((c, h + 2 * ph, w + 2 * pw, n), dtype=cols.dtype)
    cols = cols.reshape(c, kh, kw, oh, ow, n)
    for i in range(kh):
        for j in range(kw):
            padded[:, i:i + sh * oh:sh, j:j + sw * ow:sw] += cols[:, i, j]
    return padded[:, ph:ph + h, pw:pw + w].transpose(3, 0, 1, 2)


def nchw_to_rows(x):
    """(N, C, H, W) -> (C, H*W*N): one row per channel, the GEMM layout of im2col's columns.

    Free (a view) when ``x`` came from :func:`rows_to_nchw` or :func:`col2im`, or from an
    elementwise operation on one: NumPy and CuPy keep the memory order of their inputs.
    """
    n, c, h, w = x.shape
    return x.transpose(1, 2, 3, 0).reshape(c, h * w * n)


def rows_to_nchw(rows, n, h, w):
    """(C, H*W*N) -> (N, C, H, W), a transposed view (no copy)."""
    return rows.reshape(-1, h, w, n).transpose(3, 0, 1, 2)


def channel_major(x):
    """``x`` (N, C, H, W) backed by (C, H, W, N) memory: free when it already is, one copy otherwise.

    For arrays a layer passes through :func:`nchw_to_rows` more than once.
    """
    n, _, h, w = x.shape
    return rows_to_nchw(nchw_to_rows(x), n, h, w)


def conv2d(x, weight, stride, padding):
    """Cross-correlation y = W * x: x (N, C, H, W), weight (O, C, KH, KW) -> (N, O, OH, OW).

    Returns ``(y, cols)``; ``cols`` is what the weight gradient needs.
    """
    o, c, kh, kw = weight.shape
    n, _, h, w = x.shape
    out_hw = (conv_output_size(h, kh, stride[0], padding[0]), conv_output_size(w, kw, stride[1], padding[1]))
    cols = im2col(x, (kh, kw), stride, padding, out_hw)
    y = backend.matmul(weight.reshape(o, c * kh * kw), cols)
    return rows_to_nchw(y, n, *out_hw), cols


def conv2d_input_grad(dy, weight, x_hw, stride, padding):
    """dx = W^T * dy: the adjoint of :func:`conv2d` with respect to x.

    dy (N, O, OH, OW), weight (O, C, KH, KW), x_hw = (H, W) of the input -> (N, C, H, W).
    """
    o, c, kh, kw = weight.shape
    n, _, oh, ow = dy.shape
    dcols = backend.matmul(weight.reshape(o, c * kh * kw).T, nchw_to_rows(dy))
    return col2im(dcols, (n, c, *x_hw), (kh, kw), stride, padding, (oh, ow))


def conv2d_weight_grad(dy, cols, out):
    """Add dW = dy_rows @ cols^T into ``out``, the weight gradient (O, C, KH, KW)."""
    backend.matmul_add(out, nchw_to_rows(dy), cols.T)
