"""Losses: ``loss = criterion(pred, target)``, then ``dL/dpred = criterion.backward()``.

Losses are Modules like the layers, with the same contract: each call keeps its context until its backward
(a second backward for one forward is refused; a call under ``no_grad()`` keeps nothing). Each loss first
computes one term l_i per element (:mod:`minidae.nn.functional`), then reduces them as PyTorch's
``reduction``: "mean" (the default) L = sum_i l_i / M over the M elements, "sum" L = sum_i l_i, or "none"
(the array of l_i). A scalar loss's ``backward()`` returns dL/dpred; with "none", ``backward(grad)`` takes
the upstream gradient dL/dl (one number per element) and returns grad ⊙ dl/dpred (⊙: the elementwise
product). The target is used in the prediction's dtype, so dL/dpred has the prediction's dtype, as in
PyTorch (a float64 target, say images divided by 255.0, does not turn every backward into float64).
"""
from .. import backend
from . import functional as F
from .module import Module

__all__ = ["MSELoss", "L1Loss", "BCELoss", "BCEWithLogitsLoss"]

BCE_EPSILON = F.BCE_EPSILON
REDUCTIONS = ("mean", "sum", "none")


class _Loss(Module):
    """The reduction rule and the checks every loss shares."""

    def __init__(self, reduction="mean"):
        super().__init__()
        if reduction not in REDUCTIONS:
            raise ValueError(f"{type(self).__name__}: reduction must be one of {', '.join(REDUCTIONS)}, got "
                             f"{reduction!r}")
        self.reduction = reduction

    def _inputs(self, ctx, pred, target):
        """(pred, target in pred's dtype and array module), checked; keeps them and the size on ``ctx``."""
        name = type(self).__name__
        if getattr(pred, "dtype", None) is None or pred.dtype.kind != "f":
            raise ValueError(f"{name}: the prediction must be a floating-point array, got "
                             f"{getattr(pred, 'dtype', type(pred).__name__)}")
        if tuple(pred.shape) != tuple(getattr(target, "shape", ())):
            raise ValueError(f"{name}: prediction shape {tuple(pred.shape)} and target shape "
                             f"{tuple(getattr(target, 'shape', ()))} differ")
        ctx.pred, ctx.target = pred, backend.array_module(pred).asarray(target, dtype=pred.dtype)
        return ctx.pred, ctx.target

    def _reduce(self, terms):
        if self.reduction == "none":
            return terms
        return terms.sum() if self.reduction == "sum" else terms.mean()

    def _factor(self, ctx, grad):
        """dL/dl_i, the factor of each term's own derivative: 1 / M for "mean", 1 for "sum" (times ``grad`` if
        given), or the upstream gradient itself for "none"."""
        if self.reduction == "none":
            return grad
        factor = 1.0 / max(ctx.pred.size, 1) if self.reduction == "mean" else 1.0
        return factor if grad is None else grad * factor

    def extra_repr(self):
        return f"reduction={self.reduction!r}"


class MSELoss(_Loss):
    """l_i = (p_i - t_i)^2.   dl_i/dp_i = 2 (p_i - t_i)."""

    def forward(self, ctx, pred, target):
        pred, target = self._inputs(ctx, pred, target)
        if self.reduction == "mean":
            return F.mse_loss(pred, target)  # one kernel on a GPU
        diff = pred - target
        return self._reduce(diff * diff)

    def backprop(self, ctx, grad=None):
        return F.mse_loss_backward(ctx.pred, ctx.target, 2 * self._factor(ctx, grad))


class L1Loss(_Loss):
    """l_i = |p_i - t_i|.   dl_i/dp_i = sign(p_i - t_i)  (0 where they are equal, as PyTorch)."""

    def forward(self, ctx, pred, target):
        return self._reduce(F.l1_loss(*self._inputs(ctx, pred, target)))

    def backprop(self, ctx, grad=None):
        return F.l1_loss_backward(ctx.pred, ctx.target) * self._factor(ctx, grad)


class BCELoss(_Loss):
    """l_i = -w_i (t_i log p_i + (1 - t_i) log(1 - p_i)), each log clamped at -100 as PyTorch does.

    dl_i/dp_i = w_i (p_i - t_i) / max(p_i (1 - p_i), BCE_EPSILON)     (PyTorch's formula, with its epsilon)
    ``weight`` (optional) rescales each element's term and broadcasts against the input. A prediction
    outside [0, 1] is refused (apply Sigmoid first, or use BCEWithLogitsLoss), except while a CUDA graph is
    captured, which cannot read the device.
    """

    def __init__(self, weight=None, reduction="mean"):
        super().__init__(reduction)
        self.weight = weight

    def forward(self, ctx, pred, target):
        pred, target = self._inputs(ctx, pred, target)
        backend.check(((pred < 0) | (pred > 1)).any(), lambda: f"BCELoss: predictions must lie in [0, 1], got "
                      f"range [{float(pred.min())}, {float(pred.max())}]; apply Sigmoid first")
        return self._reduce(_weighted(F.binary_cross_entropy(pred, target), self.weight))

    def backprop(self, ctx, grad=None):
        d = _weighted(F.binary_cross_entropy_backward(ctx.pred, ctx.target), self.weight)
        return d * self._factor(ctx, grad)


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

    def forward(self, ctx, logits, target):
        logits, target = self._inputs(ctx, logits, target)
        terms = F.binary_cross_entropy_with_logits(logits, target, _like(self.pos_weight, logits))
        return self._reduce(_weighted(terms, self.weight))

    def backprop(self, ctx, grad=None):
        d = F.binary_cross_entropy_with_logits_backward(ctx.pred, ctx.target, _like(self.pos_weight, ctx.pred))
        return _weighted(d, self.weight) * self._factor(ctx, grad)


def _like(value, array):
    """``value`` (None, a number or array-like) as an array of ``array``'s dtype and module."""
    return None if value is None else backend.array_module(array).asarray(value, dtype=array.dtype)


def _weighted(terms, weight):
    """terms ⊙ weight (broadcast), or the terms themselves without a weight."""
    return terms if weight is None else terms * _like(weight, terms)
