"""Weight initialisation with PyTorch's rules, drawn from the host generator.

Draws use ``backend.init_rng()`` (a NumPy generator reseeded by ``backend.seed``) and are
then moved to the active backend, so a seed gives the same weights on NumPy and CuPy.

fan_in and fan_out follow ``torch.nn.init._calculate_fan_in_and_fan_out``: for a weight of
shape (d0, d1, k...), fan_in = d1 * prod(k) and fan_out = d0 * prod(k). (For
ConvTranspose2d, whose weight is (C_in, C_out, KH, KW), fan_in is therefore C_out*KH*KW,
as in PyTorch.)
"""
import math

import numpy

from .. import backend

__all__ = ["fans", "uniform", "kaiming_uniform", "kaiming_normal", "kaiming_uniform_", "kaiming_normal_",
           "calculate_gain"]


def fans(shape):
    """(fan_in, fan_out) of a weight of ``shape``."""
    if len(shape) < 2:
        raise ValueError(f"init: fan in and fan out need a weight of at least 2 dimensions, got shape {shape}")
    receptive = math.prod(shape[2:])
    return shape[1] * receptive, shape[0] * receptive


def calculate_gain(nonlinearity, a=0.0):
    """PyTorch's recommended gains: 1 for linear/sigmoid, sqrt(2) for relu, sqrt(2/(1+a^2)) for leaky_relu."""
    if nonlinearity in ("linear", "conv2d", "conv_transpose2d", "sigmoid"):
        return 1.0
    if nonlinearity == "relu":
        return math.sqrt(2.0)
    if nonlinearity == "leaky_relu":
        return math.sqrt(2.0 / (1 + a * a))
    raise ValueError(f"init: unsupported nonlinearity {nonlinearity!r}")


def uniform(shape, bound, dtype=numpy.float32):
    """U(-bound, bound) of ``shape`` as an array of the active backend."""
    values = backend.init_rng().uniform(-bound, bound, size=shape)
    return backend.xp.asarray(values.astype(dtype))


def kaiming_uniform(shape, a=0.0, mode="fan_in", nonlinearity="leaky_relu", dtype=numpy.float32):
    """He uniform: U(-b, b), b = gain * sqrt(3 / fan). With a = sqrt(5) (PyTorch's layer
    default) this is b = 1 / sqrt(fan_in)."""
    fan = fans(shape)[0 if mode == "fan_in" else 1]
    return uniform(shape, calculate_gain(nonlinearity, a) * math.sqrt(3.0 / fan), dtype)


def kaiming_normal(shape, a=0.0, mode="fan_in", nonlinearity="relu", dtype=numpy.float32):
    """He normal: N(0, std^2), std = gain / sqrt(fan)."""
    fan = fans(shape)[0 if mode == "fan_in" else 1]
    std = calculate_gain(nonlinearity, a) / math.sqrt(fan)
    values = backend.init_rng().normal(0.0, std, size=shape)
    return backend.xp.asarray(values.astype(dtype))


def kaiming_uniform_(param, a=0.0, mode="fan_in", nonlinearity="leaky_relu"):
    """Re-initialise a Parameter in place (its dtype kept) with :func:`kaiming_uniform`."""
    param.data = kaiming_uniform(param.data.shape, a, mode, nonlinearity, param.data.dtype)
    return param


def kaiming_normal_(param, a=0.0, mode="fan_in", nonlinearity="relu"):
    """Re-initialise a Parameter in place (its dtype kept) with :func:`kaiming_normal`."""
    param.data = kaiming_normal(param.data.shape, a, mode, nonlinearity, param.data.dtype)
    return param
