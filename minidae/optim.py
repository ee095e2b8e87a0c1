"""Optimisers with torch.optim semantics. They update ``p.data`` in place and only read ``p.grad``.

(Adam on the host first moves every ``p.data`` and ``p.grad`` into views of flat arrays, the same values;
see ``_Packed``. Hold a Parameter, not an array taken from it before training.)"""
import math

import numpy

from . import backend

__all__ = ["Optimizer", "Adam", "SGD"]


class Optimizer:
    """Holds the parameter list, per-parameter state buffers and the step count."""

    state_names = ()

    def __init__(self, params, defaults):
        from .nn.module import Module, Parameter
        name = type(self).__name__
        if isinstance(params, Module):
            raise ValueError(f"{name}: got the module {type(params).__name__} itself; pass its parameters: "
                             f"{name}(model.parameters(), ...)")
        self.params = list(params)
        if any(not isinstance(p, Parameter) for p in self.params):
            raise ValueError(f"{name}: expected Parameters (model.parameters()), got "
                             f"{sorted({type(p).__name__ for p in self.params if not isinstance(p, Parameter)})}")
        if not self.params:
            raise ValueError(f"{type(self).__name__}: got an empty parameter list")
        if len({id(p) for p in self.params}) != len(self.params):
            raise ValueError(f"{name}: a parameter appears more than once in the list; pass each once")
        for key, value in defaults.items():
            if key != "betas" and value < 0:
                raise ValueError(f"{type(self).__name__}: {key} must be non-negative, got {value}")
        self.defaults = defaults
        # The step count lives beside the parameters (on the GPU with CuPy) and is advanced in place,
        # so that a training step captured as a CUDA graph advances it at every replay.
        self._steps = backend.array_module(self.params[0].data).zeros((), dtype=numpy.int64)
        self.state = {name: [None] * len(self.params) for name in self.state_names}

    @property
    def step_count(self):
        """Steps taken so far (read from the device on CuPy)."""
        return int(self._steps)

    def zero_grad(self):
        """Set every parameter's ``.grad`` to zero (one fill of the flat gradient buffer on a GPU)."""
        gpu = backend.accelerated(self.params[0].data, "adam")
        if gpu is not None and gpu.zero_grads(self):  # one fill of a flat gradient buffer (minidae/cuda.py)
            return
        if self._fused_zero_grad():
            return
        for p in self.params:
            p.grad[...] = 0

    def step(self):
        """One update of every parameter from its ``.grad`` (which is read, never modified)."""
        self._steps += 1
        if self._fused_step():
            return
        for index, p in enumerate(self.params):
            grad = p.grad
            if self.defaults["weight_decay"]:
                grad = grad + self.defaults["weight_decay"] * p.data  # a new array: .grad stays as it was
            self._update(index, p, grad)

    def _fused_step(self):
        """Update every parameter at once where the backend has a fused kernel for it; False if not."""
        return False

    def _fused_zero_grad(self):
        """Zero every gradient at once where they share one array; False if not."""
        return False

    def state_dict(self):
        """Flat dict of NumPy arrays: "step" and "<buffer>.<parameter index>" (npz-friendly)."""
        state = {"step": numpy.array(self.step_count)}
        for name, buffers in self.state.items():
            for index, buffer in enumerate(buffers):
                if buffer is not None:
                    state[f"{name}.{index}"] = numpy.array(backend.to_numpy(buffer))
        return state

    def load_state_dict(self, state):
        """Restore what :meth:`state_dict` returned: the step count and every state buffer."""
        self._steps[...] = int(state["step"])
        for name, buffers in self.state.items():
            for index, p in enumerate(self.params):
                key = f"{name}.{index}"
                if key in state and tuple(state[key].shape) != tuple(p.data.shape):
                    raise ValueError(f"{type(self).__name__}.load_state_dict: {key} has shape "
                                     f"{tuple(state[key].shape)}, parameter {index} has {tuple(p.data.shape)}")
                buffers[index] = (backend.array_module(p.data).asarray(backend.to_numpy(state[key]))
                                  if key in state else None)


class Adam(Optimizer):
    """Adam (Kingma & Ba) as torch.optim.Adam (amsgrad=False). At step t = 1, 2, ..., for each parameter p,
    with m = v = 0 before the first step (docs/optim.md derives and explains each line):

        g     = grad + weight_decay * p              (L2 added to the gradient, as torch.optim.Adam; AdamW
                                                      would instead decay p directly, outside m and v)
        m     = b1 m + (1 - b1) g                    (running mean of g)
        v     = b2 v + (1 - b2) g^2                  (running mean of g^2)
        m_hat = m / (1 - b1^t)                       (bias correction: m and v start at 0, so early on they
        v_hat = v / (1 - b2^t)                        underestimate; dividing by 1 - b^t undoes exactly that)
        p     = p - lr * m_hat / (sqrt(v_hat) + eps)

    The code never forms m_hat and v_hat. Since sqrt(v_hat) = sqrt(v) / sqrt(1 - b2^t), the last line is

        p     = p - (m / (sqrt(v) / sqrt(1 - b2^t) + eps)) * (lr / (1 - b1^t))

    (the same number up to rounding, eps in the same place), which is what ``_adam`` computes, one pass
    over the parameter per line, with the two scalar factors computed once per step in double precision:

        m     = m + (1 - b1) (g - m)                 (= b1 m + (1 - b1) g; torch's lerp)
        v     = b2 v + ((1 - b2) g) g
        denom = sqrt(v) / sqrt(1 - b2^t) + eps
        p     = p - (m / denom) * (lr / (1 - b1^t))

    torch.optim.Adam uses the same lines; it matches to rounding, not bit for bit (its CPU kernels fuse
    multiply-adds and multiply m by the step size before dividing), which tests/test_optim.py pins to 1e-12
    over 60 steps. The shared scratch array, the flat arrays of ``_Packed`` and, on a GPU, the flat buffers
    and single kernel of minidae/cuda.py change where the numbers are stored, not the formula.
    """

    state_names = ("exp_avg", "exp_avg_sq")

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0):
        b1, b2 = betas
        if not (0 <= b1 < 1 and 0 <= b2 < 1):
            raise ValueError(f"Adam: betas must lie in [0, 1), got {betas}")
        super().__init__(params, dict(lr=lr, betas=(b1, b2), eps=eps, weight_decay=weight_decay))

    def _fused_step(self):
        # On a GPU: the update below as one kernel over flat buffers, reading t from the device (minidae/cuda.py).
        gpu = backend.accelerated(self.params[0].data, "adam")
        if gpu is not None:
            return gpu.adam_step(self, self._steps)
        packed = _Packed.current(self)
        if packed is None:
            return False
        # On the host: the same lines once over the flat arrays instead of once per parameter.
        grad, data = packed.flat["grad"], packed.flat["data"]
        if self.defaults["weight_decay"]:
            grad = numpy.add(grad, numpy.multiply(data, self.defaults["weight_decay"], out=packed.scratch[1]),
                             out=packed.scratch[1])
        self._adam(data, grad, packed.flat["exp_avg"], packed.flat["exp_avg_sq"], packed.scratch[0])
        return True

    def _fused_zero_grad(self):
        packed = _Packed.current(self, pack=False)
        if packed is not None:  # one fill of the flat gradient array on the host (_Packed)
            packed.flat["grad"].fill(0)
        return packed is not None

    def _update(self, index, p, grad):
        xp = backend.array_module(p.data)
        m, v = self.state["exp_avg"][index], self.state["exp_avg_sq"][index]
        if m is None:
            m = self.state["exp_avg"][index] = xp.zeros_like(p.data)
            v = self.state["exp_avg_sq"][index] = xp.zeros_like(p.data)
        self._adam(p.data, grad, m, v, None)

    def _adam(self, p, grad, m, v, scratch):
        """The update of one array ``p`` (a parameter, or all of them as one flat array) in place."""
        xp = backend.array_module(p)
        lr, (b1, b2), eps = self.defaults["lr"], self.defaults["betas"], self.defaults["eps"]
        t = self.step_count
        # In place through one scratch array: each line is one pass over the parameter.
        scratch = xp.subtract(grad, m, out=scratch)
        scratch *= 1 - b1
        m += scratch
        xp.multiply(grad, 1 - b2, out=scratch)
        scratch *= grad
        v *= b2
        v += scratch
        denom = xp.sqrt(v, out=scratch)
        denom /= math.sqrt(1 - b2 ** t)
        denom += eps
        update = xp.divide(m, denom, out=scratch)
        update *= lr / (1 - b1 ** t)
        p -= update


class _Packed:
    """Adam's flat arrays on the host: a speed device that changes no number.

    Every parameter's ``.data`` and ``.grad`` and its two moments become views into one flat array
    per kind, so that an Adam step is its 15 NumPy passes over four long arrays instead of 15 passes
    per parameter (16 parameters in the spec network: 240 calls become 15, and the weight-decay
    temporaries are reused), and ``zero_grad`` is one fill. Each element sees the same operations in
    the same order, so the numbers are those of the per-parameter loop. Reassigning an array
    (``p.data = ...``, ``Module.to``, ``load_state_dict``, ``Optimizer.load_state_dict``) breaks the
    sharing; ``current`` notices and packs again, copying the values in. So ``p.data`` is a new array
    after the first step (and after each re-pack): read it through the Parameter, not through an
    array kept from before. (CuPy arrays take
    minidae/cuda.py's fused kernel instead, which keeps flat buffers of its own.)
    """

    KEYS = ("data", "grad", "exp_avg", "exp_avg_sq")

    def __init__(self, optimizer):
        params = optimizer.params
        sizes = [p.data.size for p in params]
        offsets = numpy.concatenate([[0], numpy.cumsum(sizes)]).tolist()
        dtype, self.flat = params[0].data.dtype, {}
        for key in self.KEYS:
            flat = self.flat[key] = numpy.zeros(offsets[-1], dtype=dtype)
            for index, p in enumerate(params):
                view = flat[offsets[index]:offsets[index + 1]].reshape(p.data.shape)
                if key in ("data", "grad"):
                    view[...] = getattr(p, key)
                    setattr(p, key, view)
                else:
                    if optimizer.state[key][index] is not None:
                        view[...] = optimizer.state[key][index]
                    optimizer.state[key][index] = view
        self.scratch = [numpy.empty(offsets[-1], dtype=dtype) for _ in range(2)]
        self.views = self._arrays(optimizer)

    @staticmethod
    def _arrays(optimizer):
        return [(p.data, p.grad, m, v) for p, m, v in
                zip(optimizer.params, optimizer.state["exp_avg"], optimizer.state["exp_avg_sq"])]

    @classmethod
    def current(cls, optimizer, pack=True):
        """The optimiser's packing, (re)made if ``pack``; None where its parameters cannot share flat
        arrays (not all NumPy arrays of one floating dtype) or, with ``pack=False``, they do not now."""
        packed = optimizer.__dict__.get("_packed")
        if packed is not None and all(a is b for now, then in zip(cls._arrays(optimizer), packed.views)
                                      for a, b in zip(now, then)):
            return packed
        if not pack:
            return None
        arrays = [a for p in optimizer.params for a in (p.data, p.grad)]
        dtypes = {a.dtype for a in arrays}
        if len(dtypes) != 1 or dtypes.pop().kind != "f" or not all(type(a) is numpy.ndarray for a in arrays):
            return None
        packed = optimizer._packed = cls(optimizer)
        return packed


class SGD(Optimizer):
    """Stochastic gradient descent as torch.optim.SGD. For each parameter p:

        g   = grad + weight_decay * p
        buf = g at the first step, then momentum * buf + (1 - dampening) g
        g   = g + momentum * buf if nesterov else buf          (when momentum != 0)
        p   = p - lr g
    """

    state_names = ("momentum_buffer",)

    def __init__(self, params, lr, momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=False):
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError("SGD: nesterov momentum needs momentum > 0 and dampening = 0")
        super().__init__(params, dict(lr=lr, momentum=momentum, dampening=dampening, weight_decay=weight_decay))
        self.nesterov = nesterov

    def _update(self, index, p, grad):
        momentum, dampening = self.defaults["momentum"], self.defaults["dampening"]
        if momentum:
            buf = self.state["momentum_buffer"][index]
            if buf is None:
                buf = self.state["momentum_buffer"][index] = grad.copy()
            else:
                buf *= momentum
                buf += (1 - dampening) * grad
            grad = grad + momentum * buf if self.nesterov else buf
        p.data -= self.defaults["lr"] * grad
