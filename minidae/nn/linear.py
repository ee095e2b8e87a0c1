"""Linear: an affine map, PyTorch layout weight (out_features, in_features)."""
import math

from . import functional as F
from . import init
from .module import Module, Parameter, data_of, grad_of

__all__ = ["Linear"]


class Linear(Module):
    """y = x W^T + b, x (*, in_features) -> y (*, out_features), any leading dimensions (as PyTorch).

    With the leading dimensions flattened into N rows, given dL/dy (N, out):
        dL/dx = dL/dy W          dL/dW = (dL/dy)^T x          dL/db = sum_n dL/dy[n]
    Init as PyTorch: W, b ~ U(-1/sqrt(in_features), 1/sqrt(in_features)).
    """

    def __init__(self, in_features, out_features, bias=True):
        super().__init__()
        if in_features < 1 or out_features < 1:
            raise ValueError(f"Linear: feature counts must be positive, got ({in_features}, {out_features})")
        self.in_features, self.out_features = in_features, out_features
        self.weight = Parameter(init.kaiming_uniform((out_features, in_features), a=math.sqrt(5)))
        self.bias = Parameter(init.uniform((out_features,), 1 / math.sqrt(in_features))) if bias else None

    def forward(self, ctx, x):
        if getattr(x, "ndim", 0) < 1 or x.shape[-1] != self.in_features or x.dtype.kind != "f":
            raise ValueError(f"Linear: expected a floating-point input of shape (*, {self.in_features}), "
                             f"got {tuple(getattr(x, 'shape', ()))} {getattr(x, 'dtype', type(x).__name__)}")
        ctx.lead = x.shape[:-1]
        y, ctx.x = F.linear(x.reshape(-1, self.in_features), self.weight.data, data_of(self.bias))
        return y.reshape(*ctx.lead, self.out_features)

    def backprop(self, ctx, dy):
        dx = F.linear_backward(dy.reshape(-1, self.out_features), ctx.x, self.weight.data, grad_of(self.weight),
                               grad_of(self.bias), ctx.needs_input_grad)
        return None if dx is None else dx.reshape(*ctx.lead, self.in_features)

    def extra_repr(self):
        return f"in_features={self.in_features}, out_features={self.out_features}"
