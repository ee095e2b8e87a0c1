"""Normalisation layers: BatchNorm2d, the first layer with buffers (running statistics) and a different
forward in training and in evaluation. Its backward is derived in docs/backprop.md."""
import math
import numbers

import numpy

from .. import backend
from .module import Module, Parameter

__all__ = ["BatchNorm2d"]


def _per_channel(v):
    """A (C,) array shaped (C, 1, 1), to broadcast over (N, C, H, W)."""
    return v.reshape(-1, 1, 1)


class BatchNorm2d(Module):
    """Normalise each channel to zero mean and unit variance, then scale and shift it (as torch.nn.BatchNorm2d).

    x (N, C, H, W) -> y (N, C, H, W). For channel c, over its m = N·H·W values (mean_c and sum_c below run over
    n, h, w of channel c; ⊙ is the elementwise product):
        training:   mu[c] = mean_c x,  var[c] = mean_c (x - mu[c])^2   (the batch's statistics, biased variance)
        evaluation: mu = running_mean, var = running_var                 (with track_running_stats=False: as training)
        xhat = (x - mu[c]) / sqrt(var[c] + eps),   y = weight[c] xhat + bias[c]   (y = xhat when affine=False)
    Each training forward also updates the buffers in place, with a = momentum, or a = 1 / num_batches_tracked
    when momentum is None (the cumulative average of every batch so far):
        num_batches_tracked += 1
        running_mean = (1 - a) running_mean + a mu,   running_var = (1 - a) running_var + a var m / (m - 1)
    (the running variance is the unbiased one). Backward, given dL/dy:
        dL/dbias[c] = sum_c dL/dy,   dL/dweight[c] = sum_c dL/dy ⊙ xhat
        training:   dL/dx = weight[c] / sqrt(var[c] + eps) ⊙ (dL/dy - mean_c dL/dy - xhat ⊙ mean_c(dL/dy ⊙ xhat))
        evaluation: dL/dx = weight[c] / sqrt(var[c] + eps) ⊙ dL/dy   (mu and var are constants there)
    weight = 1 when affine=False. Parameters weight, bias (C,), initially ones and zeros; buffers running_mean
    (C,) zeros, running_var (C,) ones, num_batches_tracked () int64, all None with track_running_stats=False.
    """

    def __init__(self, num_features, eps=1e-5, momentum=0.1, affine=True, track_running_stats=True):
        super().__init__()
        if isinstance(num_features, bool) or not isinstance(num_features, numbers.Integral) or num_features < 1:
            raise ValueError(f"BatchNorm2d: num_features (the input's channels) must be a positive integer, "
                             f"got {num_features!r}")
        if not _real(eps) or not 0 <= eps < math.inf:
            raise ValueError(f"BatchNorm2d: eps must be a finite number >= 0, got {eps!r}")
        if momentum is not None and (not _real(momentum) or not 0 <= momentum <= 1):
            raise ValueError(f"BatchNorm2d: momentum must be a number in [0, 1], or None for a cumulative average, "
                             f"got {momentum!r}")
        self.num_features, self.eps = int(num_features), float(eps)
        self.momentum = None if momentum is None else float(momentum)
        self.affine, self.track_running_stats = bool(affine), bool(track_running_stats)
        xp, c = backend.xp, self.num_features
        self.weight = Parameter(xp.ones(c, numpy.float32)) if affine else None
        self.bias = Parameter(xp.zeros(c, numpy.float32)) if affine else None
        self.register_buffer("running_mean", xp.zeros(c, numpy.float32) if track_running_stats else None)
        self.register_buffer("running_var", xp.ones(c, numpy.float32) if track_running_stats else None)
        self.register_buffer("num_batches_tracked", xp.zeros((), numpy.int64) if track_running_stats else None)

    def forward(self, x):
        c = self.num_features
        if getattr(x, "ndim", None) != 4 or x.shape[1] != c:
            raise ValueError(f"BatchNorm2d: expected an input of shape (N, {c}, H, W) (num_features={c}), got "
                             f"{tuple(getattr(x, 'shape', ()))}")
        xp = backend.array_module(x)
        n, _, h, w = x.shape
        m = n * h * w
        batch_stats = self.training or self.running_mean is None
        if batch_stats:
            if m == 1:
                raise ValueError(f"BatchNorm2d: expected more than 1 value per channel when using batch statistics, "
                                 f"got input of shape {tuple(x.shape)}")
            mean = x.mean(axis=(0, 2, 3)) if m else xp.zeros(c, x.dtype)
            centered = x - _per_channel(mean)
            var = (centered * centered).mean(axis=(0, 2, 3)) if m else xp.ones(c, x.dtype)
            if self.training and self.running_mean is not None:
                self._update_running_stats(mean, var, m)
        else:
            mean = self.running_mean.astype(x.dtype, copy=False)
            var = self.running_var.astype(x.dtype, copy=False)
            centered = x - _per_channel(mean)
        inv_std = 1 / xp.sqrt(var + self.eps)
        self._xhat, self._inv_std, self._batch_stats = centered * _per_channel(inv_std), inv_std, batch_stats
        if not self.affine:
            return self._xhat
        weight, bias = (p.data.astype(x.dtype, copy=False) for p in (self.weight, self.bias))
        return self._xhat * _per_channel(weight) + _per_channel(bias)

    def _update_running_stats(self, mean, var, m):
        """The training forward's buffer updates, all in place (a replayed CUDA graph repeats only in-place
        updates), with the factor a = 1 / num_batches_tracked computed on the device, never read back."""
        self.num_batches_tracked += 1
        if m == 0:  # an empty batch counts but has no statistics (as PyTorch)
            return
        a = self.momentum if self.momentum is not None else 1 / self.num_batches_tracked
        for buffer, value in ((self.running_mean, mean), (self.running_var, var * (m / (m - 1)))):
            buffer *= 1 - a
            buffer += a * value

    def backward(self, dy):
        xhat, inv_std = self._xhat, self._inv_std
        sum_dy, sum_dy_xhat = dy.sum(axis=(0, 2, 3)), (dy * xhat).sum(axis=(0, 2, 3))
        scale = inv_std
        if self.affine:
            self.bias.grad += sum_dy
            self.weight.grad += sum_dy_xhat
            scale = inv_std * self.weight.data.astype(dy.dtype, copy=False)
        if not self._batch_stats:
            return dy * _per_channel(scale)
        m = max(dy.shape[0] * dy.shape[2] * dy.shape[3], 1)
        return (dy - _per_channel(sum_dy / m) - xhat * _per_channel(sum_dy_xhat / m)) * _per_channel(scale)

    def extra_repr(self):
        return (f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, affine={self.affine}, "
                f"track_running_stats={self.track_running_stats}")


def _real(value):
    return isinstance(value, numbers.Real) and not isinstance(value, bool)
