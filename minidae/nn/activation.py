"""Elementwise activations. Their formulas live in :mod:`minidae.nn.elementwise` (one kernel each on a GPU)."""
from . import elementwise
from .module import Module

__all__ = ["ReLU", "Sigmoid"]


class ReLU(Module):
    """y = max(x, 0).   Backward: dL/dx = dL/dy * [x > 0]  (0 at the kink, as PyTorch)."""

    def forward(self, x):
        y, self._positive = elementwise.relu(x)
        return y

    def backward(self, dy):
        return elementwise.relu_grad(dy, self._positive)


class Sigmoid(Module):
    """y = 1 / (1 + exp(-x)).   Backward: dL/dx = dL/dy * y (1 - y).

    Evaluated through e = exp(-|x|), which never overflows (see elementwise.sigmoid), so it is
    finite and warning-free at +-1000 and keeps full relative precision in both tails.
    """

    def forward(self, x):
        self._y = elementwise.sigmoid(x)
        return self._y

    def backward(self, dy):
        return elementwise.sigmoid_grad(dy, self._y)
