"""The one PyTorch parity helper, and what it records for the end-of-run summary."""
from collections import Counter, defaultdict

import numpy as np

from minidae import backend

TOLERANCE = {np.float64: 1e-10, np.float32: 1e-5}
WORST_ERRORS = defaultdict(float)  # (layer, dtype name) -> worst relative error seen in parity tests
REPLAY = defaultdict(Counter)  # layer -> {"cases": n, "passed": n, "unsupported: ...": n} from PyTorch's own cases



def _split(output):
    return output if isinstance(output, tuple) else (output, None)


def relative_error(ours, reference):
    """max |ours - reference| / max |reference| (normwise, so near-zero elements don't dominate)."""
    ours, reference = np.asarray(backend.to_numpy(ours), np.float64), np.asarray(reference, np.float64)
    assert ours.shape == reference.shape, f"shape {ours.shape} != reference {reference.shape}"
    if reference.size == 0:
        return 0.0
    scale = np.abs(reference).max()
    return float(np.abs(ours - reference).max() / (scale if scale > 0 else 1.0))


def copy_torch_weights(ours, theirs):
    """Load a torch module's parameters into the minidae module (same key names)."""
    ours.load_state_dict({k: v.detach().cpu().numpy() for k, v in theirs.state_dict().items()})


def assert_torch_parity(ours, theirs, x, dtype, label=None, call=None, copy_weights=True):
    """Run a minidae module and its PyTorch twin on the same input and upstream gradient.

    Compares output, input gradient and every parameter gradient (relative error within
    TOLERANCE[dtype]) and checks the dtype is preserved. ``theirs`` gets its weights
    copied into ``ours`` first. ``call(module, x)`` runs a module (default ``module(x)``); where
    it returns (output, indices), the indices must be equal. Returns the worst relative error.
    """
    import torch
    call = call or (lambda module, value: module(value))
    torch_dtype = {np.float32: torch.float32, np.float64: torch.float64}[dtype]
    theirs = theirs.to(torch_dtype)
    if copy_weights:
        copy_torch_weights(ours, theirs)
    ours.to(dtype)
    x = np.asarray(x, dtype=dtype)
    x_torch = torch.tensor(x, requires_grad=True)
    y_torch, indices_torch = _split(call(theirs, x_torch))
    upstream = np.random.default_rng(1).normal(size=tuple(y_torch.shape)).astype(dtype)
    y_torch.backward(torch.tensor(upstream))

    ours.zero_grad()
    y, indices = _split(call(ours, backend.xp.asarray(x)))
    dx = ours.backward(backend.xp.asarray(upstream))
    assert y.dtype == dtype and dx.dtype == dtype, f"dtype changed: output {y.dtype}, input grad {dx.dtype}"
    if indices_torch is not None:
        np.testing.assert_array_equal(backend.to_numpy(indices), indices_torch.numpy())
    errors = {"output": relative_error(y, y_torch.detach().numpy()),
              "input grad": relative_error(dx, x_torch.grad.numpy())}
    torch_params = dict(theirs.named_parameters())
    for name, param in ours.named_parameters():
        assert param.grad.dtype == dtype, f"{name}.grad has dtype {param.grad.dtype}"
        errors[f"{name} grad"] = relative_error(param.grad, torch_params[name].grad.numpy())
    worst = max(errors.values())
    key = (label or type(ours).__name__, np.dtype(dtype).name)
    WORST_ERRORS[key] = max(WORST_ERRORS[key], worst)
    bad = {k: v for k, v in errors.items() if v > TOLERANCE[dtype]}
    assert not bad, f"{key[0]} ({key[1]}) differs from PyTorch: relative errors {bad}"
    return worst
