"""Optimisers with torch.optim semantics. They update ``p.data`` in place from ``p.grad``, which they only read.

The maths of each update is one function of arrays, :func:`adam` and :func:`sgd`, applied parameter by
parameter by :func:`adam_step` and :meth:`SGD.step`. On NumPy and CuPy faster equal versions of
``adam_step`` and ``zero_grads`` run (:mod:`minidae.speed`): they apply the same formula once to flat
arrays that hold every parameter, which is why, after the first step, a parameter's ``.data`` and
``.grad`` are views into such arrays (hold the Parameter, not an array taken from it before training).
"""
import numpy

from . import backend
from .speed import replaceable

__all__ = ["Optimizer", "Adam", "SGD", "adam", "adam_step", "sgd", "zero_grads"]


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
        """Set every parameter's ``.grad`` to zero (backwards add to it)."""
        zero_grads(self)

    def step(self):
        """One update of every parameter from its ``.grad`` (which is read, never modified)."""
        raise NotImplementedError(f"{type(self).__name__} does not define step")

    def state_buffers(self, index):
        """The state arrays of parameter ``index`` (``state_names`` order), made as zeros the first time."""
        p, xp = self.params[index], backend.array_module(self.params[index].data)
        for name in self.state_names:
            if self.state[name][index] is None:
                self.state[name][index] = xp.zeros_like(p.data)
        return [self.state[name][index] for name in self.state_names]

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


@replaceable(on=lambda optimizer: optimizer.params[0].data)
def zero_grads(optimizer):
    """Every parameter's ``.grad`` set to zero, in place."""
    for p in optimizer.params:
        p.grad[...] = 0


def adam(param, grad, m, v, t, lr, betas, eps, weight_decay):
    """One Adam update of ``param`` at step t = 1, 2, ..., in place, with its moments ``m`` and ``v``."""
    b1, b2 = betas
    g = grad + weight_decay * param if weight_decay else grad
    m[...] = b1 * m + (1 - b1) * g
    v[...] = b2 * v + (1 - b2) * g * g
    m_hat = m / (1 - b1 ** t)
    v_hat = v / (1 - b2 ** t)
    param -= lr * m_hat / (backend.array_module(param).sqrt(v_hat) + eps)


@replaceable(on=lambda optimizer: optimizer.params[0].data)
def adam_step(optimizer):
    """:func:`adam` for every parameter of an :class:`Adam`, with its hyperparameters and step count."""
    d, t = optimizer.defaults, optimizer.step_count
    for index, p in enumerate(optimizer.params):
        m, v = optimizer.state_buffers(index)
        adam(p.data, p.grad, m, v, t, d["lr"], d["betas"], d["eps"], d["weight_decay"])


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

    :func:`adam` is these lines as written. torch.optim.Adam computes the same quantities in another order
    (``m.lerp_(g, 1 - b1)``, ``sqrt(v) / sqrt(1 - b2^t)``), so the two agree to rounding, not bit for bit:
    tests/test_optim.py pins them to 1e-12 over 60 steps in float64.
    """

    state_names = ("exp_avg", "exp_avg_sq")

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0):
        b1, b2 = betas
        if not (0 <= b1 < 1 and 0 <= b2 < 1):
            raise ValueError(f"Adam: betas must lie in [0, 1), got {betas}")
        super().__init__(params, dict(lr=lr, betas=(b1, b2), eps=eps, weight_decay=weight_decay))

    def step(self):
        """One Adam update of every parameter (:func:`adam_step`)."""
        self._steps += 1
        adam_step(self)


def sgd(param, grad, buf, first, lr, momentum, dampening, weight_decay, nesterov):
    """One SGD update of ``param`` in place; ``buf`` is its momentum buffer (unused without momentum), and
    ``first`` says whether this is the first step (the buffer then starts as g)."""
    g = grad + weight_decay * param if weight_decay else grad
    if momentum:
        buf[...] = g if first else momentum * buf + (1 - dampening) * g
        g = g + momentum * buf if nesterov else buf
    param -= lr * g


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

    def step(self):
        """One SGD update of every parameter (:func:`sgd`)."""
        self._steps += 1
        d = self.defaults
        for index, p in enumerate(self.params):
            first = self.state["momentum_buffer"][index] is None
            buf = self.state_buffers(index)[0] if d["momentum"] else None
            sgd(p.data, p.grad, buf, first, d["lr"], d["momentum"], d["dampening"], d["weight_decay"], self.nesterov)
