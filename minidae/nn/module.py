"""Module and Parameter: what every layer is built from, and how a backward finds its forward.

A layer defines the two halves of backprop as two methods,

    def forward(self, ctx, x):     # y from x; keep on ctx what backprop needs:  ctx.x = x
    def backprop(self, ctx, dy):   # from dL/dy and ctx: add dL/dparam into each param.grad, return dL/dx

and is used as ``y = layer(x)`` and ``dx = layer.backward(dy)``. ``ctx`` is a fresh, empty :class:`Context`
for every call: ``Module.__call__`` makes it and hands it to ``forward``; ``Module.backward`` hands the same
object to ``backprop``. So what a backward gets from its forward is in plain sight: the attributes the
forward set on ``ctx``, read back under the same names. Nothing is stored on the layer itself, which is what
lets one layer object serve at several places at once.

Why a context object: it is the shape students already know from ``torch.autograd.Function``
(``forward(ctx, x)``, ``backward(ctx, grad)``) and minitorch; unlike CS231n's ``out, cache = f(x)`` it keeps
``layer(x)`` and ``layer.backward(dy)`` as the calls (the module carries the caches, not the caller); and
unlike state kept on the layer it gives every call its own record, so nothing needs to guess which values
belong to which call.

Which forward a backward belongs to
-----------------------------------
A module keeps the contexts of its forwards that are still waiting for their backward, newest last, and
``backward`` takes the newest. So every backward pairs with its own forward whenever the backwards come in the
reverse order of the forwards: a layer used at several places inside one forward (one ReLU object for every
activation), a hand-written chain reusing a layer at top level, and siamese or triplet calls
(``z1 = net(x1); z2 = net(x2)``, then ``net.backward(g2)`` and ``net.backward(g1)``). Backwards in any other
order pair with the wrong forwards, and nothing can tell. Furthermore:

* a forward inside ``with minidae.no_grad():`` keeps nothing: use it (or ``minidae.evaluating(model)``, which
  also switches to eval mode) for anything whose backward will not come (metrics, logging, inference). Eval
  mode alone changes what BatchNorm2d and Dropout compute, not whether a call keeps its context, as in
  PyTorch: a BatchNorm2d frozen with ``bn.eval()`` inside a training model still has its backward;
* ``backward`` with no forward waiting raises, naming the layer (a second backward for one forward too, as
  in PyTorch), and so does a gradient of the wrong shape; a backward that raises, at any depth of a model,
  puts every context it had taken back in place, so the corrected call works (the gradients it had added before
  the error stay, as in PyTorch: zero them before trying again);
* a forward whose backward never comes is found and dropped, with a RuntimeWarning that names the fix, in two
  ways: when, at a module's call, one of its forwards has waited while a later one was gone back through
  (``y = net(x); logged = net(x_log); net.backward(g)`` pairs ``g`` with ``x_log``'s forward, and the next
  call of ``net`` says so; a forward kept waiting on purpose across a later one's backward and a new call is
  dropped too), and when more than ``max_pending`` (32) forwards wait at once (the oldest goes). Memory stays
  bounded. Dropping a call's context drops what every module it called kept during that call.

A module with parameters (or floating buffers) refuses an input of another floating dtype (PyTorch does too):
convert the input (``x.astype(numpy.float32)``) or the model (``model.to(numpy.float64)``).

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
training mode.
"""
import contextlib
import inspect
import itertools
import warnings
import weakref
from collections import OrderedDict

import numpy

from .. import backend

__all__ = ["Context", "Parameter", "Module", "no_grad", "is_grad_enabled", "evaluating", "data_of",
           "grad_of"]

_GRAD_ENABLED = [True]
_CALL_IDS = itertools.count()  # numbers every module call in order, so that a call's sub-calls can be found
_HOLDERS = weakref.WeakSet()  # the modules holding waiting contexts (registered as sub-modules or not)
_TAKEN = []  # while a backward runs: (module, its context, its previous _last_back) for each context it took


@contextlib.contextmanager
def no_grad():
    """Within this block, module calls keep nothing for a backward (metrics, inference)."""
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
    identity) and calls keep nothing for a backward (:func:`no_grad`); afterwards the model is back in the
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


class Context:
    """What one call's forward keeps for its backward: the attributes ``forward`` sets (``ctx.x = x``),
    read back by ``backprop`` (``ctx.x``). One per call, made by ``Module.__call__``."""

    def __repr__(self):
        return f"Context({', '.join(vars(self))})"


class _Waiting:
    """A forward waiting for its backward: its context, the ids of its call (sub-calls have ids between
    ``first`` and ``last``) and the shape and dtype of its output (what the gradient must match)."""

    def __init__(self, ctx, first, last, output):
        self.ctx, self.first, self.last = ctx, first, last
        first_output = output[0] if isinstance(output, tuple) else output
        self.shape = tuple(first_output.shape) if hasattr(first_output, "shape") else None


class Parameter:
    """A trainable array ``.data`` and the gradient ``.grad`` accumulated into it.

    Both are plain arrays of the active backend and may be reassigned. ``.grad`` always matches
    ``.data`` in shape, dtype and array module: assigning ``.data`` of another shape, dtype or
    backend starts a fresh zero gradient, and assigning a ``.grad`` that does not match raises.
    ``requires_grad = False`` freezes it: backwards add nothing to its ``.grad`` and optimisers leave it as it is.
    """

    def __init__(self, data, requires_grad=True):
        self.data = data
        self.requires_grad = bool(requires_grad)

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

    def requires_grad_(self, requires_grad=True):
        """Set ``requires_grad`` (False freezes the parameter); returns self."""
        self.requires_grad = bool(requires_grad)
        return self

    def __repr__(self):
        frozen = "" if self.requires_grad else ", requires_grad=False"
        return f"Parameter(shape={tuple(self.data.shape)}, dtype={self.data.dtype}{frozen})"


def _matches(a, b):
    """Same shape, dtype and array module."""
    return (getattr(a, "shape", None) == b.shape and getattr(a, "dtype", None) == b.dtype
            and backend.array_module(a) is backend.array_module(b))


def data_of(param):
    """``param.data``, or None for a missing parameter (the bias of a ``bias=False`` layer)."""
    return None if param is None else param.data


def grad_of(param):
    """Where a backward adds dL/dparam: ``param.grad``, or None where no gradient is wanted (no such
    parameter, as the bias of a ``bias=False`` layer, or a frozen one, ``requires_grad = False``)."""
    return param.grad if param is not None and param.requires_grad else None


class Module:
    """Base class of every layer and model. A subclass defines ``forward(self, ctx, ...)`` and
    ``backprop(self, ctx, dy)``; it is used as ``module(x)`` and ``module.backward(dy)`` (module docstring)."""

    max_pending = 32  # forwards that may wait for their backward at once; the oldest beyond it is dropped

    def __init_subclass__(cls, **kwargs):
        """Check a new subclass against the contract when it is defined (nothing is rewritten or wrapped)."""
        super().__init_subclass__(**kwargs)
        if "backward" in vars(cls):
            raise TypeError(f"{cls.__name__} defines backward(); define backprop(self, ctx, dy) instead and call "
                            f"module.backward(dy) as before: Module.backward finds the call's context and passes "
                            f"it to backprop")
        forward = vars(cls).get("forward")
        if forward is not None:
            names = list(inspect.signature(forward).parameters)
            if names[1:2] != ["ctx"]:
                raise TypeError(f"{cls.__name__}.forward({', '.join(names)}): the first argument after self is the "
                                f"call's context: def forward(self, ctx, x), keeping on ctx what backprop needs")

    def __init__(self):
        object.__setattr__(self, "_params", OrderedDict())
        object.__setattr__(self, "_modules", OrderedDict())
        object.__setattr__(self, "_buffers", [])  # names of the attributes that are buffers (module docstring)
        object.__setattr__(self, "_waiting", [])  # forwards waiting for their backward, newest last
        object.__setattr__(self, "_last_back", -1)  # the call id of the forward most recently gone back through
        object.__setattr__(self, "_forward_hooks", [])
        object.__setattr__(self, "training", True)

    def __setattr__(self, key, value):
        if "_params" not in self.__dict__:
            raise AttributeError(f"{type(self).__name__}: call super().__init__() before assigning attributes")
        if not isinstance(value, Parameter):
            self._params.pop(key, None)
        if not isinstance(value, Module):
            self._modules.pop(key, None)
        if key in self._buffers and isinstance(value, (Parameter, Module)):
            self._buffers.remove(key)  # any other value, an array or None, keeps the name a buffer
        if isinstance(value, Parameter):
            self._params[key] = value  # a name registered before keeps its place (as PyTorch's)
        elif isinstance(value, Module):
            self._modules[key] = value
        object.__setattr__(self, key, value)

    def __call__(self, *inputs, **kwargs):
        """``forward`` with a fresh context, which is kept for the backward in training mode outside no_grad."""
        if inputs and type(inputs[0]).__module__.startswith("torch"):
            raise TypeError(f"{type(self).__name__}: got a torch.Tensor; minidae works on NumPy or CuPy arrays: "
                            f"convert it with .numpy() (.detach().cpu().numpy() from a GPU tensor)")
        if inputs and (self._params or self._buffers):
            self._check_input(inputs[0])
        self._drop_forgotten()
        ctx, first = Context(), next(_CALL_IDS)
        output = self.forward(ctx, *inputs, **kwargs)
        if _GRAD_ENABLED[0]:
            self._waiting.append(_Waiting(ctx, first, next(_CALL_IDS), output))
            _HOLDERS.add(self)
        for hook in self._forward_hooks:
            hook(self, inputs, output)
        return output

    def register_forward_hook(self, hook):
        """Call ``hook(module, inputs, output)`` after every forward of this module (as PyTorch's); returns a
        handle whose ``remove()`` takes it away. Hooks run in Python: a step replayed as a CUDA graph runs none."""
        self._forward_hooks.append(hook)
        return _HookHandle(self._forward_hooks, hook)

    def backward(self, grad_out=None):
        """Given dL/dy, shaped like the output, add dL/dparam into each parameter's ``.grad`` and return dL/dx:
        ``backprop`` with the context of the newest forward still waiting (module docstring). ``grad_out``
        may be left out for a scalar output (a loss): dL/dL = 1."""
        name = type(self).__name__
        if not self._waiting:
            raise RuntimeError(f"{name}.backward: no forward is waiting for its backward. Call the module "
                               f"(y = module(x)) before each backward: each forward is gone back through once "
                               f"(a second backward is refused, as in PyTorch), and a forward under no_grad() "
                               f"keeps nothing")
        waiting = self._waiting[-1]
        _check_gradient(name, grad_out, waiting.shape)
        outermost = not _TAKEN
        self._waiting.pop()
        _TAKEN.append((self, waiting, self._last_back))
        object.__setattr__(self, "_last_back", waiting.first)
        try:
            grad_in = self.backprop(waiting.ctx, grad_out)
        except BaseException:
            if outermost:  # put back every context this backward took, the sub-modules' too
                for module, taken, last_back in reversed(_TAKEN):
                    module._waiting.append(taken)
                    module._waiting.sort(key=lambda w: w.first)
                    object.__setattr__(module, "_last_back", last_back)
            raise
        finally:
            if outermost:
                _TAKEN.clear()
        return grad_in

    def forward(self, ctx, x):
        """The layer's output for ``x``; keeps on ``ctx`` what ``backprop`` will need. Call the module
        (``layer(x)``) rather than this: the call makes the context and keeps it for the backward."""
        raise NotImplementedError(f"{type(self).__name__} does not define forward(self, ctx, x)")

    def backprop(self, ctx, grad_out):
        """Given dL/dy and the context its forward filled, add dL/dparam into each parameter's ``.grad``
        (see :func:`grad_of`) and return dL/dx. Call ``module.backward(dy)`` rather than this."""
        raise NotImplementedError(f"{type(self).__name__} does not define backprop(self, ctx, dy)")

    def _drop_forgotten(self):
        """Drop, with a warning, the contexts of forwards whose backward will not come (module docstring)."""
        waiting = self._waiting
        if not waiting:
            return
        name = type(self).__name__
        passed_over = [w for w in waiting if w.first < self._last_back]
        if passed_over:
            warnings.warn(f"{name}: {len(passed_over)} forward(s) never got their backward: a later forward was "
                          f"gone back through while they waited. If a forward for logging or metrics came between "
                          f"a forward and its backward, that backward paired with it and its gradients were wrong. "
                          f"Run forwards whose backward will not come under `with minidae.no_grad():` (or `with "
                          f"minidae.evaluating(model):`). Their saved values are dropped.", RuntimeWarning,
                          stacklevel=3)
            self._drop(passed_over)
        elif len(waiting) >= self.max_pending:
            warnings.warn(f"{name}: {len(waiting)} forwards are waiting for their backward (at most max_pending = "
                          f"{self.max_pending}); dropping the oldest. Run forwards whose backward will not come "
                          f"(evaluation, logging) under `with minidae.no_grad():` (or `with "
                          f"minidae.evaluating(model):`); a module that is called more often per backward can "
                          f"raise its max_pending.", RuntimeWarning, stacklevel=3)
            self._drop(waiting[:1])

    def _drop(self, entries):
        """Forget these waiting forwards, and what the modules they called kept during those calls (sub-modules
        or not: a model's layer list may hold modules that are not attributes)."""
        for entry in entries:
            self._waiting.remove(entry)
            for module in list(_HOLDERS):
                module._waiting[:] = [w for w in module._waiting if not entry.first < w.first < entry.last]

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

    def named_modules(self, prefix="", remove_duplicate=True):
        """(name, module) for this module ("" or ``prefix``) and every sub-module, depth first; a module registered
        at several places is listed once, under its first name, unless ``remove_duplicate`` is False."""
        seen = set()

        def walk(module, name):
            if remove_duplicate:
                if id(module) in seen:
                    return
                seen.add(id(module))
            yield name, module
            for key, child in module._modules.items():
                if child is not None:
                    yield from walk(child, f"{name}.{key}" if name else key)
        yield from walk(self, prefix)

    def modules(self):
        """This module and every sub-module, each once."""
        return [module for _, module in self.named_modules()]

    def named_children(self):
        """(name, module) of the direct sub-modules, each once."""
        seen = set()
        for name, module in self._modules.items():
            if module is not None and id(module) not in seen:
                seen.add(id(module))
                yield name, module

    def children(self):
        """The direct sub-modules, each once."""
        return [module for _, module in self.named_children()]

    def named_parameters(self, prefix="", remove_duplicate=True):
        """(key, Parameter) pairs under PyTorch's key names ("conv1.weight"), in registration order; a parameter
        shared by several modules (tied weights) is listed once, under its first key, unless ``remove_duplicate``
        is False (``state_dict`` keeps every key, as PyTorch's)."""
        seen = set()
        for name, module in self.named_modules(prefix, remove_duplicate):
            for key, param in module._params.items():
                if param is None or (remove_duplicate and id(param) in seen):
                    continue
                seen.add(id(param))
                yield (f"{name}.{key}" if name else key), param

    def parameters(self):
        """Every Parameter of the module and its sub-modules, each once, as a list (what an optimiser takes)."""
        return [param for _, param in self.named_parameters()]

    def apply(self, fn):
        """``fn(module)`` for every sub-module (children first, depth first), then for this module; returns self.
        The usual use: ``model.apply(init_weights)``."""
        for child in self.children():
            child.apply(fn)
        fn(self)
        return self

    def add_module(self, name, module):
        """Register ``module`` (a Module, or None) as the sub-module ``name``, as ``self.<name> = module`` does."""
        if not isinstance(name, str) or not name or "." in name:
            raise KeyError(f"{type(self).__name__}.add_module: the name must be a non-empty string without dots, "
                           f"got {name!r}")
        if module is not None and not isinstance(module, Module):
            raise TypeError(f"{type(self).__name__}.add_module: {type(module).__name__} is not a Module")
        if module is None:
            self._modules[name] = None
            object.__setattr__(self, name, None)
        else:
            setattr(self, name, module)

    def register_module(self, name, module):
        """The same as :meth:`add_module`."""
        self.add_module(name, module)

    def register_parameter(self, name, param):
        """Register ``param`` (a Parameter, or None) as ``self.<name>``."""
        if not isinstance(name, str) or not name.isidentifier():
            raise KeyError(f"{type(self).__name__}.register_parameter: the name must be an attribute name, got "
                           f"{name!r}")
        if param is not None and not isinstance(param, Parameter):
            raise TypeError(f"{type(self).__name__}.register_parameter: {type(param).__name__} is not a Parameter "
                            f"(wrap an array in minidae.nn.Parameter)")
        setattr(self, name, param)

    def get_submodule(self, target):
        """The sub-module at the dotted path ``target`` ("encoder.0"); "" is this module."""
        module = self
        for part in target.split(".") if target else []:
            child = module._modules.get(part)
            if child is None:
                raise AttributeError(f"{type(module).__name__} has no sub-module {part!r} (looking for {target!r})")
            module = child
        return module

    def requires_grad_(self, requires_grad=True):
        """Set ``requires_grad`` on every parameter (False freezes them: no gradient, no update); returns self."""
        for param in self.parameters():
            param.requires_grad = bool(requires_grad)
        return self

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

    def named_buffers(self, remove_duplicate=True):
        """(key, array) pairs of every buffer that is not None, under PyTorch's key names ("bn.running_mean")."""
        for prefix, module in self.named_modules(remove_duplicate=remove_duplicate):
            for name in module._buffers:
                value = module.__dict__.get(name)
                if value is not None:
                    yield (f"{prefix}.{name}" if prefix else name), value

    def zero_grad(self, set_to_none=True):
        """Set every parameter's ``.grad`` to zero, in place (backwards add to it). ``set_to_none`` is accepted
        for PyTorch's sake: minidae's gradients are always arrays, zeroed."""
        for param in self.parameters():
            param.grad[...] = 0

    def train(self, mode=True):
        """Set ``training`` on this module and every sub-module (False: eval mode, where BatchNorm2d uses its
        running statistics and Dropout is the identity); returns self."""
        for _, module in self.named_modules():
            object.__setattr__(module, "training", mode)
        return self

    def eval(self):
        """``train(False)``: eval mode (for inference, with :func:`no_grad`, or :func:`evaluating` for both);
        returns self."""
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
        for _, module in self.named_modules():
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
        for prefix, module in self.named_modules(remove_duplicate=False):
            for key, param in module._params.items():
                if param is not None:
                    yield (f"{prefix}.{key}" if prefix else key), param.data
            for name in module._buffers:
                value = module.__dict__.get(name)
                if value is not None:
                    yield (f"{prefix}.{name}" if prefix else name), value

    def load_state_dict(self, state):
        """Copy arrays from ``state`` (NumPy, CuPy or anything array-like) into the parameters and buffers,
        keeping each one's dtype and backend; buffers are written in place."""
        params = dict(self.named_parameters(remove_duplicate=False))
        buffers = dict(self.named_buffers(remove_duplicate=False))
        expected = params.keys() | buffers.keys()
        missing, unexpected = expected - state.keys(), state.keys() - expected
        if missing or unexpected:
            raise KeyError(f"{type(self).__name__}.load_state_dict: missing keys {sorted(missing)}, "
                           f"unexpected keys {sorted(unexpected)}")
        values = {}
        for key, current in self._state_arrays():  # every shape checked before anything is written
            value = state[key]
            if hasattr(value, "detach"):  # a torch tensor (torch.load, or a PyTorch model's state_dict())
                value = value.detach().cpu().numpy()
            values[key] = numpy.asarray(backend.to_numpy(value))
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
        ``safetensors.torch.save_file(torch_model.state_dict(), path)``); returns self. A PyTorch ``.pt`` file
        (a pickle) is refused with the way to read it: ``model.load_state_dict(torch.load(path))``."""
        from safetensors import SafetensorError
        from safetensors.numpy import load_file
        try:
            with open(path, "rb") as f:
                head = f.read(2)
        except OSError as exc:
            raise OSError(f"{type(self).__name__}.load: cannot read {path}: {exc.strerror or exc}") from None
        if head in (b"PK", b"\x80\x02") or str(path).endswith((".pt", ".pth")):
            raise ValueError(f"{type(self).__name__}.load: {path} looks like a PyTorch file (torch.save's zip or "
                             f"pickle); load reads safetensors. Read it with PyTorch and pass the arrays: "
                             f"model.load_state_dict(torch.load({str(path)!r}, map_location='cpu'))")
        try:
            state = load_file(str(path))
        except SafetensorError as exc:
            raise ValueError(f"{type(self).__name__}.load: {path} is not a safetensors file ({exc})") from None
        self.load_state_dict(state)
        return self

    def extra_repr(self):
        """The arguments shown inside ``repr(module)``'s parentheses; layers override it."""
        return ""

    def __repr__(self):
        lines = [f"  ({key}): " + repr(module).replace("\n", "\n  ") for key, module in self._modules.items()]
        body = "\n" + "\n".join(lines) + "\n" if lines else ""
        return f"{type(self).__name__}({self.extra_repr()}{body})"


class _HookHandle:
    """What register_forward_hook returns: ``remove()`` takes the hook away."""

    def __init__(self, hooks, hook):
        self.hooks, self.hook = hooks, hook

    def remove(self):
        """Take the hook away (again: nothing)."""
        if self.hook in self.hooks:
            self.hooks.remove(self.hook)


def _check_gradient(name, grad, shape):
    """Raise, naming the layer and the fix, for an upstream gradient that cannot be dL/dy of an output of
    ``shape`` (None: not known)."""
    if type(grad).__module__.startswith("torch"):
        raise TypeError(f"{name}.backward: got a torch.Tensor; minidae works on NumPy or CuPy arrays: convert it "
                        f"with .numpy() (.detach().cpu().numpy() from a GPU tensor)")
    if grad is None:
        if shape not in ((), None):
            raise ValueError(f"{name}.backward needs dL/dy, the gradient of the loss with respect to this module's "
                             f"output (an array of shape {shape}): e.g. net.backward(criterion.backward())")
        return
    grad_shape = tuple(getattr(grad, "shape", ()))
    if shape is None or grad_shape == shape:
        return
    if grad_shape == ():
        raise ValueError(f"{name}.backward: got a scalar where dL/dy of shape {shape} is needed; to go back from a "
                         f"loss, pass the loss's own gradient: net.backward(criterion.backward()) "
                         f"(criterion.backward() is dL/dy)")
    raise ValueError(f"{name}.backward: expected a gradient of shape {shape} (the shape of its output), got "
                     f"{grad_shape}")
