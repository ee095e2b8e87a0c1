"""The backend switch: selection, clear failures, and no change on failure."""
import sys
import types

import numpy as np
import pytest

from minidae import backend


def test_numpy_is_the_default_and_selectable():
    backend.use("numpy")
    assert backend.name == "numpy" and backend.xp is np
    assert backend.array_module(np.zeros(1)) is np


def test_unknown_backend_raises_value_error():
    with pytest.raises(ValueError, match="unknown backend 'jax'"):
        backend.use("jax")


@pytest.mark.parametrize("fake_cupy", [None, "broken-driver"], ids=["missing", "broken-driver"])
def test_unavailable_cupy_raises_and_keeps_the_active_backend(monkeypatch, fake_cupy):
    if fake_cupy is None:
        monkeypatch.setitem(sys.modules, "cupy", None)  # import fails as if not installed
    else:
        module = types.ModuleType("cupy")

        def no_driver():
            raise RuntimeError("cudaErrorInsufficientDriver: CUDA driver version is insufficient")

        module.cuda = types.SimpleNamespace(runtime=types.SimpleNamespace(getDeviceCount=no_driver))
        monkeypatch.setitem(sys.modules, "cupy", module)
    backend.use("numpy")
    with pytest.raises(backend.BackendUnavailable, match=r"backend 'cupy' is unavailable.*pip install") as info:
        backend.use("cupy")
    assert isinstance(info.value, RuntimeError)
    assert backend.name == "numpy" and backend.xp is np
    assert not backend.available("cupy")


def test_seed_makes_init_and_noise_repeatable(xp):
    from minidae import nn
    backend.seed(7)
    first, noise = nn.Linear(3, 2).weight.data, backend.rng().random(5)
    backend.seed(7)
    assert (nn.Linear(3, 2).weight.data == first).all() and (backend.rng().random(5) == noise).all()


def test_to_numpy_returns_host_arrays(xp):
    a = xp.arange(3.0)
    assert isinstance(backend.to_numpy(a), np.ndarray)
    assert backend.to_numpy(a).tolist() == [0.0, 1.0, 2.0]


@pytest.mark.skipif(not backend.available("cupy"), reason="CuPy parity with NumPy needs a CUDA GPU and CuPy")
@pytest.mark.parametrize("dtype, rtol", [(np.float64, 1e-12), (np.float32, 1e-5)])
def test_cupy_matches_numpy_on_the_spec_network(dtype, rtol):
    from minidae import models
    x = np.random.default_rng(0).uniform(size=(8, 1, 28, 28)).astype(dtype)
    results = {}
    for name in ("numpy", "cupy"):
        backend.use(name, seed_value=3)
        net = models.conv_dae().to(dtype)
        y = net(backend.xp.asarray(x))
        dx = net.backward(backend.xp.ones_like(y))
        results[name] = [backend.to_numpy(a) for a in (y, dx, *(p.grad for p in net.parameters()))]
    backend.use("numpy")
    for ours, reference in zip(results["cupy"], results["numpy"]):
        np.testing.assert_allclose(ours, reference, rtol=rtol, atol=rtol * np.abs(reference).max())


def test_matmul_of_a_column_and_a_row_is_their_outer_product_and_mismatches_still_raise():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(5, 1)).astype(np.float32), rng.normal(size=(1, 7)).astype(np.float32)
    np.testing.assert_array_equal(backend.matmul(a, b), a @ b)
    np.testing.assert_array_equal(backend.matmul(a, np.asfortranarray(b)), a @ b)
    with pytest.raises(ValueError):
        backend.matmul(a, rng.normal(size=(3, 7)).astype(np.float32))
