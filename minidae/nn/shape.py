"""Reshaping layers: no arithmetic, the gradient is reshaped back."""
import math

from .module import Module

__all__ = ["Flatten", "Unflatten"]


class Flatten(Module):
    """(N, d1, d2, ...) -> (N, d1*d2*...).   Backward: reshape dL/dy to the input's shape."""

    def forward(self, x):
        self._shape = x.shape
        return x.reshape(x.shape[0], math.prod(x.shape[1:]))

    def backward(self, dy):
        return dy.reshape(self._shape)


class Unflatten(Module):
    """(N, prod(shape)) -> (N, *shape).   Backward: flatten dL/dy back to (N, prod(shape))."""

    def __init__(self, shape):
        super().__init__()
        self.shape = tuple(shape)

    def forward(self, x):
        size = 1
        for d in self.shape:
            size *= d
        if x.ndim != 2 or x.shape[1] != size:
            raise ValueError(f"Unflatten: expected input of shape (N, {size}) to unflatten to (N, "
                             f"{', '.join(map(str, self.shape))}), got {tuple(x.shape)}")
        return x.reshape(x.shape[0], *self.shape)

    def backward(self, dy):
        return dy.reshape(dy.shape[0], math.prod(self.shape))

    def extra_repr(self):
        return f"shape={self.shape}"
