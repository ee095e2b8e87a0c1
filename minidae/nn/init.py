"""Weight initialisation with PyTorch's rules (torch.nn.init), drawn from the host generator.

Draws use ``backend.init_rng()`` (a NumPy generator reseeded by ``backend.seed``) and are then moved to the
array's backend, so a seed gives the same weights on NumPy and CuPy (not PyTorch's numbers: its generator is
another one; the distributions, bounds and gains are its).

fan_in and fan_out follow ``torch.nn.init._calculate_fan_in_and_fan_out``: for a weight of shape
(d0, d1, k...), fan_in = d1 * prod(k) and fan_out = d0 * prod(k). (For ConvTranspose2d, whose weight is
(C_in, C_out, KH, KW), fan_in is therefore C_out*KH*KW, as in PyTorch.)

The functions ending in ``_`` work in place, as PyTorch's, on a Parameter or on an array, and return it:
``init.kaiming_uniform_(layer.weight)`` and ``init.kaiming_uniform_(layer.weight.data)`` do the same.
``model.apply(fn)`` with such calls re-initialises a whole model.
"""
import math

import numpy

from .. import backend

__all__ = ["fans", "calculate_gain", "uniform", "kaiming_uniform", "kaiming_normal", "uniform_", "normal_",
           "constant_", "zeros_", "ones_", "xavier_uniform_", "xavier_normal_", "kaiming_uniform_", "kaiming_normal_"]


def fans(shape):
    """(fan_in, fan_out) of a weight of ``shape``."""
    if len(shape) < 2:
        raise ValueError(f"init: fan in and fan out need a weight of at least 2 dimensions, got shape {tuple(shape)}")
    receptive = math.prod(shape[2:])
    return shape[1] * receptive, shape[0] * receptive


def calculate_gain(nonlinearity, param=None):
    """PyTorch's recommended gains: 1 for linear, conv and sigmoid; 5/3 for tanh; sqrt(2) for relu;
    sqrt(2 / (1 + slope^2)) for leaky_relu (slope ``param``, default 0.01); 3/4 for selu."""
    if nonlinearity in ("linear", "conv1d", "conv2d", "conv3d", "conv_transpose1d", "conv_transpose2d",
                        "conv_transpose3d", "sigmoid"):
        return 1.0
    if nonlinearity == "tanh":
        return 5.0 / 3
    if nonlinearity == "relu":
        return math.sqrt(2.0)
    if nonlinearity == "leaky_relu":
        slope = 0.01 if param is None else param
        if isinstance(slope, bool) or not isinstance(slope, (int, float)):
            raise ValueError(f"init: negative_slope {slope!r} is not a valid number")
        return math.sqrt(2.0 / (1 + slope ** 2))
    if nonlinearity == "selu":
        return 3.0 / 4
    raise ValueError(f"init: unsupported nonlinearity {nonlinearity!r}")


def uniform(shape, bound, dtype=numpy.float32):
    """U(-bound, bound) of ``shape`` as an array of the active backend."""
    values = backend.init_rng().uniform(-bound, bound, size=shape)
    return backend.xp.asarray(values.astype(dtype))


def _fan(shape, mode):
    if mode not in ("fan_in", "fan_out"):
        raise ValueError(f"init: mode must be 'fan_in' or 'fan_out', got {mode!r}")
    return fans(shape)[0 if mode == "fan_in" else 1]


def kaiming_uniform(shape, a=0.0, mode="fan_in", nonlinearity="leaky_relu", dtype=numpy.float32):
    """He uniform: U(-b, b), b = gain * sqrt(3 / fan). With a = sqrt(5) (PyTorch's layer
    default) this is b = 1 / sqrt(fan_in)."""
    return uniform(shape, calculate_gain(nonlinearity, a) * math.sqrt(3.0 / _fan(shape, mode)), dtype)


def kaiming_normal(shape, a=0.0, mode="fan_in", nonlinearity="relu", dtype=numpy.float32):
    """He normal: N(0, std^2), std = gain / sqrt(fan)."""
    std = calculate_gain(nonlinearity, a) / math.sqrt(_fan(shape, mode))
    return backend.xp.asarray(backend.init_rng().normal(0.0, std, size=shape).astype(dtype))


def _fill(tensor, values):
    """Write host ``values`` into ``tensor`` (a Parameter or an array) in place, in its dtype and backend."""
    array = tensor.data if hasattr(tensor, "requires_grad") else tensor
    if not hasattr(array, "shape") or not hasattr(array, "dtype"):
        raise TypeError(f"init: expected a Parameter or an array, got {type(tensor).__name__}")
    array[...] = backend.array_module(array).asarray(numpy.asarray(values, dtype=array.dtype))
    return tensor


def _shape(tensor):
    return tuple((tensor.data if hasattr(tensor, "requires_grad") else tensor).shape)


def uniform_(tensor, a=0.0, b=1.0):
    """Fill with draws from U(a, b), in place."""
    return _fill(tensor, backend.init_rng().uniform(a, b, size=_shape(tensor)))


def normal_(tensor, mean=0.0, std=1.0):
    """Fill with draws from N(mean, std^2), in place."""
    return _fill(tensor, backend.init_rng().normal(mean, std, size=_shape(tensor)))


def constant_(tensor, val):
    """Fill with ``val``, in place."""
    return _fill(tensor, numpy.full(_shape(tensor), val))


def zeros_(tensor):
    """Fill with zeros, in place."""
    return constant_(tensor, 0.0)


def ones_(tensor):
    """Fill with ones, in place."""
    return constant_(tensor, 1.0)


def xavier_uniform_(tensor, gain=1.0):
    """Glorot uniform: U(-b, b), b = gain * sqrt(6 / (fan_in + fan_out)), in place."""
    fan_in, fan_out = fans(_shape(tensor))
    bound = gain * math.sqrt(6.0 / (fan_in + fan_out))
    return uniform_(tensor, -bound, bound)


def xavier_normal_(tensor, gain=1.0):
    """Glorot normal: N(0, std^2), std = gain * sqrt(2 / (fan_in + fan_out)), in place."""
    fan_in, fan_out = fans(_shape(tensor))
    return normal_(tensor, 0.0, gain * math.sqrt(2.0 / (fan_in + fan_out)))


def kaiming_uniform_(tensor, a=0.0, mode="fan_in", nonlinearity="leaky_relu"):
    """He uniform (:func:`kaiming_uniform`), in place."""
    bound = calculate_gain(nonlinearity, a) * math.sqrt(3.0 / _fan(_shape(tensor), mode))
    return uniform_(tensor, -bound, bound)


def kaiming_normal_(tensor, a=0.0, mode="fan_in", nonlinearity="leaky_relu"):
    """He normal (:func:`kaiming_normal`), in place (PyTorch's default nonlinearity, leaky_relu with a = 0,
    gives the same gain as relu)."""
    return normal_(tensor, 0.0, calculate_gain(nonlinearity, a) / math.sqrt(_fan(_shape(tensor), mode)))
