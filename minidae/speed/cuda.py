"""The CuPy speed devices: faster versions of core functions, each with the core function's results.

The layers are written once, in NumPy style, and run unchanged on CuPy. On a GPU, though, an
eager step of that code is some 300 small kernel launches at 10-20 us of Python and driver
time each, while the GPU's own work is a fraction of a millisecond. The replacements here remove
that overhead; tests/test_cuda.py checks each against the core function it stands in for:

``im2col`` / ``col2im``
    one kernel each (cuda_kernels.cu) instead of a fill, a padded copy and one strided copy or add
    per kernel tap; col2im is a gather, so it needs no atomics and sums in the core's order.
``matmul``, ``matmul_add``
    ``a @ b`` (and ``out += a @ b`` straight into ``out``, for gradients) through a cuBLAS handle of
    minidae's own, called with ctypes. CuPy refuses every cuBLAS call while a stream is being captured
    (its ``setStream`` raises NotImplementedError; cupy issue #6290); with our own handle, bound to the
    capturing stream and given a fixed workspace, the GEMMs of a step can be captured into a CUDA graph.
``adam_step``, ``zero_grads``
    optim.adam as one kernel over flat parameter, gradient and moment buffers (the parameters'
    ``.data``, ``.grad`` and the optimiser's state become views into them, so the layers write their
    gradients straight into them); the step count and the hyperparameters live in device memory.
``relu``, ``sigmoid``, ``sigmoid_backward``, ``mse_loss``, ``mse_loss_backward``
    the formulas of minidae.nn.functional, each as one kernel instead of one per operation.
``add_row_sums``
    a bias gradient (the sum of each row of dY) as one GEMM against a column of ones, written into the gradient.
``graphed`` (``GraphedStep``)
    a training step (forward, backward, optimiser) captured once as a CUDA graph and replayed
    for every batch: one launch instead of hundreds.

They are registered for CuPy when this module is imported, and bound in place of the core functions whenever
CuPy becomes the backend (minidae.speed.bind); ``speed.disabled(name)`` switches one off. Where one cannot
handle its arguments (a dtype without a kernel), it calls the core function itself.
"""
import ctypes
import os
import sys

import cupy
import numpy

from ..backend import CORE
from ..optim import optimizers
from . import is_disabled, register
from .flat import FlatAdam, zero_grads_for

__all__ = ["im2col", "col2im", "matmul", "matmul_add", "add_row_sums", "adam_step", "zero_grads", "graphed", "GraphedStep",
           "before_each_replay", "graph_kernel_count", "relu", "sigmoid", "sigmoid_backward", "mse_loss", "mse_loss_backward"]

_BLOCK = 256
_MAX_BLOCKS = 65535


def _module():
    """The compiled kernels of cuda_kernels.cu (compiled once per process and device, then cached by CuPy)."""
    global _MODULE
    if _MODULE is None:
        with open(os.path.join(os.path.dirname(__file__), "cuda_kernels.cu")) as f:
            _MODULE = cupy.RawModule(code=f.read(), options=("--std=c++14",))
    return _MODULE


_MODULE = None
_CTYPE = {numpy.dtype(numpy.float32): "float", numpy.dtype(numpy.float64): "double"}


def _launch(name, dtype, total, args):
    blocks = max(1, min(_MAX_BLOCKS, (total + _BLOCK - 1) // _BLOCK))
    _module().get_function(f"{name}_{_CTYPE[numpy.dtype(dtype)]}")((blocks,), (_BLOCK,), args)


def supports(dtype):
    """True for the dtypes the kernels are compiled for (float32, float64)."""
    return numpy.dtype(dtype) in _CTYPE


# -------------------------------------------------------------------------------------------------
# im2col / col2im: the same contract as minidae.nn.im2col's, one kernel each.

def im2col(x, kernel, stride, padding, out_hw, dilation=(1, 1), fill=0):
    """Windows of ``x`` (N, C, H, W), any strides, as columns (C*KH*KW, OH*OW*N); ``fill`` outside."""
    n, c, h, w = x.shape
    (kh, kw), (sh, sw), (ph, pw), (dh, dw), (oh, ow) = kernel, stride, padding, dilation, out_hw
    cols = cupy.empty((c * kh * kw, oh * ow * n), dtype=x.dtype)
    if cols.size:
        i32, i64 = numpy.int32, numpy.int64
        strides = [i64(s // x.itemsize) for s in x.strides]
        _launch("im2col", x.dtype, cols.size, (x, cols, i32(n), i32(c), i32(h), i32(w), *strides, i32(kh), i32(kw),
                                                i32(sh), i32(sw), i32(ph), i32(pw), i32(dh), i32(dw), i32(oh),
                                                i32(ow), x.dtype.type(fill), i64(cols.size)))
    return cols


def col2im(cols, x_shape, kernel, stride, padding, out_hw, dilation=(1, 1)):
    """Adjoint of :func:`im2col`: (C*KH*KW, OH*OW*N) -> (N, C, H, W) backed by (C, H, W, N) memory."""
    n, c, h, w = x_shape
    (kh, kw), (sh, sw), (ph, pw), (dh, dw), (oh, ow) = kernel, stride, padding, dilation, out_hw
    cols = cupy.ascontiguousarray(cols)
    dx = cupy.empty((c, h, w, n), dtype=cols.dtype)
    if dx.size:
        if not cols.size:
            dx.fill(0)
        else:
            i32 = numpy.int32
            _launch("col2im", cols.dtype, dx.size, (cols, dx, i32(n), i32(c), i32(h), i32(w), i32(kh), i32(kw),
                                                    i32(sh), i32(sw), i32(ph), i32(pw), i32(dh), i32(dw), i32(oh),
                                                    i32(ow), numpy.int64(dx.size)))
    return dx.transpose(3, 0, 1, 2)


# -------------------------------------------------------------------------------------------------
# GEMM through a cuBLAS handle of our own (capturable; see the module docstring).

class _Cublas:
    """libcublas (the copy CuPy loaded) reached through ctypes, with one handle per device."""

    WORKSPACE_BYTES = 32 << 20  # NVIDIA's recommendation for Hopper; fixed so capture allocates nothing
    OP_N, OP_T = 0, 1

    def __init__(self):
        cupy.cuda.device.get_cublas_handle()  # makes CuPy load libcublas, so we bind the very same library
        self.lib = ctypes.CDLL(self._library_path())
        self.handles = {}  # device id -> [handle, workspace array, stream the handle is bound to]
        for name in ("cublasSgemm_v2", "cublasDgemm_v2"):
            getattr(self.lib, name).argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_int, ctypes.c_int,
                                                ctypes.c_int, ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p,
                                                ctypes.c_int, ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p,
                                                ctypes.c_void_p, ctypes.c_int]
        self.lib.cublasSetStream_v2.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
        self.lib.cublasSetWorkspace_v2.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t]
        self.one = {numpy.float32: ctypes.c_float(1.0), numpy.float64: ctypes.c_double(1.0)}
        self.zero = {numpy.float32: ctypes.c_float(0.0), numpy.float64: ctypes.c_double(0.0)}

    @staticmethod
    def _library_path():
        if sys.platform.startswith("linux"):
            with open("/proc/self/maps") as maps:
                for line in maps:
                    path = line.split()[-1]
                    if os.path.basename(path).startswith("libcublas.so"):
                        return path
        raise OSError("libcublas is not loaded in this process")

    def _check(self, status, what):
        if status != 0:
            raise RuntimeError(f"minidae.speed.cuda: {what} failed with cuBLAS status {status}")

    def handle(self):
        """This device's handle, bound to the current stream (re-bound when the stream changes)."""
        device = cupy.cuda.Device().id
        entry = self.handles.get(device)
        if entry is None:
            handle = ctypes.c_void_p()
            self._check(self.lib.cublasCreate_v2(ctypes.byref(handle)), "cublasCreate")
            workspace = cupy.empty(self.WORKSPACE_BYTES, dtype=numpy.uint8)
            entry = self.handles[device] = [handle, workspace, None]
        stream = cupy.cuda.get_current_stream().ptr
        if entry[2] != stream:
            # cublasSetStream resets the workspace to cuBLAS's own pool, so set ours after it.
            self._check(self.lib.cublasSetStream_v2(entry[0], ctypes.c_void_p(stream)), "cublasSetStream")
            self._check(self.lib.cublasSetWorkspace_v2(entry[0], ctypes.c_void_p(entry[1].data.ptr),
                                                       entry[1].nbytes), "cublasSetWorkspace")
            entry[2] = stream
        return entry[0]

    def gemm(self, a, b, c=None):
        """Row-major C (M, N) = a (M, K) @ b (K, N), or C += a @ b into a given contiguous ``c``;
        computed as C^T = b^T a^T in cuBLAS's column-major terms."""
        (m, k), n = a.shape, b.shape[1]
        dtype = a.dtype.type
        accumulate = c is not None
        if not accumulate:
            c = cupy.empty((m, n), dtype=a.dtype)
        if m == 0 or n == 0 or (k == 0 and accumulate):
            return c
        if k == 0:
            c.fill(0)
            return c
        a, lda, op_a = _gemm_operand(a)
        b, ldb, op_b = _gemm_operand(b)
        gemm = self.lib.cublasSgemm_v2 if dtype is numpy.float32 else self.lib.cublasDgemm_v2
        beta = (self.one if accumulate else self.zero)[dtype]
        status = gemm(self.handle(), op_b, op_a, n, m, k, ctypes.addressof(self.one[dtype]), b.data.ptr, ldb,
                      a.data.ptr, lda, ctypes.addressof(beta), c.data.ptr, n)
        self._check(status, "GEMM")
        return c


def _gemm_operand(a):
    """(array, leading dimension, cuBLAS op) for a 2-D array cuBLAS can read in place, copying otherwise.

    A row-major (rows, cols) array read column-major is its transpose, so it takes op N in the
    C^T = b^T a^T product; a column-major one (a transposed view) takes op T.
    """
    rows, cols = a.shape
    s0, s1 = (s // a.itemsize for s in a.strides)
    if (cols <= 1 or s1 == 1) and (rows <= 1 or s0 >= cols) and s0 >= 0:
        return a, (s0 if rows > 1 else max(cols, 1)), _Cublas.OP_N
    if (rows <= 1 or s0 == 1) and (cols <= 1 or s1 >= rows) and s1 >= 0:
        return a, (s1 if cols > 1 else max(rows, 1)), _Cublas.OP_T
    a = cupy.ascontiguousarray(a)
    return a, max(cols, 1), _Cublas.OP_N


_CUBLAS = None


def _cublas():
    global _CUBLAS
    if _CUBLAS is None:
        _CUBLAS = _Cublas()
    return _CUBLAS


def matmul(a, b):
    """``a @ b`` for 2-D float32/float64 CuPy arrays, on minidae's own cuBLAS handle (capturable); for other
    arrays the core ``a @ b``."""
    if a.ndim != 2 or b.ndim != 2 or a.dtype != b.dtype or not supports(a.dtype):
        return a @ b
    if a.shape[1] != b.shape[0]:
        raise ValueError(f"matmul: shapes {tuple(a.shape)} and {tuple(b.shape)} do not fit (inner sizes "
                         f"{a.shape[1]} and {b.shape[0]} differ)")
    return _cublas().gemm(a, b)


_ONES = {}  # (length, dtype, device) -> a column of ones, made once (outside a capture: its first use is eager)


def add_row_sums(out, a):
    """``out += a.sum(axis=1)`` as one GEMM, a @ ones (L, 1), written into ``out`` with beta = 1: one cuBLAS
    kernel where a reduction and an add would be two. Declined where matmul_add would be."""
    key = (a.shape[1], a.dtype.str, cupy.cuda.Device().id)
    if key not in _ONES:
        _ONES[key] = cupy.ones((a.shape[1], 1), dtype=a.dtype)
    return matmul_add(out.reshape(-1, 1) if out.flags.c_contiguous else out, a, _ONES[key])


def matmul_add(out, a, b):
    """``out += a @ b`` with the product written straight into ``out`` (cuBLAS's beta = 1: no
    temporary, no separate add). ``out`` may have any shape holding the (M, N) product in
    row-major order. Where that is not possible (``out`` not contiguous, mixed dtypes) the core
    function adds a product the ordinary way."""
    if (a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[0] or not out.flags.c_contiguous
            or out.size != a.shape[0] * b.shape[1] or not _same_float(out, a, b)):
        return CORE["matmul_add"](out, a, b)
    _cublas().gemm(a, b, out.reshape(a.shape[0], b.shape[1]))
    return None


# -------------------------------------------------------------------------------------------------
# Adam over flat buffers (minidae.speed.flat.FlatAdam), one kernel per parameter group.

def _hyperparameters(optimizer, flat):
    """Write each group's lr, betas, eps, weight decay and AdamW flag into the device array the kernel reads,
    where they changed since the last write (run before every replay of a captured step)."""
    values = [(g["lr"], *g["betas"], g["eps"], g["weight_decay"], float(g["decoupled_weight_decay"]))
              for g, *_ in flat.groups]
    if values != getattr(flat, "host_hyper", None):
        if cupy.cuda.get_current_stream().is_capturing():
            raise RuntimeError("Adam: the hyperparameters changed while a CUDA graph was being captured")
        flat.hyper.set(numpy.array(values, dtype=numpy.float64))
        flat.host_hyper = values


def adam_step(optimizer):
    """optim.adam_step as one kernel per parameter group over flat device buffers (FlatAdam), reading each
    group's step count and hyperparameters from device memory, which a captured CUDA graph thus reads at every
    replay (the hyperparameters are refreshed before each: ``before_each_replay``).

    The core per-parameter loop runs instead where the parameters cannot share flat buffers (mixed dtypes), a
    parameter has no gradient, or a group's parameters have taken different numbers of steps.
    """
    if any(p.grad is None for p in optimizer.params if p.requires_grad):
        return CORE["adam_step"](optimizer)
    flat = optimizer.__dict__.get("_flat")
    if flat is None or flat.xp is not cupy or not FlatAdam._same(FlatAdam.snapshot(optimizer), flat.views):
        if cupy.cuda.get_current_stream().is_capturing():
            raise RuntimeError("Adam: the parameters were re-packed while a CUDA graph was being captured; "
                               "run one step eagerly before capturing")
        flat = FlatAdam.current(optimizer, cupy)
        if flat is None:
            return CORE["adam_step"](optimizer)
        flat.equal_steps = None not in flat.group_steps()  # read once, here; the kernel keeps them together
        flat.hyper = cupy.zeros((len(flat.groups), 6), dtype=numpy.float64)
    if not flat.equal_steps or not supports(flat.arrays["data"].dtype):
        return CORE["adam_step"](optimizer)
    before_each_replay(lambda: _hyperparameters(optimizer, flat))
    a = flat.arrays
    flush = optimizers.flushing() and a["data"].dtype.itemsize <= 4
    for index, (group, start, end, first, last) in enumerate(flat.groups):
        flat.steps[first:last] += 1
        _launch("adam", a["data"].dtype, end - start, (a["data"][start:end], a["grad"][start:end],
                                                       a["exp_avg"][start:end], a["exp_avg_sq"][start:end],
                                                       flat.steps[first:], flat.hyper[index],
                                                       numpy.int64(end - start)))
        if flush:  # optim.flush_tiny at every FLUSH_EVERY-th step, the step read on the device (a graph replays it)
            for key in ("data", "exp_avg", "exp_avg_sq"):
                _flush_tiny(flat.steps[first:first + 1], optimizers.FLUSH_EVERY, optimizers.FLUSH_BELOW,
                            a[key][start:end])
    return None


zero_grads = zero_grads_for(cupy)  # one fill of the flat gradients (minidae.speed.flat)


# -------------------------------------------------------------------------------------------------
# Fused elementwise kernels: minidae.nn.functional's formulas, operation for operation.

_relu = cupy.ElementwiseKernel("T x", "T y, bool positive", "positive = x > (T)0; y = (positive || x != x) ? x : (T)0",
                               "minidae_relu")
_sigmoid = cupy.ElementwiseKernel("T x", "T y", "T e = exp(-fabs(x)); y = (x >= (T)0 ? (T)1 : e) / ((T)1 + e)",
                                  "minidae_sigmoid")
_sigmoid_backward = cupy.ElementwiseKernel("T dy, T y", "T dx", "dx = dy * y * ((T)1 - y)", "minidae_sigmoid_backward")
_flush_tiny = cupy.ElementwiseKernel("raw int64 step, int64 every, float64 below", "T a",
                                     "if (step[0] % every == 0 && fabs((double)a) < below) a = (T)0;",
                                     "minidae_flush_tiny")
_mse = cupy.ElementwiseKernel("T p, T t", "T l, T d", "d = p - t; l = d * d", "minidae_mse")
_mse_backward = cupy.ElementwiseKernel("T d, T s", "T g", "g = d * s", "minidae_mse_backward")


def _same_float(*arrays):
    return len({a.dtype for a in arrays}) == 1 and supports(arrays[0].dtype)


def relu(x):
    """(max(x, 0), [x > 0]) in one kernel."""
    return _relu(x) if supports(x.dtype) else CORE["relu"](x)


def sigmoid(x):
    """The overflow-free sigmoid of minidae.nn.functional in one kernel: (y, saved y)."""
    if not supports(x.dtype):
        return CORE["sigmoid"](x)
    y = _sigmoid(x)
    return y, y


def sigmoid_backward(dy, y):
    """dy * y * (1 - y) in one kernel."""
    return _sigmoid_backward(dy, y) if _same_float(dy, y) else CORE["sigmoid_backward"](dy, y)


def mse_loss(pred, target):
    """((pred - target)^2, pred - target) in one kernel."""
    if not _same_float(pred, target) or pred.shape != target.shape:
        return CORE["mse_loss"](pred, target)
    terms, diff = _mse(pred, target)
    return terms, diff


def mse_loss_backward(dl, diff):
    """diff * (2 dl) in one kernel, for a number ``dl`` (cast to the array's dtype, as NumPy does)."""
    if not isinstance(dl, (int, float)) or not supports(diff.dtype):
        return CORE["mse_loss_backward"](dl, diff)
    return _mse_backward(diff, diff.dtype.type(2 * dl))


# -------------------------------------------------------------------------------------------------
# CUDA graphs.

class GraphedStep:
    """``step(*inputs)`` replayed as a CUDA graph: ``graphed = GraphedStep(step, params); loss = graphed(x, y)``.

    The first call with a new input shape runs ``step`` eagerly (it compiles every kernel, lets
    cuBLAS pick its algorithms and creates the optimiser's state); the second captures it into
    a graph, once, reading its inputs from fixed buffers; every later call copies the inputs
    into those buffers and launches the graph. Each call returns a fresh copy of ``step``'s
    result, left on the device.

    ``step`` must do the same device work at every call (no host reads of device values, no
    branching on data, no new arrays that outlive the call except its result): capture refuses
    host synchronisation, so a step that breaks this fails to capture, and then this class
    prints one notice and runs ``step`` eagerly from then on. Memory that the graph uses comes
    from a private CuPy memory pool that nothing else allocates from, so no later allocation
    can take a buffer the graph still writes. A graph is re-captured when a parameter's
    ``.data`` or ``.grad`` has been replaced since (``params`` are checked at every call).
    """

    def __init__(self, step, params, notice=None):
        self.step, self.params = step, list(params)
        self.notice = notice or (lambda message: print(message, file=sys.stderr, flush=True))
        self.graphs = {}   # input signature -> _Graph
        self.seen = set()  # input signatures that have run eagerly once
        self.failed = None  # why capture failed, once it has
        self.replays = 0

    def _snapshot(self):
        return [(p.data, p.grad) for p in self.params]

    def __call__(self, *inputs):
        if self.failed is not None or is_disabled("graph"):
            return self.step(*inputs)
        key = tuple((a.shape, a.dtype.str) for a in inputs)
        graph = self.graphs.get(key)
        if graph is not None and not all(a is b for now, then in zip(self._snapshot(), graph.params)
                                         for a, b in zip(now, then)):
            # Parameters were replaced: the graph would update stale buffers. Run eagerly once
            # (the optimiser re-packs its flat buffers then), and capture anew at the next call.
            del self.graphs[key]
            self.seen.discard(key)
            graph = None
        if key not in self.seen:
            self.seen.add(key)
            return self.step(*inputs)
        if graph is None:
            try:
                graph = self.graphs[key] = _Graph(self.step, inputs, self._snapshot)
            except Exception as exc:  # anything that cannot be captured: fall back for good
                self.graphs.clear()
                self.failed = f"{type(exc).__name__}: {exc}"
                self.notice(f"minidae: CUDA graph capture failed ({self.failed}); running eagerly")
                return self.step(*inputs)
        self.replays += 1
        return graph.replay(inputs)


_REPLAY_HOOKS = None  # while a step is captured: what it asks to run before each replay (before_each_replay)


def before_each_replay(hook):
    """Run ``hook()`` now and, when a CUDA graph is being captured, before each replay of that graph too: for
    host values a captured step reads, such as an optimiser's learning rate, which a replay (running no
    Python) would otherwise never see change. ``hook`` copies them into the device memory the kernels read."""
    hook()
    if _REPLAY_HOOKS is not None:
        _REPLAY_HOOKS.append(hook)


class _Graph:
    """One captured step: its graph, its input buffers, its result, its private memory pool and the hooks it
    runs before each replay."""

    def __init__(self, step, inputs, snapshot):
        self.pool = cupy.cuda.MemoryPool()
        self.inputs = [cupy.empty_like(a) for a in inputs]
        for buffer, a in zip(self.inputs, inputs):
            buffer[...] = a
        cupy.cuda.Device().synchronize()
        stream = cupy.cuda.Stream(non_blocking=True)
        global _REPLAY_HOOKS
        _REPLAY_HOOKS = self.before_replay = []
        try:
            with cupy.cuda.using_allocator(self.pool.malloc), stream:
                stream.begin_capture()
                try:
                    self.output = step(*self.inputs)
                finally:
                    graph = stream.end_capture()  # raises if the capture was invalidated
        finally:
            _REPLAY_HOOKS = None
        self.graph, self.stream = graph, stream
        self.graph.upload(cupy.cuda.get_current_stream())
        self.params = snapshot()
        self.kernels = graph_kernel_count(graph)

    def replay(self, inputs):
        for hook in self.before_replay:  # host values the step reads, copied to the device memory the graph reads
            hook()
        for buffer, a in zip(self.inputs, inputs):
            cupy.copyto(buffer, a)
        self.graph.launch(cupy.cuda.get_current_stream())
        return None if self.output is None else self.output.copy()


_NODE_TYPES = {0: "kernel", 1: "memcpy", 2: "memset", 3: "host", 4: "child graph", 5: "empty", 6: "event wait",
               7: "event record", 10: "mem alloc", 11: "mem free"}


def graph_kernel_count(graph):
    """{node type: count} of a captured ``cupy.cuda.Graph`` ("kernel", "memset", ...), from the driver API."""
    driver = ctypes.CDLL("libcuda.so.1")
    count = ctypes.c_size_t(0)
    if driver.cuGraphGetNodes(ctypes.c_void_p(graph.graph), None, ctypes.byref(count)) != 0:
        return {}
    nodes = (ctypes.c_void_p * count.value)()
    driver.cuGraphGetNodes(ctypes.c_void_p(graph.graph), nodes, ctypes.byref(count))
    counts = {}
    for node in nodes:
        kind = ctypes.c_int(-1)
        driver.cuGraphNodeGetType(ctypes.c_void_p(node), ctypes.byref(kind))
        name = _NODE_TYPES.get(kind.value, f"type {kind.value}")
        counts[name] = counts.get(name, 0) + 1
    return counts


def graphed(step, params):
    """backend.graphed on CuPy: the step as a :class:`GraphedStep`."""
    return GraphedStep(step, params)


for _name, _function in (("im2col", im2col), ("col2im", col2im), ("matmul", matmul), ("matmul_add", matmul_add),
                         ("add_row_sums", add_row_sums),
                         ("adam_step", adam_step), ("zero_grads", zero_grads), ("relu", relu), ("sigmoid", sigmoid),
                         ("sigmoid_backward", sigmoid_backward), ("mse_loss", mse_loss),
                         ("mse_loss_backward", mse_loss_backward), ("graphed", graphed)):
    register(_name, "cupy", _function)
