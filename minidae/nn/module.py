"""Module, Parameter and Sequential: the containers every layer is built from.

A module's ``forward(x)`` keeps only what its ``backward`` needs; ``backward(grad_out)``
returns dL/dx and *adds* dL/dparam to each parameter's ``.grad``. Parameters and
sub-modules are registered in assignment order, so ``state_dict()`` keys read like
PyTorch's ("conv1.weight", "0.bias").
"""
from collections import OrderedDict

import numpy

from .. import backend

__all__ = ["Parameter", "Module", "Sequential"]


class Parameter:
    """A trainable array ``.data`` and the gradient ``.grad`` accumulated into it.

    Both are plain arrays of the active backend and may be reassigned. ``.grad`` always matches
    ``.data`` in shape, dtype and array module: assigning ``.data`` of another shape, dtype or
    backend starts a fresh zero gradient, and assigning a ``.grad`` that does not match raises.
    """

    def __init__(self, data):
        self.data = data

    @property
    def data(self):
        return self._data

    @data.setter
    def data(self, value):
        self._data = value
        grad = self.__dict__.get("_grad")
        if grad is None or not _matches(grad, value):
            self._grad = backend.array_module(value).zeros_like(value)

    @property
    def grad(self):
        return self._grad

    @grad.setter
    def grad(self, value):
        if not _matches(value, self._data):
            raise ValueError(f"Parameter: the gradient must match the data: got {type(value).__module__} "
                             f"{getattr(value, 'dtype', None)} {tuple(getattr(value, 'shape', ()))} for "
                             f"{type(self._data).__module__} {self._data.dtype} {tuple(self._data.shape)}")
        self._grad = value

    @property
    def shape(self):
        return self.data.shape

    def __repr__(self):
        return f"Parameter(shape={tuple(self.data.shape)}, dtype={self.data.dtype})"


def _matches(a, b):
    """Same shape, dtype and array module."""
    return (getattr(a, "shape", None) == b.shape and getattr(a, "dtype", None) == b.dtype
            and backend.array_module(a) is backend.array_module(b))


class Module:
    """Base class: subclasses implement ``forward`` and ``backward``."""

    def __init__(self):
        object.__setattr__(self, "_params", OrderedDict())
        object.__setattr__(self, "_modules", OrderedDict())
        object.__setattr__(self, "training", True)

    def __setattr__(self, key, value):
        if "_params" not in self.__dict__:
            raise AttributeError(f"{type(self).__name__}: call super().__init__() before assigning attributes")
        self._params.pop(key, None)
        self._modules.pop(key, None)
        if isinstance(value, Parameter):
            self._params[key] = value
        elif isinstance(value, Module):
            self._modules[key] = value
        object.__setattr__(self, key, value)

    def __call__(self, *args, **kwargs):
        return self.forward(*args, **kwargs)

    def forward(self, x):
        raise NotImplementedError(f"{type(self).__name__} does not define forward")

    def backward(self, grad_out):
        raise NotImplementedError(f"{type(self).__name__} does not define backward")

    def named_modules(self, prefix=""):
        yield prefix, self
        for key, module in self._modules.items():
            yield from module.named_modules(f"{prefix}{key}.")

    def named_parameters(self):
        for prefix, module in self.named_modules():
            for key, param in module._params.items():
                yield prefix + key, param

    def parameters(self):
        return [param for _, param in self.named_parameters()]

    def zero_grad(self):
        for param in self.parameters():
            param.grad[...] = 0

    def train(self, mode=True):
        for _, module in self.named_modules():
            object.__setattr__(module, "training", mode)
        return self

    def eval(self):
        return self.train(False)

    def to(self, dtype=None):
        """Move every parameter onto the active backend, cast to ``dtype`` if given; returns self."""
        for param in self.parameters():
            host = backend.to_numpy(param.data)
            param.data = backend.xp.asarray(host if dtype is None else host.astype(dtype))
            param.grad = backend.xp.zeros_like(param.data)
        return self

    def state_dict(self):
        """An ordered dict of NumPy copies of every parameter, keyed like PyTorch's."""
        return OrderedDict((key, numpy.array(backend.to_numpy(p.data))) for key, p in self.named_parameters())

    def load_state_dict(self, state):
        """Copy arrays from ``state`` (NumPy, CuPy or anything array-like) into the parameters."""
        params = dict(self.named_parameters())
        missing, unexpected = params.keys() - state.keys(), state.keys() - params.keys()
        if missing or unexpected:
            raise KeyError(f"{type(self).__name__}.load_state_dict: missing keys {sorted(missing)}, "
                           f"unexpected keys {sorted(unexpected)}")
        for key, param in params.items():
            value = numpy.asarray(backend.to_numpy(state[key]))
            if value.shape != tuple(param.data.shape):
                raise ValueError(f"{type(self).__name__}.load_state_dict: {key} has shape {value.shape}, "
                                 f"the module expects {tuple(param.data.shape)}")
            xp = backend.array_module(param.data)
            param.data = xp.asarray(value.astype(param.data.dtype))

    def extra_repr(self):
        return ""

    def __repr__(self):
        lines = [f"  ({key}): " + repr(module).replace("\n", "\n  ") for key, module in self._modules.items()]
        body = "\n" + "\n".join(lines) + "\n" if lines else ""
        return f"{type(self).__name__}({self.extra_repr()}{body})"


class Sequential(Module):
    """Modules applied in order; backward runs them in reverse."""

    def __init__(self, *modules):
        super().__init__()
        for index, module in enumerate(modules):
            setattr(self, str(index), module)

    def __getitem__(self, index):
        return list(self._modules.values())[index]

    def __len__(self):
        return len(self._modules)

    def forward(self, x):
        for module in self._modules.values():
            x = module(x)
        return x

    def backward(self, grad_out):
        for module in reversed(self._modules.values()):
            grad_out = module.backward(grad_out)
        return grad_out
