"""Activations; their formulas are in :mod:`minidae.nn.functional` (ReLU's and Sigmoid's one kernel each on a GPU).

In ReLU, LeakyReLU, Tanh and Sigmoid each output element depends on its own input element only, so each
backward multiplies dL/dy elementwise by the derivative (Softmax and LogSoftmax mix each vector along ``dim``):
⊙ is that elementwise product (NumPy's ``*``; in the conv docstrings ``*`` is cross-correlation) and [x > 0] is 1
where x > 0 and 0 elsewhere.
"""
from . import functional as F
from .module import Module

__all__ = ["ReLU", "LeakyReLU", "Tanh", "Sigmoid", "LogSoftmax", "Softmax"]


class ReLU(Module):
    """y = max(x, 0).   Backward: dL/dx = dL/dy ⊙ [x > 0]  (0 at the kink, as PyTorch).

    ``inplace=True`` is accepted for PyTorch's sake and gives the same numbers (a new array is returned)."""

    _array_input = True

    def __init__(self, inplace=False):
        super().__init__()
        self.inplace = bool(inplace)

    def forward(self, ctx, x):
        y, ctx.positive = F.relu(x)
        return y

    def backprop(self, ctx, dy):
        return F.relu_backward(dy, ctx.positive)


class LeakyReLU(Module):
    """y = x for x > 0, negative_slope * x otherwise.   Backward: dL/dx = dL/dy ⊙ (1 or negative_slope).

    ``inplace=True`` is accepted for PyTorch's sake and gives the same numbers."""

    _array_input = True

    def __init__(self, negative_slope=0.01, inplace=False):
        super().__init__()
        self.negative_slope, self.inplace = float(negative_slope), bool(inplace)

    def forward(self, ctx, x):
        y, ctx.positive = F.leaky_relu(x, self.negative_slope)
        return y

    def backprop(self, ctx, dy):
        return F.leaky_relu_backward(dy, ctx.positive, self.negative_slope)

    def extra_repr(self):
        return f"negative_slope={self.negative_slope}"


class Tanh(Module):
    """y = tanh(x).   Backward: dL/dx = dL/dy ⊙ (1 - y^2)."""

    _array_input = True

    def forward(self, ctx, x):
        y, ctx.y = F.tanh(x)
        return y

    def backprop(self, ctx, dy):
        return F.tanh_backward(dy, ctx.y)


class Sigmoid(Module):
    """y = 1 / (1 + exp(-x)).   Backward: dL/dx = dL/dy ⊙ y ⊙ (1 - y).

    Evaluated through e = exp(-|x|), which never overflows (see functional.sigmoid), so it is
    finite and warning-free at +-1000 and keeps full relative precision in both tails.
    """

    _array_input = True

    def forward(self, ctx, x):
        y, ctx.y = F.sigmoid(x)
        return y

    def backprop(self, ctx, dy):
        return F.sigmoid_backward(dy, ctx.y)


class _AlongDim(Module):
    """The ``dim`` argument of LogSoftmax and Softmax (PyTorch's; None is refused, as PyTorch warns about it)."""

    _array_input = True

    def __init__(self, dim=None):
        super().__init__()
        if dim is None:
            raise ValueError(f"{type(self).__name__}: give dim, the axis of the classes (dim=1 for (N, C) scores)")
        self.dim = int(dim)

    def _dim_for(self, x):
        """``dim``, if ``x`` has it (-x.ndim <= dim < x.ndim, as PyTorch); else an IndexError naming the layer."""
        if not -x.ndim <= self.dim < x.ndim:
            raise IndexError(f"{type(self).__name__}: dim={self.dim} is out of range for an input of {x.ndim} "
                             f"dimensions, shape {tuple(x.shape)} (dim must be in [{-x.ndim}, {x.ndim - 1}])")
        return self.dim

    def extra_repr(self):
        return f"dim={self.dim}"


class LogSoftmax(_AlongDim):
    """y = x - log sum_j exp(x_j) along ``dim``.   Backward: dL/dx = dL/dy - softmax(x) sum_j dL/dy_j."""

    def forward(self, ctx, x):
        y, ctx.y = F.log_softmax(x, self._dim_for(x))
        return y

    def backprop(self, ctx, dy):
        return F.log_softmax_backward(dy, ctx.y, self.dim)


class Softmax(_AlongDim):
    """y = exp(x) / sum_j exp(x_j) along ``dim``.   Backward: dL/dx = y ⊙ (dL/dy - sum_j dL/dy_j y_j)."""

    def forward(self, ctx, x):
        y, ctx.y = F.softmax(x, self._dim_for(x))
        return y

    def backprop(self, ctx, dy):
        return F.softmax_backward(dy, ctx.y, self.dim)
