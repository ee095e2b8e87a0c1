"""Resampling layers: max and average pooling (through the shared im2col) and upsampling."""
import math

import numpy

from .. import backend
from .im2col import as_batch, col2im, im2col, nchw_to_rows, pair, rows_to_nchw
from .module import Module

__all__ = ["MaxPool2d", "AvgPool2d", "Upsample"]


def pool_output_size(size, kernel, stride, padding, dilation, ceil_mode):
    """PyTorch's pooling size rule: floor (or ceil) of (size + 2 P - D (K - 1) - 1) / S, plus 1; in ceil
    mode a last window that would start inside the right padding is dropped."""
    span = size + 2 * padding - dilation * (kernel - 1) - 1
    out = (-(-span // stride) if ceil_mode else span // stride) + 1
    if ceil_mode and (out - 1) * stride >= size + padding:
        out -= 1
    return out


class _Pool2d(Module):
    """Arguments and windows shared by MaxPool2d and AvgPool2d."""

    def __init__(self, kernel_size, stride, padding, dilation, ceil_mode):
        super().__init__()
        name = type(self).__name__
        self.kernel_size = pair(kernel_size, "kernel_size", name)
        self.stride = self.kernel_size if stride is None else pair(stride, "stride", name)
        self.padding = pair(padding, "padding", name)
        self.dilation = pair(dilation, "dilation", name)
        self.ceil_mode = bool(ceil_mode)
        if min(self.kernel_size) < 1 or min(self.stride) < 1 or min(self.dilation) < 1:
            raise ValueError(f"{name}: kernel_size, stride and dilation must be positive, got kernel_size="
                             f"{self.kernel_size}, stride={self.stride}, dilation={self.dilation}")
        if any(not 0 <= p <= k // 2 for p, k in zip(self.padding, self.kernel_size)):
            raise ValueError(f"{name}: padding {self.padding} must be non-negative and at most half the kernel "
                             f"size {self.kernel_size}")

    def _windows(self, x, fill):
        """(x as a batch, the windows as (C, KH*KW, OH*OW*N), (OH, OW))."""
        x, self._unbatched = as_batch(x, type(self).__name__)
        n, c, h, w = x.shape
        out_hw = tuple(pool_output_size(*args, self.ceil_mode) for args in
                       zip((h, w), self.kernel_size, self.stride, self.padding, self.dilation))
        if min(out_hw) < 1:
            raise ValueError(f"{type(self).__name__}: input {tuple(x.shape)} is too small for kernel "
                             f"{self.kernel_size} with padding {self.padding} and dilation {self.dilation} "
                             f"(output size {out_hw})")
        taps = self.kernel_size[0] * self.kernel_size[1]
        cols = im2col(x, self.kernel_size, self.stride, self.padding, out_hw, self.dilation, fill)
        self._x_shape, self._out_hw = x.shape, out_hw
        return x, cols.reshape(c, taps, out_hw[0] * out_hw[1] * n), out_hw

    def _unwindow(self, dwindows):
        """col2im of window gradients (C, KH*KW, L) back onto the input, unbatched as it came."""
        dx = col2im(dwindows.reshape(dwindows.shape[0] * dwindows.shape[1], dwindows.shape[2]), self._x_shape, self.kernel_size, self.stride,
                    self.padding, self._out_hw, self.dilation)
        return dx[0] if self._unbatched else dx

    def _rows(self, dy):
        return nchw_to_rows(dy[None] if self._unbatched else dy)

    def _out(self, rows):
        n = self._x_shape[0]
        y = rows_to_nchw(rows, n, *self._out_hw)
        return y[0] if self._unbatched else y

    def extra_repr(self):
        return (f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}, "
                f"dilation={self.dilation}, ceil_mode={self.ceil_mode}")


def first_maximum(windows, best):
    """one_hot(argmax over axis 1) of ``windows`` (C, T, L), given ``best`` = their max over axis 1:
    True at the first tap (row-major order) that equals the maximum; in a window holding a NaN
    (whose max is NaN) at its last NaN instead, as PyTorch's max pooling picks. One difference
    remains: in a window whose real values are all -inf, a padding tap (-inf too) that comes first
    wins, and its gradient is dropped, where PyTorch picks the first real tap
    (tests/nn/test_reference.py pins this; minidae.nn.reference follows PyTorch).

    Why not ``windows.argmax(axis=1)`` and a comparison with the tap numbers: an argmax over the
    middle axis walks T strided elements for each of the C*L windows, which took 5 to 8 times longer
    on the CPU than these few passes over whole arrays (docs/performance.md).
    """
    hits = _only_one(windows == best[:, None], range(windows.shape[1]))
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


class MaxPool2d(_Pool2d):
    """Max over KH x KW windows (taps spaced by the dilation) moved by stride (default: the kernel size).

    x (N, C, H, W) -> y (N, C, OH, OW), OH = floor((H + 2 PH - DH (KH - 1) - 1) / SH) + 1 (ceil with
    ceil_mode); xpad is x padded with -inf (PH rows above and below, PW columns left and right), so
    padding never wins (unless a window's real values are all -inf: see first_maximum):
        y[n, c, i, j] = max_{kh, kw} xpad[n, c, SH i + DH kh, SW j + DW kw]
    Backward: each dL/dy goes to the position that won its window (the first one in row-major
    order on ties, the last NaN in a window with NaNs, as PyTorch), summed where windows overlap:
        dL/dx = col2im(one_hot(argmax) ⊙ dL/dy)    (⊙: elementwise, dL/dy repeated over the KH*KW taps)
    With return_indices=True, forward returns (y, indices): each winner's flat position h * W + w
    in its input plane, as PyTorch.
    """

    def __init__(self, kernel_size, stride=None, padding=0, dilation=1, return_indices=False, ceil_mode=False):
        super().__init__(kernel_size, stride, padding, dilation, ceil_mode)
        self.return_indices = bool(return_indices)

    def forward(self, x):
        xp = backend.array_module(x)
        x, windows, (oh, ow) = self._windows(x, fill=-numpy.inf)
        y = windows.max(axis=1)
        self._winner = first_maximum(windows, y)  # one_hot(argmax): (C, KH*KW, L) booleans
        if not self.return_indices:
            return self._out(y)
        return self._out(y), self._indices(xp, x.shape, oh, ow)

    def _indices(self, xp, shape, oh, ow):
        """Flat input positions h * W + w of the winners, (N, C, OH, OW) int64."""
        n, c, h, w = shape
        tap = self._winner.argmax(axis=1).reshape(c, oh, ow, n)
        kw, (sh, sw), (ph, pw), (dh, dw) = self.kernel_size[1], self.stride, self.padding, self.dilation
        rows = xp.arange(oh).reshape(1, oh, 1, 1) * sh - ph + (tap // kw) * dh
        columns = xp.arange(ow).reshape(1, 1, ow, 1) * sw - pw + (tap % kw) * dw
        return self._out((rows * w + columns).astype(xp.int64).reshape(c, -1))

    def backward(self, dy):
        return self._unwindow(self._winner * self._rows(dy)[:, None])

    def extra_repr(self):
        return super().extra_repr() + (", return_indices=True" if self.return_indices else "")


class AvgPool2d(_Pool2d):
    """Mean over KH x KW windows moved by stride (default: the kernel size), as PyTorch.

    y[n, c, i, j] = (sum over window (i, j) of xpad, x padded with zeros) / d[i, j], where the
    divisor d is divisor_override if given; else, with count_include_pad, the window's size after
    clipping it to the padded input; else the number of real input pixels it covers.
    Backward: every position of window (i, j) receives dL/dy[i, j] / d[i, j]:
        dL/dx = col2im(broadcast(dL/dy / d) over the taps)
    """

    def __init__(self, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True,
                 divisor_override=None):
        super().__init__(kernel_size, stride, padding, 1, ceil_mode)
        if divisor_override is not None and (not isinstance(divisor_override, int) or divisor_override == 0):
            raise ValueError(f"AvgPool2d: divisor_override must be a non-zero integer, got {divisor_override!r}")
        self.count_include_pad, self.divisor_override = bool(count_include_pad), divisor_override

    def _divisor(self, h, w, oh, ow, dtype):
        """d[i, j] for the (OH, OW) windows, as a (OH*OW*N)-broadcastable host array."""
        if self.divisor_override is not None:
            return numpy.full((oh, ow), self.divisor_override, dtype=dtype)
        sizes = []
        for size, out, k, s, p in zip((h, w), (oh, ow), self.kernel_size, self.stride, self.padding):
            start = numpy.arange(out) * s - p
            end = numpy.minimum(start + k, size + p)
            if not self.count_include_pad:
                start, end = numpy.maximum(start, 0), numpy.minimum(end, size)
            sizes.append(end - start)
        return (sizes[0][:, None] * sizes[1][None, :]).astype(dtype)

    def forward(self, x):
        xp = backend.array_module(x)
        x, windows, (oh, ow) = self._windows(x, fill=0)
        n, h, w = x.shape[0], x.shape[2], x.shape[3]
        divisor = xp.asarray(self._divisor(h, w, oh, ow, x.dtype)[:, :, None], dtype=x.dtype)
        self._divisor_rows = divisor  # (OH, OW, 1): broadcasts over N in the (oh, ow, n) columns
        c = windows.shape[0]
        sums = windows.sum(axis=1).reshape(c, oh, ow, n)
        return self._out((sums / divisor).reshape(c, oh * ow * n))

    def backward(self, dy):
        xp = backend.array_module(dy)
        rows = self._rows(dy)
        (n, c), (oh, ow) = self._x_shape[:2], self._out_hw
        scaled = (rows.reshape(c, oh, ow, n) / self._divisor_rows).reshape(c, 1, oh * ow * n)
        taps = self.kernel_size[0] * self.kernel_size[1]
        return self._unwindow(xp.broadcast_to(scaled, (c, taps, scaled.shape[2])))

    def extra_repr(self):
        return (f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}, "
                f"ceil_mode={self.ceil_mode}, count_include_pad={self.count_include_pad}"
                + ("" if self.divisor_override is None else f", divisor_override={self.divisor_override}"))


class Upsample(Module):
    """Resizing by interpolation, as torch.nn.Upsample for 2-D images ("nearest" or "bilinear").

    Both modes are linear maps applied along each axis: y = A_h x A_w^T, with A_h (OH, H) the
    interpolation weights of the rows and A_w (OW, W) those of the columns. Backward is the
    transpose of that map: dL/dx = A_h^T dL/dy A_w (every input pixel receives the gradient of
    each output it contributed to, times its weight).

    nearest: output row i copies input row min(floor(i s), H - 1), s = 1 / scale_factor (or H / OH
    when ``size`` is given, or with recompute_scale_factor=True): A_h is one-hot, so the forward
    is a gather.
    bilinear: output row i sits at src = (i + 0.5) s - 0.5 (clamped at 0), or i (H - 1) / (OH - 1)
    with align_corners=True; with h0 = floor(src), l = src - h0, it takes (1 - l) of row h0 and
    l of row min(h0 + 1, H - 1): two weights per row of A_h.
    """

    def __init__(self, size=None, scale_factor=None, mode="nearest", align_corners=None,
                 recompute_scale_factor=None):
        super().__init__()
        self.recompute_scale_factor = bool(recompute_scale_factor)
        if mode not in ("nearest", "bilinear"):
            raise ValueError(f"Upsample: mode must be 'nearest' or 'bilinear' (bicubic is not implemented), got "
                             f"{mode!r}")
        if (size is None) == (scale_factor is None):
            raise ValueError(f"Upsample: give exactly one of size and scale_factor, got size={size!r}, "
                             f"scale_factor={scale_factor!r}")
        if align_corners is not None and mode == "nearest":
            raise ValueError("Upsample: align_corners can only be set with mode='bilinear'")
        if size is not None:
            size = pair(size, "size", "Upsample")
            if min(size) < 1:
                raise ValueError(f"Upsample: size must be positive, got {size}")
        if scale_factor is not None:
            factors = tuple(scale_factor) if isinstance(scale_factor, (tuple, list)) else (scale_factor,) * 2
            if len(factors) != 2 or not all(isinstance(f, (int, float)) and math.isfinite(f) and f > 0
                                            for f in factors):
                raise ValueError(f"Upsample: scale_factor must be a positive number or a pair of them, got "
                                 f"{scale_factor!r}")
            scale_factor = tuple(float(f) for f in factors)
        self.size, self.scale_factor, self.mode = size, scale_factor, mode
        self.align_corners = bool(align_corners) if align_corners is not None else False
        self._maps = {}

    def _axis(self, size, out, factor, dtype):
        """(source index of each output, the (out, size) weight matrix A) for one axis."""
        if self.mode == "nearest":  # PyTorch computes these indices in float32
            scale = numpy.float32(1.0 / factor) if factor is not None else numpy.float32(size) / numpy.float32(out)
            index = numpy.minimum(numpy.floor(numpy.arange(out, dtype=numpy.float32) * scale).astype(numpy.int64),
                                  size - 1)
            weights = numpy.zeros((out, size), dtype=dtype)
            weights[numpy.arange(out), index] = 1
            return index, weights
        if self.align_corners:  # in the data's precision, as PyTorch
            scale = dtype(size - 1) / dtype(out - 1) if out > 1 else dtype(0)
            src = numpy.arange(out, dtype=dtype) * scale
        else:
            scale = dtype(1.0 / factor) if factor is not None else dtype(size) / dtype(out)
            src = numpy.maximum((numpy.arange(out, dtype=dtype) + dtype(0.5)) * scale - dtype(0.5), 0)
        low = src.astype(numpy.int64)
        high = numpy.minimum(low + 1, size - 1)
        frac = (src - low).astype(dtype)
        weights = numpy.zeros((out, size), dtype=dtype)
        numpy.add.at(weights, (numpy.arange(out), low), 1 - frac)
        numpy.add.at(weights, (numpy.arange(out), high), frac)
        return None, weights

    def _map(self, xp, h, w, dtype):
        """Both axes' index and weights for an (H, W) input, on the array's device (cached)."""
        key = (xp.__name__, h, w, numpy.dtype(dtype).str)
        if key not in self._maps:
            if self.size is not None:
                out, factors = self.size, (None, None)
            else:
                out = tuple(int(math.floor(s * f)) for s, f in zip((h, w), self.scale_factor))
                factors = (None, None) if self.recompute_scale_factor else self.scale_factor
            if min(out) < 1:
                raise ValueError(f"Upsample: input {(h, w)} with scale_factor {self.scale_factor} gives an empty "
                                 f"output {out}")
            axes = [self._axis(s, o, f, numpy.dtype(dtype).type) for s, o, f in zip((h, w), out, factors)]
            self._maps[key] = [(None if i is None else xp.asarray(i), xp.asarray(a)) for i, a in axes]
        return self._maps[key]

    def forward(self, x):
        if x.ndim != 4 or x.dtype.kind != "f":  # PyTorch reads 3-D input as (N, C, L): no unbatched images here
            raise ValueError(f"Upsample: expected a floating-point input of shape (N, C, H, W), got "
                             f"{tuple(x.shape)} {x.dtype}")
        (rows, a_h), (columns, a_w) = self._map(backend.array_module(x), x.shape[2], x.shape[3], x.dtype)
        self._a = (a_h, a_w)
        if self.mode == "nearest":
            return x.take(rows, axis=2).take(columns, axis=3)  # a gather: exact, whatever the values
        return _both_axes(x, a_h, a_w)

    def backward(self, dy):
        a_h, a_w = (a.astype(dy.dtype, copy=False) for a in self._a)  # no copy when the dtype matches: same maths
        return _both_axes(dy, a_h.T, a_w.T)

    def extra_repr(self):
        what = f"size={self.size}" if self.size is not None else f"scale_factor={self.scale_factor}"
        return f"{what}, mode={self.mode!r}" + (", align_corners=True" if self.align_corners else "")


def _both_axes(x, rows, columns):
    """R x C^T for x (N, C, H, W), R (P, H), C (Q, W) -> (N, C, P, Q), as two 2-D GEMMs
    (backend.matmul, so that a GPU step with an Upsample can still be captured as a CUDA graph)."""
    n, c, h, w = x.shape
    p, q = rows.shape[0], columns.shape[0]
    t = backend.matmul(x.reshape(n * c * h, w), columns.T).reshape(n, c, h, q)    # along W
    t = t.transpose(0, 1, 3, 2).reshape(n * c * q, h)
    return backend.matmul(t, rows.T).reshape(n, c, q, p).transpose(0, 1, 3, 2)   # along H
