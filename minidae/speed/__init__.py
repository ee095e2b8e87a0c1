"""Speed devices: faster replacements for a few core functions, each computing the same numbers.

The maths of minidae is written once, as plain array code: the layers' formulas in
:mod:`minidae.nn.functional`, the window primitives in :mod:`minidae.nn.im2col`, the GEMMs in
:mod:`minidae.backend`, the optimisers in :mod:`minidae.optim`. A handful of those functions are
marked ``@replaceable``: when the array they work on belongs to a library (``"numpy"`` or
``"cupy"``) for which a faster function is registered here under the same name, that function runs
instead. Nothing else changes: a replacement takes the same arguments and returns the same values
(tests/test_speed.py checks each one against the core function it stands in for), so reading the core
function is reading what runs.

The replacements live in two files:

* :mod:`minidae.speed.cpu`: the NumPy ones (memory layouts that make strided copies fast, a winner mask
  instead of an argmax, flat optimiser buffers, outer products without BLAS), registered on import;
* :mod:`minidae.speed.cuda`: the CuPy ones (one kernel instead of many, GEMMs that a CUDA graph can
  capture, the training step as one CUDA graph), registered the first time a CuPy array is seen.

A replacement may decline a call it does not handle by returning ``NotImplemented``; the core function
then runs. ``with speed.disabled("im2col"):`` (or ``disabled()`` for all) runs the core functions only,
as the tests and benchmarks do to compare them.

>>> from minidae import speed
>>> sorted(speed.registered("numpy"))[:3]
['adam_step', 'col2im', 'im2col']
"""
import contextlib
import functools

__all__ = ["replaceable", "register", "registered", "replacement", "disabled", "is_disabled", "set_disabled",
           "library"]

_REPLACEMENTS = {}  # (hook name, "numpy" or "cupy") -> the faster function
_OFF = set()        # hook names switched off (disabled()); "*" switches all off
_LOADED = set()     # libraries whose replacements have been imported
_CACHE = {}         # (hook name, array type) -> what replacement() answers; emptied whenever the above change


def library(array):
    """"numpy", "cupy" (or another top-level package name) for an array: the library that owns it."""
    return type(array).__module__.partition(".")[0]


def _load(name):
    """Import the replacements for library ``name`` once (they register themselves)."""
    _LOADED.add(name)
    if name == "numpy":
        from . import cpu  # noqa: F401
    elif name == "cupy":
        try:
            from . import cuda  # noqa: F401
        except ImportError:  # CuPy imported the array, so this only fails for a broken install: run the core
            pass


def replacement(hook, array):
    """The function registered for ``hook`` and ``array``'s library, or None (disabled, or none registered)."""
    key = (hook, type(array))
    if key in _CACHE:  # the answer for this hook and array type (a core function is called often)
        return _CACHE[key]
    lib = library(array)
    if lib not in _LOADED:
        _load(lib)
    _CACHE[key] = None if hook in _OFF or "*" in _OFF else _REPLACEMENTS.get((hook, lib))
    return _CACHE[key]


def replaceable(core=None, *, on=None):
    """Mark ``core`` as a function a speed device may replace (see the module docstring).

    The hook is named after the function. Which library's replacement applies is decided by the array
    ``on(*args)`` returns (default: the first argument). ``decorated.core`` is the plain function.
    """
    if core is None:
        return lambda function: replaceable(function, on=on)
    pick = on or (lambda *args, **kwargs: args[0])

    @functools.wraps(core)
    def call(*args, **kwargs):
        fast = replacement(core.__name__, pick(*args, **kwargs))
        if fast is not None:
            result = fast(*args, **kwargs)
            if result is not NotImplemented:
                return result
        return core(*args, **kwargs)
    call.core = core
    return call


def register(hook, lib, function):
    """Make ``function`` the replacement of the core function named ``hook`` for arrays of library ``lib``."""
    _REPLACEMENTS[(hook, lib)] = function
    _CACHE.clear()
    return function


def registered(lib):
    """{hook name: replacement} for library ``lib`` (loading its replacements if needed)."""
    if lib not in _LOADED:
        _load(lib)
    return {hook: function for (hook, owner), function in _REPLACEMENTS.items() if owner == lib}


def is_disabled(hook):
    """True inside :func:`disabled` for ``hook``."""
    return hook in _OFF or "*" in _OFF


@contextlib.contextmanager
def disabled(*hooks):
    """Within this block the named hooks (all of them when none is named) run their core functions."""
    names = set(hooks) or {"*"}
    added = names - _OFF
    _OFF.update(added)
    _CACHE.clear()
    try:
        yield
    finally:
        _OFF.difference_update(added)
        _CACHE.clear()


def set_disabled(*hooks):
    """Switch exactly the named hooks off from now on (none named: every replacement on), for benchmarks that
    alternate settings between rounds; :func:`disabled` is the block form."""
    _OFF.clear()
    _OFF.update(hooks)
    _CACHE.clear()
