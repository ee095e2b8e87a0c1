"""Finite-difference gradient checks for any Module (or loss), in float64.

The module's output y is reduced to a scalar with fixed random weights R,
L = sum(R * y) (summed over the outputs, for a module that returns several), so every output element takes
part. The analytic gradient is ``backward(R)`` (each input) and the accumulated ``.grad`` (parameters); the
numeric one is the
central difference (L(v + eps) - L(v - eps)) / (2 eps) for each checked element v. An
element passes when |analytic - numeric| <= atol + rtol * |numeric|.

Keep inputs away from kinks (ReLU at 0, ties in MaxPool2d): a finite difference across a
kink measures neither side's derivative.

>>> from minidae import nn, gradcheck
>>> import numpy as np
>>> result = gradcheck(nn.Linear(3, 2), np.random.default_rng(0).normal(size=(4, 3)))
>>> bool(result), result.worst.tensor in ("input", "weight", "bias")
(True, True)
"""
import copy
from dataclasses import dataclass, field

import numpy

from . import backend
from .nn.module import Module, no_grad

__all__ = ["gradcheck", "GradcheckResult", "Mismatch"]


@dataclass
class Mismatch:
    """One checked element: where it is and both gradients."""
    tensor: str
    index: tuple
    analytic: float
    numeric: float
    abs_error: float
    rel_error: float
    score: float  # abs_error / (atol + rtol |numeric|); above 1 fails

    def __str__(self):
        return (f"{self.tensor}{list(self.index)}: analytic {self.analytic:.10g}, numeric {self.numeric:.10g}, "
                f"abs error {self.abs_error:.3g}, rel error {self.rel_error:.3g}")


@dataclass
class GradcheckResult:
    """``bool(result)`` is True when every checked element passed; ``worst`` names the worst one."""
    ok: bool
    worst: Mismatch
    per_tensor: dict = field(default_factory=dict)  # tensor name -> its worst Mismatch
    checked: int = 0
    problems: list = field(default_factory=list)  # mistakes found besides wrong numbers (dtype, accumulation)

    def __bool__(self):
        return self.ok

    def __str__(self):
        lines = [f"gradcheck {'passed' if self.ok else 'FAILED'} ({self.checked} elements); worst: {self.worst}"]
        lines += [f"  {m}" for m in self.per_tensor.values()]
        lines += [f"  problem: {p}" for p in self.problems]
        return "\n".join(lines)


class _LossOnTarget(Module):
    """Adapts ``criterion(pred, target)`` to the Module interface: x -> scalar loss."""

    def __init__(self, criterion, target):
        super().__init__()
        self.criterion, self.target = criterion, target

    def forward(self, ctx, x):
        return self.criterion(x, self.target)

    def backprop(self, ctx, grad_out):
        return self.criterion.backward() * grad_out


def _outputs(y):
    return y if isinstance(y, tuple) else (y,)


def gradcheck(module, x, target=None, eps=1e-6, atol=1e-6, rtol=1e-5, max_elements=None, seed=0):
    """Compare ``module``'s analytic gradients with central differences, in float64.

    module: a Module (one that takes several inputs or returns several outputs too), or a loss (MSELoss,
       BCELoss) when ``target`` is given.
    x: the input (any array-like), or a tuple of them for a module that takes several; they and a copy of the
       module are cast to float64 on the active backend, so the caller's module is left untouched.
    max_elements: check at most this many randomly chosen elements per tensor (None: all).
    Returns a :class:`GradcheckResult`; the inputs are named "input" (or "input 0", "input 1", ...).
    """
    xp = backend.xp
    inputs = [xp.asarray(a, dtype=xp.float64).copy() for a in (x if isinstance(x, (tuple, list)) else [x])]
    names = ["input"] if len(inputs) == 1 else [f"input {i}" for i in range(len(inputs))]
    if target is not None:  # class indices stay integers; anything else is compared in float64
        target = xp.asarray(target)
        module = _LossOnTarget(module, target if target.dtype.kind in "iu" else target.astype(xp.float64))
    module = copy.deepcopy(module).to(numpy.float64)
    rng = numpy.random.default_rng(seed)
    with no_grad():
        weights = tuple(xp.asarray(rng.normal(size=y.shape)) for y in _outputs(module(*inputs)))
    upstream = weights if len(weights) > 1 else weights[0]

    def loss():
        with no_grad():  # forwards without a backward: nothing to keep
            return float(sum((w * y).sum() for w, y in zip(weights, _outputs(module(*inputs)))))

    module.zero_grad()
    problems = []
    for number, y in enumerate(_outputs(module(*inputs))):
        if y.dtype != inputs[0].dtype:
            which = "the output" if len(weights) == 1 else f"output {number}"
            problems.append(f"{which} is {y.dtype} for a {inputs[0].dtype} input: a layer must keep its input's dtype")
    grads = module.backward(upstream)
    grads = grads if isinstance(grads, tuple) else (grads,)
    if len(grads) != len(inputs):
        problems.append(f"backward returned {len(grads)} gradients for {len(inputs)} inputs: one per input")
    analytic = {name: xp.zeros_like(a) if g is None else g for name, a, g in zip(names, inputs, grads)}
    analytic.update((name, xp.zeros_like(p.data) if p.grad is None else p.grad.copy())
                    for name, p in module.named_parameters())
    # The classic mistake of a hand-written layer: assigning p.grad instead of adding to it. Two
    # forward/backward rounds must give twice the gradient of one.
    module(*inputs)
    module.backward(upstream)
    for name, p in module.named_parameters():
        if p.grad is None:
            continue
        once, twice = backend.to_numpy(analytic[name]), backend.to_numpy(p.grad)
        if not numpy.allclose(twice, 2 * once, rtol=1e-9, atol=1e-12):
            problems.append(f"{name}.grad does not accumulate: two backwards gave {numpy.abs(twice).sum():.6g} "
                            f"in all where twice one backward is {2 * numpy.abs(once).sum():.6g}; add to the "
                            f"gradient (p.grad += ...) instead of assigning it")
    tensors = dict(zip(names, inputs))
    tensors.update((name, p.data) for name, p in module.named_parameters())

    chooser = numpy.random.default_rng(seed + 1)
    per_tensor, checked, ok = {}, 0, True
    for name, values in tensors.items():
        flat_indices = numpy.arange(values.size)
        if max_elements is not None and values.size > max_elements:
            flat_indices = chooser.choice(values.size, size=max_elements, replace=False)
        for flat in flat_indices:
            index = numpy.unravel_index(flat, values.shape)
            saved = float(values[index])
            values[index] = saved + eps
            plus = loss()
            values[index] = saved - eps
            minus = loss()
            values[index] = saved
            numeric, exact = (plus - minus) / (2 * eps), float(analytic[name][index])
            abs_error = abs(exact - numeric)
            mismatch = Mismatch(name, tuple(int(i) for i in index), exact, numeric, abs_error,
                                abs_error / max(abs(exact), abs(numeric), 1e-300), abs_error / (atol + rtol * abs(numeric)))
            ok &= mismatch.score <= 1
            checked += 1
            if name not in per_tensor or mismatch.score > per_tensor[name].score:
                per_tensor[name] = mismatch
    worst = max(per_tensor.values(), key=lambda m: m.score)
    return GradcheckResult(ok and not problems, worst, per_tensor, checked, problems)
