"""Elementwise activations."""
from .. import backend
from .module import Module

__all__ = ["ReLU", "Sigmoid"]


class ReLU(Module):
    """y = max(x, 0).   Backward: dL/dx = dL/dy * [x > 0]  (0 at the kink, as PyTorch)."""

    def forward(self, x):
        self._positive = x > 0
        return backend.array_module(x).maximum(x, 0)

    def backward(self, dy):
        return dy * self._positive


class Sigmoid(Module):
    """y = 1 / (1 + exp(-x)).   Backward: dL/dx = dL/dy * y (1 - y).

    Evaluated through e = exp(-|x|) <= 1, which never overflows:
        y = 1 / (1 + e) for x >= 0,    y = e / (1 + e) for x < 0
    so it is finite and warning-free at +-1000 and keeps full relative precision in both tails.
    """

    def forward(self, x):
        xp = backend.array_module(x)
        e = xp.exp(-xp.abs(x))
        self._y = xp.where(x >= 0, 1, e) / (1 + e)
        return self._y

    def backward(self, dy):
        return dy * self._y * (1 - self._y)
