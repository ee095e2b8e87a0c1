"""Resampling layers: max and average pooling (through the shared im2col) and upsampling. Their maths is in
:mod:`minidae.nn.functional`; these classes hold PyTorch's arguments and each call's context."""
import math

import numpy

from .. import backend
from . import functional as F
from .arguments import as_batch, pair
from .im2col import pool_output_size
from .module import Module

__all__ = ["MaxPool2d", "AvgPool2d", "Upsample"]


class _Pool2d(Module):
    """Arguments and output size shared by MaxPool2d and AvgPool2d."""

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

    def _batch(self, ctx, x):
        """(x as a batch, (OH, OW)); keeps the input's shape and whether it came unbatched on ``ctx``."""
        x, ctx.unbatched = as_batch(x, type(self).__name__)
        ctx.x_shape = x.shape
        out_hw = tuple(pool_output_size(*args, self.ceil_mode) for args in
                       zip(x.shape[2:], self.kernel_size, self.stride, self.padding, self.dilation))
        if min(out_hw) < 1:
            raise ValueError(f"{type(self).__name__}: input {tuple(x.shape)} is too small for kernel "
                             f"{self.kernel_size} with padding {self.padding} and dilation {self.dilation} "
                             f"(output size {out_hw})")
        return x, out_hw

    def extra_repr(self):
        return (f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}, "
                f"dilation={self.dilation}, ceil_mode={self.ceil_mode}")


def _unbatched(ctx, a):
    return a[0] if ctx.unbatched else a


class MaxPool2d(_Pool2d):
    """Max over KH x KW windows (taps spaced by the dilation) moved by stride (default: the kernel size).

    x (N, C, H, W) -> y (N, C, OH, OW), OH = floor((H + 2 PH - DH (KH - 1) - 1) / SH) + 1 (ceil with
    ceil_mode); xpad is x padded with -inf (PH rows above and below, PW columns left and right), so
    padding never wins (unless a window's real values are all -inf: then its first tap does):
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

    def forward(self, ctx, x):
        x, out_hw = self._batch(ctx, x)
        y, ctx.winners = F.max_pool2d(x, self.kernel_size, self.stride, self.padding, self.dilation, out_hw)
        if not self.return_indices:
            return _unbatched(ctx, y)
        indices = F.max_pool2d_indices(ctx.winners, x.shape, self.kernel_size, self.stride, self.padding,
                                       self.dilation, out_hw)
        return _unbatched(ctx, y), _unbatched(ctx, indices)

    def backprop(self, ctx, dy, d_indices=None):  # the indices (return_indices=True) take no gradient
        dx = F.max_pool2d_backward(dy[None] if ctx.unbatched else dy, ctx.winners, ctx.x_shape, self.kernel_size,
                                   self.stride, self.padding, self.dilation)
        return _unbatched(ctx, dx)

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
        self._divisors = {}  # (array module, input size, dtype) -> d on that device: made once per shape

    def _divisor(self, x, out_hw):
        xp = backend.array_module(x)
        key = (xp.__name__, x.shape[2:], x.dtype.str)
        if key not in self._divisors:
            self._divisors[key] = xp.asarray(F.avg_pool2d_divisor(x.shape[2:], out_hw, self.kernel_size, self.stride,
                                                                  self.padding, self.count_include_pad,
                                                                  self.divisor_override, x.dtype))
        return self._divisors[key]

    def forward(self, ctx, x):
        x, out_hw = self._batch(ctx, x)
        ctx.divisor = self._divisor(x, out_hw)
        y, _ = F.avg_pool2d(x, self.kernel_size, self.stride, self.padding, out_hw, ctx.divisor)  # saved: its shape
        return _unbatched(ctx, y)

    def backprop(self, ctx, dy):
        dx = F.avg_pool2d_backward(dy[None] if ctx.unbatched else dy, ctx.x_shape, self.kernel_size, self.stride,
                                   self.padding, ctx.divisor)
        return _unbatched(ctx, dx)

    def extra_repr(self):
        return (f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}, "
                f"ceil_mode={self.ceil_mode}, count_include_pad={self.count_include_pad}"
                + ("" if self.divisor_override is None else f", divisor_override={self.divisor_override}"))


class Upsample(Module):
    """Resizing by interpolation, as torch.nn.Upsample for 2-D images ("nearest" or "bilinear").

    Both modes are linear maps applied along each axis: y = A_h x A_w^T, with A_h (OH, H) the
    interpolation weights of the rows and A_w (OW, W) those of the columns
    (functional.interpolation_matrix). Backward is the transpose of that map: dL/dx = A_h^T dL/dy A_w
    (every input pixel receives the gradient of each output it contributed to, times its weight).

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
        self._maps = {}  # (array module, input size, dtype) -> the interpolation matrices: made once per shape

    def _map(self, xp, h, w, dtype):
        """(A_h, A_w, the rows and columns nearest copies) for an (H, W) input, on the array's device."""
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
            a_h, a_w = (F.interpolation_matrix(s, o, f, self.mode, self.align_corners, numpy.dtype(dtype).type)
                        for s, o, f in zip((h, w), out, factors))
            self._maps[key] = (xp.asarray(a_h), xp.asarray(a_w), xp.asarray(a_h.argmax(axis=1)),
                               xp.asarray(a_w.argmax(axis=1)))
        return self._maps[key]

    def forward(self, ctx, x):
        if getattr(x, "ndim", None) != 4 or x.dtype.kind != "f":  # PyTorch reads 3-D input as (N, C, L)
            raise ValueError(f"Upsample: expected a floating-point input of shape (N, C, H, W), got "
                             f"{tuple(getattr(x, 'shape', ()))} {getattr(x, 'dtype', type(x).__name__)}")
        a_h, a_w, rows, columns = self._map(backend.array_module(x), x.shape[2], x.shape[3], x.dtype)
        ctx.a_h, ctx.a_w = a_h, a_w
        y, _ = F.resize_nearest(x, rows, columns) if self.mode == "nearest" else F.resize(x, a_h, a_w)
        return y

    def backprop(self, ctx, dy):
        return F.resize_backward(dy, ctx.a_h, ctx.a_w)

    def extra_repr(self):
        what = f"size={self.size}" if self.size is not None else f"scale_factor={self.scale_factor}"
        return f"{what}, mode={self.mode!r}" + (", align_corners=True" if self.align_corners else "")
