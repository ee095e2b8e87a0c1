"""Normalisation layers: BatchNorm2d, the first layer with buffers (running statistics) and a different
forward in training and in evaluation. Its maths is in :mod:`minidae.nn.functional`; its backward is derived
in docs/backprop.md."""
import math
import numbers

import numpy

from .. import backend
from . import functional as F
from .arguments import is_real
from .module import Module, Parameter, data_of, grad_of

__all__ = ["BatchNorm2d"]


class BatchNorm2d(Module):
    """Normalise each channel to zero mean and unit variance, then scale and shift it (as torch.nn.BatchNorm2d).

    x (N, C, H, W) -> y (N, C, H, W). For channel c, over its m = N·H·W values x[n, c, h, w] (⊙ is the
    elementwise product; sum_{n,h,w} and mean_{n,h,w} below run over those m values of channel c):
        training:   mu[c] = mean_{n,h,w} x[n, c, h, w],  var[c] = mean_{n,h,w} (x[n, c, h, w] - mu[c])^2
                    (the batch's statistics, biased variance)
        evaluation: mu = running_mean, var = running_var                 (with track_running_stats=False: as training)
        xhat = (x - mu[c]) / sqrt(var[c] + eps),   y = weight[c] xhat + bias[c]   (y = xhat when affine=False)
    Each training forward also updates the buffers in place, with a = momentum, or a = 1 / num_batches_tracked
    when momentum is None (the cumulative average of every batch so far):
        num_batches_tracked += 1
        running_mean = (1 - a) running_mean + a mu,   running_var = (1 - a) running_var + a var m / (m - 1)
    (the running variance is the unbiased one). Backward, given dL/dy (dy below), with
    s[c] = weight[c] / sqrt(var[c] + eps):
        dL/dbias[c] = sum_{n,h,w} dy[n, c, h, w],   dL/dweight[c] = sum_{n,h,w} (dy ⊙ xhat)[n, c, h, w]
        training:   dL/dx = s[c] (dy - mean_{n,h,w} dy - xhat ⊙ mean_{n,h,w}(dy ⊙ xhat))
        evaluation: dL/dx = s[c] dy   (mu and var are constants there)
    weight = 1 when affine=False. Parameters weight, bias (C,), initially ones and zeros; buffers running_mean
    (C,) zeros, running_var (C,) ones, num_batches_tracked () int64, all None with track_running_stats=False.
    """

    def __init__(self, num_features, eps=1e-5, momentum=0.1, affine=True, track_running_stats=True):
        super().__init__()
        if isinstance(num_features, bool) or not isinstance(num_features, numbers.Integral) or num_features < 1:
            raise ValueError(f"BatchNorm2d: num_features (the input's channels) must be a positive integer, "
                             f"got {num_features!r}")
        if not is_real(eps) or not 0 <= eps < math.inf:
            raise ValueError(f"BatchNorm2d: eps must be a finite number >= 0, got {eps!r}")
        if momentum is not None and (not is_real(momentum) or not 0 <= momentum <= 1):
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

    def forward(self, ctx, x):
        c = self.num_features
        if getattr(x, "ndim", None) != 4 or x.shape[1] != c or x.dtype.kind != "f":
            raise ValueError(f"BatchNorm2d: expected a floating-point input of shape (N, {c}, H, W) (num_features="
                             f"{c}), got {tuple(getattr(x, 'shape', ()))} {getattr(x, 'dtype', type(x).__name__)}")
        n, _, h, w = x.shape
        m = n * h * w
        batch_stats = self.training or self.running_mean is None
        if batch_stats and m == 1:
            raise ValueError(f"BatchNorm2d: expected more than 1 value per channel when using batch statistics, "
                             f"got input of shape {tuple(x.shape)}")
        running = None if batch_stats else (self.running_mean.astype(x.dtype), self.running_var.astype(x.dtype))
        y, ctx.saved = F.batch_norm(x, data_of(self.weight), data_of(self.bias), self.eps, running)
        if self.training and self.running_mean is not None:
            self._update_running_stats(ctx.saved.mean, ctx.saved.var, m)
        return y

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

    def backprop(self, ctx, dy):
        return F.batch_norm_backward(dy, ctx.saved, data_of(self.weight), grad_of(self.weight), grad_of(self.bias))

    def extra_repr(self):
        return (f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, affine={self.affine}, "
                f"track_running_stats={self.track_running_stats}")
