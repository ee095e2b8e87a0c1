"""Losses: ``loss = criterion(pred, target)``, then ``dL/dpred = criterion.backward()``.

Each loss first computes one term l_i per element, then reduces them as PyTorch's ``reduction``:
"mean" (the default) L = sum_i l_i / M over the M elements, "sum" L = sum_i l_i, or "none" (the
array of l_i). A scalar loss's ``backward()`` returns dL/dpred; with "none", ``backward(grad)``
takes the upstream gradient dL/dl (one number per element) and returns grad ⊙ dl/dpred
(⊙: the elementwise product, as in the activation docstrings).
"""
import numpy

from .. import backend
from . import elementwise

__all__ = ["MSELoss", "L1Loss", "BCELoss", "BCEWithLogitsLoss"]

BCE_EPSILON = float(numpy.float32(1e-12))  # PyTorch keeps its 1e-12 as a C float: 9.99999996e-13
REDUCTIONS = ("mean", "sum", "none")


class _Loss:
    """The reduction rule and the checks every loss shares."""

    def __init__(self, reduction="mean"):
        if reduction not in REDUCTIONS:
            raise ValueError(f"{type(self).__name__}: reduction must be one of {', '.join(REDUCTIONS)}, got "
                             f"{reduction!r}")
        self.reduction = reduction
        self._shape = None

    def _check(self, pred, target):
        if pred.shape != target.shape:
            raise ValueError(f"{type(self).__name__}: prediction shape {tuple(pred.shape)} and target shape "
                             f"{tuple(target.shape)} differ")
        self._shape = pred.shape

    def _reduce(self, terms):
        if self.reduction == "none":
            return terms
        return terms.sum() if self.reduction == "sum" else terms.mean()

    def _scale(self, grad):
        """The factor dL/dl_i that multiplies each term's own derivative: 1 / M, 1, or the upstream grad."""
        name = type(self).__name__
        if self._shape is None:
            raise ValueError(f"{name}: backward called before forward")
        if self.reduction == "none":
            if grad is None or tuple(grad.shape) != tuple(self._shape):
                raise ValueError(f"{name}(reduction='none').backward needs the upstream gradient of shape "
                                 f"{tuple(self._shape)}, got {None if grad is None else tuple(grad.shape)}")
            return grad
        size = 1
        for d in self._shape:
            size *= d
        factor = 1.0 / size if self.reduction == "mean" else 1.0
        return factor if grad is None else grad * factor

    def __call__(self, pred, target):
        return self.forward(pred, target)

    def extra_repr(self):
        """The arguments shown by ``repr``."""
        return f"reduction={self.reduction!r}"

    def __repr__(self):
        return f"{type(self).__name__}({self.extra_repr()})"


class MSELoss(_Loss):
    """l_i = (p_i - t_i)^2.   dl_i/dp_i = 2 (p_i - t_i)."""

    def forward(self, pred, target):
        """L = reduction of (pred - target)^2; keeps both for the backward."""
        self._check(pred, target)
        self._pred, self._target = pred, target
        if self.reduction == "mean":
            return elementwise.mse(pred, target)  # one kernel on a GPU
        diff = pred - target
        return self._reduce(diff * diff)

    def backward(self, grad=None):
        """dL/dpred = 2 (pred - target) times the reduction's factor (1/M for "mean"), or times ``grad``."""
        scale = self._scale(grad)
        if isinstance(scale, float):
            return elementwise.mse_grad(self._pred, self._target, 2.0 * scale)  # one kernel on a GPU
        return (self._pred - self._target) * (2 * scale)


class L1Loss(_Loss):
    """l_i = |p_i - t_i|.   dl_i/dp_i = sign(p_i - t_i)  (0 where they are equal, as PyTorch)."""

    def forward(self, pred, target):
        """L = reduction of |pred - target|; keeps the difference for the backward."""
        self._check(pred, target)
        self._diff = pred - target
        return self._reduce(backend.array_module(pred).abs(self._diff))

    def backward(self, grad=None):
        """dL/dpred = sign(pred - target) times the reduction's factor (1/M for "mean"), or times ``grad``."""
        scale = self._scale(grad)
        return backend.array_module(self._diff).sign(self._diff) * scale


class BCELoss(_Loss):
    """l_i = -w_i (t_i log p_i + (1 - t_i) log(1 - p_i)), each log clamped at -100 as PyTorch does.

    dl_i/dp_i = w_i (p_i - t_i) / max(p_i (1 - p_i), BCE_EPSILON)     (PyTorch's formula, with its epsilon)
    ``weight`` (optional) rescales each element's term and broadcasts against the input.
    """

    def __init__(self, weight=None, reduction="mean"):
        super().__init__(reduction)
        self.weight = weight

    def forward(self, pred, target):
        """L = reduction of the terms l_i above; ``pred`` must lie in [0, 1] (apply Sigmoid first)."""
        self._check(pred, target)
        xp = backend.array_module(pred)
        if bool(((pred < 0) | (pred > 1)).any()):
            raise ValueError(f"BCELoss: predictions must lie in [0, 1], got range "
                             f"[{float(pred.min())}, {float(pred.max())}]; apply Sigmoid first")
        self._pred, self._target = pred, target
        with numpy.errstate(divide="ignore"):  # log(0) = -inf is expected; the clamp handles it
            log_p = xp.maximum(xp.log(pred), -100)
            log_1mp = xp.maximum(xp.log(1 - pred), -100)
        terms = -(target * log_p + (1 - target) * log_1mp)
        return self._reduce(terms if self.weight is None else terms * self._weight(pred))

    def _weight(self, like):
        return backend.array_module(like).asarray(self.weight, dtype=like.dtype)

    def backward(self, grad=None):
        """dL/dpred = dl_i/dp_i above times the reduction's factor (1/M for "mean"), or times ``grad``."""
        scale = self._scale(grad)
        xp = backend.array_module(self._pred)
        p, t = self._pred, self._target
        d = (p - t) / xp.maximum(p * (1 - p), BCE_EPSILON)
        if self.weight is not None:
            d = d * self._weight(p)
        return d * scale


class BCEWithLogitsLoss(_Loss):
    """Sigmoid and binary cross-entropy in one, on logits x (any real numbers), as PyTorch:

        l_i = w_i [ (1 - t_i) x_i + c_i (log(1 + exp(-|x_i|)) + max(-x_i, 0)) ],   c_i = 1 + (pos_weight - 1) t_i

    which is -w_i [pos_weight t_i log s(x_i) + (1 - t_i) log(1 - s(x_i))] (s = sigmoid; with
    log s(x) = -(log(1 + exp(-|x|)) + max(-x, 0)) and log(1 - s(x)) = -x + log s(x)) written so
    that no exponential overflows: finite and warning-free at logits of +-1000.
        dl_i/dx_i = w_i [ (1 - t_i) + c_i (s(x_i) - 1) ]          (= w_i (s(x_i) - t_i) without pos_weight)
    """

    def __init__(self, weight=None, reduction="mean", pos_weight=None):
        super().__init__(reduction)
        self.weight, self.pos_weight = weight, pos_weight

    def forward(self, logits, target):
        """L = reduction of the terms l_i above, computed from the logits without overflow."""
        self._check(logits, target)
        xp = backend.array_module(logits)
        self._x, self._target = logits, target
        softplus = xp.log1p(xp.exp(-xp.abs(logits))) + xp.maximum(-logits, 0)  # log(1 + exp(-x))
        terms = (1 - target) * logits + self._c(target) * softplus
        return self._reduce(terms if self.weight is None else terms * self._array(self.weight, logits))

    def _array(self, value, like):
        return backend.array_module(like).asarray(value, dtype=like.dtype)

    def _c(self, target):
        return 1 if self.pos_weight is None else 1 + (self._array(self.pos_weight, target) - 1) * target

    def backward(self, grad=None):
        """dL/dlogits = dl_i/dx_i above times the reduction's factor (1/M for "mean"), or times ``grad``."""
        scale = self._scale(grad)
        t = self._target
        d = (1 - t) + self._c(t) * (elementwise.sigmoid(self._x) - 1)
        if self.weight is not None:
            d = d * self._array(self.weight, self._x)
        return d * scale
