"""Conv2d and ConvTranspose2d: PyTorch's arguments, parameters and per-call state around one adjoint pair.

The maths is in :mod:`minidae.nn.functional`: ``correlate`` (y = W * x) and ``correlate_transpose``
(W^T * z, its adjoint). A transposed convolution is the input gradient of a convolution, so each layer's
forward is the other's backward: Conv2d's forward correlates and its backward correlates transposed;
ConvTranspose2d's forward correlates transposed and its backward correlates.
"""
import math

from . import functional as F
from . import init
from .arguments import as_batch, pair
from .im2col import conv_transpose_output_size
from .module import Module, Parameter, data_of, grad_of

__all__ = ["Conv2d", "ConvTranspose2d"]

PADDING_MODES = ("zeros", "reflect", "replicate", "circular")


class _ConvBase(Module):
    """Argument checks, PyTorch's default init and the repr shared by both layers."""

    def __init__(self, in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias,
                 weight_shape):
        super().__init__()
        name = type(self).__name__
        if not (isinstance(in_channels, int) and isinstance(out_channels, int)) or in_channels < 1 \
                or out_channels < 1:
            raise ValueError(f"{name}: channel counts must be positive, got in_channels={in_channels}, "
                             f"out_channels={out_channels}")
        if not isinstance(groups, int) or groups < 1 or in_channels % groups or out_channels % groups:
            raise ValueError(f"{name}: groups must be a positive integer dividing in_channels and out_channels, "
                             f"got groups={groups}, in_channels={in_channels}, out_channels={out_channels}")
        self.in_channels, self.out_channels, self.groups = in_channels, out_channels, groups
        self.kernel_size = pair(kernel_size, "kernel_size", name)
        self.stride = pair(stride, "stride", name)
        self.dilation = pair(dilation, "dilation", name)
        if min(self.kernel_size) < 1 or min(self.stride) < 1 or min(self.dilation) < 1:
            raise ValueError(f"{name}: kernel_size, stride and dilation must be positive, got kernel_size="
                             f"{self.kernel_size}, stride={self.stride}, dilation={self.dilation}")
        self.padding = padding if isinstance(padding, str) else pair(padding, "padding", name)
        if not isinstance(self.padding, str) and min(self.padding) < 0:
            raise ValueError(f"{name}: padding must be non-negative, got {self.padding}")
        shape = weight_shape(in_channels, out_channels, groups, *self.kernel_size)
        fan_in = init.fans(shape)[0]
        self.weight = Parameter(init.kaiming_uniform(shape, a=math.sqrt(5)))
        self.bias = Parameter(init.uniform((out_channels,), 1 / math.sqrt(fan_in))) if bias else None

    def extra_repr(self):
        text = f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}"
        text += f", padding={self.padding!r}" if isinstance(self.padding, str) else f", padding={self.padding}"
        if self.dilation != (1, 1):
            text += f", dilation={self.dilation}"
        if self.groups != 1:
            text += f", groups={self.groups}"
        return text + ("" if self.bias is not None else ", bias=False")


class Conv2d(_ConvBase):
    """2-D cross-correlation, PyTorch layout: weight (O, C/G, KH, KW), bias (O,).

    Forward, x (N, C, H, W) -> y (N, O, OH, OW), OH = floor((H + 2 PH - DH (KH - 1) - 1) / SH) + 1;
    for output channel o in group g = o // (O/G), with xpad the input padded by (PH, PW):
        y[n, o, i, j] = b[o] + sum_{c < C/G, kh, kw} W[o, c, kh, kw] xpad[n, g C/G + c, SH i + DH kh, SW j + DW kw]
    computed as Y = W2 @ X per group, with X = im2col(x) (C*KH*KW, OH*OW*N) the windows of xpad as
    columns, W2 = W.reshape(O, C/G*KH*KW) and Y = y as (O, OH*OW*N) rows (notation: minidae.nn.im2col).
    Backward, given dL/dy (N, O, OH, OW) and dY = dL/dy as rows (O, OH*OW*N):
        dL/dW = dY @ X^T           (per group)      dL/db[o] = sum_{n, i, j} dL/dy[n, o, i, j]
        dL/dx = col2im(W2^T @ dY)  (per group; the forward of ConvTranspose2d): W2^T @ dY is dL/dX,
        and col2im adds each column back onto the window it was copied from, then drops the padding
    padding: an int or pair, "valid" (0) or "same" (output size = input size, stride 1; an odd total
    DH (KH - 1) puts the extra row at the bottom, as PyTorch). padding_mode "reflect", "replicate"
    or "circular" pads the input by copying its own pixels (a gather whose backward adds the
    gradient back onto the pixels copied), then convolves without padding.
    Input (N, C, H, W), or (C, H, W) for one unbatched image, as PyTorch.
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1, groups=1,
                 bias=True, padding_mode="zeros"):
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias,
                         lambda c_in, c_out, g, kh, kw: (c_out, c_in // g, kh, kw))
        if padding_mode not in PADDING_MODES:
            raise ValueError(f"Conv2d: padding_mode must be one of {', '.join(PADDING_MODES)}, got {padding_mode!r}")
        self.padding_mode = padding_mode
        if isinstance(self.padding, str):
            if self.padding not in ("same", "valid"):
                raise ValueError(f"Conv2d: padding must be an int, a pair, 'same' or 'valid', got {self.padding!r}")
            if self.padding == "same" and self.stride != (1, 1):
                raise ValueError(f"Conv2d: padding='same' is not supported for strided convolutions "
                                 f"(stride={self.stride})")
        self.edges = self._edges()

    def _edges(self):
        """The padding as (top, bottom, left, right) rows and columns."""
        if self.padding == "valid":
            return (0, 0, 0, 0)
        if self.padding == "same":
            totals = [d * (k - 1) for d, k in zip(self.dilation, self.kernel_size)]
            return (totals[0] // 2, totals[0] - totals[0] // 2, totals[1] // 2, totals[1] - totals[1] // 2)
        (ph, pw) = self.padding
        return (ph, ph, pw, pw)

    def forward(self, ctx, x):
        x, ctx.unbatched = as_batch(x, "Conv2d", self.in_channels)
        ctx.x_hw, ctx.padding = x.shape[2:], self.edges
        if self.padding_mode != "zeros":  # pad by copying pixels, then convolve without zero padding
            self._check_copy_padding(x.shape[2:])
            x, ctx.pad_index = F.pad(x, self.edges, self.padding_mode)
            ctx.padding = (0, 0, 0, 0)
        self._check_kernel_fits(x.shape[2:], ctx.padding, ctx.x_hw)
        ctx.conv_x_shape = x.shape
        y, ctx.cols = F.conv2d(x, self.weight.data, data_of(self.bias), self.stride, ctx.padding, self.dilation,
                               self.groups)
        return y[0] if ctx.unbatched else y

    def backprop(self, ctx, dy):
        dx = F.conv2d_backward(dy[None] if ctx.unbatched else dy, ctx.cols, self.weight.data, ctx.conv_x_shape,
                               self.stride, ctx.padding, self.dilation, self.groups, grad_of(self.weight),
                               grad_of(self.bias), ctx.needs_input_grad)
        if dx is None:
            return None
        if self.padding_mode != "zeros":
            dx = F.pad_backward(dx, ctx.pad_index, ctx.x_hw)
        return dx[0] if ctx.unbatched else dx

    def _check_copy_padding(self, hw):
        for size, before, after in zip(hw, self.edges[::2], self.edges[1::2]):
            limit = size if self.padding_mode == "circular" else size - 1
            if max(before, after) > limit and self.padding_mode != "replicate":
                raise ValueError(f"Conv2d: padding {self.edges} is too large for {self.padding_mode} padding of an "
                                 f"input of size {tuple(hw)} (at most {limit} per side)")

    def _check_kernel_fits(self, hw, padding, x_hw):
        (kh, kw), (dh, dw) = self.kernel_size, self.dilation
        if hw[0] + padding[0] + padding[1] < dh * (kh - 1) + 1 or hw[1] + padding[2] + padding[3] < dw * (kw - 1) + 1:
            e = self.edges
            raise ValueError(f"Conv2d: kernel {self.kernel_size} (dilation {self.dilation}) is larger than the padded "
                             f"input {(x_hw[0] + e[0] + e[1], x_hw[1] + e[2] + e[3])} (input {tuple(x_hw)}, padding "
                             f"{self.padding})")

    def extra_repr(self):
        return super().extra_repr() + ("" if self.padding_mode == "zeros" else f", padding_mode={self.padding_mode!r}")


class ConvTranspose2d(_ConvBase):
    """2-D transposed convolution, PyTorch layout: weight (C, O/G, KH, KW), bias (O,).

    It is the input gradient of a Conv2d whose weight is this one (so that layer maps O channels
    to C): with x (N, C, H, W),
        y = col2im(W2^T @ X) + b  (per group), W2 = W.reshape(C, O/G*KH*KW)    y (N, O, OH, OW)
        OH = (H - 1) SH - 2 PH + DH (KH - 1) + output_padding_h + 1
    where X is x laid out as rows (C, H*W*N) (nchw_to_rows; here X is not an im2col matrix: it
    plays the part dY plays in Conv2d's backward).
    output_padding (smaller than the stride or the dilation) adds that many rows/columns at the far
    edge of the output (see docs/backprop.md for when they receive input and when only the bias).
    forward(x, output_size) picks output_padding from the size asked for, as PyTorch.
    Backward, given dL/dy:
        dL/dx = W2 @ im2col(dL/dy)  (per group; the forward of Conv2d)
        dL/dW = X @ im2col(dL/dy)^T (per group)       dL/db[o] = sum_{n, i, j} dL/dy[n, o, i, j]
    The roles of x and y swap relative to Conv2d; the arithmetic is the same (functional.correlate and
    correlate_transpose, used the other way round).
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, output_padding=0, groups=1,
                 bias=True, dilation=1, padding_mode="zeros"):
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias,
                         lambda c_in, c_out, g, kh, kw: (c_in, c_out // g, kh, kw))
        if isinstance(self.padding, str):
            raise ValueError(f"ConvTranspose2d: padding must be an int or a pair, got {self.padding!r}")
        if padding_mode != "zeros":
            raise ValueError(f"ConvTranspose2d: only padding_mode='zeros' is supported (as PyTorch), got "
                             f"{padding_mode!r}")
        self.padding_mode = padding_mode
        self.output_padding = pair(output_padding, "output_padding", "ConvTranspose2d")
        self._check_output_padding(self.output_padding)

    def _check_output_padding(self, output_padding):
        if any(not (0 <= op and (op < s or op < d)) for op, s, d in zip(output_padding, self.stride, self.dilation)):
            raise ValueError(f"ConvTranspose2d: output_padding {output_padding} must be non-negative and smaller "
                             f"than either stride {self.stride} or dilation {self.dilation}")

    def output_size(self, h, w, output_padding=None):
        """(OH, OW) for an (h, w) input, by the rule above (``output_padding`` defaults to the layer's)."""
        output_padding = self.output_padding if output_padding is None else output_padding
        return tuple(conv_transpose_output_size(size, k, s, p, op, d) for size, k, s, p, op, d in
                     zip((h, w), self.kernel_size, self.stride, self.padding, output_padding, self.dilation))

    def _output_padding_for(self, h, w, output_size):
        """The output_padding that gives ``output_size`` ((H, W), or with N and C in front), as PyTorch."""
        size = tuple(int(s) for s in output_size)[-2:]
        if len(size) != 2:
            raise ValueError(f"ConvTranspose2d: output_size must end in (H, W), got {output_size!r}")
        smallest = self.output_size(h, w, (0, 0))
        largest = tuple(m + s - 1 for m, s in zip(smallest, self.stride))
        if any(not lo <= want <= hi for want, lo, hi in zip(size, smallest, largest)):
            raise ValueError(f"ConvTranspose2d: requested an output size of {size}, but valid sizes range from "
                             f"{smallest} to {largest} (for an input of {(h, w)})")
        return tuple(want - lo for want, lo in zip(size, smallest))

    def forward(self, ctx, x, output_size=None):
        x, ctx.unbatched = as_batch(x, "ConvTranspose2d", self.in_channels)
        ctx.x_hw = h, w = x.shape[2:]
        output_padding = self.output_padding if output_size is None else self._output_padding_for(h, w, output_size)
        out_hw = self.output_size(h, w, output_padding)
        if min(out_hw) < 1:
            raise ValueError(f"ConvTranspose2d: input {tuple(x.shape)} gives a non-positive output size "
                             f"{out_hw} with kernel {self.kernel_size}, stride {self.stride}, padding "
                             f"{self.padding}, output_padding {output_padding}; reduce the padding")
        y, ctx.x_rows = F.conv_transpose2d(x, self.weight.data, data_of(self.bias), out_hw, self.stride,
                                           self.padding, self.dilation, self.groups)
        return y[0] if ctx.unbatched else y

    def backprop(self, ctx, dy):
        dx = F.conv_transpose2d_backward(dy[None] if ctx.unbatched else dy, ctx.x_rows, self.weight.data, ctx.x_hw,
                                         self.stride, self.padding, self.dilation, self.groups, grad_of(self.weight),
                                         grad_of(self.bias), ctx.needs_input_grad)
        return dx if dx is None or not ctx.unbatched else dx[0]

    def extra_repr(self):
        return super().extra_repr() + f", output_padding={self.output_padding}"
