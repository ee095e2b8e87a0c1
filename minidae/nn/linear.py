"""Linear: an affine map, PyTorch layout weight (out_features, in_features)."""
import math

from .. import backend
from . import init
from .module import Module, Parameter

__all__ = ["Linear"]


class Linear(Module):
    """y = x W^T + b, x (*, in_features) -> y (*, out_features), any leading dimensions (as PyTorch).

    With the leading dimensions flattened into N rows, given dL/dy (N, out):
        dL/dx = dL/dy W          dL/dW = (dL/dy)^T x          dL/db = sum_n dL/dy[n]
    Init as PyTorch: W, b ~ U(-1/sqrt(in_features), 1/sqrt(in_features)).
    (``astype(x.dtype, copy=False)`` below returns the weight itself when the dtypes match: it
    saves a copy and changes nothing in the maths.)
    """

    def __init__(self, in_features, out_features, bias=True):
        super().__init__()
        if in_features < 1 or out_features < 1:
            raise ValueError(f"Linear: feature counts must be positive, got ({in_features}, {out_features})")
        self.in_features, self.out_features = in_features, out_features
        self.weight = Parameter(init.kaiming_uniform((out_features, in_features), a=math.sqrt(5)))
        self.bias = Parameter(init.uniform((out_features,), 1 / math.sqrt(in_features))) if bias else None

    def forward(self, x):
        if x.ndim < 1 or x.shape[-1] != self.in_features or x.dtype.kind != "f":
            raise ValueError(f"Linear: expected a floating-point input of shape (*, {self.in_features}), "
                             f"got {tuple(x.shape)} {x.dtype}")
        self._lead = x.shape[:-1]
        self._x = x = x.reshape(-1, self.in_features)
        y = backend.matmul(x, self.weight.data.astype(x.dtype, copy=False).T)
        if self.bias is not None:
            y += self.bias.data.astype(x.dtype, copy=False)
        return y.reshape(*self._lead, self.out_features)

    def backward(self, dy):
        dy = dy.reshape(-1, self.out_features)
        backend.matmul_add(self.weight.grad, dy.T, self._x)  # dL/dW += dy^T x
        if self.bias is not None:
            self.bias.grad += dy.sum(axis=0)
        dx = backend.matmul(dy, self.weight.data.astype(dy.dtype, copy=False))
        return dx.reshape(*self._lead, self.in_features)

    def extra_repr(self):
        return f"in_features={self.in_features}, out_features={self.out_features}"
