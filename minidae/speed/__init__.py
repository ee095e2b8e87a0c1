"""Speed devices: faster versions of a few core functions, each computing the same numbers.

The maths of minidae is written once, as plain array code: the layers' formulas in
:mod:`minidae.nn.functional`, the window primitives in :mod:`minidae.nn.im2col`, the GEMMs in
:mod:`minidae.backend`, the optimisers in :mod:`minidae.optim`. A handful of those functions are marked
``@backend.replaceable``. For each, a faster function may be registered here for a library (``"numpy"`` or
``"cupy"``), taking the same arguments and returning the same values (bit for bit, or equal to float rounding
where it sums the same products in another order; tests/test_speed.py and tests/test_cuda.py check each against
the core function it stands in for), so reading the core function is reading what runs.

Which function runs is settled once, not looked up per call: whenever a backend is chosen
(``backend.use``), :func:`bind` puts that library's versions in place of the core functions, under the same
names, in every minidae module that holds them (``functional.relu``, ``im2col`` where functional.py imported
it, ``backend.matmul``, ...). A debugger stepping into ``F.relu(x)`` lands in the function that runs.

The replacements live in two files:

* :mod:`minidae.speed.cpu`: the NumPy ones (memory layouts that make strided copies fast, a winner mask
  instead of an argmax, flat optimiser buffers, outer products without BLAS);
* :mod:`minidae.speed.cuda`: the CuPy ones (one kernel instead of many, GEMMs that a CUDA graph can
  capture, the training step as one CUDA graph).

The maths never imports this package (the dependencies run one way: speed -> maths -> backend).

**The plain maths.** ``minidae.plain_maths()`` (or ``MINIDAE_PLAIN_MATHS=1`` in the environment) binds the core
functions everywhere: every layer, im2col and optimiser step then runs the code written in functional.py,
im2col.py and optimizers.py, line by line, slower. ``with minidae.plain_maths():`` does so for a block.
``with speed.disabled("im2col"):`` switches single replacements off (the tests and benchmarks compare them so).

>>> from minidae import speed
>>> speed.bound("im2col") is speed.registered("numpy")["im2col"]  # on NumPy, the NumPy version runs
True
"""
import contextlib
import os
import sys

from .. import backend

__all__ = ["register", "registered", "bound", "core", "bind", "disabled", "is_disabled", "set_disabled",
           "plain_maths", "library"]

_REPLACEMENTS = {}  # (hook name, "numpy" or "cupy") -> the faster function
_OFF = set()        # hook names switched off (disabled()); "*" switches all off
_LOADED = set()     # libraries whose replacements have been imported
_BOUND = {}         # hook name -> the function bound now (the core function, or a replacement)
library = backend.library_of


def _load(lib):
    """Import the replacements for library ``lib`` once (they register themselves)."""
    if lib in _LOADED:
        return
    _LOADED.add(lib)
    if lib == "numpy":
        from . import cpu  # noqa: F401
    elif lib == "cupy":
        try:
            from . import cuda  # noqa: F401
        except ImportError:  # CuPy imported the array, so this only fails for a broken install: run the core
            pass


def core(hook):
    """The core function named ``hook`` (what runs in the plain maths)."""
    return backend.CORE[hook]


def bound(hook):
    """The function that runs for ``hook`` now."""
    return _BOUND.get(hook, backend.CORE[hook])


def bind(lib=None):
    """Put library ``lib``'s replacements (default: the active backend's) in place of the core functions, or the
    core functions where a replacement is switched off or none is registered; called by ``backend.use``."""
    lib = lib or backend.name
    _load(lib)
    for hook, function in backend.CORE.items():
        wanted = function if hook in _OFF or "*" in _OFF else _REPLACEMENTS.get((hook, lib), function)
        previous = _BOUND.get(hook, function)
        if wanted is previous:
            continue
        for module in [m for name, m in sys.modules.items() if name.startswith("minidae") and m is not None
                       and not name.startswith(__name__)]:  # the speed devices' own names stay their own
            if vars(module).get(hook) is previous:
                setattr(module, hook, wanted)
        _BOUND[hook] = wanted


def register(hook, lib, function):
    """Make ``function`` the replacement of the core function named ``hook`` for arrays of library ``lib``."""
    _REPLACEMENTS[(hook, lib)] = function
    return function


def registered(lib):
    """{hook name: replacement} for library ``lib`` (loading its replacements if needed)."""
    _load(lib)
    return {hook: function for (hook, owner), function in _REPLACEMENTS.items() if owner == lib}


def is_disabled(hook):
    """True where ``hook``'s replacement is switched off (:func:`disabled`, :func:`plain_maths`)."""
    return hook in _OFF or "*" in _OFF


def set_disabled(*hooks):
    """Switch exactly the named hooks off from now on (none named: every replacement on), for benchmarks that
    alternate settings between rounds; :func:`disabled` is the block form."""
    _OFF.clear()
    _OFF.update(hooks)
    bind()


@contextlib.contextmanager
def disabled(*hooks):
    """Within this block the named hooks (all of them when none is named) run their core functions."""
    added = (set(hooks) or {"*"}) - _OFF
    _OFF.update(added)
    bind()
    try:
        yield
    finally:
        _OFF.difference_update(added)
        bind()


class plain_maths:
    """The switch for the plain maths: ``minidae.plain_maths()`` (or ``plain_maths(True)``) makes every core
    function run from now on (functional.py, im2col.py, optimizers.py as written, no speed device),
    ``plain_maths(False)`` brings the speed devices back, and ``with minidae.plain_maths():`` does it for a block.
    The numbers are the same either way, or equal to float rounding where a replacement sums in another order
    (tests/test_speed.py checks each replacement against its core function); only the speed differs."""

    def __init__(self, on=True):
        self.previous = set(_OFF)
        _OFF.clear()
        _OFF.update({"*"} if on else set())
        bind()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        _OFF.clear()
        _OFF.update(self.previous)
        bind()


if os.environ.get("MINIDAE_PLAIN_MATHS", "").strip() not in ("", "0"):
    _OFF.add("*")


backend.on_use(bind)  # bind the active backend's versions now, and again at every backend.use()
