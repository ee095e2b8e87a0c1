"""Which forward a backward belongs to: right or refused at that backward, never wrong (against PyTorch, float64).

The programs here are the ones that went wrong silently when a backward took the newest waiting forward: a siamese
pair or a triplet whose backwards come in the forwards' order, gradient accumulation with both forwards first, one
loss object for two terms, a logging forward between a forward and its backward, and a layer called more than 32
times in one forward. Each is now either right (the calls a forward made are recorded on its context, and a lone
waiting forward is certain) or refused at the backward itself, saying how to name the forward (``output=``).
"""
import gc
import re
import weakref

import numpy as np
import pytest

import minidae
from minidae import models, nn

torch = pytest.importorskip("torch", reason="these checks compare with PyTorch: pip install -e .[test]")

AMBIGUOUS = r"forwards of Sequential wait for their backward, and nothing says which one"


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
def test_siamese_and_triplet_backwards_in_the_forwards_order_are_refused_unnamed_and_right_named(xp, branches):
    ours, theirs = twins()
    pairs = data(branches)
    outputs = [ours(xp.asarray(x)) for x, _ in pairs]
    with pytest.raises(RuntimeError, match=f"{branches} {AMBIGUOUS}.*output=y"):
        ours.backward(xp.asarray(pairs[0][1]))  # what silently went back through the last forward
    assert all(p.grad is None for p in ours.parameters())  # refused before anything was added
    dxs = [ours.backward(xp.asarray(g), output=y) for (_, g), y in zip(pairs, outputs)]  # the forwards' order
    assert_close(dxs, ours, torch_grads(theirs, pairs))
    assert not ours._waiting


def test_named_backwards_in_any_order_are_right(xp):
    ours, theirs = twins()
    pairs = data(3, seed=1)
    outputs = [ours(xp.asarray(x)) for x, _ in pairs]
    dxs = {k: ours.backward(xp.asarray(pairs[k][1]), output=outputs[k]) for k in (1, 0, 2)}
    assert_close([dxs[k] for k in range(3)], ours, torch_grads(theirs, pairs))


class Siamese(nn.Module):
    """One network applied to two inputs, as one Module: two inputs, two outputs."""

    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, ctx, x1, x2):
        return self.net(x1), self.net(x2)

    def backprop(self, ctx, dz1, dz2):
        first, second = ctx.calls  # the two calls of one network: each goes back through its own
        return first.backward(dz1), second.backward(dz2)


def test_a_siamese_pair_as_one_module_with_two_inputs_and_two_outputs(xp):
    ours, theirs = twins()
    (x1, g1), (x2, g2) = data(2, seed=2)
    pair = Siamese(ours)
    z1, z2 = pair(xp.asarray(x1), xp.asarray(x2))
    dx1, dx2 = pair.backward((xp.asarray(g1), xp.asarray(g2)))
    assert_close([dx1, dx2], ours, torch_grads(theirs, [(x1, g1), (x2, g2)]))
    ours.zero_grad()
    theirs.zero_grad()
    pair(xp.asarray(x1), xp.asarray(x2))
    dx1, dx2 = pair.backward((xp.asarray(g1), None))  # an output the loss does not use: zeros, as PyTorch
    assert_close([dx1], ours, torch_grads(theirs, [(x1, g1)]))
    assert not bool(dx2.any())
    pair(xp.asarray(x1), xp.asarray(x2))
    with pytest.raises(ValueError, match=r"Siamese.backward: its forward returned 2 outputs; pass their gradients "
                                         r"as a tuple of 2"):
        pair.backward(xp.asarray(g1))
    with pytest.raises(ValueError, match=r"Siamese.backward: expected a gradient of shape \(6, 3\)"):
        pair.backward((xp.asarray(g1), xp.ones((6, 4))))


class TwoHeads(nn.Module):
    """A shared trunk and two heads: one input, two outputs; the trunk's gradient is the sum of the heads'."""

    def __init__(self):
        super().__init__()
        self.trunk, self.relu = nn.Linear(4, 5), nn.ReLU()
        self.head_a, self.head_b = nn.Linear(5, 3), nn.Linear(5, 2)

    def forward(self, ctx, x):
        h = self.relu(self.trunk(x))
        return self.head_a(h), self.head_b(h)

    def backprop(self, ctx, da, db):
        dh = self.head_a.backward(da) + self.head_b.backward(db)
        return self.trunk.backward(self.relu.backward(dh))


def test_a_two_headed_net_matches_torch(xp):
    ours = TwoHeads().to(np.float64)
    theirs = torch.nn.ModuleDict({"trunk": torch.nn.Linear(4, 5), "head_a": torch.nn.Linear(5, 3),
                                  "head_b": torch.nn.Linear(5, 2)}).double()
    ours.load_state_dict({k: v.detach().numpy() for k, v in theirs.state_dict().items()})
    rng = np.random.default_rng(3)
    x, ga, gb = rng.normal(size=(6, 4)), rng.normal(size=(6, 3)), rng.normal(size=(6, 2))
    a, b = ours(xp.asarray(x))
    dx = ours.backward((xp.asarray(ga), xp.asarray(gb)))
    xt = torch.tensor(x, requires_grad=True)
    h = torch.relu(theirs["trunk"](xt))
    ((theirs["head_a"](h) * torch.tensor(ga)).sum() + (theirs["head_b"](h) * torch.tensor(gb)).sum()).backward()
    np.testing.assert_allclose(minidae.backend.to_numpy(dx), xt.grad.numpy(), rtol=1e-12, atol=1e-14)
    for key, p in ours.named_parameters():
        np.testing.assert_allclose(minidae.backend.to_numpy(p.grad), dict(theirs.named_parameters())[key].grad.numpy(),
                                   rtol=1e-12, atol=1e-14)
    assert minidae.gradcheck(TwoHeads(), rng.normal(size=(3, 4)))


def test_one_loss_object_for_two_terms_names_each(xp):
    rng = np.random.default_rng(4)
    a, b, ta, tb = (rng.normal(size=(3, 2)) for _ in range(4))
    criterion = nn.MSELoss()
    loss_a = criterion(xp.asarray(a), xp.asarray(ta))
    loss_b = criterion(xp.asarray(b), xp.asarray(tb))
    with pytest.raises(RuntimeError, match=r"MSELoss.backward: 2 forwards of MSELoss wait"):
        criterion.backward()  # silently returned b's gradient before
    ga = criterion.backward(output=loss_a)
    gb = criterion.backward(output=loss_b)
    at, bt = torch.tensor(a, requires_grad=True), torch.tensor(b, requires_grad=True)
    (torch.nn.functional.mse_loss(at, torch.tensor(ta)) + torch.nn.functional.mse_loss(bt, torch.tensor(tb))).backward()
    np.testing.assert_allclose(minidae.backend.to_numpy(ga), at.grad.numpy(), rtol=1e-14)
    np.testing.assert_allclose(minidae.backend.to_numpy(gb), bt.grad.numpy(), rtol=1e-14)
    assert float(loss_a) == pytest.approx(float(((a - ta) ** 2).mean()), rel=1e-15)


def test_gradient_accumulation_with_both_forwards_first(xp):
    ours, theirs = twins()
    criterion = nn.MSELoss()
    rng = np.random.default_rng(5)
    (x1, t1), (x2, t2) = [(rng.normal(size=(6, 4)), rng.normal(size=(6, 3))) for _ in range(2)]
    y1, y2 = ours(xp.asarray(x1)), ours(xp.asarray(x2))
    l1, l2 = criterion(y1, xp.asarray(t1)), criterion(y2, xp.asarray(t2))
    ours.backward(criterion.backward(output=l1), output=y1)
    ours.backward(criterion.backward(output=l2), output=y2)
    mse = torch.nn.functional.mse_loss
    (mse(theirs(torch.tensor(x1)), torch.tensor(t1)) + mse(theirs(torch.tensor(x2)), torch.tensor(t2))).backward()
    assert_close([], ours, ([], {k: p.grad.numpy() for k, p in theirs.named_parameters()}))


@pytest.mark.parametrize("logging", ["kept", "dropped", "eval mode"])
def test_a_logging_forward_between_a_forward_and_its_backward_is_refused_there(xp, logging):
    """y = net(x); a logging forward in training mode (or in eval mode outside no_grad); net.backward(g): the
    backward cannot know g is not the logging forward's, so it is refused at once (it used to pair g with the
    logging forward, and the warning came after optimizer.step() had used the wrong numbers)."""
    ours, theirs = twins()
    (x, g), (x_log, _) = data(2, seed=5)
    y = ours(xp.asarray(x))
    if logging == "eval mode":
        ours.eval()
    logged = ours(xp.asarray(x_log))
    ours.train()
    if logging == "dropped":
        float(logged.sum())
        del logged
    with pytest.raises(RuntimeError, match=f"2 {AMBIGUOUS}.*no_grad"):
        ours.backward(xp.asarray(g))
    dx = ours.backward(xp.asarray(g), output=y)  # named: right
    assert_close([dx], ours, torch_grads(theirs, [(x, g)]))


def test_a_logging_forward_under_no_grad_leaves_the_gradients_right(xp):
    ours, theirs = twins()
    (x, g), (x_log, _) = data(2, seed=5)
    ours(xp.asarray(x))
    with minidae.no_grad():
        ours(xp.asarray(x_log))
    dx = ours.backward(xp.asarray(g))
    assert_close([dx], ours, torch_grads(theirs, [(x, g)]))


def test_more_forwards_than_max_waiting_drop_the_oldest_and_refuse_unnamed_backwards_until_one_goes_through(xp):
    """An evaluation loop without no_grad: the fifth forward drops the oldest (memory stays bounded), with a
    warning; the next unnamed backward might belong to a dropped forward, so it is refused until a backward goes
    through; named, it is right; after it, unnamed backwards work again."""
    ours, theirs = twins()
    (x, g), (x2, g2) = data(2, seed=6)
    with pytest.warns(RuntimeWarning, match=r"Sequential: 5 forwards would wait for their backward \(at most "
                                            r"max_waiting = 4\); the oldest is dropped.*no_grad"):
        for _ in range(5):
            ours(xp.asarray(x2))
        y = ours(xp.asarray(x))
    assert ours._dropped == 2 and len(ours._waiting) == 4
    with pytest.raises(RuntimeError, match=r"6 forwards of Sequential wait for their backward \(2 of them dropped"):
        ours.backward(xp.asarray(g))
    ours.backward(xp.asarray(g), output=y)
    assert ours._dropped == 0 and len(ours._waiting) == 3
    with minidae.no_grad():  # (the evaluation loop, corrected)
        ours(xp.asarray(x2))
    ours._waiting.clear()  # (and what it left behind, forgotten)
    ours(xp.asarray(x2))
    dx = ours.backward(xp.asarray(g2))  # one forward waits: certain, unnamed
    reference = torch_grads(theirs, [(x, g), (x2, g2)])
    np.testing.assert_allclose(minidae.backend.to_numpy(dx), reference[0][1], rtol=1e-12, atol=1e-14)
    for key, p in ours.named_parameters():
        np.testing.assert_allclose(minidae.backend.to_numpy(p.grad), reference[1][key], rtol=1e-12, atol=1e-14)


def test_the_simple_case_needs_no_name_even_when_the_output_is_not_kept(xp):
    """``layer(x); layer.backward(dy)`` and ``loss = criterion(model(x), t); model.backward(criterion.backward())``
    (the model's output held only by the loss's context) pair for certain: one forward waits."""
    ours, theirs = twins()
    (x, g), = data(1, seed=7)
    ours(xp.asarray(x))
    dx = ours.backward(xp.asarray(g))
    assert_close([dx], ours, torch_grads(theirs, [(x, g)]))
    criterion = nn.MSELoss()
    criterion(ours(xp.asarray(x)), xp.zeros((6, 3)))  # neither the output nor the loss kept
    assert ours.backward(criterion.backward()).shape == (6, 4)


class Unrolled(nn.Module):
    """One Linear + Tanh cell applied ``steps`` times in one forward (an unrolled recurrence)."""

    def __init__(self, steps, by_calls=True):
        super().__init__()
        self.cell, self.act, self.steps, self.by_calls = nn.Linear(3, 3), nn.Tanh(), steps, by_calls

    def forward(self, ctx, h):
        for _ in range(self.steps):
            h = self.act(self.cell(h))
        return h

    def backprop(self, ctx, dh):
        if self.by_calls:
            for call in reversed(ctx.calls):
                dh = call.backward(dh)
            return dh
        for _ in range(self.steps):
            dh = self.cell.backward(self.act.backward(dh))
        return dh


def test_a_layer_called_100_times_in_one_forward_goes_back_through_each_call(xp):
    ours = Unrolled(100).to(np.float64)
    cell = torch.nn.Linear(3, 3).double()
    ours.load_state_dict({"cell." + k: v.detach().numpy() for k, v in cell.state_dict().items()})
    rng = np.random.default_rng(8)
    x, g = rng.normal(size=(2, 3)), rng.normal(size=(2, 3))
    y = ours(xp.asarray(x))
    dx = ours.backward(xp.asarray(g))
    xt = torch.tensor(x, requires_grad=True)
    h = xt
    for _ in range(100):
        h = torch.tanh(cell(h))
    (h * torch.tensor(g)).sum().backward()
    np.testing.assert_allclose(minidae.backend.to_numpy(y), h.detach().numpy(), rtol=1e-13)
    np.testing.assert_allclose(minidae.backend.to_numpy(dx), xt.grad.numpy(), rtol=1e-11, atol=1e-14)
    np.testing.assert_allclose(minidae.backend.to_numpy(ours.cell.weight.grad), cell.weight.grad.numpy(), rtol=1e-11)


def test_a_shared_layer_gone_back_through_by_object_is_refused_inside_its_module(xp):
    ours = Unrolled(3, by_calls=False)
    ours(xp.ones((2, 3), dtype=np.float32))
    with pytest.raises(RuntimeError, match=r"Tanh.backward: 3 forwards of Tanh wait for their backward.*inside "
                                           r"Unrolled.backprop, go back through ctx.calls"):
        ours.backward(xp.ones((2, 3), dtype=np.float32))
    assert all(p.grad is None for p in ours.parameters())
    ours.by_calls = True  # the corrected backprop finds every call waiting again
    assert ours.backward(xp.ones((2, 3), dtype=np.float32)).shape == (2, 3)


def test_an_evaluation_loop_without_no_grad_holds_a_bounded_number_of_forwards(xp):
    """The spec net at batch 1,000, ten forwards without a backward (the evaluation loop that forgets no_grad): the
    values of at most max_waiting = 4 forwards stay, not 32, not all."""
    model, criterion = models.conv_dae(), nn.MSELoss()
    x = xp.asarray(np.random.default_rng(9).uniform(size=(1000, 1, 28, 28)), dtype=np.float32)
    contexts = []
    with pytest.warns(RuntimeWarning, match="max_waiting"):
        for _ in range(10):
            error = float(criterion(model(x), x))
            contexts.append(weakref.ref(model._waiting[-1].ctx))
    gc.collect()
    assert sum(ref() is not None for ref in contexts) == 4 and error > 0
    assert len(model._waiting) == 4 and model._dropped == 6


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
    with pytest.raises(RuntimeError, match=re.escape("no waiting call of Sequential returned the array given as "
                                                     "output=")):
        ours.backward(xp.asarray(g), output=xp.ones((6, 3)))
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
    y = layer(xp.ones((2, 3)))
    with pytest.raises(ArithmeticError):
        layer.backward(xp.ones((2, 3)))
    assert len(layer._waiting) == 1
    assert layer.backward(xp.ones((2, 3))).shape == (2, 3) and not layer._waiting and y.shape == (2, 3)


def test_a_backward_that_fails_deep_inside_a_model_leaves_every_call_waiting(xp):
    """The last layer is gone back through before the middle one fails: the retry finds every call waiting again
    (the gradients added before the error stay, as in PyTorch: zero them before trying again)."""
    ours, theirs = twins()
    failing = FailsOnce()
    net = nn.Sequential(ours[0], ours[1], failing, ours[2])
    (x, g), = data(1, seed=9)
    net(xp.asarray(x))
    with pytest.raises(ArithmeticError):
        net.backward(xp.asarray(g))
    assert len(net._waiting) == 1 and not any(call.done for call in net._waiting[0].ctx.calls)
    net.zero_grad()
    dx = net.backward(xp.asarray(g))
    assert_close([dx], ours, torch_grads(theirs, [(x, g)]))


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
    before and after a forward (only its list of waiting calls grows)."""
    for layer, shape in ((nn.Conv2d(2, 3, 3, padding=1), (2, 2, 5, 5)), (nn.MaxPool2d(2), (1, 2, 4, 4)),
                         (nn.Linear(3, 4), (2, 3)), (nn.Sigmoid(), (3,)), (nn.BatchNorm2d(2), (3, 2, 2, 2))):
        before = {k: v for k, v in vars(layer).items() if k != "_waiting"}
        y = layer(xp.ones(shape, dtype=np.float32))
        after = {k: v for k, v in vars(layer).items() if k != "_waiting"}
        assert before.keys() == after.keys() and all(before[k] is after[k] for k in before), type(layer).__name__
        assert len(layer._waiting) == 1 and set(vars(layer._waiting[0].ctx)) - {"calls"} and y is not None


def test_a_dropout_inside_a_zoo_model_follows_its_mode(xp):
    """A Chain's layers are registered sub-modules: eval() and evaluating() reach a Dropout among them (a Chain kept
    them in a plain list before, and its Dropout stayed in training mode)."""
    model = models.Chain([nn.Flatten(), ("fc", nn.Linear(784, 784)), nn.Dropout(0.9), nn.Unflatten((1, 28, 28))],
                         code_after=2)
    x = xp.ones((2, 1, 28, 28), dtype=np.float32)
    with minidae.evaluating(model):
        y = model(x)
        assert bool((model(x) == y).all()) and not model.layers[2].training
    assert model.layers[2].training and not bool((model(x) == y).all())


def test_encode_and_decode_are_calls_of_the_model(xp):
    """model.backward after encode or decode goes back through what they ran (they bypassed the model before)."""
    model = models.conv_dae().to(np.float64)
    x = xp.asarray(np.random.default_rng(10).uniform(size=(2, 1, 28, 28)))
    z = model.encode(x)
    dx = model.backward(xp.ones_like(z))
    assert z.shape == (2, 256) and dx.shape == x.shape
    assert model.l2.weight.grad is None and model.conv1.weight.grad is not None  # the encoder's layers only
    y = model.decode(z)
    dz = model.backward(xp.ones_like(y))
    assert dz.shape == z.shape and model.l2.weight.grad is not None
