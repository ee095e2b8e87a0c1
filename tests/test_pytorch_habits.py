"""PyTorch idioms, each beside PyTorch in float64: containers, freezing, tied weights, parameter groups, AdamW,
schedulers, gradient clipping, initialisation, classification losses, and the errors that point to the fix."""
import math
import os
from collections import OrderedDict

import numpy as np
import pytest

from minidae import gradcheck, nn, optim
from parity import relative_error

torch = pytest.importorskip("torch", reason="these idioms are compared with PyTorch: pip install -e .[test]")


def twin_mlp(seed=0):
    """Linear-Tanh-Linear-Tanh-Linear in minidae and PyTorch, float64, same weights."""
    torch.manual_seed(seed)
    theirs = torch.nn.Sequential(torch.nn.Linear(4, 6), torch.nn.Tanh(), torch.nn.Linear(6, 5), torch.nn.Tanh(),
                                 torch.nn.Linear(5, 3)).double()
    ours = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 5), nn.Tanh(), nn.Linear(5, 3)).to(np.float64)
    ours.load_state_dict(theirs.state_dict())  # a PyTorch state dict loads as it is
    return ours, theirs


def train_both(ours, theirs, our_opt, their_opt, steps=8, after_step=None, seed=1):
    """``steps`` steps of MSE training on the same data; ``after_step(step)`` runs after each (schedules)."""
    rng = np.random.default_rng(seed)
    our_loss, their_loss = nn.MSELoss(), torch.nn.MSELoss()
    for step in range(steps):
        x, t = rng.normal(size=(7, 4)), rng.normal(size=(7, 3))
        our_opt.zero_grad()
        our_loss(ours(x), t)
        ours.backward(our_loss.backward())
        our_opt.step()
        their_opt.zero_grad()
        their_loss(theirs(torch.tensor(x)), torch.tensor(t)).backward()
        their_opt.step()
        if after_step:
            after_step(step)


def assert_same_weights(ours, theirs, rtol=1e-12):
    theirs = {k: v.detach().numpy() for k, v in theirs.state_dict().items()}
    for key, value in ours.state_dict().items():
        assert relative_error(value, theirs[key]) < rtol, key


# ------------------------------------------------------------------------------------------ silent today

def test_sequential_keeps_ordered_dict_names_and_refuses_what_is_not_a_module():
    ours = nn.Sequential(OrderedDict([("encoder", nn.Linear(3, 2)), ("act", nn.ReLU())]))
    theirs = torch.nn.Sequential(OrderedDict([("encoder", torch.nn.Linear(3, 2)), ("act", torch.nn.ReLU())]))
    assert list(ours.state_dict()) == list(theirs.state_dict()) == ["encoder.weight", "encoder.bias"]
    head = ours[:1]
    assert isinstance(head, nn.Sequential) and list(head.state_dict()) == ["encoder.weight", "encoder.bias"]
    for bad in ([nn.Linear(2, 2), nn.ReLU()],), (nn.Linear(2, 2), np.tanh):
        with pytest.raises(TypeError, match="is not a minidae Module"):
            nn.Sequential(*bad)


def test_a_frozen_parameter_is_not_updated_weight_decay_included():
    for make_ours, make_theirs in ((lambda ps: optim.Adam(ps, lr=0.01, weight_decay=0.1),
                                    lambda ps: torch.optim.Adam(ps, lr=0.01, weight_decay=0.1)),
                                   (lambda ps: optim.SGD(ps, lr=0.1, momentum=0.9, weight_decay=0.1),
                                    lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.9, weight_decay=0.1))):
        ours, theirs = twin_mlp()
        ours[0].requires_grad_(False)  # Module.requires_grad_ sets it below
        ours[2].weight.requires_grad = False  # and on one Parameter
        theirs[0].requires_grad_(False)
        theirs[2].weight.requires_grad = False
        frozen = {k: v.copy() for k, v in ours.state_dict().items() if k in ("0.weight", "0.bias", "2.weight")}
        train_both(ours, theirs, make_ours(ours.parameters()), make_theirs(theirs.parameters()))
        assert_same_weights(ours, theirs)
        for key, value in frozen.items():
            assert np.array_equal(ours.state_dict()[key], value)
        assert ours[0].weight.grad is None  # the backward gave it no gradient (as PyTorch)


def test_tied_weights_are_one_parameter_and_train_as_in_torch():
    ours_tied = nn.Sequential(nn.Linear(4, 4), nn.Tanh(), nn.Linear(4, 4)).to(np.float64)
    theirs_tied = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Tanh(), torch.nn.Linear(4, 4)).double()
    ours_tied[2].weight = ours_tied[0].weight
    theirs_tied[2].weight = theirs_tied[0].weight
    ours_tied.load_state_dict(theirs_tied.state_dict())
    assert len(ours_tied.parameters()) == len(list(theirs_tied.parameters())) == 3
    assert list(ours_tied.state_dict()) == list(theirs_tied.state_dict())  # both keys, as PyTorch
    rng = np.random.default_rng(2)
    our_opt, their_opt = optim.Adam(ours_tied.parameters(), lr=0.01), torch.optim.Adam(theirs_tied.parameters(), lr=0.01)
    for _ in range(5):
        x, t = rng.normal(size=(3, 4)), rng.normal(size=(3, 4))
        our_opt.zero_grad()
        loss = nn.MSELoss()
        loss(ours_tied(x), t)
        ours_tied.backward(loss.backward())
        our_opt.step()
        their_opt.zero_grad()
        torch.nn.functional.mse_loss(theirs_tied(torch.tensor(x)), torch.tensor(t)).backward()
        their_opt.step()
    assert_same_weights(ours_tied, theirs_tied)


def test_a_float64_target_leaves_the_gradient_in_the_predictions_dtype():
    pred = np.random.default_rng(3).uniform(size=(2, 5)).astype(np.float32)
    target = np.random.default_rng(4).integers(0, 256, size=(2, 5)) / 255.0  # the forgotten float32: float64
    for loss in (nn.MSELoss(), nn.L1Loss(), nn.BCELoss(), nn.BCEWithLogitsLoss()):
        value = loss(pred, target)
        grad = loss.backward()
        assert grad.dtype == np.float32 and value.dtype == np.float32, type(loss).__name__
        pt = torch.tensor(pred, requires_grad=True)
        their = {"MSELoss": torch.nn.functional.mse_loss, "L1Loss": torch.nn.functional.l1_loss,
                 "BCELoss": torch.nn.functional.binary_cross_entropy,
                 "BCEWithLogitsLoss": torch.nn.functional.binary_cross_entropy_with_logits}[type(loss).__name__]
        their(pt, torch.tensor(target, dtype=torch.float32)).backward()
        assert pt.grad.dtype == torch.float32 and relative_error(grad, pt.grad.numpy()) < 1e-6


# ------------------------------------------------------------------------------------------ containers

class Tower(nn.Module):
    """A module of one's own holding layers in a ModuleList and a ModuleDict."""

    def __init__(self):
        super().__init__()
        self.blocks = nn.ModuleList([nn.Linear(4, 4) for _ in range(2)])
        self.heads = nn.ModuleDict({"out": nn.Linear(4, 3)})
        self.skip = nn.Identity()
        self.act = nn.Tanh()

    def forward(self, ctx, x):
        for block in self.blocks:
            x = self.act(block(x))
        return self.heads["out"](self.skip(x))

    def backprop(self, ctx, dy):
        dy = self.skip.backward(self.heads["out"].backward(dy))
        for call in reversed(ctx.calls[:-2]):  # one Tanh serves after each block: its calls, not the object, pair
            dy = call.backward(dy)
        return dy


class TorchTower(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.blocks = torch.nn.ModuleList([torch.nn.Linear(4, 4) for _ in range(2)])
        self.heads = torch.nn.ModuleDict({"out": torch.nn.Linear(4, 3)})
        self.skip = torch.nn.Identity()
        self.act = torch.nn.Tanh()

    def forward(self, x):
        for block in self.blocks:
            x = self.act(block(x))
        return self.heads["out"](self.skip(x))


def test_module_list_module_dict_and_identity_train_as_in_torch(torch_parity):
    torch.manual_seed(0)
    for dtype in (np.float64, np.float32):
        torch_parity(Tower(), TorchTower(), np.random.default_rng(5).normal(size=(3, 4)), dtype, label="ModuleList")
    ours, theirs = Tower(), TorchTower()
    assert list(ours.state_dict()) == list(theirs.state_dict())
    assert [n for n, _ in ours.named_children()] == [n for n, _ in theirs.named_children()]
    assert len(ours.modules()) == len(list(theirs.modules()))
    assert ours.get_submodule("blocks.1") is ours.blocks[1] and ours.get_submodule("") is ours
    with pytest.raises(AttributeError, match="has no sub-module 'nope'"):
        ours.get_submodule("blocks.nope")


def test_apply_visits_children_first_then_self_as_torch():
    visited, visited_torch = [], []
    Tower().apply(lambda m: visited.append(type(m).__name__))
    TorchTower().apply(lambda m: visited_torch.append(type(m).__name__.replace("Torch", "")))
    assert visited == visited_torch


def test_add_module_register_parameter_and_print_optimizer():
    net = nn.Module()
    net.add_module("fc", nn.Linear(2, 2))
    net.register_parameter("scale", nn.Parameter(np.ones(2, np.float32)))
    assert [k for k, _ in net.named_parameters()] == ["scale", "fc.weight", "fc.bias"]
    with pytest.raises(TypeError, match="is not a Parameter"):
        net.register_parameter("bad", np.ones(2))
    opt = optim.Adam([{"params": [net.scale]}, {"params": net.fc.parameters(), "lr": 0.1}], lr=1e-3)
    text = repr(opt)
    assert "Parameter Group 0" in text and "Parameter Group 1" in text and "lr: 0.1" in text and "lr: 0.001" in text


# ------------------------------------------------------------------------------------------ optimisers

@pytest.mark.parametrize("kind", ["Adam", "AdamW", "SGD"])
def test_parameter_groups_and_a_manual_schedule_as_torch(kind):
    ours, theirs = twin_mlp()
    settings = {"Adam": dict(lr=1e-2, weight_decay=1e-2), "AdamW": dict(lr=1e-2),
                "SGD": dict(lr=0.05, momentum=0.9, nesterov=True)}[kind]

    def groups(model):
        params = list(model.parameters())
        return [{"params": params[:2], "lr": 0.1}, {"params": params[2:]}]
    our_opt, their_opt = getattr(optim, kind)(groups(ours), **settings), getattr(torch.optim, kind)(groups(theirs),
                                                                                                     **settings)
    assert [g["lr"] for g in our_opt.param_groups] == [g["lr"] for g in their_opt.param_groups]

    def schedule(step):
        if step == 3:
            for group in (*our_opt.param_groups, *their_opt.param_groups):
                group["lr"] *= 0.3
    train_both(ours, theirs, our_opt, their_opt, steps=7, after_step=schedule)
    assert_same_weights(ours, theirs)


def test_state_dict_is_torchs_layout_and_brings_the_lr_back():
    ours, theirs = twin_mlp()
    our_opt, their_opt = optim.Adam(ours.parameters(), lr=0.02), torch.optim.Adam(theirs.parameters(), lr=0.02)
    train_both(ours, theirs, our_opt, their_opt, steps=3)
    mine, torchs = our_opt.state_dict(), their_opt.state_dict()
    assert mine.keys() == torchs.keys() and mine["state"].keys() == torchs["state"].keys()
    assert all(mine["state"][i].keys() == torchs["state"][i].keys() for i in mine["state"])
    assert set(mine["param_groups"][0]) <= set(torchs["param_groups"][0])
    for i in mine["state"]:
        for key in ("exp_avg", "exp_avg_sq"):
            assert relative_error(mine["state"][i][key], torchs["state"][i][key].numpy()) < 1e-12
        assert int(mine["state"][i]["step"]) == int(torchs["state"][i]["step"]) == 3
    fresh = optim.Adam(ours.parameters(), lr=1e-3)
    fresh.load_state_dict(mine)
    assert fresh.param_groups[0]["lr"] == 0.02 and fresh.step_count == 3
    from_torch = optim.Adam(ours.parameters(), lr=1e-3)
    from_torch.load_state_dict(torchs)  # PyTorch's own optimiser state loads too
    assert from_torch.param_groups[0]["lr"] == 0.02
    assert np.array_equal(from_torch.state[ours.parameters()[0]]["exp_avg"], torchs["state"][0]["exp_avg"].numpy())


def test_the_flat_layout_of_older_checkpoints_still_loads():
    params = [nn.Parameter(np.ones((2, 3))), nn.Parameter(np.ones(3))]
    opt = optim.Adam(params)
    opt.load_state_dict({"step": np.array(7), "exp_avg.0": np.full((2, 3), 0.5), "exp_avg_sq.0": np.full((2, 3), 0.25),
                         "exp_avg.1": np.zeros(3), "exp_avg_sq.1": np.zeros(3)})
    assert opt.step_count == 7 and float(opt.state[params[0]]["exp_avg"][0, 0]) == 0.5


def test_adamw_defaults_are_torchs():
    ours, theirs = twin_mlp()
    our_opt, their_opt = optim.AdamW(ours.parameters()), torch.optim.AdamW(theirs.parameters())
    assert our_opt.param_groups[0]["weight_decay"] == their_opt.param_groups[0]["weight_decay"] == 1e-2
    train_both(ours, theirs, our_opt, their_opt, steps=6)
    assert_same_weights(ours, theirs)


SCHEDULERS = {
    "StepLR": (lambda o: optim.lr_scheduler.StepLR(o, step_size=3, gamma=0.5),
               lambda o: torch.optim.lr_scheduler.StepLR(o, step_size=3, gamma=0.5)),
    "MultiStepLR": (lambda o: optim.lr_scheduler.MultiStepLR(o, milestones=[2, 5, 5, 9], gamma=0.3),
                    lambda o: torch.optim.lr_scheduler.MultiStepLR(o, milestones=[2, 5, 5, 9], gamma=0.3)),
    "ExponentialLR": (lambda o: optim.lr_scheduler.ExponentialLR(o, gamma=0.9),
                      lambda o: torch.optim.lr_scheduler.ExponentialLR(o, gamma=0.9)),
    "CosineAnnealingLR": (lambda o: optim.lr_scheduler.CosineAnnealingLR(o, T_max=5, eta_min=1e-4),
                          lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=5, eta_min=1e-4)),
    "LambdaLR": (lambda o: optim.lr_scheduler.LambdaLR(o, lambda e: 1 / (1 + e)),
                 lambda o: torch.optim.lr_scheduler.LambdaLR(o, lambda e: 1 / (1 + e))),
}


@pytest.mark.parametrize("name", list(SCHEDULERS))
def test_schedulers_give_torchs_learning_rates(name):
    ours, theirs = twin_mlp()
    our_opt, their_opt = optim.SGD(ours.parameters(), lr=0.1), torch.optim.SGD(theirs.parameters(), lr=0.1)
    our_sched, their_sched = SCHEDULERS[name][0](our_opt), SCHEDULERS[name][1](their_opt)
    rates = []

    def step(epoch):
        our_sched.step()
        their_sched.step()
        rates.append((our_sched.get_last_lr(), their_sched.get_last_lr()))
    train_both(ours, theirs, our_opt, their_opt, steps=13, after_step=step)
    assert all(a == b for a, b in rates), rates  # the same floats: PyTorch's formulas in its order
    assert len({tuple(a) for a, _ in rates}) > 2  # the rate did change
    assert_same_weights(ours, theirs)


def test_reduce_lr_on_plateau_gives_torchs_learning_rates():
    ours, theirs = twin_mlp()
    our_opt, their_opt = optim.Adam(ours.parameters(), lr=0.1), torch.optim.Adam(theirs.parameters(), lr=0.1)
    kwargs = dict(factor=0.5, patience=2, threshold=0.01, cooldown=1, min_lr=0.01)
    our_sched = optim.lr_scheduler.ReduceLROnPlateau(our_opt, **kwargs)
    their_sched = torch.optim.lr_scheduler.ReduceLROnPlateau(their_opt, **kwargs)
    for metric in [1.0, 0.9, 0.95, 0.91, 0.92, 0.93, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 1.1, 1.2, 1.3]:
        our_sched.step(metric)
        their_sched.step(metric)
        assert our_sched.get_last_lr() == their_sched.get_last_lr()
    assert our_opt.param_groups[0]["lr"] < 0.1  # it was reduced


# ------------------------------------------------------------------------------------------ clipping

@pytest.mark.parametrize("norm_type", [2.0, 1.0, 3.0, math.inf])
def test_clip_grad_norm_returns_the_total_norm_and_scales_as_torch(norm_type):
    ours, theirs = twin_mlp()
    rng = np.random.default_rng(6)
    for p, q in zip(ours.parameters(), theirs.parameters()):
        g = rng.normal(size=p.shape) * 3
        p.grad = g.copy()
        q.grad = torch.tensor(g)
    total = nn.utils.clip_grad_norm_(ours.parameters(), max_norm=1.5, norm_type=norm_type)
    their_total = torch.nn.utils.clip_grad_norm_(theirs.parameters(), max_norm=1.5, norm_type=norm_type)
    assert abs(float(total) - float(their_total)) < 1e-12 * float(their_total)
    for p, q in zip(ours.parameters(), theirs.parameters()):
        assert relative_error(p.grad, q.grad.numpy()) < 1e-12
    nn.utils.clip_grad_value_(ours.parameters(), 0.05)
    torch.nn.utils.clip_grad_value_(theirs.parameters(), 0.05)
    for p, q in zip(ours.parameters(), theirs.parameters()):
        assert relative_error(p.grad, q.grad.numpy()) < 1e-12 and np.abs(p.grad).max() <= 0.05


# ------------------------------------------------------------------------------------------ init

def test_init_gains_and_fans_are_torchs():
    for nonlinearity, param in [("linear", None), ("conv2d", None), ("sigmoid", None), ("tanh", None),
                                ("relu", None), ("leaky_relu", None), ("leaky_relu", 0.2), ("selu", None)]:
        assert nn.init.calculate_gain(nonlinearity, param) == torch.nn.init.calculate_gain(nonlinearity, param)
    for shape in [(3, 4), (8, 2, 3, 3), (2, 5, 1, 7)]:
        assert nn.init.fans(shape) == torch.nn.init._calculate_fan_in_and_fan_out(torch.empty(shape))


@pytest.mark.parametrize("name, kwargs", [("xavier_uniform_", dict(gain=2.0)), ("xavier_normal_", {}),
                                          ("kaiming_uniform_", dict(a=math.sqrt(5))),
                                          ("kaiming_normal_", dict(mode="fan_out", nonlinearity="relu")),
                                          ("uniform_", dict(a=-0.3, b=0.7)), ("normal_", dict(mean=1.0, std=0.2))])
def test_init_functions_draw_torchs_distributions_in_place(name, kwargs):
    shape = (400, 300)
    ours = nn.Parameter(np.zeros(shape, np.float32))
    before = ours.data
    assert getattr(nn.init, name)(ours, **kwargs) is ours and ours.data is before  # in place, on a Parameter
    array = np.zeros(shape, np.float64)
    assert getattr(nn.init, name)(array, **kwargs) is array and array.std() > 0  # and on an array
    theirs = getattr(torch.nn.init, name)(torch.empty(shape, dtype=torch.float64), **kwargs).numpy()
    values = ours.data.astype(np.float64)
    assert abs(values.mean() - theirs.mean()) < 0.02 * max(theirs.std(), abs(theirs.mean()))
    assert abs(values.std() - theirs.std()) < 0.02 * theirs.std()
    if name.endswith("uniform_"):  # the same bounds
        assert abs(values.max() - theirs.max()) < 0.01 * theirs.std() and abs(values.min() - theirs.min()) < 0.01 * \
            theirs.std()


def test_constant_fills_and_the_memoryview_bug():
    layer = nn.Linear(3, 2)
    nn.init.kaiming_uniform_(layer.weight.data)  # failed with "'memoryview' object has no attribute 'dtype'"
    nn.init.zeros_(layer.bias)
    nn.init.ones_(layer.weight)
    nn.init.constant_(layer.bias.data, 0.5)
    assert np.all(layer.weight.data == 1) and np.all(layer.bias.data == 0.5) and layer.weight.data.dtype == np.float32


# ------------------------------------------------------------------------------------------ classification

def class_losses():
    rng = np.random.default_rng(7)
    weight = rng.uniform(0.5, 2.0, size=5)
    return [({}, "indices"), (dict(weight=weight), "indices"), (dict(label_smoothing=0.2), "indices"),
            (dict(weight=weight, label_smoothing=0.1, ignore_index=2), "indices"), (dict(reduction="sum"), "indices"),
            (dict(reduction="none", weight=weight), "indices"), ({}, "probabilities"),
            (dict(weight=weight, label_smoothing=0.3), "probabilities"), (dict(reduction="none"), "spatial")]


@pytest.mark.parametrize("kwargs, target_kind", class_losses(),
                         ids=[f"{k}-{'-'.join(kw)}" for kw, k in class_losses()])
def test_cross_entropy_matches_torch(xp, kwargs, target_kind):
    rng = np.random.default_rng(8)
    shape = (6, 5, 2, 3) if target_kind == "spatial" else (6, 5)
    logits = rng.normal(size=shape) * 4
    if target_kind == "probabilities":
        target = rng.dirichlet(np.ones(5), size=6)
    else:
        target = rng.integers(0, 5, size=shape[:1] + shape[2:])
        target.flat[1] = kwargs.get("ignore_index", -100)
    theirs = torch.nn.CrossEntropyLoss(**{k: torch.tensor(v) if k == "weight" else v for k, v in kwargs.items()})
    ours = nn.CrossEntropyLoss(**kwargs)
    loss = ours(xp.asarray(logits), xp.asarray(target))
    lt = torch.tensor(logits, requires_grad=True)
    their_loss = theirs(lt, torch.tensor(target))
    upstream = rng.normal(size=tuple(their_loss.shape))
    (their_loss * torch.tensor(upstream)).sum().backward()
    grad = ours.backward(xp.asarray(upstream) if upstream.ndim else None)
    if not upstream.ndim:
        grad = grad * float(upstream)
    assert relative_error(loss, their_loss.detach().numpy()) < 1e-13
    assert relative_error(grad, lt.grad.numpy()) < 1e-13


def test_cross_entropy_is_finite_at_logits_of_1000_and_gradchecks():
    logits = np.array([[1000.0, -1000.0, 0.0], [-1000.0, 1000.0, 3.0]])
    ours, theirs = nn.CrossEntropyLoss(), torch.nn.CrossEntropyLoss()
    for target in (np.array([0, 2]), np.array([1, 1])):
        value = ours(logits, target)
        assert np.isfinite(value) and np.all(np.isfinite(ours.backward()))
        assert float(value) == theirs(torch.tensor(logits), torch.tensor(target)).item()
    x = np.random.default_rng(9).normal(size=(4, 5))
    result = gradcheck(nn.CrossEntropyLoss(label_smoothing=0.1), x, target=np.array([0, 3, 4, 1]))
    assert result, str(result)


def test_nll_loss_log_softmax_and_softmax_match_torch(torch_parity):
    rng = np.random.default_rng(10)
    x, target = rng.normal(size=(6, 4)), rng.integers(0, 4, size=6)
    target[3] = -100
    weight = rng.uniform(0.5, 2, size=4)
    log_probs = nn.LogSoftmax(dim=1)(x)
    ours = nn.NLLLoss(weight=weight)
    loss = ours(log_probs, target)
    lp = torch.log_softmax(torch.tensor(x), 1).detach().requires_grad_(True)
    their_loss = torch.nn.NLLLoss(weight=torch.tensor(weight))(lp, torch.tensor(target))
    their_loss.backward()
    assert relative_error(loss, their_loss.detach().numpy()) < 1e-13
    assert relative_error(ours.backward(), lp.grad.numpy()) < 1e-13
    for dtype in (np.float64, np.float32):
        for dim in (1, 0):
            torch_parity(nn.LogSoftmax(dim), torch.nn.LogSoftmax(dim), x, dtype, label="LogSoftmax")
            torch_parity(nn.Softmax(dim), torch.nn.Softmax(dim), x, dtype, label="Softmax")
    assert gradcheck(nn.Softmax(1), x) and gradcheck(nn.LogSoftmax(1), x)


def test_class_index_errors_are_named():
    with pytest.raises(ValueError, match=r"class indices must lie in 0..3"):
        nn.CrossEntropyLoss()(np.zeros((2, 4)), np.array([0, 4]))
    with pytest.raises(ValueError, match=r"class indices must be integers, got float64: pass target.astype\(int\)"):
        nn.CrossEntropyLoss()(np.zeros((2, 4)), np.array([0.0, 1.0]))
    with pytest.raises(ValueError, match=r"class indices must be integers of shape \(2,\)"):
        nn.NLLLoss()(np.zeros((2, 4)), np.array([[0, 1]]))


@pytest.mark.parametrize("make, make_torch", [(lambda: nn.ReLU(inplace=True), lambda: torch.nn.ReLU(inplace=True)),
                                              (lambda: nn.LeakyReLU(0.2, inplace=True),
                                               lambda: torch.nn.LeakyReLU(0.2, inplace=True))])
def test_inplace_is_accepted_with_the_same_numbers(make, make_torch):
    x = np.random.default_rng(11).normal(size=(3, 4))
    layer = make()
    y = layer(x.copy())
    expected = make_torch()(torch.tensor(x)).numpy()
    assert np.array_equal(y, expected) and layer.inplace
    drop = nn.Dropout(0.3, inplace=True).eval()
    assert drop(x) is x


# ------------------------------------------------------------------------------------------ errors

def test_errors_point_to_the_fix(tmp_path):
    layer = nn.Linear(3, 2)
    with pytest.raises(TypeError, match=r"got a torch.Tensor.*convert it with .numpy\(\)"):
        layer(torch.ones(1, 3))
    path = tmp_path / "weights.pt"
    torch.save(torch.nn.Linear(3, 2).state_dict(), path)
    with pytest.raises(ValueError, match=r"looks like a PyTorch file.*load_state_dict\(torch.load"):
        layer.load(path)
    layer.load_state_dict(torch.load(path))  # what the message says works
    with pytest.raises(ValueError, match=r"Adam: lr must be a non-negative number, got '1e-3' \(a str\)"):
        optim.Adam(layer.parameters(), lr="1e-3")
    assert optim.SGD(layer.parameters()).param_groups[0]["lr"] == 1e-3  # PyTorch's default lr
    with pytest.raises(TypeError, match="params"):
        optim.SGD()
    with pytest.raises(ValueError, match="appear in more than one parameter group"):
        optim.Adam([{"params": [layer.weight]}, {"params": [layer.weight]}])


def test_the_classifier_example_learns_digits(mnist_root, capsys):
    """examples/train_classifier.py, a PyTorch user's classification loop in minidae, on a small slice of MNIST."""
    import importlib.util
    spec = importlib.util.spec_from_file_location("train_classifier", os.path.join(
        os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples", "train_classifier.py"))
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    assert example.main(["--epochs", "1", "--train-samples", "3200", "--test-samples", "500", "--data-dir",
                         mnist_root]) == 0
    accuracy = float(capsys.readouterr().out.strip().splitlines()[-1].split()[2])
    assert accuracy > 0.75  # a tenth of an epoch of MNIST; chance is 0.1


# ------------------------------------------------------------------------------------------ issue 25's surface

class AlternatingHeads(nn.Module):
    """A trunk and two heads, the head chosen per call: a head unused in a step gets no gradient."""

    def __init__(self):
        super().__init__()
        self.trunk, self.act = nn.Linear(4, 5), nn.Tanh()
        self.heads = nn.ModuleList([nn.Linear(5, 3), nn.Linear(5, 3)])

    def forward(self, ctx, x, head):
        ctx.head = head
        return self.heads[head](self.act(self.trunk(x)))

    def backprop(self, ctx, dy):
        return self.trunk.backward(self.act.backward(self.heads[ctx.head].backward(dy)))


class TorchAlternatingHeads(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.trunk, self.act = torch.nn.Linear(4, 5), torch.nn.Tanh()
        self.heads = torch.nn.ModuleList([torch.nn.Linear(5, 3), torch.nn.Linear(5, 3)])

    def forward(self, x, head):
        return self.heads[head](self.act(self.trunk(x)))


@pytest.mark.parametrize("kind", ["Adam", "AdamW", "SGD"])
def test_a_parameter_no_backward_reached_is_left_alone_as_in_torch(kind):
    """PyTorch's zero_grad() leaves no gradient and its optimisers skip such parameters: no step, no moment, no
    weight decay, no momentum. A head used on alternate batches drifted 0.07-0.11 from PyTorch after 4 steps when
    every parameter was updated."""
    torch.manual_seed(3)
    theirs, ours = TorchAlternatingHeads().double(), AlternatingHeads().to(np.float64)
    ours.load_state_dict(theirs.state_dict())
    settings = {"Adam": dict(lr=0.05, weight_decay=0.1), "AdamW": dict(lr=0.05, weight_decay=0.1),
                "SGD": dict(lr=0.1, momentum=0.9, weight_decay=0.1)}[kind]
    our_opt = getattr(optim, kind)(ours.parameters(), **settings)
    their_opt = getattr(torch.optim, kind)(theirs.parameters(), **settings)
    rng = np.random.default_rng(4)
    for step in range(6):
        x, t, head = rng.normal(size=(7, 4)), rng.normal(size=(7, 3)), step % 2
        our_opt.zero_grad()
        loss = nn.MSELoss()
        loss(ours(x, head), t)
        ours.backward(loss.backward())
        assert all(p.grad is None for p in ours.heads[1 - head].parameters())
        our_opt.step()
        their_opt.zero_grad()
        torch.nn.functional.mse_loss(theirs(torch.tensor(x), head), torch.tensor(t)).backward()
        their_opt.step()
        assert_same_weights(ours, theirs)
    assert our_opt.state_dict()["state"].keys() == their_opt.state_dict()["state"].keys()
    total = nn.utils.clip_grad_norm_(ours.parameters(), 1.0)  # a head without a gradient counts nothing
    reference = torch.nn.utils.clip_grad_norm_(theirs.parameters(), 1.0)
    assert float(total) == pytest.approx(float(reference), rel=1e-12)


def test_load_state_dict_strict_false_returns_torchs_missing_and_unexpected_keys():
    ours, theirs = twin_mlp()
    state = theirs.state_dict()
    extra = OrderedDict(list(state.items())[2:])
    extra["4.scale"] = torch.ones(3, dtype=torch.float64)
    before = ours.state_dict()
    result = ours.load_state_dict(extra, strict=False)
    reference = torch.nn.Sequential(*[m for m in theirs]).load_state_dict(extra, strict=False)
    assert result.missing_keys == list(reference.missing_keys) == ["0.weight", "0.bias"]
    assert result.unexpected_keys == list(reference.unexpected_keys) == ["4.scale"]
    assert np.array_equal(ours[0].weight.data, before["0.weight"])  # what was missing is left alone
    with pytest.raises(KeyError, match=r"missing keys \['0.bias', '0.weight'\].*strict=False"):
        ours.load_state_dict(extra)
    assert ours.load_state_dict(state) == ([], [])


def test_parameters_count_themselves_as_torchs_do():
    ours, theirs = twin_mlp()
    assert sum(p.numel() for p in ours.parameters()) == sum(p.numel() for p in theirs.parameters()) == 83
    weight = ours[0].weight
    assert (weight.shape, weight.ndim, weight.dtype) == ((6, 4), 2, np.float64)


@pytest.mark.parametrize("copy", ["pickle", "deepcopy"])
def test_an_optimiser_after_its_first_step_pickles_and_deep_copies(copy):
    """Adam's flat arrays held a module object ("cannot pickle 'module' object"); a copy packs them anew."""
    import copy as copying
    import pickle
    ours, theirs = twin_mlp()
    opt = optim.Adam(ours.parameters(), lr=0.01)
    train_both(ours, theirs, opt, torch.optim.Adam(theirs.parameters(), lr=0.01), steps=2)
    assert "_flat" in vars(opt)
    clone = pickle.loads(pickle.dumps((ours, opt))) if copy == "pickle" else copying.deepcopy((ours, opt))
    model, optimiser = clone
    assert optimiser.step_count == 2 and "_flat" not in vars(optimiser)
    train_both(ours, theirs, opt, torch.optim.Adam(theirs.parameters(), lr=0.01), steps=1, seed=7)
    twin = copying.deepcopy(theirs)
    train_both(model, twin, optimiser, torch.optim.Adam(twin.parameters(), lr=0.01), steps=1, seed=7)
    for (key, a), b in zip(ours.state_dict().items(), model.state_dict().values()):
        assert np.array_equal(a, b), key


def test_a_scaled_or_weighted_loss_passes_its_factor_to_the_loss_backward():
    """``(loss / k).backward()`` and ``(a * l1 + b * l2).backward()``: scaling a returned loss array changes no
    gradient here (there is no autograd), so the factor goes to ``criterion.backward``; a gradient kept across
    steps is copied, as the next backward adds into the memory of the last one."""
    ours, theirs = twin_mlp()
    rng = np.random.default_rng(3)
    batches = [(rng.normal(size=(5, 4)), rng.normal(size=(5, 3))) for _ in range(2)]
    mse, l1 = nn.MSELoss(), nn.L1Loss()
    kept = []
    for x, t in batches:                                    # gradient accumulation over 2 micro-batches
        y = ours(x)
        mse(y, t), l1(y, t)
        ours.backward(mse.backward(0.5 / 2) + l1.backward(0.25 / 2))
        kept.append(ours[0].weight.grad.copy())             # PyTorch's p.grad.clone()
        x_t, t_t = torch.tensor(x), torch.tensor(t)
        y_t = theirs(x_t)
        ((0.5 * torch.nn.functional.mse_loss(y_t, t_t) + 0.25 * torch.nn.functional.l1_loss(y_t, t_t)) / 2).backward()
    for (name, p), q in zip(ours.named_parameters(), theirs.parameters()):
        assert relative_error(p.grad, q.grad.numpy()) < 1e-12, name
    assert not np.array_equal(kept[0], kept[1])
