"""im2col / col2im and the convolution size rules, shared by every windowed layer.

Notation, used in every layer docstring: input ``x`` of shape (N, C, H, W), a kernel of
KH x KW taps spaced by the dilation (DH, DW), moved with stride (SH, SW) over the input padded by
PH rows at the top (and as many at the bottom as the output needs), output of OH x OW positions:

    OH = floor((H + 2 PH - DH (KH - 1) - 1) / SH) + 1          (conv_output_size)

The names the conv docstrings use (docs/backprop.md derives every formula with them):

    xpad     x with PH zero rows above and below and PW zero columns left and right
    X        im2col(x): every window of xpad as one column, (C*KH*KW, OH*OW*N)
    W        the weight (O, C/G, KH, KW);  W2 = W.reshape(O, C/G*KH*KW), one row per output channel
    Y, dY    the output y and its gradient dL/dy (both (N, O, OH, OW)) as one row per channel,
             (O, OH*OW*N) (nchw_to_rows); L is the loss, dL/dy has y's shape
    W2_g ... with G groups, the g-th block of rows: O/G rows of W2 and of Y, dY; C/G*KH*KW of X
    *        cross-correlation (PyTorch's "convolution", no kernel flip): y = W * x. Elementwise
             products are written ⊙ (activation and pooling docstrings); @ is the matrix product

``im2col`` lays every window out as one column of a matrix of shape (C*KH*KW, OH*OW*N); rows
are ordered (c, kh, kw), exactly the order of a flattened PyTorch Conv2d weight (O, C, KH, KW),
and columns are ordered (oh, ow, n). Window (oh, ow)'s tap (kh, kw) reads the input pixel

    (SH*oh - PH + DH*kh,  SW*ow - PW + DW*kw)        (or the fill value, 0, outside the input)

so dilation only spreads the taps apart. A convolution is then one GEMM,
``W.reshape(O, -1) @ cols``; with G groups the channels split into G blocks of C/G, the weight
is (O, C/G, KH, KW), and output block g is weight block g times column block g (a
block-diagonal GEMM: G small GEMMs). ``col2im`` is im2col's adjoint: it adds every column back
onto the window it came from (overlapping windows accumulate), which is im2col's input gradient.

On NumPy both are a loop over the KH*KW kernel offsets, each a strided slice copy (im2col) or a
strided slice add (col2im) covering the whole batch at once; on a GPU each is one kernel
(minidae/cuda.py). They work on a channel-major, batch-innermost (C, H, W, N) buffer: a strided
spatial slice then still moves N contiguous numbers at a time, which is what makes these loops
fast in NumPy. Layers keep exchanging ordinary (N, C, H, W) arrays; between convolutions they
are transposed views of (C, H, W, N) memory, so the layout change costs no copy there. None of
this changes the maths: the layout is how the numbers sit in memory, not which numbers they are.

The two convolution primitives below are each other's adjoint, and that is the whole story of
Conv2d and ConvTranspose2d (W2 = W.reshape(O, C/G*KH*KW), dY = dL/dy laid out as rows):

    conv2d(x, W)                 = rows_to_nchw(W2 @ im2col(x))          y = W * x   (cross-correlation)
    conv2d_input_grad(dy, W, hw) = col2im(W2^T @ nchw_to_rows(dy))       dx = W^T * dy

where W^T * dy is the transposed convolution: the transpose (adjoint) of the linear map
x -> W * x, applied to dy. Conv2d uses the first as its forward and the second as its backward;
ConvTranspose2d uses the second as its forward and the first as its backward, so there the roles
swap: its input x goes where dy goes above, and its output size is passed as ``x_hw``.
"""
import numpy

from .. import backend

__all__ = ["pair", "conv_output_size", "conv_transpose_output_size", "im2col", "col2im",
           "nchw_to_rows", "rows_to_nchw", "channel_major", "conv2d", "conv2d_input_grad", "conv2d_weight_grad",
           "pad_index", "pad_gather", "pad_scatter", "as_batch"]


def pair(value, what, layer):
    """``value`` as an (h, w) pair of ints; ``what`` and ``layer`` name it in errors."""
    if isinstance(value, (int, numpy.integer)) and not isinstance(value, bool):
        return (int(value), int(value))
    try:
        h, w = value
    except (TypeError, ValueError):
        raise ValueError(f"{layer}: {what} must be an int or an (h, w) pair, got {value!r}") from None
    if not all(isinstance(v, (int, numpy.integer)) and not isinstance(v, bool) for v in (h, w)):
        raise ValueError(f"{layer}: {what} must be an int or an (h, w) pair, got {value!r}")
    return (int(h), int(w))


def conv_output_size(size, kernel, stride, padding, dilation=1):
    """floor((size + 2 padding - dilation (kernel - 1) - 1) / stride) + 1, for one spatial axis."""
    return (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1


def conv_transpose_output_size(size, kernel, stride, padding, output_padding, dilation=1):
    """(size - 1) stride - 2 padding + dilation (kernel - 1) + output_padding + 1, for one spatial axis.

    Conv2d maps this size back to ``size`` when output_padding < stride: output_padding picks
    which of the ``stride`` input sizes that a strided convolution maps onto ``size`` is meant.
    """
    return (size - 1) * stride - 2 * padding + dilation * (kernel - 1) + output_padding + 1


def _padded_extent(size, pad_before, kernel, stride, dilation, out):
    """Rows of the padded buffer: the input after its top padding, or the last window's end if later."""
    return max(pad_before + size, (out - 1) * stride + dilation * (kernel - 1) + 1)


def im2col(x, kernel, stride, padding, out_hw, dilation=(1, 1), fill=0):
    """Windows of ``x`` (N, C, H, W) as columns: returns (C*KH*KW, OH*OW*N).

    ``padding`` is (PH, PW), the rows and columns added before the input; after it, the input
    is extended with ``fill`` as far as the OH x OW windows reach.
    """
    gpu = backend.accelerated(x, "im2col")
    if gpu is not None:  # on a GPU: this loop as one kernel (minidae/cuda.py)
        return gpu.im2col(x, kernel, stride, padding, dilation, out_hw, fill)
    xp = backend.array_module(x)
    (kh, kw), (sh, sw), (ph, pw), (dh, dw), (oh, ow) = kernel, stride, padding, dilation, out_hw
    n, c, h, w = x.shape
    shape = (c, _padded_extent(h, ph, kh, sh, dh, oh), _padded_extent(w, pw, kw, sw, dw, ow), n)
    padded = _bordered(xp, shape, (ph, h, pw, w), fill, x.dtype)
    padded[:, ph:ph + h, pw:pw + w] = x.transpose(1, 2, 3, 0)
    cols = xp.empty((c, kh, kw, oh, ow, n), dtype=x.dtype)
    for i in range(kh):
        for j in range(kw):
            cols[:, i, j] = padded[:, i * dh:i * dh + sh * oh:sh, j * dw:j * dw + sw * ow:sw]
    return cols.reshape(c * kh * kw, oh * ow * n)


def _bordered(xp, shape, interior, fill, dtype):
    """An array of ``shape`` (C, HP, WP, N) whose rows and columns outside ``interior`` = (top, H, left, W)
    hold ``fill``; the interior is left for the caller to overwrite. The same array as a ``fill``-filled
    one once the caller has, with one pass over the borders instead of over all of it."""
    top, h, left, w = interior
    padded = xp.empty(shape, dtype=dtype)
    padded[:, :top] = fill
    padded[:, top + h:] = fill
    padded[:, top:top + h, :left] = fill
    padded[:, top:top + h, left + w:] = fill
    return padded


def col2im(cols, x_shape, kernel, stride, padding, out_hw, dilation=(1, 1)):
    """Adjoint of :func:`im2col`: add columns (C*KH*KW, OH*OW*N) back into (N, C, H, W)."""
    gpu = backend.accelerated(cols, "im2col")
    if gpu is not None:  # on a GPU: this loop as one kernel, a gather with no atomics (minidae/cuda.py)
        return gpu.col2im(cols, x_shape, kernel, stride, padding, dilation, out_hw)
    xp = backend.array_module(cols)
    (kh, kw), (sh, sw), (ph, pw), (dh, dw), (oh, ow) = kernel, stride, padding, dilation, out_hw
    n, c, h, w = x_shape
    shape = (c, _padded_extent(h, ph, kh, sh, dh, oh), _padded_extent(w, pw, kw, sw, dw, ow), n)
    cols = cols.reshape(c, kh, kw, oh, ow, n)
    if (kh, kw) == (sh, sw) and (dh, dw) == (1, 1):
        return _col2im_tiles(xp, cols, shape, (h, w), padding)
    taps = [(i, j) for i in range(kh) for j in range(kw)]
    if (sh, sw) == (1, 1):  # the first tap's windows form one block: assign it (= 0 + it), zero only the rest
        padded = _bordered(xp, shape, (0, oh, 0, ow), 0, cols.dtype)
        padded[:, :oh, :ow] = cols[:, 0, 0]
        taps = taps[1:]
    else:
        padded = xp.zeros(shape, dtype=cols.dtype)
    for i, j in taps:
        padded[:, i * dh:i * dh + sh * oh:sh, j * dw:j * dw + sw * ow:sw] += cols[:, i, j]
    return padded[:, ph:ph + h, pw:pw + w].transpose(3, 0, 1, 2)


def _col2im_tiles(xp, cols, shape, hw, padding):
    """col2im for windows that tile the input (stride = kernel, no dilation), as in the spec's conv4/conv5
    (docs/spec.md).

    No two windows overlap, so every pixel receives at most one column entry: the adds of col2im
    become plain assignments, and only the rows and columns that no window covers need zeros. Same
    numbers (0 + v = v), half the memory traffic of zero-fill plus read-add-write.
    """
    (_, kh, kw, oh, ow, _), (h, w), (ph, pw) = cols.shape, hw, padding
    padded = _bordered(xp, shape, (0, oh * kh, 0, ow * kw), 0, cols.dtype)
    for i in range(kh):
        for j in range(kw):
            padded[:, i:oh * kh:kh, j:ow * kw:kw] = cols[:, i, j]
    return padded[:, ph:ph + h, pw:pw + w].transpose(3, 0, 1, 2)


def nchw_to_rows(x):
    """(N, C, H, W) -> (C, H*W*N): one row per channel, the GEMM layout of im2col's columns.

    Free (a view) when ``x`` came from :func:`rows_to_nchw` or :func:`col2im`, or from an
    elementwise operation on one: NumPy keeps the memory order of its inputs.
    """
    n, c, h, w = x.shape
    return x.transpose(1, 2, 3, 0).reshape(c, h * w * n)


def rows_to_nchw(rows, n, h, w):
    """(C, H*W*N) -> (N, C, H, W), a transposed view (no copy)."""
    return rows.reshape(rows.shape[0], h, w, n).transpose(3, 0, 1, 2)


def channel_major(x):
    """``x`` (N, C, H, W) backed by (C, H, W, N) memory: free when it already is, one copy otherwise.

    For arrays a layer passes through :func:`nchw_to_rows` more than once. A speed device only:
    the result has the same shape and the same values as ``x``; nothing in the maths changes.
    """
    n, _, h, w = x.shape
    return rows_to_nchw(nchw_to_rows(x), n, h, w)


def _blocks(a, groups):
    """The ``groups`` equal row blocks of ``a`` (views)."""
    size = a.shape[0] // groups
    return [a[g * size:(g + 1) * size] for g in range(groups)]


def _block_matmul(a, b, groups):
    """Block g of the result = (row block g of a) @ (row block g of b): one GEMM per group."""
    if groups == 1:
        return backend.matmul(a, b)
    return backend.array_module(a).concatenate([backend.matmul(ag, bg) for ag, bg in
                                                zip(_blocks(a, groups), _blocks(b, groups))])


def conv2d(x, weight, stride, padding, dilation=(1, 1), groups=1, out_hw=None):
    """Cross-correlation y = W * x: x (N, C, H, W), weight (O, C/G, KH, KW) -> (N, O, OH, OW).

    ``padding`` is (PH, PW), or (top, bottom, left, right) for PyTorch's uneven "same" padding;
    ``out_hw`` (default: the size rule) may ask for fewer windows. Returns ``(y, cols)``;
    ``cols`` is what the weight gradient needs.
    """
    o, cg, kh, kw = weight.shape
    n, _, h, w = x.shape
    top, bottom, left, right = _four(padding)
    if out_hw is None:
        out_hw = (conv_output_size(h + bottom - top, kh, stride[0], top, dilation[0]),
                  conv_output_size(w + right - left, kw, stride[1], left, dilation[1]))
    cols = im2col(x, (kh, kw), stride, (top, left), out_hw, dilation)
    y = _block_matmul(weight.reshape(o, cg * kh * kw), cols, groups)
    return rows_to_nchw(y, n, *out_hw), cols


def conv2d_input_grad(dy, weight, x_hw, stride, padding, dilation=(1, 1), groups=1):
    """dx = W^T * dy: the adjoint of :func:`conv2d` with respect to x.

    dy (N, O, OH, OW), weight (O, C/G, KH, KW), x_hw = (H, W) of the input -> (N, C, H, W).
    Per group g: dcols_g = W2_g^T @ dY_g (C/G*KH*KW, OH*OW*N), then col2im adds each column of
    dcols back onto the window of xpad it came from, and drops the padding: dX -> dx.
    (ConvTranspose2d calls this as its forward with its input x in the place of dy and its own
    output size as ``x_hw``.)
    """
    o, cg, kh, kw = weight.shape
    n, _, oh, ow = dy.shape
    top, _, left, _ = _four(padding)
    w2t, rows = weight.reshape(o, cg * kh * kw).T, nchw_to_rows(dy)
    if groups == 1:
        dcols = backend.matmul(w2t, rows)
    else:
        xp = backend.array_module(rows)
        wg = o // groups  # W2^T's column blocks are the groups: take them as rows of W2, transposed
        dcols = xp.concatenate([backend.matmul(w2t[:, g * wg:(g + 1) * wg], rg)
                                for g, rg in enumerate(_blocks(rows, groups))])
    return col2im(dcols, (n, cg * groups, *x_hw), (kh, kw), stride, (top, left), (oh, ow), dilation)


def conv2d_weight_grad(dy, cols, out, groups=1):
    """Add dW = dY @ cols^T into ``out``, the weight gradient (O, C/G, KH, KW); per group g,
    dW_g = dY_g @ cols_g^T. ``dy`` (N, O, OH, OW) becomes dY (O, OH*OW*N); ``cols`` is the X that
    :func:`conv2d` returned for the forward's input (C*KH*KW, OH*OW*N). (ConvTranspose2d passes
    its input x as ``dy`` and im2col of its dL/dy as ``cols``: the roles swap here too.)"""
    rows = nchw_to_rows(dy)
    if groups == 1:
        backend.matmul_add(out, rows, cols.T)
        return
    for out_g, rows_g, cols_g in zip(_blocks(out, groups), _blocks(rows, groups), _blocks(cols, groups)):
        backend.matmul_add(out_g, rows_g, cols_g.T)


def _four(padding):
    """(PH, PW) or (top, bottom, left, right) -> (top, bottom, left, right)."""
    return tuple(padding) if len(padding) == 4 else (padding[0], padding[0], padding[1], padding[1])


# -------------------------------------------------------------------------------------------------
# Padding by reflection, replication or wrap-around: a gather, whose adjoint adds back.

_NUMPY_PAD_MODE = {"reflect": "reflect", "replicate": "edge", "circular": "wrap"}


def pad_index(size, before, after, mode):
    """For each row of the padded axis, the input row it copies (NumPy's pad of an arange)."""
    return numpy.pad(numpy.arange(size), (before, after), mode=_NUMPY_PAD_MODE[mode])


def pad_gather(x, rows, columns):
    """x (N, C, H, W) padded: y[..., i, j] = x[..., rows[i], columns[j]]."""
    xp = backend.array_module(x)
    return x.take(xp.asarray(rows), axis=2).take(xp.asarray(columns), axis=3)


def pad_scatter(dy, rows, columns, h, w):
    """Adjoint of :func:`pad_gather`: dx[..., r, c] = sum of dy over the positions that copied (r, c).

    As matrices: the gather is y = R x C^T with one-hot R (Hp, H) and C (Wp, W), so dx = R^T dy C.
    """
    xp = backend.array_module(dy)
    r = xp.asarray(rows[:, None] == numpy.arange(h), dtype=dy.dtype)
    c = xp.asarray(columns[:, None] == numpy.arange(w), dtype=dy.dtype)
    return xp.matmul(xp.matmul(r.T, dy), c)


# -------------------------------------------------------------------------------------------------

def as_batch(x, layer, channels=None):
    """(x as (N, C, H, W), whether it came unbatched as (C, H, W)), checking its shape and dtype."""
    expected = "(N, C, H, W) or (C, H, W)" if channels is None else f"(N, {channels}, H, W) or ({channels}, H, W)"
    if x.ndim not in (3, 4) or x.dtype.kind != "f" or (channels is not None and x.shape[-3] != channels):
        raise ValueError(f"{layer}: expected a floating-point input of shape {expected}, got {tuple(x.shape)} "
                         f"{x.dtype}")
    return (x[None], True) if x.ndim == 3 else (x, False)
