"""Module semantics a PyTorch user relies on: shared layers, which forward a backward belongs to,
eval/no_grad forwards, errors instead of silent mistakes, bounded memory. (tests/nn/test_contexts.py holds
the per-call contexts' tests against PyTorch: siamese and triplet calls, hand-written chains, logging
forwards, failed backwards.)"""
import re

import numpy as np
import pytest

import minidae
from minidae import gradcheck, nn


def shared_relu_pair(torch_module=None):
    """conv -> relu -> conv -> relu with ONE ReLU object, in minidae's and (optionally) torch's Sequential."""
    if torch_module is None:
        relu = nn.ReLU()
        return nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), relu, nn.Conv2d(3, 3, 3, padding=1), relu)
    relu = torch_module.ReLU()
    return torch_module.Sequential(torch_module.Conv2d(2, 3, 3, padding=1), relu,
                                   torch_module.Conv2d(3, 3, 3, padding=1), relu)


class SharedPoolNet(nn.Module):
    """A hand-written module that uses one MaxPool2d on two different shapes."""

    def __init__(self):
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(1, 4, 3, padding=1), nn.Conv2d(4, 4, 3, padding=1)
        self.pool, self.relu = nn.MaxPool2d(2), nn.ReLU()

    def forward(self, ctx, x):
        x = self.pool(self.relu(self.conv1(x)))
        return self.pool(self.relu(self.conv2(x)))

    def backprop(self, ctx, grad):
        """One MaxPool2d and one ReLU at two places each: back through the calls the forward made, newest first
        (``self.pool.backward(grad)`` would be refused: two calls of pool wait, and nothing says which)."""
        for call in reversed(ctx.calls):
            grad = call.backward(grad)
        return grad


def torch_shared_pool_net():
    import torch

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1, self.conv2 = torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.Conv2d(4, 4, 3, padding=1)
            self.pool, self.relu = torch.nn.MaxPool2d(2), torch.nn.ReLU()

        def forward(self, x):
            return self.pool(self.relu(self.conv2(self.pool(self.relu(self.conv1(x))))))
    return Net()


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["float64", "float32"])
def test_a_shared_relu_gets_torchs_gradients(xp, torch_parity, dtype):
    import torch
    x = np.random.default_rng(0).normal(size=(2, 2, 5, 4))
    torch_parity(shared_relu_pair(), shared_relu_pair(torch.nn), x, dtype, label="shared ReLU")


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["float64", "float32"])
def test_a_maxpool_shared_across_shapes_gets_torchs_gradients(xp, torch_parity, dtype):
    x = np.random.default_rng(1).normal(size=(2, 1, 12, 12))
    torch_parity(SharedPoolNet(), torch_shared_pool_net(), x, dtype, label="shared MaxPool2d")


def test_gradcheck_passes_with_shared_layers(xp):
    result = gradcheck(shared_relu_pair(), np.random.default_rng(2).normal(size=(2, 2, 4, 4)), max_elements=40)
    assert result, str(result)
    result = gradcheck(SharedPoolNet(), np.random.default_rng(3).normal(size=(1, 1, 8, 8)), max_elements=40)
    assert result, str(result)


@pytest.mark.parametrize("metrics", ["no_grad", "evaluating"])
def test_a_metrics_forward_between_forward_and_backward_changes_nothing(xp, metrics):
    layer = nn.Linear(3, 2)
    y = layer(xp.ones((4, 3), dtype=np.float32))
    with minidae.no_grad() if metrics == "no_grad" else minidae.evaluating(layer):
        layer(xp.zeros((4, 3), dtype=np.float32))
    layer.backward(xp.ones_like(y))
    assert bool((layer.weight.grad == 4).all())  # from the ones, not zeros from the metrics pass
    assert layer.training


def test_eval_mode_alone_keeps_the_context_as_pytorch_does(xp, torch_parity):
    """Eval mode changes what BatchNorm2d computes, not whether the call can be gone back through: a BatchNorm2d
    frozen with .eval() inside a training model (PyTorch's way of freezing its statistics) has its backward."""
    import torch

    def frozen(module):
        model = module.Sequential(module.Conv2d(2, 3, 3, padding=1), module.BatchNorm2d(3), module.ReLU())
        model[1].eval()
        return model
    x = np.random.default_rng(4).normal(size=(2, 2, 5, 5))
    ours, theirs = frozen(nn), frozen(torch.nn)
    ours[1].running_mean[...] = 0.3  # statistics that are not the batch's: the evaluation formula must be used
    theirs[1].running_mean.fill_(0.3)
    torch_parity(ours, theirs, x, np.float64, label="BatchNorm2d frozen with eval()")
    assert float(ours[1].running_mean[0]) == float(np.float32(0.3))  # and nothing updated them


def test_backward_twice_and_before_forward_raise_naming_the_layer(xp):
    with pytest.raises(RuntimeError, match=r"Sigmoid.backward: no forward is waiting for its backward. Call the "
                                           r"module \(y = module\(x\)\) before each backward"):
        nn.Sigmoid().backward(xp.ones(3))
    net = nn.Sequential(nn.Linear(3, 2), nn.ReLU())
    y = net(xp.ones((1, 3), dtype=np.float32))
    net.backward(xp.ones_like(y))
    with pytest.raises(RuntimeError, match="Sequential.backward: .*a second backward is refused"):
        net.backward(xp.ones_like(y))
    criterion = nn.MSELoss()  # losses follow the same contract
    criterion(y, xp.zeros_like(y))
    criterion.backward()
    with pytest.raises(RuntimeError, match="MSELoss.backward: no forward is waiting"):
        criterion.backward()


def test_a_forward_under_no_grad_leaves_nothing_to_go_back_through(xp):
    layer = nn.ReLU()
    with minidae.no_grad():
        layer(xp.ones(3))
    with pytest.raises(RuntimeError, match="under no_grad"):
        layer.backward(xp.ones(3))


@pytest.mark.parametrize("make, shape, grad_shape", [
    (lambda: nn.Linear(3, 2), (4, 3), (4, 3)), (lambda: nn.Conv2d(1, 2, 3), (1, 1, 5, 5), (1, 2, 5, 5)),
    (nn.Sigmoid, (2, 2), (3, 2))], ids=["Linear", "Conv2d", "Sigmoid"])
def test_a_wrong_upstream_gradient_shape_is_named(xp, make, shape, grad_shape):
    layer = make()  # built on the test's backend
    y = layer(xp.ones(shape, dtype=np.float32))
    expected = re.escape(f"{type(layer).__name__}.backward: expected a gradient of shape {tuple(y.shape)} (the "
                         f"shape of its output), got {grad_shape}")
    with pytest.raises(ValueError, match=expected):
        layer.backward(xp.ones(grad_shape, dtype=np.float32))


class AssignsGrad(nn.Linear):
    """The classic mistake: .grad assigned instead of accumulated."""

    def backprop(self, ctx, dy):
        self.weight.grad = dy.T @ ctx.x
        self.bias.grad = dy.sum(axis=0)
        return dy @ self.weight.data


class ChangesDtype(nn.Module):
    def forward(self, ctx, x):
        return x.astype(np.float32)

    def backprop(self, ctx, dy):
        return dy.astype(np.float64)


def test_gradcheck_catches_an_assigned_grad_and_a_changed_dtype():
    result = gradcheck(AssignsGrad(3, 2), np.random.default_rng(4).normal(size=(4, 3)))
    assert not result and any("weight.grad does not accumulate" in p and "p.grad +=" in p for p in result.problems)
    result = gradcheck(ChangesDtype(), np.random.default_rng(4).normal(size=(4, 3)))
    assert not result and any("the output is float32 for a float64 input" in p for p in result.problems)


def test_an_input_on_another_backend_than_the_parameters_is_named(xp):
    if xp is np:
        pytest.skip("needs two backends: the CuPy case gives a NumPy-built layer a CuPy input")
    from minidae import backend
    backend.use("numpy")
    layer = nn.Linear(3, 2)  # NumPy parameters
    with pytest.raises(ValueError, match=r"Linear: the input is a cupy array but the parameters are numpy arrays"):
        layer(xp.ones((1, 3), dtype=np.float32))
