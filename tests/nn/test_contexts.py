"""Per-call contexts: every backward pairs with its own forward, against PyTorch in float64.

The programs here are the ones that went wrong when a layer kept its forward's values on itself: siamese and
triplet top-level calls, a hand-written chain that reuses one activation, a logging forward between a forward
and its backward, a backward that fails and is called again, and a loop of forwards without backwards.
"""
import re
import warnings

import numpy as np
import pytest

import minidae
from minidae import nn

torch = pytest.importorskip("torch", reason="these checks compare with PyTorch: pip install -e .[test]")


def twins():
    """Linear-ReLU-Linear in minidae and PyTorch, float64, same weights."""
    ours = nn.Sequential(nn.Linear(4, 5), nn.ReLU(), nn.Linear(5, 3)).to(np.float64)
    theirs = torch.nn.Sequential(torch.nn.Linear(4, 5), torch.nn.ReLU(), torch.nn.Linear(5, 3)).double()
    ours.load_state_dict({k: v.detach().numpy() for k, v in theirs.state_dict().items()})
    return ours, theirs


def data(count, seed=0):
    """``count`` (input, upstream gradient) pairs, float64, away from ReLU's kink."""
    rng = np.random.default_rng(seed)
    return [(rng.normal(size=(6, 4)), rng.normal(size=(6, 3))) for _ in range(count)]


def torch_grads(theirs, pairs):
    """PyTorch's input gradients and parameter gradients for sum_k <g_k, net(x_k)>."""
    inputs = [torch.tensor(x, requires_grad=True) for x, _ in pairs]
    total = sum((theirs(x) * torch.tensor(g)).sum() for x, (_, g) in zip(inputs, pairs))
    total.backward()
    return [x.grad.numpy() for x in inputs], {k: p.grad.numpy() for k, p in theirs.named_parameters()}


def assert_close(ours_dx, ours_net, reference):
    ref_dx, ref_params = reference
    for got, expected in zip(ours_dx, ref_dx):
        np.testing.assert_allclose(minidae.backend.to_numpy(got), expected, rtol=1e-12, atol=1e-14)
    for key, param in ours_net.named_parameters():
        np.testing.assert_allclose(minidae.backend.to_numpy(param.grad), ref_params[key], rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("branches", [2, 3], ids=["siamese", "triplet"])
def test_siamese_and_triplet_top_level_calls_pair_each_backward_with_its_forward(xp, branches):
    ours, theirs = twins()
    pairs = data(branches)
    outputs = [ours(xp.asarray(x)) for x, _ in pairs]
    assert all(o.shape == (6, 3) for o in outputs)
    dxs = [ours.backward(xp.asarray(g)) for _, g in reversed(pairs)][::-1]  # backwards in reverse order
    assert_close(dxs, ours, torch_grads(theirs, pairs))


def test_a_hand_written_chain_reusing_one_activation_at_top_level(xp):
    act, l1, l2 = nn.Tanh(), nn.Linear(4, 5).to(np.float64), nn.Linear(5, 3).to(np.float64)
    t_l1, t_l2 = torch.nn.Linear(4, 5).double(), torch.nn.Linear(5, 3).double()
    for ours, theirs in ((l1, t_l1), (l2, t_l2)):
        ours.load_state_dict({k: v.detach().numpy() for k, v in theirs.state_dict().items()})
    (x, g), = [(x, g) for x, g in data(1, seed=3)]
    h = act(l1(xp.asarray(x)))
    y = act(l2(h))
    dx = l1.backward(act.backward(l2.backward(act.backward(xp.asarray(g)))))
    xt = torch.tensor(x, requires_grad=True)
    (torch.tanh(t_l2(torch.tanh(t_l1(xt)))) * torch.tensor(g)).sum().backward()
    np.testing.assert_allclose(minidae.backend.to_numpy(y), torch.tanh(t_l2(torch.tanh(t_l1(xt)))).detach().numpy(),
                               rtol=1e-13)
    np.testing.assert_allclose(minidae.backend.to_numpy(dx), xt.grad.numpy(), rtol=1e-12, atol=1e-14)
    for ours, theirs in ((l1, t_l1), (l2, t_l2)):
        np.testing.assert_allclose(minidae.backend.to_numpy(ours.weight.grad), theirs.weight.grad.numpy(), rtol=1e-12)


def test_a_logging_forward_under_no_grad_leaves_the_gradients_right(xp):
    ours, theirs = twins()
    (x, g), (x_log, _) = data(2, seed=5)
    ours(xp.asarray(x))
    with minidae.no_grad():
        ours(xp.asarray(x_log))
    dx = ours.backward(xp.asarray(g))
    assert_close([dx], ours, torch_grads(theirs, [(x, g)]))


def test_a_logging_forward_in_training_mode_is_named_with_the_fix(xp):
    """y = net(x); logged = net(x_log); net.backward(g): the backward cannot know that g is not logged's
    gradient, so it pairs with the newest forward. The next call of net finds the forward that was passed
    over and says so, naming no_grad() and eval mode, and drops what it kept, its sub-modules' included."""
    ours, _ = twins()
    (x, g), (x_log, _) = data(2, seed=5)
    ours(xp.asarray(x))
    logged = ours(xp.asarray(x_log))
    ours.backward(xp.asarray(g))
    with pytest.warns(RuntimeWarning, match=re.escape("Sequential: 1 forward(s) never got their backward")) as caught:
        y = ours(xp.asarray(x))
    assert len(caught) == 1 and "minidae.no_grad()" in str(caught[0].message) and "evaluating" in str(caught[0].message)
    assert [len(m._waiting) for _, m in ours.named_modules()] == [1, 1, 1, 1]  # only the new forward's
    ours.backward(xp.ones_like(y))
    assert all(not m._waiting for _, m in ours.named_modules()) and logged.shape == y.shape


def test_a_refused_backward_leaves_the_forward_usable(xp):
    ours, theirs = twins()
    (x, g), = data(1, seed=7)
    ours(xp.asarray(x))
    with pytest.raises(ValueError, match=r"Sequential.backward needs dL/dy.*\(an array of shape \(6, 3\)\).*"
                                         r"net.backward\(criterion.backward\(\)\)"):
        ours.backward()
    with pytest.raises(ValueError, match=r"Sequential.backward: expected a gradient of shape \(6, 3\)"):
        ours.backward(xp.ones((6, 4)))
    with pytest.raises(ValueError, match=r"got a scalar where dL/dy of shape \(6, 3\) is needed.*criterion.backward"):
        ours.backward(xp.asarray(1.0))
    with pytest.raises(TypeError, match=r"got a torch.Tensor.*\.numpy\(\)"):
        ours.backward(torch.tensor(g))
    dx = ours.backward(xp.asarray(g))
    assert_close([dx], ours, torch_grads(theirs, [(x, g)]))


class FailsOnce(nn.Module):
    """The identity, whose first backward raises (as a bug a user then fixes would)."""

    def __init__(self):
        super().__init__()
        self.failed = False

    def forward(self, ctx, x):
        ctx.seen = x.shape
        return x

    def backprop(self, ctx, dy):
        if not self.failed:
            self.failed = True
            raise ArithmeticError("first backward fails")
        return dy


def test_a_backward_that_raises_inside_keeps_its_context(xp):
    layer = FailsOnce()
    layer(xp.ones((2, 3)))
    with pytest.raises(ArithmeticError):
        layer.backward(xp.ones((2, 3)))
    assert len(layer._waiting) == 1
    assert layer.backward(xp.ones((2, 3))).shape == (2, 3) and not layer._waiting


def test_memory_stays_bounded_over_60_training_forwards_without_backward(xp):
    net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(2 * 6 * 6, 3))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(60):
            net(xp.ones((2, 1, 8, 8), dtype=np.float32))
    limit = nn.Module.max_pending
    assert all(len(module._waiting) <= limit for _, module in net.named_modules())
    assert sum(len(module._waiting) for _, module in net.named_modules()) == 5 * limit
    messages = {str(w.message) for w in caught}
    assert len(caught) == 60 - limit and all(w.category is RuntimeWarning for w in caught)
    assert all(m.startswith(f"Sequential: {limit} forwards are waiting") and "no_grad()" in m
               for m in messages)  # one module speaks for its sub-modules, whose contexts went with its own


def test_a_layer_used_more_often_than_max_pending_can_raise_it(xp):
    relu = nn.ReLU()
    relu.max_pending = 100
    x = xp.ones(3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for _ in range(50):
            x = relu(x)
        for _ in range(50):
            relu.backward(xp.ones(3))


def test_the_contract_is_checked_when_a_class_is_defined():
    with pytest.raises(TypeError, match=r"Old defines backward\(\); define backprop\(self, ctx, dy\) instead"):
        class Old(nn.Module):
            def forward(self, ctx, x):
                return x

            def backward(self, dy):
                return dy
    with pytest.raises(TypeError, match=r"Torchy.forward\(self, x\): the first argument after self is the call's "
                                        r"context: def forward\(self, ctx, x\)"):
        class Torchy(nn.Module):
            def forward(self, x):
                return x


def test_a_layer_keeps_nothing_on_itself_between_calls(xp):
    """What a forward keeps is on its context, never on the layer: the layer's attributes are the same
    before and after a forward."""
    for layer, shape in ((nn.Conv2d(2, 3, 3, padding=1), (2, 2, 5, 5)), (nn.MaxPool2d(2), (1, 2, 4, 4)),
                         (nn.Linear(3, 4), (2, 3)), (nn.Sigmoid(), (3,)), (nn.BatchNorm2d(2), (3, 2, 2, 2))):
        before = {k: v for k, v in vars(layer).items() if k not in ("_waiting", "_last_back")}
        layer(xp.ones(shape, dtype=np.float32))
        after = {k: v for k, v in vars(layer).items() if k not in ("_waiting", "_last_back")}
        assert before.keys() == after.keys() and all(before[k] is after[k] for k in before), type(layer).__name__
        assert len(layer._waiting) == 1 and vars(layer._waiting[0].ctx)


def test_a_zoo_models_unregistered_layers_are_dropped_with_it(xp):
    """A Chain keeps its activations in a plain list (not sub-modules): a passed-over forward of the model still
    takes their contexts with it, and the warning comes once, from the model."""
    from minidae import models
    model = models.build("conv_dae")
    x = xp.asarray(np.random.default_rng(0).uniform(size=(2, 1, 28, 28)), dtype=np.float32)
    model(x)
    model(x)  # a logging forward in training mode
    model.backward(xp.ones((2, 1, 28, 28), dtype=np.float32))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model(x)
    assert [str(w.message).split(":")[0] for w in caught] == ["ConvDAE"]
    assert all(len(layer._waiting) == 1 for layer in model.layers)  # only the new forward's, everywhere


def test_a_backward_that_fails_deep_inside_a_model_puts_every_context_back(xp):
    """The last layer is gone back through before the middle one fails: the retry finds every context again
    (the gradients added before the error stay, as in PyTorch: zero them before trying again)."""
    ours, theirs = twins()
    failing = FailsOnce()
    net = nn.Sequential(ours[0], ours[1], failing, ours[2])
    (x, g), = data(1, seed=9)
    net(xp.asarray(x))
    with pytest.raises(ArithmeticError):
        net.backward(xp.asarray(g))
    assert all(len(m._waiting) == 1 for m in (net, ours[0], ours[1], failing, ours[2]))
    net.zero_grad()
    dx = net.backward(xp.asarray(g))
    assert_close([dx], ours, torch_grads(theirs, [(x, g)]))
