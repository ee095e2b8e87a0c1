"""Losses with mean reduction: ``loss = criterion(pred, target)``, then ``criterion.backward()``."""
import numpy

from .. import backend
from . import elementwise

__all__ = ["MSELoss", "BCELoss"]

BCE_EPSILON = float(numpy.float32(1e-12))  # PyTorch keeps its 1e-12 as a C float: 9.99999996e-13


class _Loss:
    def _check(self, pred, target):
        if pred.shape != target.shape:
            raise ValueError(f"{type(self).__name__}: prediction shape {tuple(pred.shape)} and target shape "
                             f"{tuple(target.shape)} differ")

    def __call__(self, pred, target):
        return self.forward(pred, target)


class MSELoss(_Loss):
    """L = mean((p - t)^2) over all M elements.   dL/dp = 2 (p - t) / M."""

    def forward(self, pred, target):
        self._check(pred, target)
        self._pred, self._target = pred, target
        return elementwise.mse(pred, target)

    def backward(self):
        return elementwise.mse_grad(self._pred, self._target, 2.0 / self._pred.size)


class BCELoss(_Loss):
    """L = -mean(t log p + (1 - t) log(1 - p)), each log clamped at -100 as PyTorch does.

    dL/dp = (p - t) / max(p (1 - p), BCE_EPSILON) / M     (PyTorch's formula, with its epsilon)
    """

    def forward(self, pred, target):
        self._check(pred, target)
        xp = backend.array_module(pred)
        if bool(((pred < 0) | (pred > 1)).any()):
            raise ValueError(f"BCELoss: predictions must lie in [0, 1], got range "
                             f"[{float(pred.min())}, {float(pred.max())}]; apply Sigmoid first")
        self._pred, self._target = pred, target
        with numpy.errstate(divide="ignore"):  # log(0) = -inf is expected; the clamp handles it
            log_p = xp.maximum(xp.log(pred), -100)
            log_1mp = xp.maximum(xp.log(1 - pred), -100)
        return -(target * log_p + (1 - target) * log_1mp).mean()

    def backward(self):
        xp = backend.array_module(self._pred)
        p, t = self._pred, self._target
        return (p - t) / xp.maximum(p * (1 - p), BCE_EPSILON) / p.size
