"""im2col / col2im and the size rules, shared by every windowed layer (convolution and pooling).

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

Padding, two views of one thing. In the maths (the formulas, PyTorch's definition) xpad has PH rows of
zeros above *and* below the input. The buffer im2col fills has PH rows of ``fill`` above the input and, below
it, only the rows the OH windows reach past the input (``padded_extent``): PH when the size rule divides
evenly, fewer when xpad's last rows fall between window positions (no window reads them), and more for an
uneven "same" padding, which im2col receives as (top, left) and OH windows that reach one row further. The
numbers the windows read are the same either way.

``im2col`` lays every window out as one column of a matrix of shape (C*KH*KW, OH*OW*N); rows
are ordered (c, kh, kw), exactly the order of a flattened PyTorch Conv2d weight (O, C, KH, KW),
and columns are ordered (oh, ow, n). Window (oh, ow)'s tap (kh, kw) reads the input pixel

    (SH*oh - PH + DH*kh,  SW*ow - PW + DW*kw)        (or the fill value outside the input)

so dilation only spreads the taps apart. A convolution is then one GEMM, ``W2 @ X``; with G
groups the channels split into G blocks of C/G, and output block g is weight block g times column
block g (a block-diagonal GEMM: G small GEMMs, :func:`grouped_matmul`). ``col2im`` is im2col's
adjoint: it adds every column back onto the window it came from (overlapping windows accumulate),
which is im2col's input gradient.

Both are written here as the plain loop over the KH*KW kernel offsets: each offset is one strided
slice of the padded input, copied (im2col) or added back (col2im) for the whole batch at once.
Faster versions with the same results replace them on NumPy (a batch-innermost memory layout, only
the border of the padding filled, assignments where windows do not overlap) and on a GPU (one
kernel each): :mod:`minidae.speed`.
"""
from .. import backend
from ..backend import replaceable

__all__ = ["conv_output_size", "conv_transpose_output_size", "pool_output_size", "padded_extent", "im2col",
           "col2im", "nchw_to_rows", "rows_to_nchw", "grouped_matmul", "grouped_matmul_add"]


def conv_output_size(size, kernel, stride, padding, dilation=1):
    """floor((size + 2 padding - dilation (kernel - 1) - 1) / stride) + 1, for one spatial axis."""
    return (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1


def conv_transpose_output_size(size, kernel, stride, padding, output_padding, dilation=1):
    """(size - 1) stride - 2 padding + dilation (kernel - 1) + output_padding + 1, for one spatial axis.

    Conv2d maps this size back to ``size`` when output_padding < stride: output_padding picks
    which of the ``stride`` input sizes that a strided convolution maps onto ``size`` is meant.
    """
    return (size - 1) * stride - 2 * padding + dilation * (kernel - 1) + output_padding + 1


def pool_output_size(size, kernel, stride, padding, dilation, ceil_mode):
    """PyTorch's pooling size rule: floor (or ceil) of (size + 2 P - D (K - 1) - 1) / S, plus 1; in ceil
    mode a last window that would start inside the right padding is dropped."""
    span = size + 2 * padding - dilation * (kernel - 1) - 1
    out = (-(-span // stride) if ceil_mode else span // stride) + 1
    if ceil_mode and (out - 1) * stride >= size + padding:
        out -= 1
    return out


def padded_extent(size, pad_before, kernel, stride, dilation, out):
    """Rows of the padded input that the windows read: the input after its top padding, or the last
    window's end if that is further (the bottom padding, or the windows the output size asks for)."""
    return max(pad_before + size, (out - 1) * stride + dilation * (kernel - 1) + 1)


@replaceable
def im2col(x, kernel, stride, padding, out_hw, dilation=(1, 1), fill=0):
    """Windows of ``x`` (N, C, H, W) as columns: returns X, (C*KH*KW, OH*OW*N).

    ``padding`` is (PH, PW), the rows and columns of ``fill`` added before the input; after it the
    input is extended with ``fill`` as far as the OH x OW windows reach.
    """
    xp = backend.array_module(x)
    (kh, kw), (sh, sw), (ph, pw), (dh, dw), (oh, ow) = kernel, stride, padding, dilation, out_hw
    n, c, h, w = x.shape
    hp, wp = padded_extent(h, ph, kh, sh, dh, oh), padded_extent(w, pw, kw, sw, dw, ow)
    xpad = xp.full((n, c, hp, wp), fill, dtype=x.dtype)
    xpad[:, :, ph:ph + h, pw:pw + w] = x
    cols = xp.empty((c, kh, kw, oh, ow, n), dtype=x.dtype)
    for i in range(kh):
        for j in range(kw):  # tap (i, j) of every window: one strided slice, (N, C, OH, OW)
            taps = xpad[:, :, i * dh:i * dh + sh * oh:sh, j * dw:j * dw + sw * ow:sw]
            cols[:, i, j] = taps.transpose(1, 2, 3, 0)
    return cols.reshape(c * kh * kw, oh * ow * n)


@replaceable
def col2im(cols, x_shape, kernel, stride, padding, out_hw, dilation=(1, 1)):
    """Adjoint of :func:`im2col`: add the columns (C*KH*KW, OH*OW*N) back onto the windows they were
    copied from, in tap order (kh, kw), then drop the padding; returns an array of ``x_shape``."""
    xp = backend.array_module(cols)
    (kh, kw), (sh, sw), (ph, pw), (dh, dw), (oh, ow) = kernel, stride, padding, dilation, out_hw
    n, c, h, w = x_shape
    hp, wp = padded_extent(h, ph, kh, sh, dh, oh), padded_extent(w, pw, kw, sw, dw, ow)
    xpad = xp.zeros((n, c, hp, wp), dtype=cols.dtype)
    cols = cols.reshape(c, kh, kw, oh, ow, n)
    for i in range(kh):
        for j in range(kw):
            xpad[:, :, i * dh:i * dh + sh * oh:sh, j * dw:j * dw + sw * ow:sw] += cols[:, i, j].transpose(3, 0, 1, 2)
    return xpad[:, :, ph:ph + h, pw:pw + w]


def nchw_to_rows(x):
    """(N, C, H, W) -> (C, H*W*N): one row per channel, the GEMM layout of im2col's columns.

    A view when ``x`` came from :func:`rows_to_nchw` (or from an elementwise operation on such an
    array: NumPy keeps the memory order of its inputs); one copy otherwise.
    """
    n, c, h, w = x.shape
    return x.transpose(1, 2, 3, 0).reshape(c, h * w * n)


def rows_to_nchw(rows, n, h, w):
    """(C, H*W*N) -> (N, C, H, W), a transposed view (no copy)."""
    return rows.reshape(rows.shape[0], h, w, n).transpose(3, 0, 1, 2)


def _blocks(a, groups):
    """The ``groups`` equal row blocks of ``a`` (views)."""
    size = a.shape[0] // groups
    return [a[g * size:(g + 1) * size] for g in range(groups)]


def grouped_matmul(a, b, groups=1, transpose_a=False):
    """Block g of the result = A_g @ B_g, one GEMM per group, where A_g and B_g are the g-th of ``groups``
    equal row blocks of ``a`` and ``b`` (A_g transposed when ``transpose_a``). With one group, a @ b."""
    op = (lambda m: m.T) if transpose_a else (lambda m: m)
    if groups == 1:
        return backend.matmul(op(a), b)
    return backend.array_module(a).concatenate([backend.matmul(op(ag), bg) for ag, bg in
                                                zip(_blocks(a, groups), _blocks(b, groups))])


def grouped_matmul_add(out, a, b_t, groups=1):
    """``out`` += a @ b_t.T per group: row block g of ``out`` (a weight gradient, any shape with the
    groups as leading blocks) += (row block g of ``a``) @ (row block g of ``b_t``).T."""
    if groups == 1:
        backend.matmul_add(out, a, b_t.T)
        return
    for out_g, a_g, b_g in zip(_blocks(out, groups), _blocks(a, groups), _blocks(b_t, groups)):
        backend.matmul_add(out_g, a_g, b_g.T)
