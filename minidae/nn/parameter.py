"""Parameter: a trainable array and its gradient, as torch.nn.Parameter (``.data`` and ``.grad``).

``.grad`` is None until a backward reaches the parameter, and ``zero_grad()`` (``set_to_none=True``, the default,
as PyTorch's) makes it None again; optimisers skip a parameter without a gradient (no update, no weight decay,
no momentum), as torch.optim does. A backward adds into the gradient through :func:`grad_of`, which first gives a
parameter without one a zero gradient, in the memory its last gradient used (so a speed device that lays every
gradient out in one flat array keeps it there).
"""
from .. import backend

__all__ = ["Parameter", "data_of", "grad_of"]


class Parameter:
    """A trainable array ``.data`` and the gradient ``.grad`` accumulated into it (None before any backward).

    Both are plain arrays of the active backend. ``.grad`` is None or an array that matches ``.data`` in shape,
    dtype and array module: assigning one that does not match raises, and giving ``.data`` another shape, dtype
    or backend leaves no gradient. ``requires_grad = False`` freezes the parameter: backwards add nothing to it
    and optimisers leave it as it is.
    """

    def __init__(self, data, requires_grad=True):
        self._grad = self._storage = None
        self.data = data
        self.requires_grad = bool(requires_grad)

    def __setattr__(self, key, value):
        """``data`` is a plain attribute (read without a call); assigning one of another shape, dtype or array module
        leaves the parameter without a gradient."""
        object.__setattr__(self, key, value)
        if key == "data" and self._storage is not None and not _matches(self._storage, value):
            self._grad = self._storage = None

    @property
    def grad(self):
        """dL/d(data), added to by each backward until ``zero_grad``; None where no backward has reached it."""
        return self._grad

    @grad.setter
    def grad(self, value):
        if value is not None and not _matches(value, self.data):
            raise ValueError(f"Parameter: the gradient must match the data: got {type(value).__module__} "
                             f"{getattr(value, 'dtype', None)} {tuple(getattr(value, 'shape', ()))} for "
                             f"{type(self.data).__module__} {self.data.dtype} {tuple(self.data.shape)}")
        self._grad = value
        if value is not None:
            self._storage = value

    def zero_grad(self, set_to_none=True):
        """No gradient (None; the default, as PyTorch), or with ``set_to_none=False`` its gradient zeroed (one that
        has none keeps none, as in PyTorch: optimisers go on skipping it)."""
        if set_to_none:
            self._grad = None
        elif self._grad is not None:
            self.grad = self.fresh_grad()

    def fresh_grad(self):
        """A zero gradient, written into the memory the last gradient used (made the first time)."""
        if self._storage is None:
            self._storage = backend.array_module(self.data).zeros_like(self.data)
        else:
            self._storage[...] = 0
        return self._storage

    @property
    def shape(self):
        """The shape of ``data``."""
        return self.data.shape

    @property
    def dtype(self):
        """The dtype of ``data``."""
        return self.data.dtype

    @property
    def ndim(self):
        """The number of axes of ``data``."""
        return self.data.ndim

    def numel(self):
        """The number of elements of ``data`` (``sum(p.numel() for p in model.parameters())`` counts a model's)."""
        return int(self.data.size)

    def requires_grad_(self, requires_grad=True):
        """Set ``requires_grad`` (False freezes the parameter); returns self."""
        self.requires_grad = bool(requires_grad)
        return self

    def __repr__(self):
        frozen = "" if self.requires_grad else ", requires_grad=False"
        return f"Parameter(shape={tuple(self.data.shape)}, dtype={self.data.dtype}{frozen})"


def _matches(a, b):
    """Same shape, dtype and array module."""
    return (getattr(a, "shape", None) == b.shape and getattr(a, "dtype", None) == b.dtype
            and backend.array_module(a) is backend.array_module(b))


def data_of(param):
    """``param.data``, or None for a missing parameter (the bias of a ``bias=False`` layer)."""
    return None if param is None else param.data


def grad_of(param):
    """Where a backward adds dL/dparam: ``param.grad``, a zero gradient first if it has none; None where no gradient
    is wanted (no such parameter, as the bias of a ``bias=False`` layer, or a frozen one, ``requires_grad = False``)."""
    if param is None or not param.requires_grad:
        return None
    if param._grad is None:
        param._grad = param.fresh_grad()
    return param._grad
