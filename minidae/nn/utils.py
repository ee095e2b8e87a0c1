"""Gradient clipping, as torch.nn.utils: ``clip_grad_norm_`` and ``clip_grad_value_``, in place on ``.grad``.

Both stay on the device (no host read, so they can be part of a step captured as a CUDA graph), as PyTorch's
do: clip_grad_norm_ always multiplies by min(1, max_norm / (norm + 1e-6)) instead of testing the norm.
"""
import math

from .. import backend

__all__ = ["clip_grad_norm_", "clip_grad_value_"]


def _grads(parameters):
    from .module import Parameter
    params = [parameters] if isinstance(parameters, Parameter) else list(parameters)
    if any(not isinstance(p, Parameter) for p in params):
        raise TypeError("clip_grad: expected Parameters (model.parameters()), got "
                        f"{sorted({type(p).__name__ for p in params if not isinstance(p, Parameter)})}")
    return [p.grad for p in params if p.requires_grad and p.grad is not None]


def clip_grad_norm_(parameters, max_norm, norm_type=2.0, error_if_nonfinite=False):
    """Scale the gradients of ``parameters`` together so that their total norm (the norm of all of them as one
    vector; ``norm_type`` 2, 1, any p, or inf) is at most ``max_norm``; returns the total norm before clipping,
    a 0-d array. ``error_if_nonfinite`` raises when it is nan or inf (a host read)."""
    grads = _grads(parameters)
    if not grads:
        return backend.xp.zeros((), dtype="float32")
    xp, norm_type = backend.array_module(grads[0]), float(norm_type)
    if norm_type == math.inf:
        total = xp.max(xp.stack([xp.abs(g).max() if g.size else xp.zeros((), g.dtype) for g in grads]))
    else:
        total = xp.sum(xp.stack([(xp.abs(g) ** norm_type).sum() for g in grads])) ** (1.0 / norm_type)
    if error_if_nonfinite and not bool(xp.isfinite(total)):
        raise RuntimeError(f"clip_grad_norm_: the total norm of order {norm_type} of the gradients is {float(total)}; "
                           f"pass error_if_nonfinite=False to clip anyway")
    scale = xp.minimum(max_norm / (total + 1e-6), 1.0)
    for g in grads:
        g *= scale.astype(g.dtype)
    return total


def clip_grad_value_(parameters, clip_value):
    """Clip every gradient element of ``parameters`` into [-clip_value, clip_value], in place."""
    for g in _grads(parameters):
        backend.array_module(g).clip(g, -clip_value, clip_value, out=g)
