"""The elementwise maths of the activations and of MSELoss, one function each.

Each function is written once, as NumPy code, and that code is its definition. Run as written
on a GPU, each NumPy operation is a kernel launch of its own (the stable sigmoid alone is seven);
so for CuPy arrays :func:`fused` hands the call to the function of the same name in
:mod:`minidae.cuda`, which computes the same formula, operation for operation, in one kernel.

In the docstrings' formulas ⊙ is the elementwise product (NumPy's ``*`` on arrays of one shape),
as in the activation docstrings; ``*`` in the conv docstrings means cross-correlation.

>>> import numpy as np
>>> y, positive = relu(np.array([-1.0, 2.0]))
>>> y.tolist(), relu_grad(np.array([5.0, 5.0]), positive).tolist()
([0.0, 2.0], [0.0, 5.0])
"""
import functools

from .. import backend

__all__ = ["relu", "relu_grad", "leaky_relu", "leaky_relu_grad", "tanh", "tanh_grad", "sigmoid", "sigmoid_grad",
           "mse", "mse_grad"]


def fused(function):
    """On CuPy arrays, call :mod:`minidae.cuda`'s one-kernel version of ``function`` instead."""
    @functools.wraps(function)
    def dispatch(first, *rest):
        gpu = backend.accelerated(first, "fused")
        return function(first, *rest) if gpu is None else getattr(gpu, function.__name__)(first, *rest)
    return dispatch


@fused
def relu(x):
    """(max(x, 0), the mask [x > 0] that the backward multiplies by); NaN stays NaN."""
    return backend.array_module(x).maximum(x, 0), x > 0


def relu_grad(dy, positive):
    """dL/dx = dL/dy ⊙ [x > 0] (0 at the kink, as PyTorch): one multiplication on any backend."""
    return dy * positive


def leaky_relu(x, negative_slope):
    """(x where x > 0 else negative_slope * x, the mask [x > 0])."""
    positive = x > 0
    return backend.array_module(x).where(positive, x, x * negative_slope), positive


def leaky_relu_grad(dy, positive, negative_slope):
    """dL/dx = dL/dy where x > 0, else negative_slope * dL/dy (as PyTorch, also at 0)."""
    return backend.array_module(dy).where(positive, dy, dy * negative_slope)


def tanh(x):
    """tanh(x)."""
    return backend.array_module(x).tanh(x)


def tanh_grad(dy, y):
    """dL/dx = dL/dy ⊙ (1 - y^2), y = tanh(x)."""
    return dy * (1 - y * y)


@fused
def sigmoid(x):
    """1 / (1 + exp(-x)), evaluated through e = exp(-|x|) <= 1, which never overflows:

        y = 1 / (1 + e) for x >= 0,    y = e / (1 + e) for x < 0

    so it is finite and warning-free at +-1000 and keeps full relative precision in both tails.
    """
    xp = backend.array_module(x)
    e = xp.exp(-xp.abs(x))
    return xp.where(x >= 0, 1, e) / (1 + e)


@fused
def sigmoid_grad(dy, y):
    """dL/dx = dL/dy ⊙ y ⊙ (1 - y), with y = sigmoid(x)."""
    return dy * y * (1 - y)


@fused
def mse(pred, target):
    """mean((pred - target)^2) over all elements, a 0-d array."""
    diff = pred - target
    return (diff * diff).mean()


@fused
def mse_grad(pred, target, scale):
    """scale * (pred - target); MSELoss passes scale = 2 / M."""
    return (pred - target) * scale
