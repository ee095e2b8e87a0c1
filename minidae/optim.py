"""Optimisers with torch.optim semantics. They update ``p.data`` in place and only read ``p.grad``."""
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
        gpu = backend.accelerated(self.params[0].data, "adam")
        if gpu is not None and gpu.zero_grads(self):  # one fill of a flat gradient buffer (minidae/cuda.py)
            return
        for p in self.params:
            p.grad[...] = 0

    def step(self):
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

    def state_dict(self):
        """Flat dict of NumPy arrays: "step" and "<buffer>.<parameter index>" (npz-friendly)."""
        state = {"step": numpy.array(self.step_count)}
        for name, buffers in self.state.items():
            for index, buffer in enumerate(buffers):
                if buffer is not None:
                    state[f"{name}.{index}"] = numpy.array(backend.to_numpy(buffer))
        return state

    def load_state_dict(self, state):
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
    """Adam (Kingma & Ba) exactly as torch.optim.Adam (amsgrad=False). At step t, for each parameter p:

        g   = grad + weight_decay * p                (L2 added to the gradient, not decoupled)
        m   = m + (1 - b1) (g - m)                   (= b1 m + (1 - b1) g, torch's lerp)
        v   = b2 v + (1 - b2) g^2
        p   = p - lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)
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
        return gpu is not None and gpu.adam_step(self, self._steps)

    def _update(self, index, p, grad):
        xp = backend.array_module(p.data)
        lr, (b1, b2), eps = self.defaults["lr"], self.defaults["betas"], self.defaults["eps"]
        m, v = self.state["exp_avg"][index], self.state["exp_avg_sq"][index]
        if m is None:
            m = self.state["exp_avg"][index] = xp.zeros_like(p.data)
            v = self.state["exp_avg_sq"][index] = xp.zeros_like(p.data)
        t = self.step_count
        # In place through one scratch array: each line is one pass over the parameter.
        scratch = xp.subtract(grad, m)
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
        p.data -= update


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
