"""The PyTorch surface every Module has: sub-modules, parameters and buffers, state dicts, modes and dtypes.

:class:`ModuleTree` is what a ``torch.nn.Module`` user expects to find (``named_parameters``, ``state_dict``,
``load_state_dict``, ``to``, ``train``/``eval``, ``apply``, ...), kept apart from :mod:`minidae.nn.module`, which
holds what minidae adds: calls, their contexts and backwards.

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
from collections import OrderedDict, namedtuple

import numpy

from .. import backend
from .parameter import Parameter

__all__ = ["ModuleTree", "IncompatibleKeys"]

IncompatibleKeys = namedtuple("IncompatibleKeys", ["missing_keys", "unexpected_keys"])
IncompatibleKeys.__doc__ = "What load_state_dict returns, as PyTorch's: the keys it lacked and the keys it did not use."


class ModuleTree:
    """Sub-modules, parameters and buffers held as attributes, and what PyTorch does with them."""

    def __init__(self):
        object.__setattr__(self, "_params", OrderedDict())
        object.__setattr__(self, "_modules", OrderedDict())
        object.__setattr__(self, "_buffers", [])  # names of the attributes that are buffers (module docstring)
        object.__setattr__(self, "training", True)

    def __setattr__(self, key, value):
        if "_params" not in self.__dict__:
            raise AttributeError(f"{type(self).__name__}: call super().__init__() before assigning attributes")
        if value is not None and (key in self._params and not isinstance(value, Parameter)
                                  or key in self._modules and not isinstance(value, ModuleTree)):
            what = f"parameter {key!r} (a Parameter or None expected; to set its values: self.{key}.data = array)" \
                if key in self._params else f"sub-module {key!r} (a Module or None expected)"
            raise TypeError(f"{type(self).__name__}: cannot assign a {type(value).__name__} as {what}, as in PyTorch")
        if not isinstance(value, Parameter):
            self._params.pop(key, None)
        if not isinstance(value, ModuleTree):
            self._modules.pop(key, None)
        if key in self._buffers and isinstance(value, (Parameter, ModuleTree)):
            self._buffers.remove(key)  # any other value, an array or None, keeps the name a buffer
        if isinstance(value, Parameter):
            self._params[key] = value  # a name registered before keeps its place (as PyTorch's)
        elif isinstance(value, ModuleTree):
            self._modules[key] = value
        object.__setattr__(self, key, value)

    def __delattr__(self, key):
        """``del self.<name>`` unregisters a parameter, sub-module or buffer too (as PyTorch)."""
        self._params.pop(key, None)
        self._modules.pop(key, None)
        if key in self._buffers:
            self._buffers.remove(key)
        object.__delattr__(self, key)

    def named_modules(self, memo=None, prefix="", remove_duplicate=True):
        """(name, module) for this module ("" or ``prefix``) and every sub-module, depth first; a module registered
        at several places is listed once, under its first name, unless ``remove_duplicate`` is False. ``memo``, a
        set of modules to leave out, is PyTorch's too (and grows with those listed)."""
        memo = set() if memo is None else memo

        def walk(module, name):
            if remove_duplicate:
                if module in memo:
                    return
                memo.add(module)
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

    def named_parameters(self, prefix="", recurse=True, remove_duplicate=True):
        """(key, Parameter) pairs under PyTorch's key names ("conv1.weight"), in registration order, of this module
        and, unless ``recurse`` is False, its sub-modules; a parameter shared by several modules (tied weights) is
        listed once, under its first key, unless ``remove_duplicate`` is False (``state_dict`` keeps every key, as
        PyTorch's)."""
        return self._named_members(lambda module: module._params.items(), prefix, recurse, remove_duplicate)

    def parameters(self, recurse=True):
        """Every Parameter of the module and (unless ``recurse`` is False) its sub-modules, each once, as a list
        (what an optimiser takes)."""
        return [param for _, param in self.named_parameters(recurse=recurse)]

    def _named_members(self, members, prefix, recurse, remove_duplicate):
        """(key, value) for the (name, value) pairs ``members(module)`` gives of each module (this one only if not
        ``recurse``), leaving out None and, if ``remove_duplicate``, a value listed already: PyTorch's
        ``_named_members``, behind named_parameters and named_buffers."""
        seen = set()
        modules = self.named_modules(prefix=prefix, remove_duplicate=remove_duplicate) if recurse else [(prefix, self)]
        for name, module in modules:
            for key, value in members(module):
                if value is None or id(value) in seen:
                    continue
                if remove_duplicate:
                    seen.add(id(value))
                yield (f"{name}.{key}" if name else key), value

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
        if module is not None and not isinstance(module, ModuleTree):
            raise TypeError(f"{type(self).__name__}.add_module: {type(module).__name__} is not a Module")
        if hasattr(self, name) and name not in self._modules:  # ModuleDict({"keys": ...}) would hide .keys()
            raise KeyError(f"{type(self).__name__}.add_module: attribute '{name}' already exists (as in PyTorch)")
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

    def named_buffers(self, prefix="", recurse=True, remove_duplicate=True):
        """(key, array) pairs of every buffer that is not None, under PyTorch's key names ("bn.running_mean"), of
        this module and, unless ``recurse`` is False, its sub-modules (an array held as two buffers listed once,
        unless ``remove_duplicate`` is False)."""
        return self._named_members(_buffers_of, prefix, recurse, remove_duplicate)

    def buffers(self, recurse=True):
        """Every buffer of the module and (unless ``recurse`` is False) its sub-modules, each once, as a list."""
        return [value for _, value in self.named_buffers(recurse=recurse)]

    def zero_grad(self, set_to_none=True):
        """Leave every parameter without a gradient (None, as PyTorch's default), or with ``set_to_none=False``
        zero the gradients there are; a backward then gives each parameter it reaches a gradient again."""
        for param in self.parameters():
            param.zero_grad(set_to_none)

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
            given = dtype
            if type(given).__module__.startswith("torch"):  # torch.float64, torch.device("cuda")
                raise TypeError(f"{type(self).__name__}.to: got {given}, a torch {type(given).__name__}; minidae "
                                f"takes NumPy dtypes (model.to(numpy.float64), or model.double()), and moves a model "
                                f"to the GPU with backend.use('cupy') and then model.to()")
            try:
                dtype = numpy.dtype(given)
            except TypeError:
                dtype = None
            if dtype is None or dtype.kind != "f":
                raise ValueError(f"{type(self).__name__}.to: expected a floating-point dtype such as numpy.float32, "
                                 f"got {given!r}; to move a model to the GPU, call backend.use('cupy') and then "
                                 f"model.to()")
        for param in self.parameters():
            host = backend.to_numpy(param.data)
            param.data = backend.xp.asarray(host if dtype is None else host.astype(dtype))  # no gradient after a move
        for _, module in self.named_modules():
            for name, value in _buffers_of(module):
                if value is not None:
                    host = backend.to_numpy(value)
                    cast = dtype is not None and host.dtype.kind == "f"
                    setattr(module, name, backend.xp.asarray(host.astype(dtype) if cast else host))
        return self

    def float(self):
        """``to(numpy.float32)``, as PyTorch's ``model.float()``; returns self."""
        return self.to(numpy.float32)

    def double(self):
        """``to(numpy.float64)``, as PyTorch's ``model.double()``; returns self."""
        return self.to(numpy.float64)

    def half(self):
        """``to(numpy.float16)``, as PyTorch's ``model.half()``; returns self."""
        return self.to(numpy.float16)

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
            for name, value in _buffers_of(module):
                if value is not None:
                    yield (f"{prefix}.{name}" if prefix else name), value

    def load_state_dict(self, state, strict=True):
        """Copy arrays from ``state`` (NumPy, CuPy or anything array-like) into the parameters and buffers,
        keeping each one's dtype and backend; buffers are written in place. With ``strict`` (the default) the keys
        must be exactly the module's; with ``strict=False`` the keys both have are loaded and the others left
        alone. Returns PyTorch's ``(missing_keys, unexpected_keys)``. Every shape is checked before anything is
        written."""
        params = dict(self.named_parameters(remove_duplicate=False))
        buffers = dict(self.named_buffers(remove_duplicate=False))
        keys = list(params) + [key for key in buffers if key not in params]
        keys = IncompatibleKeys([key for key in keys if key not in state], [key for key in state if key not in
                                                                            params and key not in buffers])
        if strict and (keys.missing_keys or keys.unexpected_keys):
            raise KeyError(f"{type(self).__name__}.load_state_dict: missing keys {sorted(keys.missing_keys)}, "
                           f"unexpected keys {sorted(keys.unexpected_keys)} (strict=False loads the keys both have)")
        values = {}
        for key, current in self._state_arrays():
            if key not in state:
                continue
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
        return keys

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


def _buffers_of(module):
    """(name, array or None) of each buffer ``module`` itself registered, in registration order."""
    return [(name, module.__dict__.get(name)) for name in module._buffers]
