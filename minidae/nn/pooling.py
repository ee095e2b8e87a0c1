"""Resampling layers: max pooling (through the shared im2col) and nearest upsampling."""
from .. import backend
from .im2col import col2im, conv_output_size, im2col, nchw_to_rows, pair, rows_to_nchw
from .module import Module

__all__ = ["MaxPool2d", "Upsample"]


class MaxPool2d(Module):
    """Max over KH x KW windows moved by stride (default: the kernel size), no padding.

    x (N, C, H, W) -> y (N, C, OH, OW), OH = floor((H - KH) / SH) + 1:
        y[n, c, oh, ow] = max_{kh, kw} x[n, c, SH*oh + kh, SW*ow + kw]
    Backward: each dL/dy goes to the position that won its window (the first one in
    row-major order on ties, as PyTorch), summed where windows overlap:
        dL/dx = col2im(one_hot(argmax) * dL/dy)
    """

    def __init__(self, kernel_size, stride=None):
        super().__init__()
        self.kernel_size = pair(kernel_size, "kernel_size", "MaxPool2d")
        self.stride = self.kernel_size if stride is None else pair(stride, "stride", "MaxPool2d")
        if min(self.kernel_size) < 1 or min(self.stride) < 1:
            raise ValueError(f"MaxPool2d: kernel_size and stride must be positive, got kernel_size="
                             f"{self.kernel_size}, stride={self.stride}")

    def forward(self, x):
        xp = backend.array_module(x)
        if x.ndim != 4 or x.shape[2] < self.kernel_size[0] or x.shape[3] < self.kernel_size[1]:
            raise ValueError(f"MaxPool2d: expected input (N, C, H, W) with H, W >= kernel {self.kernel_size}, "
                             f"got {tuple(x.shape)}")
        n, c, h, w = x.shape
        out_hw = tuple(conv_output_size(s, k, st, 0) for s, k, st in zip((h, w), self.kernel_size, self.stride))
        windows = im2col(x, self.kernel_size, self.stride, (0, 0), out_hw).reshape(c, -1, out_hw[0] * out_hw[1] * n)
        self._argmax = windows.argmax(axis=1)[:, None]
        self._x_shape, self._out_hw = x.shape, out_hw
        return rows_to_nchw(xp.take_along_axis(windows, self._argmax, axis=1)[:, 0], n, *out_hw)

    def backward(self, dy):
        xp = backend.array_module(dy)
        n, c = self._x_shape[:2]
        kernel_taps = self.kernel_size[0] * self.kernel_size[1]
        winner = self._argmax == xp.arange(kernel_taps)[:, None]  # one-hot over the taps: (C, KH*KW, L)
        dwindows = winner * nchw_to_rows(dy)[:, None]
        return col2im(dwindows.reshape(c * kernel_taps, -1), self._x_shape, self.kernel_size, self.stride,
                      (0, 0), self._out_hw)

    def extra_repr(self):
        return f"kernel_size={self.kernel_size}, stride={self.stride}"


class Upsample(Module):
    """Nearest-neighbour upsampling by integer factors (SH, SW).

    y[n, c, i, j] = x[n, c, i // SH, j // SW]        (N, C, H, W) -> (N, C, H*SH, W*SW)
    Backward: dL/dx[n, c, h, w] = sum of dL/dy over the SH x SW block that copied x[n, c, h, w].
    """

    def __init__(self, scale_factor, mode="nearest"):
        super().__init__()
        if mode != "nearest":
            raise ValueError(f"Upsample: only mode='nearest' is implemented, got {mode!r}")
        factors = scale_factor if isinstance(scale_factor, (tuple, list)) else (scale_factor, scale_factor)
        if len(factors) != 2 or any(f != int(f) or f < 1 for f in factors):
            raise ValueError(f"Upsample: scale_factor must be a positive integer or a pair of them, "
                             f"got {scale_factor!r}")
        self.scale_factor, self.mode = (int(factors[0]), int(factors[1])), mode

    def forward(self, x):
        if x.ndim != 4:
            raise ValueError(f"Upsample: expected input (N, C, H, W), got {tuple(x.shape)}")
        xp = backend.array_module(x)
        (n, c, h, w), (sh, sw) = x.shape, self.scale_factor
        return xp.broadcast_to(x[:, :, :, None, :, None], (n, c, h, sh, w, sw)).reshape(n, c, h * sh, w * sw)

    def backward(self, dy):
        (n, c, h, w), (sh, sw) = dy.shape, self.scale_factor
        return dy.reshape(n, c, h // sh, sh, w // sw, sw).sum(axis=(3, 5))

    def extra_repr(self):
        return f"scale_factor={self.scale_factor}, mode={self.mode!r}"
