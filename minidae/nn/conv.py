"""Conv2d and ConvTranspose2d: one pair of adjoint primitives, used both ways round.

See :mod:`minidae.nn.im2col` for the notation and the primitives ``conv2d`` (y = W * x)
and ``conv2d_input_grad`` (dx = W^T * dy). A transposed convolution is the input gradient
of a convolution, so each layer's forward is the other's backward.
"""
import math

from . import init
from .im2col import (channel_major, conv2d, conv2d_input_grad, conv2d_weight_grad, conv_transpose_output_size,
                     pair)
from .module import Module, Parameter

__all__ = ["Conv2d", "ConvTranspose2d"]


class _ConvBase(Module):
    """Argument checks, PyTorch's default init and the input check shared by both layers."""

    def __init__(self, in_channels, out_channels, kernel_size, stride, padding, bias, weight_shape):
        super().__init__()
        name = type(self).__name__
        if in_channels < 1 or out_channels < 1:
            raise ValueError(f"{name}: channel counts must be positive, got in_channels={in_channels}, "
                             f"out_channels={out_channels}")
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size = pair(kernel_size, "kernel_size", name)
        self.stride = pair(stride, "stride", name)
        self.padding = pair(padding, "padding", name)
        if min(self.kernel_size) < 1 or min(self.stride) < 1:
            raise ValueError(f"{name}: kernel_size and stride must be positive, got kernel_size="
                             f"{self.kernel_size}, stride={self.stride}")
        if min(self.padding) < 0:
            raise ValueError(f"{name}: padding must be non-negative, got {self.padding}")
        shape = weight_shape(in_channels, out_channels, *self.kernel_size)
        fan_in = init.fans(shape)[0]
        self.weight = Parameter(init.kaiming_uniform(shape, a=math.sqrt(5)))
        self.bias = Parameter(init.uniform((out_channels,), 1 / math.sqrt(fan_in))) if bias else None

    def _check_input(self, x):
        if x.ndim != 4 or x.shape[1] != self.in_channels or x.dtype.kind != "f":
            raise ValueError(f"{type(self).__name__}: expected a floating-point input of shape "
                             f"(N, {self.in_channels}, H, W), got {tuple(x.shape)} {x.dtype}")

    def _add_bias(self, y):
        if self.bias is not None:
            y += self.bias.data.astype(y.dtype, copy=False).reshape(1, -1, 1, 1)
        return y

    def _accumulate_grads(self, dy, rows, cols):
        """dL/dW += rows @ cols^T (conv2d_weight_grad) and dL/db += dL/dy summed over (N, OH, OW)."""
        conv2d_weight_grad(rows, cols, self.weight.grad)
        if self.bias is not None:
            self.bias.grad += dy.sum(axis=(0, 2, 3))

    def extra_repr(self):
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}, padding={self.padding}")


class Conv2d(_ConvBase):
    """2-D cross-correlation, PyTorch layout: weight (O, C, KH, KW), bias (O,).

    Forward, with x (N, C, H, W) -> y (N, O, OH, OW), OH = floor((H + 2 PH - KH) / SH) + 1:
        y[n, o] = b[o] + sum_{c, kh, kw} W[o, c, kh, kw] * xpad[n, c, SH*oh + kh, SW*ow + kw]
        computed as Y = W2 @ im2col(x), W2 = W.reshape(O, C*KH*KW).
    Backward, given dL/dy:
        dL/dW = dY @ im2col(x)^T          dL/db[o] = sum_{n, oh, ow} dL/dy[n, o, oh, ow]
        dL/dx = col2im(W2^T @ dY)          (the forward of ConvTranspose2d)
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, bias=True):
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, bias,
                         lambda c_in, c_out, kh, kw: (c_out, c_in, kh, kw))

    def forward(self, x):
        self._check_input(x)
        (h, w), (kh, kw), (ph, pw) = x.shape[2:], self.kernel_size, self.padding
        if h + 2 * ph < kh or w + 2 * pw < kw:
            raise ValueError(f"Conv2d: kernel {self.kernel_size} is larger than the padded input "
                             f"{(h + 2 * ph, w + 2 * pw)} (input {tuple(x.shape)}, padding {self.padding})")
        y, self._cols = conv2d(x, self.weight.data.astype(x.dtype, copy=False), self.stride, self.padding)
        self._x_hw = (h, w)
        return self._add_bias(y)

    def backward(self, dy):
        dy = channel_major(dy)  # both gradients below read dy as rows: one copy at most, not two
        weight = self.weight.data.astype(dy.dtype, copy=False)
        self._accumulate_grads(dy, dy, self._cols)
        return conv2d_input_grad(dy, weight, self._x_hw, self.stride, self.padding)


class ConvTranspose2d(_ConvBase):
    """2-D transposed convolution, PyTorch layout: weight (C, O, KH, KW), bias (O,).

    It is the input gradient of Conv2d with the same weight, so with x (N, C, H, W):
        y = col2im(W2^T @ X) + b,  W2 = W.reshape(C, O*KH*KW)      y (N, O, OH, OW)
        OH = (H - 1) SH - 2 PH + KH + output_padding_h
    output_padding (< stride) adds rows/columns at the far edge that no input reaches.
    Backward, given dL/dy:
        dL/dx = W2 @ im2col(dL/dy)          (the forward of Conv2d)
        dL/dW = X @ im2col(dL/dy)^T         dL/db[o] = sum_{n, oh, ow} dL/dy[n, o, oh, ow]
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, output_padding=0,
                 bias=True):
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, bias,
                         lambda c_in, c_out, kh, kw: (c_in, c_out, kh, kw))
        self.output_padding = pair(output_padding, "output_padding", "ConvTranspose2d")
        if any(not 0 <= op < s for op, s in zip(self.output_padding, self.stride)):
            raise ValueError(f"ConvTranspose2d: output_padding {self.output_padding} must be non-negative "
                             f"and smaller than stride {self.stride}")

    def output_size(self, h, w):
        return tuple(conv_transpose_output_size(size, k, s, p, op) for size, k, s, p, op in
                     zip((h, w), self.kernel_size, self.stride, self.padding, self.output_padding))

    def forward(self, x):
        self._check_input(x)
        out_hw = self.output_size(*x.shape[2:])
        if min(out_hw) < 1:
            raise ValueError(f"ConvTranspose2d: input {tuple(x.shape)} gives a non-positive output size "
                             f"{out_hw} with kernel {self.kernel_size}, stride {self.stride}, padding "
                             f"{self.padding}, output_padding {self.output_padding}; reduce the padding")
        self._x = x = channel_major(x)  # read again by backward's weight gradient
        y = conv2d_input_grad(x, self.weight.data.astype(x.dtype, copy=False), out_hw, self.stride, self.padding)
        return self._add_bias(y)

    def backward(self, dy):
        weight = self.weight.data.astype(dy.dtype, copy=False)
        dx, cols = conv2d(dy, weight, self.stride, self.padding)
        self._accumulate_grads(dy, self._x, cols)
        return dx

    def extra_repr(self):
        return super().extra_repr() + f", output_padding={self.output_padding}"

