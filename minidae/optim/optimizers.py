"""Optimisers with torch.optim semantics. They update ``p.data`` in place from ``p.grad``, which they only read.

The maths of each update is one function of arrays, :func:`adam` and :func:`sgd`, applied parameter by
parameter by :func:`adam_step` and :meth:`SGD.step`. An optimiser holds *parameter groups*, as torch.optim:
``param_groups`` is a list of dicts, each with its "params" and its hyperparameters ("lr", ...), readable and
writable between steps (a manual schedule sets ``group["lr"]``; the schedulers of
:mod:`minidae.optim.lr_scheduler` do the same). A parameter with ``requires_grad = False`` is frozen: it is not
updated, weight decay included, and so is a parameter without a gradient (``p.grad is None``: no backward
reached it since ``zero_grad()``), as in torch.optim. ``state[p]`` holds a parameter's own state ("step", and Adam's moments or SGD's
momentum buffer), made at its first update.

On NumPy and CuPy faster equal versions of ``adam_step`` and ``zero_grads`` run (:mod:`minidae.speed`): they
apply the same formula once to flat arrays that hold every trainable parameter, which is why, after the first
step, a parameter's ``.data`` and ``.grad`` are views into such arrays (hold the Parameter, not an array taken
from it before training).
"""
import json

import numpy

from .. import backend
from ..backend import replaceable
from ..nn.arguments import is_real

__all__ = ["Optimizer", "Adam", "AdamW", "SGD", "adam", "adam_step", "sgd", "zero_grads", "flat_state_dict",
           "nested_state_dict", "flush_tiny", "set_flush_denormal", "FLUSH_BELOW"]

FLUSH_BELOW = 1e-30  # float32 (and smaller) values an optimiser writes below this in magnitude are set to zero,
FLUSH_EVERY = 10     # at every 10th step of a parameter
_FLUSH = [True]


def set_flush_denormal(enabled=True):
    """Whether minidae's optimisers flush tiny values to zero after every step (on by default); returns the previous
    setting. PyTorch's ``torch.set_flush_denormal`` sets the CPU's flush-to-zero modes instead; minidae cannot
    (NumPy has no switch for them, and OpenBLAS's threads keep their own), so it flushes the arrays it writes:
    at every ``FLUSH_EVERY``-th (10th) step of a parameter, the values of magnitude below ``FLUSH_BELOW`` (1e-30)
    in it and in its optimiser state (Adam's moments, SGD's momentum) become 0, where they are float32 or
    float16. Such a value changes no sum it takes part in (its ratio to any weight that matters is far below
    float32's precision), but a weight or moment in float32's subnormal range (below 1.2e-38), where L2 weight
    decay drives the weights of dead units, makes every multiplication with it take a slow path on Intel CPUs:
    long runs of the spec recipe slowed about 3x (docs/performance.md). Values that decay from 1e-30 take tens of
    steps to reach that range, so every 10th step keeps it empty at a tenth of the cost of flushing every step
    (0.75 ms for the spec network's 572,097 parameters and two moments). float64 arrays are never touched."""
    previous, _FLUSH[0] = _FLUSH[0], bool(enabled)
    return previous


def flushing():
    """True while the optimisers flush tiny values (:func:`set_flush_denormal`); the speed devices ask this."""
    return _FLUSH[0]


def flush_tiny(arrays):
    """Every element of magnitude below ``FLUSH_BELOW`` set to zero, in place, in each float32 or float16 array of
    ``arrays`` (float64 ones are left as they are)."""
    for a in arrays:
        if a.dtype.kind == "f" and a.dtype.itemsize <= 4:
            xp = backend.array_module(a)
            xp.copyto(a, 0, where=xp.abs(a) < FLUSH_BELOW)

_IGNORED = ("foreach", "fused", "capturable", "differentiable")  # PyTorch's implementation choices: no effect here


class Optimizer:
    """Parameter groups (``param_groups``), per-parameter state (``state[p]``) and the checks every optimiser
    shares. ``params`` is an iterable of Parameters, or of dicts each with "params" and hyperparameters that
    override ``defaults`` for that group (as torch.optim)."""

    def __init__(self, params, defaults):
        from ..nn.module import Module
        name = type(self).__name__
        if isinstance(params, Module):
            raise TypeError(f"{name}: got the module {type(params).__name__} itself; pass its parameters: "
                            f"{name}(model.parameters(), ...)")
        if isinstance(params, (set, frozenset)):
            raise TypeError(f"{name}: the parameters must be an ordered collection (a list), not a set")
        self.defaults = dict(defaults)
        self._check_hyperparameters(self.defaults, "")
        self.param_groups = []
        self.state = {}
        groups = list(params)
        if not groups:
            raise ValueError(f"{name}: got an empty parameter list")
        for group in (groups if isinstance(groups[0], dict) else [{"params": groups}]):
            self.add_param_group(group)

    def add_param_group(self, group):
        """Add a group: a dict with "params" and, optionally, hyperparameters (the defaults fill the rest)."""
        from ..nn.module import Parameter
        name = type(self).__name__
        if not isinstance(group, dict) or "params" not in group:
            raise TypeError(f"{name}: a parameter group must be a dict with 'params', got {type(group).__name__}")
        params = group["params"]
        params = [params] if isinstance(params, Parameter) else list(params)
        wrong = sorted({type(p).__name__ for p in params if not isinstance(p, Parameter)})
        if wrong:
            raise TypeError(f"{name}: expected Parameters (model.parameters()), got {wrong}")
        if len({id(p) for p in params}) != len(params):
            raise ValueError(f"{name}: a parameter appears more than once in a group; pass each once")
        taken = {id(p) for g in self.param_groups for p in g["params"]}
        if any(id(p) in taken for p in params):
            raise ValueError(f"{name}: some parameters appear in more than one parameter group")
        unknown = set(group) - set(self.defaults) - {"params"}
        if unknown:
            raise TypeError(f"{name}: unknown hyperparameters {sorted(unknown)} in a parameter group (known: "
                            f"{', '.join(sorted(self.defaults))})")
        full = {**self.defaults, **{k: v for k, v in group.items() if k != "params"}, "params": params}
        self._check_hyperparameters(full, f" in parameter group {len(self.param_groups)}")
        self.param_groups.append(full)

    def _check_hyperparameters(self, group, where):
        name = type(self).__name__
        for key in ("lr", "eps", "weight_decay", "momentum", "dampening"):
            if key in group and (not is_real(group[key]) or not group[key] >= 0):
                raise ValueError(f"{name}: {key} must be a non-negative number{where}, got {group[key]!r}"
                                 + (f" (a {type(group[key]).__name__})" if not is_real(group[key]) else ""))

    @property
    def params(self):
        """Every parameter of every group, in order."""
        return [p for group in self.param_groups for p in group["params"]]

    @property
    def step_count(self):
        """The most steps any parameter has taken (read from the device on CuPy)."""
        steps = [int(s["step"]) for s in self.state.values() if "step" in s]
        return max(steps, default=0)

    def state_of(self, p):
        """``state[p]``, made the first time: "step" (a 0-d int64 array beside p) and every buffer of
        ``buffer_names`` (zeros like p)."""
        if p not in self.state:
            xp = backend.array_module(p.data)
            self.state[p] = {"step": xp.zeros((), dtype=numpy.int64),
                             **{key: xp.zeros_like(p.data) for key in self.buffer_names}}
        return self.state[p]

    def updates(self):
        """(group, p, state) for each trainable parameter that has a gradient, in order, with its step count raised
        by one: the parameters a step updates (one without a gradient is skipped: no step, no decay)."""
        for group in self.param_groups:
            for p in group["params"]:
                if p.requires_grad and p.grad is not None:
                    state = self.state_of(p)
                    state["step"] += 1
                    yield group, p, state

    buffer_names = ()

    def zero_grad(self, set_to_none=True):
        """Leave every parameter without a gradient (None, as PyTorch's default: a backward gives each one it
        reaches a new one, and :meth:`step` skips the others), or with ``set_to_none=False`` zero every gradient
        there is."""
        zero_grads(self, set_to_none)

    def step(self):
        """One update of every trainable parameter from its ``.grad`` (which is read, never modified)."""
        raise NotImplementedError(f"{type(self).__name__} does not define step")

    def state_dict(self):
        """PyTorch's layout: {"state": {index: {"step": ..., buffer: array}}, "param_groups": [{hyperparameters,
        "params": [indices]}]}, with NumPy copies of the arrays; indices number the parameters of every group in
        order."""
        index = {id(p): i for i, p in enumerate(self.params)}
        state = {index[id(p)]: {key: numpy.array(backend.to_numpy(value)) for key, value in s.items()}
                 for p, s in self.state.items() if id(p) in index}
        groups = [{**{k: v for k, v in g.items() if k != "params"}, "params": [index[id(p)] for p in g["params"]]}
                  for g in self.param_groups]
        return {"state": dict(sorted(state.items())), "param_groups": groups}

    def load_state_dict(self, state_dict):
        """Restore what :meth:`state_dict` returned (or PyTorch's optimiser state dict): the hyperparameters of
        every group (so a loaded state brings its lr back) and every parameter's state. The flat layout of
        minidae's older checkpoints ("step", "exp_avg.0", ...) is read too."""
        name = type(self).__name__
        if "state" not in state_dict and "step" in state_dict:
            state_dict = _from_flat_layout(state_dict, len(self.params))
        elif "state" not in state_dict or "param_groups" not in state_dict:
            raise ValueError(f"{name}.load_state_dict: no optimiser state here (neither 'state' and 'param_groups', "
                             f"as state_dict() gives, nor the older 'step'); got keys {sorted(state_dict)[:6]}")
        saved_groups = state_dict.get("param_groups")
        if saved_groups is not None:
            if len(saved_groups) != len(self.param_groups):
                raise ValueError(f"{name}.load_state_dict: the state has {len(saved_groups)} parameter groups, the "
                                 f"optimiser {len(self.param_groups)}")
            for number, (group, saved) in enumerate(zip(self.param_groups, saved_groups)):
                if len(saved["params"]) != len(group["params"]):
                    raise ValueError(f"{name}.load_state_dict: parameter group {number} has {len(saved['params'])} "
                                     f"parameters in the state, {len(group['params'])} in the optimiser")
        params, restored = self.params, {}
        for key, entry in state_dict.get("state", {}).items():
            if not 0 <= int(key) < len(params):
                raise ValueError(f"{name}.load_state_dict: state for parameter {key}, the optimiser has "
                                 f"{len(params)}")
            p = params[int(key)]
            xp = backend.array_module(p.data)
            restored[p] = {}
            for buffer, value in entry.items():
                if value is None:  # an older PyTorch's momentum_buffer without momentum
                    continue
                value = numpy.asarray(value.detach().cpu().numpy() if hasattr(value, "detach") else
                                      backend.to_numpy(value))
                if buffer == "step":
                    restored[p]["step"] = xp.asarray(numpy.int64(value.item()))
                    continue
                if value.shape != tuple(p.data.shape):
                    raise ValueError(f"{name}.load_state_dict: {buffer} of parameter {key} has shape {value.shape}, "
                                     f"the parameter {tuple(p.data.shape)}")
                restored[p][buffer] = xp.asarray(value.astype(p.data.dtype))
        for group, saved in zip(self.param_groups, saved_groups or []):  # a scheduler's initial_lr too, as PyTorch
            group.update({k: (tuple(v) if isinstance(v, list) else v) for k, v in saved.items()
                          if k != "params" and (k in self.defaults or k == "initial_lr")})
        self.state = restored

    def __getstate__(self):
        """A copy (copy.deepcopy, pickle) leaves out the flat arrays of a speed device (packed anew when needed)."""
        return {key: value for key, value in self.__dict__.items() if key != "_flat"}

    def __repr__(self):
        lines = [f"{type(self).__name__} ("]
        for number, group in enumerate(getattr(self, "param_groups", [])):
            lines.append(f"Parameter Group {number}")
            lines += [f"    {key}: {value}" for key, value in sorted(group.items()) if key != "params"]
        return "\n".join(lines + [")"])


def _from_flat_layout(flat, count):
    """minidae's older optimiser state ("step" for all, "<buffer>.<index>") in PyTorch's layout."""
    state = {}
    for key, value in flat.items():
        buffer, _, index = key.rpartition(".")
        if buffer and index.isdigit() and int(index) < count:
            state.setdefault(int(index), {"step": flat["step"]})[buffer] = value
    return {"state": state}


def flat_state_dict(state_dict):
    """An optimiser's state dict as flat {name: NumPy array}, for an .npz file: "state.<index>.<buffer>" for the
    arrays and "param_groups" for the hyperparameters (JSON text). :func:`nested_state_dict` undoes it."""
    flat = {f"state.{index}.{key}": numpy.asarray(value) for index, entry in state_dict["state"].items()
            for key, value in entry.items()}
    flat["param_groups"] = numpy.array(json.dumps(state_dict["param_groups"]))
    return flat


def nested_state_dict(flat):
    """Undo :func:`flat_state_dict` (and leave the flat layout of minidae's older checkpoints, "step" and
    "exp_avg.0", as it is: ``load_state_dict`` reads it)."""
    if "param_groups" not in flat:
        return dict(flat)
    state = {}
    for key, value in flat.items():
        if key.startswith("state."):
            _, index, buffer = key.split(".", 2)
            state.setdefault(int(index), {})[buffer] = value
    return {"state": state, "param_groups": json.loads(str(flat["param_groups"]))}


@replaceable
def zero_grads(optimizer, set_to_none=True):
    """Every parameter left without a gradient (None), or with ``set_to_none=False`` its gradient zeroed (where it
    has one, as PyTorch)."""
    for p in optimizer.params:
        p.zero_grad(set_to_none)


def adam(param, grad, m, v, t, lr, betas, eps, weight_decay, decoupled=False):
    """One Adam update of ``param`` at step t = 1, 2, ..., in place, with its moments ``m`` and ``v``
    (AdamW's decay of the parameter itself when ``decoupled``)."""
    b1, b2 = betas
    if weight_decay and decoupled:
        param *= 1 - lr * weight_decay
    g = grad + weight_decay * param if weight_decay and not decoupled else grad
    m[...] = b1 * m + (1 - b1) * g
    v[...] = b2 * v + (1 - b2) * g * g
    m_hat = m / (1 - b1 ** t)
    v_hat = v / (1 - b2 ** t)
    param -= lr * m_hat / (backend.array_module(param).sqrt(v_hat) + eps)


@replaceable
def adam_step(optimizer):
    """:func:`adam` for every trainable parameter of an :class:`Adam` that has a gradient, with its group's
    hyperparameters and its own step count (a parameter without a gradient is skipped: no step, no decay); then,
    unless switched off (:func:`set_flush_denormal`), at every 10th step of a parameter the tiny values of what it
    wrote flushed (:func:`flush_tiny`)."""
    written = []
    for group, p, state in optimizer.updates():
        adam(p.data, p.grad, state["exp_avg"], state["exp_avg_sq"], int(state["step"]), group["lr"],
             group["betas"], group["eps"], group["weight_decay"], group["decoupled_weight_decay"])
        if int(state["step"]) % FLUSH_EVERY == 0:
            written += [p.data, state["exp_avg"], state["exp_avg_sq"]]
    if _FLUSH[0]:
        flush_tiny(written)


class Adam(Optimizer):
    """Adam (Kingma & Ba) as torch.optim.Adam (amsgrad=False). At step t = 1, 2, ..., for each parameter p,
    with m = v = 0 before the first step (docs/optim.md derives and explains each line):

        g     = grad + weight_decay * p              (L2 added to the gradient, as torch.optim.Adam; with
                                                      decoupled_weight_decay, AdamW, p decays directly instead)
        m     = b1 m + (1 - b1) g                    (running mean of g)
        v     = b2 v + (1 - b2) g^2                  (running mean of g^2)
        m_hat = m / (1 - b1^t)                       (bias correction: m and v start at 0, so early on they
        v_hat = v / (1 - b2^t)                        underestimate; dividing by 1 - b^t undoes exactly that)
        p     = p - lr * m_hat / (sqrt(v_hat) + eps)

    :func:`adam` is these lines as written. torch.optim.Adam computes the same quantities in another order
    (``m.lerp_(g, 1 - b1)``, ``sqrt(v) / sqrt(1 - b2^t)``), so the two agree to rounding, not bit for bit:
    tests/test_optim.py pins them to 1e-12 over 60 steps in float64. ``foreach``, ``fused``, ``capturable`` and
    ``differentiable`` are accepted and change nothing (PyTorch's implementation choices).
    """

    buffer_names = ("exp_avg", "exp_avg_sq")

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, amsgrad=False, *,
                 maximize=False, decoupled_weight_decay=False, **ignored):
        name = type(self).__name__
        _refuse(name, amsgrad=amsgrad, maximize=maximize, **ignored)
        if not (isinstance(betas, (tuple, list)) and len(betas) == 2
                and all(is_real(b) and 0 <= b < 1 for b in betas)):
            raise ValueError(f"{name}: betas must be two numbers in [0, 1), got {betas!r}")
        super().__init__(params, dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay,
                                      decoupled_weight_decay=bool(decoupled_weight_decay)))

    def step(self):
        """One Adam update of every trainable parameter (:func:`adam_step`)."""
        adam_step(self)


class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov & Hutter), as torch.optim.AdamW: before Adam's update,
    ``p = p - lr * weight_decay * p``, and the gradient gets no L2 term. PyTorch's default weight_decay, 1e-2."""

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2, amsgrad=False, *,
                 maximize=False, **ignored):
        super().__init__(params, lr, betas, eps, weight_decay, amsgrad, maximize=maximize,
                         decoupled_weight_decay=True, **ignored)


def _refuse(name, amsgrad=False, maximize=False, **ignored):
    if amsgrad or maximize:
        raise NotImplementedError(f"{name}: {'amsgrad' if amsgrad else 'maximize'}=True is not implemented")
    unknown = set(ignored) - set(_IGNORED)
    if unknown:
        raise TypeError(f"{name}: unexpected arguments {sorted(unknown)}")


def sgd(param, grad, buf, first, lr, momentum, dampening, weight_decay, nesterov):
    """One SGD update of ``param`` in place; ``buf`` is its momentum buffer (unused without momentum), and
    ``first`` says whether this is the first step (the buffer then starts as g)."""
    g = grad + weight_decay * param if weight_decay else grad
    if momentum:
        buf[...] = g if first else momentum * buf + (1 - dampening) * g
        g = g + momentum * buf if nesterov else buf
    param -= lr * g


class SGD(Optimizer):
    """Stochastic gradient descent as torch.optim.SGD (lr 1e-3 by default, as PyTorch's). For each parameter p:

        g   = grad + weight_decay * p
        buf = g at the first step, then momentum * buf + (1 - dampening) g
        g   = g + momentum * buf if nesterov else buf          (when momentum != 0)
        p   = p - lr g
    """

    buffer_names = ()

    def __init__(self, params, lr=1e-3, momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=False, *,
                 maximize=False, **ignored):
        _refuse("SGD", maximize=maximize, **ignored)
        if nesterov and (not is_real(momentum) or momentum <= 0 or dampening != 0):
            raise ValueError("SGD: nesterov momentum needs momentum > 0 and dampening = 0")
        super().__init__(params, dict(lr=lr, momentum=momentum, dampening=dampening, weight_decay=weight_decay,
                                      nesterov=bool(nesterov)))

    def state_of(self, p):
        """``state[p]``; one loaded from PyTorch's SGD, which counts no steps, starts counting at 0."""
        state = super().state_of(p)
        if "step" not in state:
            state["step"] = backend.array_module(p.data).zeros((), dtype=numpy.int64)
        return state

    def step(self):
        """One SGD update of every trainable parameter that has a gradient (:func:`sgd`); then, unless switched off
        (:func:`set_flush_denormal`), at every 10th step of a parameter the tiny values of what it wrote flushed
        (:func:`flush_tiny`)."""
        written = []
        for group, p, state in self.updates():
            first = "momentum_buffer" not in state
            if group["momentum"] and first:
                state["momentum_buffer"] = backend.array_module(p.data).zeros_like(p.data)
            sgd(p.data, p.grad, state.get("momentum_buffer"), first, group["lr"], group["momentum"],
                group["dampening"], group["weight_decay"], group["nesterov"])
            if int(state["step"]) % FLUSH_EVERY == 0:
                written += [p.data] + ([state["momentum_buffer"]] if "momentum_buffer" in state else [])
        if _FLUSH[0]:
            flush_tiny(written)
