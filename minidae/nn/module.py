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
* a module with parameters (or floating buffers) refuses an input of another floating dtype
  (PyTorch does too): convert the input (``x.astype(numpy.float32)``) or the model
  (``model.to(numpy.float64)``).

Buffers: saved state that is not trained
----------------------------------------
``self.register_buffer("running_mean", array)`` makes ``self.running_mean`` a *buffer*: an array
that belongs to the model's state but is not learnt (BatchNorm2d's running statistics and its
int64 counter ``num_batches_tracked``). A buffer is an ordinary public attribute whose name the
module remembers (``_buffers``); ``named_buffers()`` walks them. Unlike a Parameter it has no
``.grad`` and is not in ``parameters()``, so no optimiser ever sees it. ``state_dict()`` holds
each module's parameters, then its buffers, then its sub-modules' (PyTorch's keys and order,
e.g. "bn.running_mean"); ``load_state_dict`` fills buffers in place, keeping their dtype;
``to(dtype)`` moves every buffer and casts the floating ones only (the counter stays int64);
``save`` / ``load`` and training checkpoints carry them. A buffer registered as None is left out
of the state dict (as in PyTorch). ``forward`` updates buffers in place (``buf *= 1 - a``), only in
training mode; being public attributes, they are never part of a forward's record.
"""
import contextlib
import functools
from collections import OrderedDict

import numpy

from .. import backend

__all__ = ["Parameter", "Module", "Sequential", "no_grad", "is_grad_enabled", "evaluating"]

_GRAD_ENABLED = [True]
_CALL_DEPTH = [0]  # module calls in progress (nested calls belong to the outermost one's pass)
_PASS = [0]        # id of the latest pass (outermost call)
_BOOKKEEPING = {"_params", "_modules", "_buffers", "_records", "_in_backward"}
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


@contextlib.contextmanager
def evaluating(model):
    """Within this block ``model`` is in eval mode (BatchNorm2d uses its running statistics, Dropout is the
    identity) and calls record nothing for a backward (:func:`no_grad`); afterwards the model is back in the
    mode it was in, even after an exception (each sub-module its own: a BatchNorm2d frozen in eval mode
    stays frozen). For metrics, summaries and inference."""
    modes = [(module, module.training) for _, module in model.named_modules()]
    model.eval()
    try:
        with no_grad():
            yield model
    finally:
        for module, training in modes:  # parents first: each train() sets its subtree, the children then their own
            module.train(training)


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
        """The parameter's values (an array of the active backend)."""
        return self._data

    @data.setter
    def data(self, value):
        self._data = value
        grad = self.__dict__.get("_grad")
        if grad is None or not _matches(grad, value):
            self._grad = backend.array_module(value).zeros_like(value)

    @property
    def grad(self):
        """dL/d(data), accumulated by each backward (``+=``) until ``zero_grad`` clears it."""
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
        """The shape of ``data``."""
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
        object.__setattr__(self, "_buffers", [])  # names of the attributes that are buffers (module docstring)
        object.__setattr__(self, "_records", [])
        object.__setattr__(self, "training", True)

    def __setattr__(self, key, value):
        if "_params" not in self.__dict__:
            raise AttributeError(f"{type(self).__name__}: call super().__init__() before assigning attributes")
        self._params.pop(key, None)
        self._modules.pop(key, None)
        if key in self._buffers and isinstance(value, (Parameter, Module)):
            self._buffers.remove(key)  # any other value, an array or None, keeps the name a buffer
        if isinstance(value, Parameter):
            self._params[key] = value
        elif isinstance(value, Module):
            self._modules[key] = value
        object.__setattr__(self, key, value)

    def __call__(self, *args, **kwargs):
        if args and (self._params or self._buffers):
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
        """The same float dtype and array module as the parameters, or else the floating buffers (PyTorch
        refuses a mismatch too)."""
        dtype = getattr(x, "dtype", None)
        data = next(iter(self._params.values())).data if self._params else next(
            (value for value in (self.__dict__.get(name) for name in self._buffers)
             if value is not None and value.dtype.kind == "f"), None)
        if data is None:
            return
        what = "parameters" if self._params else "buffers"
        expected = data.dtype
        if dtype is not None and backend.array_module(x) is not backend.array_module(data):
            names = [backend.array_module(a).__name__ for a in (x, data)]
            raise ValueError(f"{type(self).__name__}: the input is a {names[0]} array but the {what} are "
                             f"{names[1]} arrays; make one backend current and move the model to it: "
                             f"backend.use('{names[0]}'); model.to()")
        if dtype is not None and dtype.kind == "f" and dtype != expected:
            raise ValueError(f"{type(self).__name__}: the input is {dtype} but the {what} are {expected}; "
                             f"convert the input (x.astype(numpy.{expected})) or the model "
                             f"(model.to(numpy.{dtype}))")

    def forward(self, x):
        """The layer's output for ``x``. Call the module (``layer(x)``) rather than this: the call records
        what ``forward`` assigns to underscore attributes (``self._x = x``) for the matching backward."""
        raise NotImplementedError(f"{type(self).__name__} does not define forward")

    def backward(self, grad_out):
        """Given dL/dy (shaped like the output), add dL/dparam to each parameter's ``.grad`` and return
        dL/dx (shaped like the input), using what the matching forward recorded."""
        raise NotImplementedError(f"{type(self).__name__} does not define backward")

    def named_modules(self, prefix=""):
        """(name, module) for this module ("" or ``prefix``) and every sub-module, depth first."""
        yield prefix, self
        for key, module in self._modules.items():
            yield from module.named_modules(f"{prefix}{key}.")

    def named_parameters(self):
        """(key, Parameter) pairs under PyTorch's key names ("conv1.weight"), in registration order."""
        for prefix, module in self.named_modules():
            for key, param in module._params.items():
                yield prefix + key, param

    def parameters(self):
        """Every Parameter of the module and its sub-modules, as a list (what an optimiser takes)."""
        return [param for _, param in self.named_parameters()]

    def register_buffer(self, name, array):
        """Make ``self.<name> = array`` a buffer: state that is saved and moved but not trained, such as a
        running statistic (see the module docstring). ``name`` is public, as PyTorch's; ``array`` may be None."""
        if not isinstance(name, str) or not name.isidentifier() or name.startswith("_"):
            raise ValueError(f"{type(self).__name__}.register_buffer: the name must be a public attribute name "
                             f"(no leading underscore, no dots), got {name!r}")
        if name in self._params or name in self._modules:
            raise ValueError(f"{type(self).__name__}.register_buffer: {name!r} is already a parameter or sub-module")
        if array is not None and not (hasattr(array, "shape") and hasattr(array, "dtype")):
            raise ValueError(f"{type(self).__name__}.register_buffer: {name!r} must be an array (or None), got "
                             f"{type(array).__name__}")
        setattr(self, name, array)
        if name not in self._buffers:
            self._buffers.append(name)

    def named_buffers(self):
        """(key, array) pairs of every buffer that is not None, under PyTorch's key names ("bn.running_mean")."""
        for prefix, module in self.named_modules():
            for name in module._buffers:
                value = module.__dict__.get(name)
                if value is not None:
                    yield prefix + name, value

    def zero_grad(self):
        """Set every parameter's ``.grad`` to zero, in place (backwards add to it)."""
        for param in self.parameters():
            param.grad[...] = 0

    def train(self, mode=True):
        """Set ``training`` on this module and every sub-module (False: calls record nothing); returns self."""
        for _, module in self.named_modules():
            object.__setattr__(module, "training", mode)
        return self

    def eval(self):
        """``train(False)``: forwards record nothing for a backward (metrics, inference); returns self."""
        return self.train(False)

    def to(self, dtype=None):
        """Move every parameter and buffer onto the active backend, casting the parameters and the floating
        buffers to ``dtype`` if given (an integer buffer keeps its dtype); returns self.

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
        for prefix, module in self.named_modules():
            for name in module._buffers:
                value = module.__dict__.get(name)
                if value is not None:
                    host = backend.to_numpy(value)
                    cast = dtype is not None and host.dtype.kind == "f"
                    setattr(module, name, backend.xp.asarray(host.astype(dtype) if cast else host))
        return self

    def state_dict(self):
        """An ordered dict of NumPy copies of every parameter and buffer, keyed (and ordered) like PyTorch's:
        each module's parameters, then its buffers, then its sub-modules'."""
        return OrderedDict((key, numpy.array(backend.to_numpy(value))) for key, value in self._state_arrays())

    def _state_arrays(self):
        """(key, the live array) of every parameter and buffer, in the state dict's order."""
        for prefix, module in self.named_modules():
            for key, param in module._params.items():
                yield prefix + key, param.data
            for name in module._buffers:
                value = module.__dict__.get(name)
                if value is not None:
                    yield prefix + name, value

    def load_state_dict(self, state):
        """Copy arrays from ``state`` (NumPy, CuPy or anything array-like) into the parameters and buffers,
        keeping each one's dtype and backend; buffers are written in place."""
        params, buffers = dict(self.named_parameters()), dict(self.named_buffers())
        expected = params.keys() | buffers.keys()
        missing, unexpected = expected - state.keys(), state.keys() - expected
        if missing or unexpected:
            raise KeyError(f"{type(self).__name__}.load_state_dict: missing keys {sorted(missing)}, "
                           f"unexpected keys {sorted(unexpected)}")
        values = {}
        for key, current in self._state_arrays():  # every shape checked before anything is written
            values[key] = numpy.asarray(backend.to_numpy(state[key]))
            if values[key].shape != tuple(current.shape):
                raise ValueError(f"{type(self).__name__}.load_state_dict: {key} has shape {values[key].shape}, "
                                 f"the module expects {tuple(current.shape)}")
        for key, value in values.items():
            current = params[key].data if key in params else buffers[key]
            value = backend.array_module(current).asarray(value.astype(current.dtype))
            if key in params:
                params[key].data = value
            else:
                current[...] = value  # in place: whatever holds the buffer (a captured CUDA graph) sees the new values

    def save(self, path):
        """Write the state dict (parameters and buffers) to ``path`` as safetensors under PyTorch's key names, so
        that ``model.load_state_dict(safetensors.torch.load_file(path))`` loads them into the PyTorch twin."""
        from safetensors.numpy import save_file
        # numpy.array(order="C"), not ascontiguousarray, which would turn a 0-d buffer (a counter) into shape (1,)
        save_file({key: numpy.array(value, order="C") for key, value in self.state_dict().items()}, str(path))

    def load(self, path):
        """Read parameters and buffers from a safetensors file (one written by :meth:`save`, or by
        ``safetensors.torch.save_file(torch_model.state_dict(), path)``); returns self."""
        from safetensors.numpy import load_file
        self.load_state_dict(load_file(str(path)))
        return self

    def extra_repr(self):
        """The arguments shown inside ``repr(module)``'s parentheses; layers override it."""
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
        """x through every module in order."""
        for module in self._modules.values():
            x = module(x)
        return x

    def backward(self, grad_out):
        """The chain rule: dL/dy through every module's backward in reverse order; returns dL/dx."""
        for module in reversed(self._modules.values()):
            grad_out = module.backward(grad_out)
        return grad_out
