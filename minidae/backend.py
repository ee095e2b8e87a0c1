"""One switch between NumPy (CPU) and CuPy (GPU).

Layers never ask which backend is active: they take the array module from
``minidae.backend.xp`` (or from their input via :func:`array_module`), so the same
code runs on both. What runs faster on one of them (GPU kernels, CUDA graphs, CPU memory
layouts) takes the place of a core function marked :func:`replaceable`: :mod:`minidae.speed`
binds the active backend's versions whenever :func:`use` switches (this module imports
nothing of minidae's; the speed devices listen through :func:`on_use`).

>>> from minidae import backend
>>> backend.use("numpy")
>>> backend.name
'numpy'
>>> backend.xp.zeros(2).tolist()
[0.0, 0.0]
"""
import os

import numpy

__all__ = ["BackendUnavailable", "use", "xp", "name", "to_numpy", "asarray", "array_module",
           "seed", "rng", "rng_state", "set_rng_state", "init_rng", "available", "library_of", "capturing", "check",
           "matmul", "matmul_add", "add_row_sums", "graphed", "tune_host_allocator", "replaceable", "CORE", "on_use"]

CORE = {}       # name -> the core function marked replaceable under that name (the plain maths)
_ON_USE = []    # functions called with the backend's name whenever use() makes one active (minidae.speed.bind)


def replaceable(core):
    """Mark ``core`` as a function a speed device may stand in for (minidae.speed): it is recorded in ``CORE``
    under its name and returned unchanged. Which function runs is settled when a backend is chosen, never per
    call: the speed devices put their version in its place, under the same name."""
    CORE[core.__name__] = core
    return core


def on_use(listener):
    """Call ``listener(name)`` now and whenever :func:`use` makes a backend active (how the speed devices bind)."""
    _ON_USE.append(listener)
    listener(name)


def library_of(array):
    """"numpy", "cupy" (or another top-level package name) for an array: the library that owns it."""
    return type(array).__module__.partition(".")[0]


class BackendUnavailable(RuntimeError):
    """The requested backend cannot run here (CuPy missing, no GPU, broken driver)."""


xp = numpy
name = "numpy"
_rng = numpy.random.default_rng(0)      # active backend's generator: noise, shuffling
_init_rng = numpy.random.default_rng(0)  # host generator for weight init: same weights on any backend

_CUPY_HELP = ("install CuPy for your CUDA version with `pip install -e .[cuda12]` or "
              "`pip install -e .[cuda13]` on a machine with an NVIDIA GPU and driver")


def _load_cupy():
    """Import CuPy and touch the GPU once; any failure becomes BackendUnavailable."""
    try:
        import cupy
    except Exception as exc:  # ImportError, or a broken CUDA install raising anything
        raise BackendUnavailable(f"backend 'cupy' is unavailable: CuPy cannot be imported "
                                 f"({type(exc).__name__}: {exc}); {_CUPY_HELP}") from exc
    try:
        count = cupy.cuda.runtime.getDeviceCount()
        if count < 1:
            raise RuntimeError("no CUDA device found")
        cupy.zeros(1).sum().item()
    except Exception as exc:
        raise BackendUnavailable(f"backend 'cupy' is unavailable: CuPy imported but no usable GPU "
                                 f"({type(exc).__name__}: {exc}); {_CUPY_HELP}") from exc
    return cupy


def available(backend_name):
    """True when :func:`use` would succeed for ``backend_name``."""
    if backend_name == "numpy":
        return True
    try:
        _load_cupy()
        return True
    except BackendUnavailable:
        return False


def use(backend_name, seed_value=None):
    """Make ``"numpy"`` or ``"cupy"`` the active backend.

    Raises BackendUnavailable (leaving the active backend unchanged) when CuPy or a
    GPU is missing, and ValueError for an unknown name.
    """
    global xp, name, _rng
    if backend_name == "numpy":
        module = numpy
    elif backend_name == "cupy":
        module = _load_cupy()
    else:
        raise ValueError(f"unknown backend {backend_name!r}: choose 'numpy' or 'cupy'")
    xp, name = module, backend_name
    if seed_value is not None:
        seed(seed_value)
    else:
        _rng = module.random.default_rng()
    for listener in _ON_USE:
        listener(backend_name)


def tune_host_allocator():
    """Ask glibc's malloc to keep freed memory instead of handing it back to the OS.

    minidae does this itself when it is imported (set MINIDAE_NO_MALLOPT=1 to keep glibc's defaults), so
    a user's own training loop gets the speed without knowing about it; calling it again changes nothing.


    A training step allocates and frees the same few megabyte-sized temporaries every
    iteration. By default glibc serves such blocks with fresh ``mmap`` pages (or trims the
    heap after freeing them), so every step pays page faults and zero-filling for memory
    it just released; on the machines measured in docs/performance.md that is a third of
    a NumPy training step. This raises the mmap and trim thresholds (to 256 MiB and
    1 GiB) for the whole process: the heap stays at its peak size, which for training is
    what you want.
    Returns False (and changes nothing) where glibc's ``mallopt`` is not available.
    """
    import ctypes
    import ctypes.util
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3  # from glibc's malloc.h
    return bool(mallopt(m_mmap_threshold, 256 << 20)) and bool(mallopt(m_trim_threshold, 1 << 30))


HOST_ALLOCATOR_TUNED = False if os.environ.get("MINIDAE_NO_MALLOPT") else tune_host_allocator()


def seed(n):
    """Reseed both generators: the active backend's (noise, shuffling) and the host one
    that weight initialisation draws from, so the same seed gives the same initial
    weights on NumPy and CuPy."""
    global _rng, _init_rng
    _rng = xp.random.default_rng(n)
    _init_rng = numpy.random.default_rng(n)


def rng():
    """The active backend's ``Generator`` (numpy.random.Generator or cupy.random.Generator)."""
    return _rng


def rng_state():
    """The state of :func:`rng` as a JSON-friendly dict (what a checkpoint keeps, so that a resumed run
    draws the same dropout masks as an uninterrupted one); None on CuPy, whose generator state lives on the
    device with no public way to read it."""
    return _rng.bit_generator.state if isinstance(_rng, numpy.random.Generator) else None


def set_rng_state(state):
    """Restore a state :func:`rng_state` returned (NumPy backend)."""
    if not isinstance(_rng, numpy.random.Generator):
        raise ValueError(f"set_rng_state: the active backend's generator ({type(_rng).__module__}) has no settable "
                         f"state")
    _rng.bit_generator.state = state


def init_rng():
    """The host (NumPy) generator that weight initialisation draws from."""
    return _init_rng


def array_module(a):
    """The array module (numpy or cupy) that owns array ``a``."""
    if type(a).__module__.startswith("cupy"):
        import cupy
        return cupy
    return numpy


def to_numpy(a):
    """A NumPy copy (or view) of ``a``, wherever it lives."""
    if isinstance(a, numpy.ndarray):
        return a
    get = getattr(a, "get", None)
    return get() if get is not None else numpy.asarray(a)


def capturing(a):
    """True while a CUDA graph is being captured on the current stream and ``a`` is a CuPy array: then nothing
    may read the device (a captured step runs later, with other numbers)."""
    if library_of(a) != "cupy":
        return False
    import cupy
    return cupy.cuda.get_current_stream().is_capturing()


def check(flag, message):
    """Raise ValueError(message()) where the 0-d boolean array ``flag`` is true. This reads the device (a
    wait on a GPU); while a CUDA graph is being captured, which cannot read it, the check is skipped."""
    if not capturing(flag) and bool(flag):
        raise ValueError(message())


@replaceable
def matmul(a, b):
    """``a @ b`` for 2-D arrays. On a GPU a faster equal version runs (minidae.speed.cuda.matmul, on a cuBLAS
    handle a CUDA graph can capture), and on NumPy an outer product skips BLAS (minidae.speed.cpu)."""
    return a @ b


@replaceable
def matmul_add(out, a, b):
    """``out += a @ b``, where ``out`` holds the (M, N) product's elements in row-major order (any shape: a
    conv weight gradient is (O, C, KH, KW)). On a GPU the GEMM writes the sum straight into ``out``."""
    out += matmul(a, b).reshape(out.shape)


@replaceable
def add_row_sums(out, a):
    """``out += a.sum(axis=1)``: the sum of each row of ``a`` (M, L) added into ``out`` (M,), as a bias gradient
    is (the sum of dL/dy over a channel's positions). On a GPU, one GEMM with a column of ones writes it."""
    out += a.sum(axis=1)


@replaceable
def graphed(step, params):
    """``step`` itself; on CuPy a faster equal replacement, minidae.speed.cuda.GraphedStep, captures it as a
    CUDA graph after its first call and replays that graph for every later batch of the same shape.
    ``params`` (a list) are the parameters ``step`` updates."""
    return step


def asarray(a, dtype=None):
    """``a`` as an array of the active backend."""
    return xp.asarray(a, dtype=dtype)
