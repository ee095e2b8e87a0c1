"""Reshaping layers: no arithmetic, the gradient is reshaped back."""
import math

from .module import Module

__all__ = ["Flatten", "Unflatten"]


class Flatten(Module):
    """Merges dimensions start_dim..end_dim into one, as torch.nn.Flatten (default: all but the batch).

    (N, d1, d2, ...) -> (N, d1*d2*...).   Backward: reshape dL/dy to the input's shape.
    """

    _array_input = True

    def __init__(self, start_dim=1, end_dim=-1):
        super().__init__()
        self.start_dim, self.end_dim = start_dim, end_dim

    def forward(self, ctx, x):
        ctx.x_shape = x.shape
        ndim = max(x.ndim, 1)
        start, end = self.start_dim % ndim, self.end_dim % ndim
        if not (-ndim <= self.start_dim < ndim and -ndim <= self.end_dim < ndim) or start > end:
            raise ValueError(f"Flatten: start_dim {self.start_dim} and end_dim {self.end_dim} do not fit an input "
                             f"of shape {tuple(x.shape)}")
        return x.reshape(*x.shape[:start], math.prod(x.shape[start:end + 1]), *x.shape[end + 1:])

    def backprop(self, ctx, dy):
        return dy.reshape(ctx.x_shape)

    def extra_repr(self):
        return f"start_dim={self.start_dim}, end_dim={self.end_dim}"


class Unflatten(Module):
    """Splits dimension ``dim`` into ``unflattened_size``, as torch.nn.Unflatten(dim, unflattened_size).

    ``Unflatten(shape)`` is short for ``Unflatten(1, shape)``: (N, prod(shape)) -> (N, *shape).
    Backward: merge dL/dy's split dimensions back into one.
    """

    _array_input = True

    def __init__(self, dim, unflattened_size=None):
        super().__init__()
        if unflattened_size is None:
            dim, unflattened_size = 1, dim
        self.dim, self.shape = dim, tuple(unflattened_size)

    def forward(self, ctx, x):
        size = math.prod(self.shape)
        if not -x.ndim <= self.dim < x.ndim or x.shape[self.dim] != size:
            raise ValueError(f"Unflatten: expected input of shape (N, {size}) to unflatten to (N, "
                             f"{', '.join(map(str, self.shape))}), got {tuple(x.shape)}")
        ctx.x_shape, dim = x.shape, self.dim % x.ndim
        return x.reshape(*x.shape[:dim], *self.shape, *x.shape[dim + 1:])

    def backprop(self, ctx, dy):
        return dy.reshape(ctx.x_shape)

    def extra_repr(self):
        return f"dim={self.dim}, unflattened_size={self.shape}"
