"""Losses: ``loss = criterion(pred, target)``, then ``dL/dpred = criterion.backward()``.

Losses are Modules like the layers, with the same contract: each call keeps its context until its backward
(a second backward for one forward is refused; a call under ``no_grad()`` keeps nothing; one loss object used
for two terms names the one meant, ``criterion.backward(output=loss_a)``). Each loss first computes one term
l_i per element (:mod:`minidae.nn.functional`), then reduces them as PyTorch's ``reduction``: "mean" (the
default) L = sum_i l_i / M over the M elements, "sum" L = sum_i l_i (both 0-d arrays, as PyTorch's 0-d
tensors: ``float(loss)`` or ``loss.item()`` for the number), or "none" (the array of l_i). A scalar loss's ``backward()`` returns dL/dpred; with "none", ``backward(grad)`` takes
the upstream gradient dL/dl (one number per element) and returns grad ⊙ dl/dpred (⊙: the elementwise
product). The target is used in the prediction's dtype, so dL/dpred has the prediction's dtype, as in
PyTorch (a float64 target, say images divided by 255.0, does not turn every backward into float64).
"""
from .. import backend
from . import functional as F
from .module import Module

__all__ = ["MSELoss", "L1Loss", "BCELoss", "BCEWithLogitsLoss", "CrossEntropyLoss", "NLLLoss"]

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
        """(pred, target in pred's dtype and array module), checked; keeps the mean's divisor on ``ctx``."""
        name = type(self).__name__
        if getattr(pred, "dtype", None) is None or pred.dtype.kind != "f":
            raise ValueError(f"{name}: the prediction must be a floating-point array, got "
                             f"{getattr(pred, 'dtype', type(pred).__name__)}")
        if tuple(pred.shape) != tuple(getattr(target, "shape", ())):
            raise ValueError(f"{name}: prediction shape {tuple(pred.shape)} and target shape "
                             f"{tuple(getattr(target, 'shape', ()))} differ")
        ctx.divisor = max(pred.size, 1)  # "mean" divides by the number of elements
        return pred, backend.array_module(pred).asarray(target, dtype=pred.dtype)

    def _reduce(self, terms):
        """The terms reduced as ``reduction`` says (a 0-d array for "mean" and "sum")."""
        if self.reduction == "none":
            return terms
        return backend.array_module(terms).asarray(terms.sum() if self.reduction == "sum" else terms.mean())

    def _factor(self, ctx, grad):
        """dL/dl_i, the factor of each term's own derivative: 1 / ``ctx.divisor`` for "mean" (the number of
        elements, or what a class loss divides by), 1 for "sum" (times ``grad`` if given), or the upstream
        gradient itself for "none"."""
        if self.reduction == "none":
            return grad
        factor = 1 / ctx.divisor if self.reduction == "mean" else 1.0
        return factor if grad is None else grad * factor

    def extra_repr(self):
        return f"reduction={self.reduction!r}"


class MSELoss(_Loss):
    """l_i = (p_i - t_i)^2.   dl_i/dp_i = 2 (p_i - t_i)."""

    def forward(self, ctx, pred, target):
        terms, ctx.diff = F.mse_loss(*self._inputs(ctx, pred, target))
        return self._reduce(terms)

    def backprop(self, ctx, grad=None):
        return F.mse_loss_backward(self._factor(ctx, grad), ctx.diff)


class L1Loss(_Loss):
    """l_i = |p_i - t_i|.   dl_i/dp_i = sign(p_i - t_i)  (0 where they are equal, as PyTorch)."""

    def forward(self, ctx, pred, target):
        terms, ctx.diff = F.l1_loss(*self._inputs(ctx, pred, target))
        return self._reduce(terms)

    def backprop(self, ctx, grad=None):
        return F.l1_loss_backward(self._factor(ctx, grad), ctx.diff)


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
        terms, ctx.saved = F.binary_cross_entropy(pred, target)
        return self._reduce(_weighted(terms, self.weight))

    def backprop(self, ctx, grad=None):
        return _weighted(F.binary_cross_entropy_backward(self._factor(ctx, grad), ctx.saved), self.weight)


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
        ctx.pos_weight = _like(self.pos_weight, logits)
        terms, ctx.saved = F.binary_cross_entropy_with_logits(logits, target, ctx.pos_weight)
        return self._reduce(_weighted(terms, self.weight))

    def backprop(self, ctx, grad=None):
        d = F.binary_cross_entropy_with_logits_backward(self._factor(ctx, grad), ctx.saved, ctx.pos_weight)
        return _weighted(d, self.weight)


def _like(value, array):
    """``value`` (None, a number or array-like) as an array of ``array``'s dtype and module."""
    return None if value is None else backend.array_module(array).asarray(value, dtype=array.dtype)


def _weighted(terms, weight):
    """terms ⊙ weight (broadcast), or the terms themselves without a weight."""
    return terms if weight is None else terms * _like(weight, terms)


class _ClassLoss(_Loss):
    """What CrossEntropyLoss and NLLLoss share: class indices as targets, class weights, ignore_index, and the
    weights matrix q (N, C, ...) that turns a target into a sum over the classes."""

    def __init__(self, weight=None, ignore_index=-100, reduction="mean"):
        super().__init__(reduction)
        self.weight, self.ignore_index = weight, int(ignore_index)

    def _check(self, scores, target, what):
        name = type(self).__name__
        if getattr(scores, "dtype", None) is None or scores.dtype.kind != "f" or scores.ndim < 1:
            raise ValueError(f"{name}: the input must be floating-point {what} of shape (N, C) or (N, C, d1, ...), "
                             f"got {tuple(getattr(scores, 'shape', ()))} {getattr(scores, 'dtype', type(scores).__name__)}")
        if scores.ndim == 1:  # one unbatched sample, as PyTorch
            return scores[None], backend.array_module(scores).asarray(target)[None], True
        return scores, backend.array_module(scores).asarray(target), False

    def _class_weights(self, scores):
        """The class weights shaped (1, C, 1, ...) to broadcast over the input, in its dtype."""
        c = scores.shape[1]
        shape = (1, c) + (1,) * (scores.ndim - 2)
        if self.weight is None:
            return backend.array_module(scores).ones(shape, dtype=scores.dtype)
        weight = _like(self.weight, scores)
        if weight.shape != (c,):
            raise ValueError(f"{type(self).__name__}: weight must hold one number per class, shape ({c},), got "
                             f"{tuple(weight.shape)}")
        return weight.reshape(shape)

    def _one_hot_weights(self, scores, target, smoothing=0.0):
        """q for class indices: w[y] at the target class ((1 - smoothing) of it, and smoothing / C of every
        w[c] spread over the classes), 0 for an ignored target; and the mean's divisor, sum of w[y] over the
        targets not ignored (their count without weights), as PyTorch."""
        name, xp, c = type(self).__name__, backend.array_module(scores), scores.shape[1]
        if target.dtype.kind not in "iu" or target.shape != scores.shape[:1] + scores.shape[2:]:
            raise ValueError(f"{name}: class indices must be integers of shape {scores.shape[:1] + scores.shape[2:]} "
                             f"(the input without its class axis), got {tuple(target.shape)} {target.dtype}")
        valid = target != self.ignore_index
        backend.check((valid & ((target < 0) | (target >= c))).any(),
                      lambda: f"{name}: class indices must lie in 0..{c - 1} (or be ignore_index "
                              f"{self.ignore_index}), got values in [{int(target.min())}, {int(target.max())}]")
        weights = self._class_weights(scores)
        classes = xp.arange(c).reshape((1, c) + (1,) * (scores.ndim - 2))
        one_hot = (classes == xp.expand_dims(xp.where(valid, target, 0), 1)).astype(scores.dtype)
        q = (one_hot * (1 - smoothing) + smoothing / c) * weights * xp.expand_dims(valid, 1).astype(scores.dtype)
        return q, (one_hot * weights * xp.expand_dims(valid, 1)).sum()

    def _reduce_over(self, ctx, terms, divisor):
        ctx.divisor = divisor
        if self.reduction == "none":
            return terms
        return backend.array_module(terms).asarray(terms.sum() if self.reduction == "sum" else terms.sum() / divisor)

    def _upstream(self, ctx, grad, terms_shape):
        """dL/dl_n for every term: 1 / divisor for "mean", 1 for "sum" (times ``grad``), ``grad`` for "none"."""
        if self.reduction == "none":
            return grad
        xp = backend.array_module(ctx.q)  # an array, not a Python number, to broadcast: CuPy broadcasts arrays only
        return xp.broadcast_to(xp.asarray(self._factor(ctx, grad)), terms_shape).astype(ctx.q.dtype)

    def extra_repr(self):
        return f"ignore_index={self.ignore_index}, reduction={self.reduction!r}"


class CrossEntropyLoss(_ClassLoss):
    """Softmax and negative log-likelihood in one, on logits x (N, C) or (N, C, d1, ...), as torch.nn.CrossEntropyLoss.

    With class indices y (N, ...), class weights w (default 1), smoothing e (label_smoothing):
        l_n = -sum_c q[n, c] log softmax(x_n)[c],   q[n, c] = w[c] ((1 - e) [c = y_n] + e / C)
    (q = 0 where y_n = ignore_index); "mean" divides sum_n l_n by sum_n w[y_n] over the targets not ignored.
    With class probabilities t (N, C, ...) as the target: q[n, c] = w[c] ((1 - e) t[n, c] + e / C), and "mean"
    divides by N. Backward (functional.cross_entropy_backward), for each n:
        dl_n/dx[n, c] = softmax(x_n)[c] sum_j q[n, j] - q[n, c]
    (= softmax - onehot(y) without weights or smoothing). log softmax subtracts the maximum first, so the loss
    and its gradient are finite at logits of +-1000.
    """

    def __init__(self, weight=None, ignore_index=-100, reduction="mean", label_smoothing=0.0):
        super().__init__(weight, ignore_index, reduction)
        if not 0.0 <= label_smoothing <= 1.0:
            raise ValueError(f"CrossEntropyLoss: label_smoothing must lie in [0, 1], got {label_smoothing}")
        self.label_smoothing = float(label_smoothing)

    def forward(self, ctx, logits, target):
        logits, target, ctx.unbatched = self._check(logits, target, "logits")
        e = self.label_smoothing
        if target.dtype.kind == "f" and target.shape == logits.shape[:1] + logits.shape[2:]:
            raise ValueError(f"CrossEntropyLoss: class indices must be integers, got {target.dtype}: pass "
                             f"target.astype(int) (class probabilities have the input's shape {tuple(logits.shape)})")
        if target.dtype.kind == "f":  # class probabilities
            if target.shape != logits.shape:
                raise ValueError(f"CrossEntropyLoss: class probabilities must have the input's shape "
                                 f"{tuple(logits.shape)}, got {tuple(target.shape)}")
            ctx.q = ((1 - e) * target.astype(logits.dtype) + e / logits.shape[1]) * self._class_weights(logits)
            divisor = logits.size // logits.shape[1]
        else:
            ctx.q, divisor = self._one_hot_weights(logits, target, e)
        terms, ctx.log_probs = F.cross_entropy(logits, ctx.q)
        loss = self._reduce_over(ctx, terms, divisor)
        return loss[0] if ctx.unbatched and self.reduction == "none" else loss

    def backprop(self, ctx, grad=None):
        if ctx.unbatched and self.reduction == "none":
            grad = grad[None]
        dx = F.cross_entropy_backward(self._upstream(ctx, grad, ctx.log_probs.shape[:1] + ctx.log_probs.shape[2:]),
                                      ctx.log_probs, ctx.q)
        return dx[0] if ctx.unbatched else dx

    def extra_repr(self):
        return super().extra_repr() + (f", label_smoothing={self.label_smoothing}" if self.label_smoothing else "")


class NLLLoss(_ClassLoss):
    """Negative log-likelihood of class indices, on log-probabilities x (N, C) or (N, C, d1, ...) (LogSoftmax's
    output), as torch.nn.NLLLoss:
        l_n = -w[y_n] x[n, y_n]   (0 where y_n = ignore_index);   "mean" divides by sum_n w[y_n] over those kept
    Backward: dl_n/dx[n, c] = -w[y_n] [c = y_n].
    """

    def forward(self, ctx, log_probs, target):
        log_probs, target, ctx.unbatched = self._check(log_probs, target, "log-probabilities")
        ctx.q, divisor = self._one_hot_weights(log_probs, target)
        terms, _ = F.nll_loss(log_probs, ctx.q)
        loss = self._reduce_over(ctx, terms, divisor)
        return loss[0] if ctx.unbatched and self.reduction == "none" else loss

    def backprop(self, ctx, grad=None):
        if ctx.unbatched and self.reduction == "none":
            grad = grad[None]
        dx = F.nll_loss_backward(self._upstream(ctx, grad, ctx.q.shape[:1] + ctx.q.shape[2:]), ctx.q)
        return dx[0] if ctx.unbatched else dx
