"""Dropout layers: random masks in training, the identity in evaluation. Their masks come from the active
backend's generator, ``backend.rng()``, which the trainer seeds."""
import numpy

from .. import backend
from . import functional as F
from .arguments import is_real
from .module import Module

__all__ = ["Dropout", "Dropout2d"]


class Dropout(Module):
    """Inverted dropout (as torch.nn.Dropout): in training, zero each element with probability p and scale the
    kept ones by 1 / (1 - p), so that the expected output is the input; in evaluation, y = x.

    x (any shape) -> y (x's shape). In training, with a new mask M of x's shape drawn at every call from
    backend.rng() (M = 1, "kept", with probability 1 - p, else 0) and ⊙ the elementwise product:
        y = x ⊙ S,   S = M / (1 - p)   (computed in x's dtype, as PyTorch; p = 1 gives S = 0, p = 0 gives y = x)
    Backward, given dL/dy: y is linear in x with the diagonal Jacobian S, so
        dL/dx = dL/dy ⊙ S   (the very mask of the matching forward, kept on its context)
    ``inplace=True`` is accepted for PyTorch's sake and gives the same numbers.
    """

    _array_input = True

    def __init__(self, p=0.5, inplace=False):
        super().__init__()
        if not is_real(p) or not 0 <= p <= 1:
            raise ValueError(f"{type(self).__name__}: p, the probability of zeroing, must be a number in [0, 1], "
                             f"got {p!r}")
        self.p, self.inplace = float(p), bool(inplace)

    def _mask_shape(self, x):
        """The shape of M: one draw per element."""
        return tuple(x.shape)

    def _draw_mask(self, shape, dtype):
        """M as booleans: True (keep) with probability 1 - p, one uniform draw in [0, 1) of ``dtype`` per element
        (float32 for float16, which the generators do not draw). Tests replace it to impose a mask (PyTorch's, or a
        fixed one)."""
        return backend.rng().random(shape, dtype=numpy.promote_types(dtype, numpy.float32)) < 1 - self.p

    def forward(self, ctx, x):
        shape = self._mask_shape(x)  # checks the input's shape in eval mode too
        if not self.training or self.p == 0:
            ctx.scale = None  # y = x
            return x
        keep = backend.array_module(x).zeros(shape, bool) if self.p == 1 else self._draw_mask(shape, x.dtype)
        y, ctx.scale = F.dropout(x, keep, self.p)
        return y

    def backprop(self, ctx, dy):
        return dy if ctx.scale is None else F.dropout_backward(dy, ctx.scale)

    def extra_repr(self):
        return f"p={self.p}"


class Dropout2d(Dropout):
    """Channel dropout (as torch.nn.Dropout2d): in training, zero each whole channel x[n, c] with probability p
    and scale the kept channels by 1 / (1 - p); in evaluation, y = x. Use it after convolutions, whose
    neighbouring pixels are too alike for element dropout to remove information.

    x (N, C, H, W) -> y (N, C, H, W). The mask M has shape (N, C, 1, 1), one draw per channel of each sample,
    broadcast over H and W; otherwise exactly Dropout:
        y = x ⊙ S,   S = M / (1 - p)          dL/dx = dL/dy ⊙ S   (S broadcast over H, W)
    A 3-D input is refused: PyTorch reads it as (N, C, L) with a warning that this will change.
    """

    def _mask_shape(self, x):
        """The shape of M: (N, C, 1, 1), one draw per channel of each sample."""
        if getattr(x, "ndim", None) != 4:
            raise ValueError(f"Dropout2d: expected an input of shape (N, C, H, W), got {tuple(getattr(x, 'shape', ()))}"
                             f"; for other shapes use Dropout (elements) or reshape to (N, C, H, W)")
        return tuple(x.shape[:2]) + (1, 1)
