"""Containers, as torch.nn's: Sequential (modules in order), ModuleList and ModuleDict (modules held for a
forward of your own), and Identity. Modules put in them are registered, so their parameters, buffers and state
dict keys ("0.weight", "encoder.weight") are the container's."""
from collections import OrderedDict

from .module import Module

__all__ = ["Sequential", "ModuleList", "ModuleDict", "Identity", "backprop_chain"]


def backprop_chain(ctx, dy):
    """The chain rule: dL/dy back through the calls a chain's forward made (``ctx.calls``), newest first; returns
    dL/dx. Where nobody needs dL/dx (``ctx.needs_input_grad`` False: a model's input is data), the calls before
    the first one with trainable parameters are not gone back through at all, and that one skips its own dL/dx
    (the input gradient of a model's first layer, which PyTorch skips too)."""
    calls, needs = ctx.calls, ctx.needs_input_grad
    if not needs:
        calls = calls[next((i for i, call in enumerate(calls) if _trains(call.module)), len(calls)):]
    for index in range(len(calls) - 1, -1, -1):
        dy = calls[index].backward(dy, needs or index > 0)
    return dy if needs else None


def _trains(module):
    """True where ``module`` has a parameter that is trained."""
    return any(p.requires_grad for p in module.parameters())


def _renumber(container, modules):
    """Register ``modules`` in ``container`` as "0", "1", ... in place of its sub-modules (as PyTorch after a
    deletion)."""
    for key in list(container._modules):
        delattr(container, key)
    for index, module in enumerate(modules):
        setattr(container, str(index), module)


def _insert(container, index, module):
    """Put ``module`` before position ``index`` (from -len to len, as PyTorch's Sequential.insert) and number the
    modules again."""
    modules, where = list(container._modules.values()), f"{type(container).__name__}.insert"
    if not -len(modules) <= index <= len(modules):
        raise IndexError(f"{where}: index {index} is out of range for {len(modules)} modules")
    modules.insert(index, _checked(module, where, "the module inserted"))
    _renumber(container, modules)


def _extend(container, modules):
    """Append every module of the iterable ``modules`` to ``container``; returns the container."""
    if isinstance(modules, Module) and not isinstance(modules, (ModuleList, Sequential)):
        raise TypeError(f"{type(container).__name__}.extend: expected an iterable of modules, got the module "
                        f"{type(modules).__name__}; use append")
    for module in list(modules):
        container.append(module)
    return container


def _pop(container, key):
    """Remove the module (or the slice of modules) at ``key`` and return it, as PyTorch: ``v = c[key]; del
    c[key]``."""
    module = container[key]
    del container[key]
    return module


def _checked(module, container, where):
    """``module`` if it is a minidae Module, else a TypeError naming what it is and where it came from."""
    if not isinstance(module, Module):
        raise TypeError(f"{container}: {type(module).__module__}.{type(module).__qualname__} is not a minidae Module "
                        f"({where})")
    return module


class Sequential(Module):
    """Modules applied in order; backward runs them in reverse. ``Sequential(a, b, c)`` names them "0", "1",
    "2"; ``Sequential(OrderedDict([("enc", a), ("dec", b)]))`` keeps the names given (as PyTorch)."""

    def __init__(self, *modules):
        super().__init__()
        named = modules[0].items() if len(modules) == 1 and isinstance(modules[0], OrderedDict) else \
            ((str(index), module) for index, module in enumerate(modules))
        for name, module in named:
            setattr(self, name, _checked(module, "Sequential", f"element {name!r}; pass Modules as separate "
                                                               f"arguments: Sequential(a, b), or Sequential(*layers) "
                                                               f"for a list"))

    def __getitem__(self, index):
        if isinstance(index, slice):  # a slice of a Sequential is a Sequential, keeping the names (as PyTorch)
            return Sequential(OrderedDict(list(self._modules.items())[index]))
        return list(self._modules.values())[index]

    def __setitem__(self, index, module):
        """Replace the module at ``index``, keeping its name (``model[-1] = nn.Identity()``)."""
        setattr(self, list(self._modules)[index], _checked(module, "Sequential", f"item {index}"))

    def __delitem__(self, index):
        """Remove the module (or the slice of modules) at ``index``; the others are numbered "0", "1", ... again,
        as PyTorch numbers them."""
        modules = list(self._modules.values())
        del modules[index]
        _renumber(self, modules)

    def append(self, module):
        """Add ``module`` at the end; returns self."""
        setattr(self, str(len(self._modules)), _checked(module, "Sequential.append", "the module appended"))
        return self

    def extend(self, modules):
        """Add every module of ``modules`` at the end; returns self."""
        return _extend(self, modules)

    def insert(self, index, module):
        """Put ``module`` before position ``index``; returns self (as PyTorch's)."""
        _insert(self, index, module)
        return self

    def pop(self, key):
        """Remove and return the module at ``key`` (a Sequential for a slice)."""
        return _pop(self, key)

    def __len__(self):
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules.values())

    def forward(self, ctx, x):
        """x through every module in order (each call is recorded on ``ctx.calls``)."""
        for module in self._modules.values():
            x = module(x)
        return x

    def backprop(self, ctx, dy):
        """The chain rule: dL/dy back through the calls the forward made, newest first; returns dL/dx."""
        return backprop_chain(ctx, dy)


class ModuleList(Module):
    """A list of modules, registered under "0", "1", ... (as torch.nn.ModuleList). It has no forward of its own:
    call its modules in a module's forward, and their backwards in that module's backprop."""

    def __init__(self, modules=None):
        super().__init__()
        self.extend(modules or [])

    def __getitem__(self, index):
        if isinstance(index, slice):
            return ModuleList(list(self._modules.values())[index])
        return list(self._modules.values())[index]

    def __setitem__(self, index, module):
        modules = list(self._modules.values())
        modules[index] = _checked(module, "ModuleList", f"item {index}")
        _renumber(self, modules)

    def __delitem__(self, index):
        modules = list(self._modules.values())
        del modules[index]
        _renumber(self, modules)

    def __len__(self):
        return len(self._modules)

    def __iter__(self):
        return iter(list(self._modules.values()))

    def __iadd__(self, modules):
        return self.extend(modules)

    def append(self, module):
        """Add ``module`` at the end; returns self."""
        setattr(self, str(len(self._modules)), _checked(module, "ModuleList.append", "the module appended"))
        return self

    def extend(self, modules):
        """Add every module of ``modules`` at the end; returns self."""
        return _extend(self, modules)

    def insert(self, index, module):
        """Put ``module`` before position ``index`` (returns None, as PyTorch's)."""
        _insert(self, index, module)

    def pop(self, key):
        """Remove and return the module at ``key`` (a ModuleList for a slice)."""
        return _pop(self, key)


class ModuleDict(Module):
    """Modules by name, in insertion order (as torch.nn.ModuleDict); no forward of its own."""

    def __init__(self, modules=None):
        super().__init__()
        if modules is not None:
            self.update(modules)

    def __getitem__(self, key):
        return self._modules[key]

    def __setitem__(self, key, module):
        self.add_module(key, _checked(module, "ModuleDict", f"key {key!r}"))

    def __delitem__(self, key):
        del self._modules[key]
        delattr(self, key)

    def __len__(self):
        return len(self._modules)

    def __iter__(self):
        return iter(list(self._modules))

    def __contains__(self, key):
        return key in self._modules

    def keys(self):
        """The names, in insertion order."""
        return list(self._modules.keys())

    def values(self):
        """The modules, in insertion order."""
        return list(self._modules.values())

    def items(self):
        """(name, module) pairs, in insertion order."""
        return list(self._modules.items())

    def pop(self, key):
        """Remove and return the module ``key``."""
        module = self._modules[key]
        del self[key]
        return module

    def clear(self):
        """Remove every module."""
        for key in list(self._modules):
            del self[key]

    def update(self, modules):
        """Add (or replace) the modules of a mapping or of an iterable of (name, module) pairs."""
        for key, module in (modules.items() if hasattr(modules, "items") else modules):
            self[key] = module


class Identity(Module):
    """y = x (as torch.nn.Identity, whose arguments it accepts and ignores).   Backward: dL/dx = dL/dy."""

    def __init__(self, *args, **kwargs):
        super().__init__()

    def forward(self, ctx, x):
        return x

    def backprop(self, ctx, dy):
        return dy
