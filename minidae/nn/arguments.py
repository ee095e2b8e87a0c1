"""PyTorch's argument surface: turning what a user may pass (an int or a pair, an unbatched image) into what the
maths core takes, with errors that name the layer, the argument and the value."""
import numbers

import numpy

__all__ = ["pair", "as_batch", "is_real"]


def pair(value, what, layer):
    """``value`` as an (h, w) pair of ints; ``what`` and ``layer`` name it in errors."""
    if isinstance(value, (int, numpy.integer)) and not isinstance(value, bool):
        return (int(value), int(value))
    try:
        h, w = value
    except (TypeError, ValueError):
        raise ValueError(f"{layer}: {what} must be an int or an (h, w) pair, got {value!r}") from None
    if not all(isinstance(v, (int, numpy.integer)) and not isinstance(v, bool) for v in (h, w)):
        raise ValueError(f"{layer}: {what} must be an int or an (h, w) pair, got {value!r}")
    return (int(h), int(w))


def as_batch(x, layer, channels=None):
    """(x as (N, C, H, W), whether it came unbatched as (C, H, W)), checking its shape and dtype."""
    expected = "(N, C, H, W) or (C, H, W)" if channels is None else f"(N, {channels}, H, W) or ({channels}, H, W)"
    if getattr(x, "ndim", None) not in (3, 4) or x.dtype.kind != "f" or (channels is not None
                                                                          and x.shape[-3] != channels):
        raise ValueError(f"{layer}: expected a floating-point input of shape {expected}, got "
                         f"{tuple(getattr(x, 'shape', ()))} {getattr(x, 'dtype', type(x).__name__)}")
    return (x[None], True) if x.ndim == 3 else (x, False)


def is_real(value):
    """A real number that is not a bool."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool)
