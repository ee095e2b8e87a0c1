"""MSELoss and BCELoss: values and gradients against PyTorch, and gradchecks."""
import numpy as np
import pytest

from minidae import gradcheck, nn
from minidae import backend


def torch_loss(name, pred, target):
    import torch
    p = torch.tensor(pred, requires_grad=True)
    loss = getattr(torch.nn, name)()(p, torch.tensor(target))
    loss.backward()
    return loss.item(), p.grad.numpy()


@pytest.mark.parametrize("dtype, rtol", [(np.float64, 1e-12), (np.float32, 1e-6)])
@pytest.mark.parametrize("name", ["MSELoss", "BCELoss"])
def test_matches_torch(xp, name, dtype, rtol):
    pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    pred = rng.uniform(0.01, 0.99, size=(4, 1, 5, 3)).astype(dtype)
    target = rng.uniform(0, 1, size=pred.shape).astype(dtype)
    pred[0, 0, 0, :] = [0.0, 1.0, 0.5]  # log(0) and log(1 - 1): BCE's -100 clamp and its epsilon
    target[0, 0, 0, :] = [1.0, 0.0, 0.5]
    criterion = getattr(nn, name)()
    loss = criterion(xp.asarray(pred), xp.asarray(target))
    grad = criterion.backward()
    expected_loss, expected_grad = torch_loss(name, pred, target)
    assert loss.dtype == dtype and grad.dtype == dtype
    np.testing.assert_allclose(float(loss), expected_loss, rtol=rtol)
    np.testing.assert_allclose(backend.to_numpy(grad), expected_grad, rtol=rtol, atol=rtol * np.abs(expected_grad).max())


@pytest.mark.parametrize("name", ["MSELoss", "BCELoss"])
def test_gradcheck(xp, name):
    rng = np.random.default_rng(1)
    pred, target = rng.uniform(0.05, 0.95, size=(3, 4)), rng.uniform(0, 1, size=(3, 4))
    result = gradcheck(getattr(nn, name)(), pred, target=target)
    assert result, str(result)


def test_shape_mismatch_raises():
    with pytest.raises(ValueError, match=r"MSELoss: prediction shape \(2, 3\) and target shape \(3, 2\) differ"):
        nn.MSELoss()(np.zeros((2, 3)), np.zeros((3, 2)))


def test_bce_rejects_values_outside_unit_interval():
    with pytest.raises(ValueError, match="BCELoss: predictions must lie in"):
        nn.BCELoss()(np.array([1.5, 0.5]), np.array([1.0, 0.0]))
