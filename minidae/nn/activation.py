"""Elementwise activations. Their formulas live in :mod:`minidae.nn.elementwise` (one kernel each on a GPU).

Each output element depends on its own input element only, so each backward multiplies dL/dy
elementwise by the derivative: ⊙ is that elementwise product (NumPy's ``*``; in the conv
docstrings ``*`` is cross-correlation) and [x > 0] is 1 where x > 0 and 0 elsewhere.
"""
from . import elementwise
from .module import Module

__all__ = ["ReLU", "LeakyReLU", "Tanh", "Sigmoid"]


class ReLU(Module):
    """y = max(x, 0).   Backward: dL/dx = dL/dy ⊙ [x > 0]  (0 at the kink, as PyTorch)."""

    def forward(self, x):
        y, self._positive = elementwise.relu(x)
        return y

    def backward(self, dy):
        return elementwise.relu_grad(dy, self._positive)


class LeakyReLU(Module):
    """y = x for x > 0, negative_slope * x otherwise.   Backward: dL/dx = dL/dy ⊙ (1 or negative_slope)."""

    def __init__(self, negative_slope=0.01):
        super().__init__()
        self.negative_slope = float(negative_slope)

    def forward(self, x):
        y, self._positive = elementwise.leaky_relu(x, self.negative_slope)
        return y

    def backward(self, dy):
        return elementwise.leaky_relu_grad(dy, self._positive, self.negative_slope)

    def extra_repr(self):
        return f"negative_slope={self.negative_slope}"


class Tanh(Module):
    """y = tanh(x).   Backward: dL/dx = dL/dy ⊙ (1 - y^2)."""

    def forward(self, x):
        self._y = elementwise.tanh(x)
        return self._y

    def backward(self, dy):
        return elementwise.tanh_grad(dy, self._y)


class Sigmoid(Module):
    """y = 1 / (1 + exp(-x)).   Backward: dL/dx = dL/dy ⊙ y ⊙ (1 - y).

    Evaluated through e = exp(-|x|), which never overflows (see elementwise.sigmoid), so it is
    finite and warning-free at +-1000 and keeps full relative precision in both tails.
    """

    def forward(self, x):
        self._y = elementwise.sigmoid(x)
        return self._y

    def backward(self, dy):
        return elementwise.sigmoid_grad(dy, self._y)
