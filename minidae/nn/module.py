"""Module: what every layer is built from, and how a backward finds its forward.

A layer defines the two halves of backprop as two methods,

    def forward(self, ctx, x):     # y from x; keep on ctx what backprop needs:  ctx.x = x
    def backprop(self, ctx, dy):   # from dL/dy and ctx: add dL/dparam into each param.grad, return dL/dx

and is used as ``y = layer(x)`` and ``dx = layer.backward(dy)``. ``ctx`` is a fresh :class:`Context` for every
call: ``Module.__call__`` makes it, hands it to ``forward`` and keeps it (in a :class:`Call`) for the backward,
which hands the same object to ``backprop``. So what a backward gets from its forward is in plain sight: the
attributes the forward set on ``ctx``, read back under the same names. Nothing is stored on the layer itself,
which is what lets one layer object serve at several places at once. (It is the shape students know from
``torch.autograd.Function``: ``forward(ctx, x)``, ``backward(ctx, grad)``.)

Several inputs and outputs: ``forward(self, ctx, a, b)`` may take several arrays and return a tuple; its
``backprop(self, ctx, dy1, dy2)`` then gets one gradient per output and returns one per input (a tuple).
``module.backward((dy1, dy2))`` takes the gradients as a tuple, None for an output the loss does not use (zeros
then, as in PyTorch).

Which forward a backward belongs to
-----------------------------------
Never a guess: a backward goes back through a call that is named for certain, or it is refused right there,
saying how to name it.

* The calls a forward makes are recorded on its context, in order: ``ctx.calls``, each a :class:`Call` with a
  ``backward`` of its own. A container's backprop goes back through them, newest first (Sequential's backprop,
  :func:`~minidae.nn.containers.backprop_chain`, is at heart ``for call in reversed(ctx.calls): dy =
  call.backward(dy)``), so a layer used at several places, or called in a loop any number of times, pairs with each
  of its calls exactly.
* ``module.backward(dy)`` goes back through *the* call of ``module`` that waits for its backward: inside a
  backprop, the one call of ``module`` that the forward being gone back through made; at the top level, the one
  forward of ``module`` called from outside any module. When several wait (a siamese pair ``z1 = net(x1);
  z2 = net(x2)``, one loss object used for two terms, a layer used twice in one forward), name the one meant by
  what it returned, ``net.backward(g1, output=z1)``, or go back through ``ctx.calls``. Unnamed, it is refused;
  so is ``output=`` that several calls returned (an Identity called twice on one array returns it twice): call it
  on arrays of their own (``x``, ``x.copy()``), or go back through ``ctx.calls``.
* A top-level call is kept until its backward, at most ``max_waiting`` (4) of them per module: a fifth forward
  drops the oldest, with a RuntimeWarning, so that an evaluation loop run without ``no_grad`` holds four forwards'
  values, not all of them. Until a backward of that module goes through, an unnamed one is then refused (its
  gradient might have been the dropped forward's). So run forwards whose backward will not come (metrics,
  logging) under ``with minidae.no_grad():`` (or ``minidae.evaluating(model)``, which also switches to eval
  mode); a program that keeps more forwards waiting on purpose raises the module's ``max_waiting``. The calls a
  forward makes are not counted: they belong to it (a layer called 100 times in one forward is fine).
* Why no graph that routes the gradients by itself, as PyTorch, micrograd and DeZero build? Because here the code
  that calls the forwards (a container, your own loop) calls the backwards too, by hand, and knows which is which;
  the record of calls lets it say so. Taking the newest waiting forward (what minidae once did) pairs the
  backwards of ``z1 = net(x1); z2 = net(x2)`` taken in the forwards' order with the wrong forwards, silently.
* A second backward of one call is refused (as in PyTorch), and so is a gradient of the wrong shape. A backward
  that raises, at any depth, leaves every call it had gone back through waiting again, so the corrected call works
  (the gradients added before the error stay, as in PyTorch: zero them before trying again).
* Eval mode changes what BatchNorm2d and Dropout compute, not whether a call is kept (as in PyTorch: a
  BatchNorm2d frozen with ``bn.eval()`` inside a training model has its backward); only no_grad() keeps nothing.

``ctx.needs_input_grad`` is False while backprop runs for a call whose dL/dx nobody asks for (PyTorch's
``needs_input_grad``): ``model.backward(dy, input_grad=False)``, as the trainer does, and a container passes
that on to its first layers, which may then skip computing it (Linear and the convolutions do).

A module with parameters (or floating buffers) refuses an input of another floating dtype (PyTorch does too):
convert the input (``x.astype(numpy.float32)``) or the model (``model.to(numpy.float64)``); a layer without
parameters (ReLU, Flatten, Dropout, ...) refuses what is not an array (a list, None, a number), naming itself
(``_array_input``; Identity takes anything, as PyTorch's). The PyTorch surface
(parameters, buffers, state dicts, ``to``, ``train``/``eval``) is :class:`minidae.nn.tree.ModuleTree`.
"""
import contextlib
import inspect
import warnings
import weakref

import numpy

from .. import backend
from .parameter import Parameter, data_of, grad_of
from .tree import ModuleTree

__all__ = ["Context", "Call", "Parameter", "Module", "no_grad", "is_grad_enabled", "evaluating", "data_of",
           "grad_of"]

_GRAD_ENABLED = [True]
_FORWARDS = []   # the contexts of the calls whose forward is running, innermost last: a call made now goes on its list
_BACKPROPS = []  # the calls whose backprop is running, innermost last: a backward asked for now looks at its calls


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
    """What one call's forward keeps for its backward: the attributes ``forward`` sets (``ctx.x = x``), read back
    by ``backprop`` (``ctx.x``). Also ``ctx.calls``, the module calls this forward made, in order, and, while
    backprop runs, ``ctx.needs_input_grad``. One per call, made by ``Module.__call__``."""

    def __init__(self):
        self.calls = []

    def __repr__(self):
        return f"Context({', '.join(vars(self))})"


class Call:
    """One call of a module, kept for its backward: the module, the context its forward filled, and what it returned
    (held weakly: :meth:`returned` tells whether it returned an array), with the shape and dtype of each output."""

    __slots__ = ("module", "ctx", "done", "outputs", "specs", "shape")

    def __init__(self, module, ctx, output):
        self.module, self.ctx, self.done = module, ctx, False
        if output.__class__ is numpy.ndarray:  # the usual case, one NumPy array: described in one line
            self.outputs, self.specs, self.shape = [weakref.ref(output)], [(output.shape, output.dtype)], output.shape
        else:
            outputs = output if isinstance(output, tuple) else (output,)
            self.outputs, self.specs = list(map(_weak, outputs)), list(map(_spec, outputs))
            self.shape = self.specs[0][0] if len(outputs) == 1 else None  # the fast check: one output's shape

    def backward(self, grad_out=None, input_grad=True):
        """Go back through this call: the module's ``backprop`` with this call's context, given dL/d(output) (a
        tuple, one per output, for several); returns dL/d(input) (one per input). ``input_grad=False`` says
        nobody needs dL/d(input) (``ctx.needs_input_grad``)."""
        if self.done:
            raise RuntimeError(f"{type(self.module).__name__}.backward: this call was gone back through already (a "
                               f"second backward is refused, as in PyTorch)")
        grads = (grad_out,) if grad_out.__class__ is numpy.ndarray and grad_out.shape == self.shape else \
            _gradients(self, grad_out)
        self.ctx.needs_input_grad, self.done = input_grad, True
        _BACKPROPS.append(self)
        try:
            grad_in = self.module.backprop(self.ctx, *grads)
        except BaseException:
            if len(_BACKPROPS) == 1:  # the outermost backward failed: every call it went back through waits again
                _undo(self)
            raise
        finally:
            _BACKPROPS.pop()
        if not _BACKPROPS:  # the outermost backward is through: its values can go
            self.module._let_go(self)
        return grad_in

    def returned(self, output):
        """True when this call's forward returned ``output`` (an array, or the tuple of its outputs)."""
        first = output[0] if isinstance(output, tuple) else output
        return any(ref is not None and ref() is first for ref in self.outputs)

    def __repr__(self):
        state = "gone back through" if self.done else "waiting"
        return f"Call({type(self.module).__name__}, {state}, outputs {[shape for shape, _ in self.specs]})"


def _undo(call):
    """``call`` and every call its forward made, at any depth, waiting for their backward again."""
    call.done = False
    for sub in call.ctx.calls:
        _undo(sub)


def _spec(value):
    """(shape, dtype) of an output (None for what has none)."""
    return getattr(value, "shape", None), getattr(value, "dtype", None)


def _weak(value):
    """A weak reference to ``value``, or None where it has none (a Python number)."""
    try:
        return weakref.ref(value)
    except TypeError:
        return None


class Module(ModuleTree):
    """Base class of every layer and model. A subclass defines ``forward(self, ctx, ...)`` and
    ``backprop(self, ctx, dy)``; it is used as ``module(x)`` and ``module.backward(dy)`` (module docstring)."""

    max_waiting = 4  # top-level forwards that may wait for their backward at once; a new one drops the oldest
    _array_input = False  # True in a layer whose input must be an array (ReLU, Flatten, Dropout, ...): a list, None
    #                       or a number is refused by _check_input, naming the layer, not deep inside NumPy

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
        super().__init__()
        object.__setattr__(self, "_waiting", [])  # its top-level calls that wait for their backward, oldest first
        object.__setattr__(self, "_dropped", 0)   # forwards dropped (max_waiting) since its last backward
        object.__setattr__(self, "_forward_hooks", [])

    def __call__(self, *inputs, **kwargs):
        """``forward`` with a fresh context, kept for the backward (module docstring) unless within no_grad()."""
        if inputs and (self._params or self._buffers or inputs[0].__class__ is not numpy.ndarray):
            self._check_input(inputs[0])
        ctx, keep = Context(), _GRAD_ENABLED[0]
        if keep:
            _FORWARDS.append(ctx)
            try:
                output = self.forward(ctx, *inputs, **kwargs)
            finally:
                _FORWARDS.pop()
        else:
            output = self.forward(ctx, *inputs, **kwargs)
        for hook in self._forward_hooks:  # before the call is kept: a hook that raises leaves nothing waiting
            if hook(self, inputs, output) is not None:
                raise TypeError(f"{type(self).__name__}: a forward hook returned a value; minidae's hooks cannot "
                                f"replace the output (PyTorch's can), as the backward goes back through the output "
                                f"the forward returned: return None, and change the output in a module of your own")
        if keep:
            if _FORWARDS:  # made by another call's forward: on that call's record
                _FORWARDS[-1].calls.append(Call(self, ctx, output))
            else:
                self._keep(Call(self, ctx, output))
        return output

    def backward(self, grad_out=None, output=None, input_grad=True):
        """Given dL/dy, shaped like the output (a tuple of them for several outputs; None for a scalar loss:
        dL/dL = 1), add dL/dparam into each parameter's ``.grad`` and return dL/dx: ``backprop`` with the context
        of this module's waiting call (module docstring; ``output=y`` names the call that returned y)."""
        return self._waiting_call(output).backward(grad_out, input_grad)

    def forward(self, ctx, x):
        """The layer's output for ``x``; keeps on ``ctx`` what ``backprop`` will need. Call the module
        (``layer(x)``) rather than this: the call makes the context and keeps it for the backward."""
        raise NotImplementedError(f"{type(self).__name__} does not define forward(self, ctx, x)")

    def backprop(self, ctx, grad_out):
        """Given dL/dy and the context its forward filled, add dL/dparam into each parameter's ``.grad``
        (see :func:`grad_of`) and return dL/dx. Call ``module.backward(dy)`` rather than this."""
        raise NotImplementedError(f"{type(self).__name__} does not define backprop(self, ctx, dy)")

    def register_forward_hook(self, hook):
        """Call ``hook(module, inputs, output)`` after every forward of this module (as PyTorch's); returns a
        handle whose ``remove()`` takes it away. Hooks run in Python: a step replayed as a CUDA graph runs none.
        A hook returns None: unlike PyTorch's, it cannot replace the output (a TypeError says so)."""
        self._forward_hooks.append(hook)
        return _HookHandle(self._forward_hooks, hook)

    def _keep(self, call):
        """Keep a top-level call for its backward; beyond ``max_waiting``, drop the oldest (counted: until a
        backward goes through, an unnamed one is refused, as its gradient might have been the dropped one's)."""
        if len(self._waiting) >= self.max_waiting:
            name = type(self).__name__
            warnings.warn(f"{name}: {len(self._waiting) + 1} forwards would wait for their backward (at most "
                          f"max_waiting = {self.max_waiting}); the oldest is dropped, and until a backward goes "
                          f"through an unnamed one is refused. Run forwards whose backward will not come (metrics, "
                          f"logging, evaluation) under `with minidae.no_grad():` (or `with minidae.evaluating("
                          f"model):`); a program that keeps more forwards waiting on purpose can raise "
                          f"{name}.max_waiting.", RuntimeWarning, stacklevel=3)
            del self._waiting[0]
            object.__setattr__(self, "_dropped", self._dropped + 1)
        self._waiting.append(call)

    def _waiting_call(self, output):
        """The call a backward of this module goes back through (module docstring), or a RuntimeError saying why
        none can be named."""
        scope = _BACKPROPS[-1].ctx.calls if _BACKPROPS else self._waiting
        calls = [c for c in scope if c.module is self and not c.done and (output is None or c.returned(output))]
        if len(calls) == 1 and (output is not None or _BACKPROPS or not self._dropped):
            return calls[0]
        raise RuntimeError(_unpaired(self, calls, output))

    def _let_go(self, call):
        """After the backward of a top-level call: forget it, its values, and the forwards dropped before it."""
        if call in self._waiting:
            self._waiting.remove(call)
            object.__setattr__(self, "_dropped", 0)
        call.ctx = None

    def _check_input(self, x):
        """No torch tensor; an array where the layer says so (``_array_input``); the same float dtype and array
        module as the parameters, or else the floating buffers (PyTorch refuses a mismatch too)."""
        for param in self._params.values():  # the first parameter: the usual case, checked first
            if type(x) is type(param.data) and getattr(x, "dtype", None) == param.data.dtype:
                return
            break
        if type(x).__module__.startswith("torch"):
            raise TypeError(f"{type(self).__name__}: got a torch.Tensor; minidae works on NumPy or CuPy arrays: "
                            f"convert it with .numpy() (.detach().cpu().numpy() from a GPU tensor)")
        if self._array_input and not hasattr(x, "shape"):
            got = "None (a forward before it that returns nothing?)" if x is None else \
                f"a {type(x).__name__}; convert it first: numpy.asarray(x, dtype=numpy.float32)"
            raise TypeError(f"{type(self).__name__}: expected an array, got {got}")
        dtype = getattr(x, "dtype", None)
        data = next(iter(self._params.values())).data if self._params else next(
            (value for value in (self.__dict__.get(name) for name in self._buffers)
             if value is not None and value.dtype.kind == "f"), None)
        if data is None or dtype is None:
            return
        what = "parameters" if self._params else "buffers"
        if backend.array_module(x) is not backend.array_module(data):
            names = [backend.array_module(a).__name__ for a in (x, data)]
            raise ValueError(f"{type(self).__name__}: the input is a {names[0]} array but the {what} are "
                             f"{names[1]} arrays; make one backend current and move the model to it: "
                             f"backend.use('{names[0]}'); model.to()")
        if dtype.kind == "f" and dtype != data.dtype:
            raise ValueError(f"{type(self).__name__}: the input is {dtype} but the {what} are {data.dtype}; "
                             f"convert the input (x.astype(numpy.{data.dtype})) or the model "
                             f"(model.to(numpy.{dtype}))")

    def __getstate__(self):
        """A copy (copy.deepcopy, pickle) takes the module, not the calls waiting for their backward."""
        return {**self.__dict__, "_waiting": [], "_dropped": 0}

class _HookHandle:
    """What register_forward_hook returns: ``remove()`` takes the hook away."""

    def __init__(self, hooks, hook):
        self.hooks, self.hook = hooks, hook

    def remove(self):
        """Take the hook away (again: nothing)."""
        if self.hook in self.hooks:
            self.hooks.remove(self.hook)


def _gradients(call, grad_out):
    """The gradients ``backprop`` gets, one per output, each checked against its output (None in a tuple: zeros,
    for an output the loss does not use). An output that is not floating (MaxPool2d's indices) takes no
    gradient: a lone array is then the gradient of the one floating output, as in PyTorch."""
    if len(call.specs) == 1:
        _check_gradient(type(call.module).__name__, grad_out, call.specs[0][0])
        return (grad_out,)
    name = type(call.module).__name__
    differentiable = [dtype is None or dtype.kind == "f" for _, dtype in call.specs]
    if not isinstance(grad_out, (tuple, list)) and sum(differentiable) == 1:  # MaxPool2d's indices: no gradient
        grad_out = tuple(grad_out if d else None for d in differentiable)
    if not isinstance(grad_out, (tuple, list)) or len(grad_out) != len(call.specs):
        raise ValueError(f"{name}.backward: its forward returned {len(call.specs)} outputs; pass their gradients as "
                         f"a tuple of {len(call.specs)} (None for an output the loss does not use), got "
                         f"{type(grad_out).__name__}{f' of {len(grad_out)}' if isinstance(grad_out, (tuple, list)) else ''}")
    given = [g for g in grad_out if g is not None]
    if not given:
        raise ValueError(f"{name}.backward: every gradient is None; pass dL/dy for at least one output")
    xp, grads = backend.array_module(given[0]), []
    for grad, (shape, dtype), floating in zip(grad_out, call.specs, differentiable):
        if grad is None:
            grad = xp.zeros(shape, dtype) if floating and shape is not None else None
        else:
            _check_gradient(name, grad, shape)
        grads.append(grad)
    return tuple(grads)


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
    if isinstance(grad, (list, tuple)):
        raise TypeError(f"{name}.backward: got a {type(grad).__name__} where an array of shape {shape} (dL/dy) is "
                        f"needed: pass an array (numpy.asarray(...))")
    grad_shape = tuple(getattr(grad, "shape", ()))
    if shape is None or grad_shape == shape:
        return
    if grad_shape == ():
        raise ValueError(f"{name}.backward: got a scalar where dL/dy of shape {shape} is needed; to go back from a "
                         f"loss, pass the loss's own gradient: net.backward(criterion.backward()) "
                         f"(criterion.backward() is dL/dy)")
    raise ValueError(f"{name}.backward: expected a gradient of shape {shape} (the shape of its output), got "
                     f"{grad_shape}")


def _unpaired(module, calls, output):
    """Why no call can be named for a backward of ``module`` (``calls``: the candidates found), and the fix."""
    name = type(module).__name__
    parent = type(_BACKPROPS[-1].module).__name__ if _BACKPROPS else None
    if not calls and output is not None:
        return (f"{name}.backward: no waiting call of {name} returned the array given as output= (name a forward by "
                f"the very array it returned, and keep that array until the backward)")
    if len(calls) > 1 and output is not None:  # Identity(x) is x: two calls on one x returned the same array
        fix = (f"inside {parent}.backprop, go back through ctx.calls (the calls its forward made, in order: "
               f"ctx.calls[i].backward(dy))" if parent else
               "or make the calls in the forward of a module of your own, whose backprop goes back through ctx.calls "
               "(the calls that forward made, in order)")
        return (f"{name}.backward: {len(calls)} waiting calls of {name} returned this very array, so output= cannot "
                f"tell them apart (a module that returns its input, as Identity does, called twice on one array). "
                f"Call it on arrays of their own (x, then x.copy()), or go back through each call before the next "
                f"forward; {fix}")
    if not calls and parent:
        return (f"{name}.backward: the forward of {parent} being gone back through made no call of {name} that still "
                f"waits for its backward (inside {parent}.backprop, go back through the calls its forward made: "
                f"ctx.calls)")
    if not calls:
        return (f"{name}.backward: no forward is waiting for its backward. Call the module (y = module(x)) before "
                f"each backward: each forward is gone back through once (a second backward is refused, as in "
                f"PyTorch), and a forward under no_grad() keeps nothing")
    dropped = module._dropped if not parent else 0
    count = len(calls) + dropped
    also = f" ({dropped} of them dropped: more than max_waiting = {module.max_waiting} waited)" if dropped else ""
    inside = f"; or, inside {parent}.backprop, go back through ctx.calls, the calls its forward made, in order" \
        if parent else ""
    return (f"{name}.backward: {count} forwards of {name} wait for their backward{also}, and nothing says which one "
            f"this gradient belongs to. Name the forward by the array it returned: net.backward(dy, output=y){inside}. Run "
            f"forwards whose backward will not come (metrics, logging) under `with minidae.no_grad():` (or `with "
            f"minidae.evaluating(model):`)")
