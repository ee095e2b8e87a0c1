"""Module, Parameter and Sequential: the containers every layer is built from.

A module's ``forward(x)`` keeps only what its ``backward`` needs; ``backward(grad_out)``
returns dL/dx and *adds* dL/dparam to each parameter's ``.grad``. Parameters and
sub-modules are registered in assignment order, so ``state_dict()`` keys read like
PyTorch's ("conv1.weight", "0.bias").

Which forward a backward belongs to
-----------------------------------
Calling a module (``layer(x)``) records what its forward stored for the backward: every
attribute whose name starts with an underscore that the call assigned (``self._x = x``). Each
call pushes one such record; each ``backward`` pops the most recent one and runs with it. So:

* a layer object used at several places (one ReLU or MaxPool2d shared by many layers) gets the
  right gradients, as long as the backwards come in the reverse order of the forwards, which is
  what ``Sequential.backward`` and any hand-written chain rule do;
* ``backward`` twice for one forward, or before any forward, raises (as PyTorch does), naming
  the layer; so does a gradient whose shape is not the output's;
* a call made while no other module call is in progress starts a new *pass*. A layer keeps the
  records of the latest pass it took part in only: a new forward through a model discards what
  an earlier forward through it left unmatched (memory stays bounded however many forwards run
  without a backward), and the next backward belongs to the most recent forward;
* a forward in eval mode (``model.eval()``) or inside ``with minidae.no_grad():`` records
  nothing and leaves the records a pending backward needs untouched: use one for metrics
  between a forward and its backward;
* a module with parameters refuses an input of another floating dtype (PyTorch does too):
  convert the input (``x.astype(numpy.float32)``) or the model (``model.to(numpy.float64)``).
"""
import contextlib
import functools
from collections import OrderedDict

import numpy

from .. import backend

__all__ = ["Parameter", "Module", "Sequential", "no_grad", "is_grad_enabled"]

_GRAD_ENABLED = [True]
_CALL_DEPTH = [0]  # module calls in progress (nested calls belong to the outermost one's pass)
_PASS = [0]        # id of the latest pass (outermost call)
_BOOKKEEPING = {"_params", "_modules", "_records", "_in_backward"}
_MISSING = object()


@contextlib.contextmanager
def no_grad():
    """Within this block, module calls record nothing for a backward (metrics, inference)."""
    previous, _GRAD_ENABLED[0] = _GRAD_ENABLED[0], False
    try:
        yield
    finally:
        _GRAD_ENABLED[0] = previous


def is_grad_enabled():
    """False inside :func:`no_grad`."""
    return _GRAD_ENABLED[0]


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


def _replayed(backward):
    """Wrap a subclass's backward: pop the record of its forward and run with it (module docstring)."""
    @functools.wraps(backward)
    def replay(self, *args, **kwargs):
        if self.__dict__.get("_in_backward"):  # super().backward(...) inside a backward: already replayed
            return backward(self, *args, **kwargs)
        name = type(self).__name__
        records = self.__dict__.get("_records")
        if not records:
            raise RuntimeError(f"{name}.backward: there is no forward to go back through. Call the module "
                               f"({name.lower()}(x)) before each backward; a second backward for one forward is "
                               f"refused (as in PyTorch), and a forward in eval mode or under no_grad() records "
                               f"nothing")
        _, saved, out_shape = records[-1]
        grad = args[0] if args else None
        if out_shape is not None and hasattr(grad, "shape") and tuple(grad.shape) != out_shape:
            raise ValueError(f"{name}.backward: expected a gradient of shape {out_shape} (the shape of its "
                             f"output), got {tuple(grad.shape)}")
        records.pop()
        self.__dict__.update(saved)
        object.__setattr__(self, "_in_backward", True)
        try:
            return backward(self, *args, **kwargs)
        finally:
            object.__setattr__(self, "_in_backward", False)
            for key in saved:  # free what this forward kept; an earlier call's record restores its own
                self.__dict__.pop(key, None)
    replay.replays_records = True
    return replay


class Module:
    """Base class: subclasses implement ``forward`` and ``backward`` (see the module docstring for
    how a backward finds what its forward stored)."""

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        backward = cls.__dict__.get("backward")
        if backward is not None and not getattr(backward, "replays_records", False):
            cls.backward = _replayed(backward)

    def __init__(self):
        object.__setattr__(self, "_params", OrderedDict())
        object.__setattr__(self, "_modules", OrderedDict())
        object.__setattr__(self, "_records", [])
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
        if args and self._params:
            self._check_input(args[0])
        if _CALL_DEPTH[0] == 0:
            _PASS[0] += 1
        before = dict(self.__dict__)
        _CALL_DEPTH[0] += 1
        try:
            out = self.forward(*args, **kwargs)
        finally:
            _CALL_DEPTH[0] -= 1
        saved = {key: value for key, value in self.__dict__.items()
                 if key[0] == "_" and before.get(key, _MISSING) is not value and key not in _BOOKKEEPING}
        if _GRAD_ENABLED[0] and self.training:
            records = [r for r in self._records if r[0] == _PASS[0]]  # earlier, unmatched passes are dropped
            first = out[0] if isinstance(out, tuple) else out
            records.append((_PASS[0], saved, tuple(first.shape) if hasattr(first, "shape") else None))
            object.__setattr__(self, "_records", records)
        else:  # record nothing, and put back what a pending backward needs
            for key in saved:
                if key in before:
                    self.__dict__[key] = before[key]
                else:
                    del self.__dict__[key]
        return out

    def _check_input(self, x):
        """The same float dtype and array module as the parameters (PyTorch refuses a mismatch too)."""
        dtype = getattr(x, "dtype", None)
        data = next(iter(self._params.values())).data
        expected = data.dtype
        if dtype is not None and backend.array_module(x) is not backend.array_module(data):
            names = [backend.array_module(a).__name__ for a in (x, data)]
            raise ValueError(f"{type(self).__name__}: the input is a {names[0]} array but the parameters are "
                             f"{names[1]} arrays; make one backend current and move the model to it: "
                             f"backend.use('{names[0]}'); model.to()")
        if dtype is not None and dtype.kind == "f" and dtype != expected:
            raise ValueError(f"{type(self).__name__}: the input is {dtype} but the parameters are {expected}; "
                             f"convert the input (x.astype(numpy.{expected})) or the model "
                             f"(model.to(numpy.{dtype}))")

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
        """Move every parameter onto the active backend, cast to ``dtype`` if given; returns self.

        To move a model to the GPU, make CuPy the backend first: ``backend.use("cupy"); model.to()``.
        """
        if dtype is not None:
            try:
                dtype = numpy.dtype(dtype)
            except TypeError:
                dtype = None if not isinstance(dtype, str) else dtype
            if not isinstance(dtype, numpy.dtype) or dtype.kind != "f":
                raise ValueError(f"{type(self).__name__}.to: expected a floating-point dtype such as numpy.float32, "
                                 f"got {dtype!r}; to move a model to the GPU, call backend.use('cupy') and then "
                                 f"model.to()")
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

    def save(self, path):
        """Write the parameters to ``path`` as safetensors under PyTorch's key names, so that
        ``model.load_state_dict(safetensors.torch.load_file(path))`` loads them into the PyTorch twin."""
        from safetensors.numpy import save_file
        save_file({key: numpy.ascontiguousarray(value) for key, value in self.state_dict().items()}, str(path))

    def load(self, path):
        """Read parameters from a safetensors file (one written by :meth:`save`, or by
        ``safetensors.torch.save_file(torch_model.state_dict(), path)``); returns self."""
        from safetensors.numpy import load_file
        self.load_state_dict(load_file(str(path)))
        return self

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
