"""Adam and SGD against torch.optim over many steps; gradients are never modified; state round-trips."""
import contextlib

import numpy as np
import pytest

from minidae import backend, nn, optim
from minidae.nn import Parameter
from minidae.nn.parameter import grad_of

SHAPES = [(3, 4), (5,), (2, 3, 2, 2)]
STEPS = 60


def make_params(xp, seed=0):
    rng = np.random.default_rng(seed)
    return [Parameter(xp.asarray(rng.normal(size=s))) for s in SHAPES]


def gradients(step):
    rng = np.random.default_rng(1000 + step)
    return [rng.normal(size=s) * (1 + step % 3) for s in SHAPES]


OPTIMISERS = {
    "adam": (lambda ps: optim.Adam(ps, lr=1e-2), "Adam", dict(lr=1e-2)),
    "adam-wd": (lambda ps: optim.Adam(ps, lr=1e-3, betas=(0.8, 0.99), eps=1e-6, weight_decay=1e-2), "Adam",
                dict(lr=1e-3, betas=(0.8, 0.99), eps=1e-6, weight_decay=1e-2)),
    "sgd": (lambda ps: optim.SGD(ps, lr=0.1), "SGD", dict(lr=0.1)),
    "sgd-momentum-wd": (lambda ps: optim.SGD(ps, lr=0.05, momentum=0.9, weight_decay=1e-3), "SGD",
                        dict(lr=0.05, momentum=0.9, weight_decay=1e-3)),
    "sgd-nesterov": (lambda ps: optim.SGD(ps, lr=0.05, momentum=0.9, nesterov=True), "SGD",
                     dict(lr=0.05, momentum=0.9, nesterov=True)),
}


@pytest.mark.parametrize("which", list(OPTIMISERS))
def test_matches_torch_optim(xp, which):
    torch = pytest.importorskip("torch")
    make_ours, torch_name, kwargs = OPTIMISERS[which]
    params = make_params(xp)
    theirs_params = [torch.tensor(backend.to_numpy(p.data), requires_grad=True) for p in params]
    ours, theirs = make_ours(params), getattr(torch.optim, torch_name)(theirs_params, **kwargs)
    for step in range(STEPS):
        for p, tp, g in zip(params, theirs_params, gradients(step)):
            p.grad = xp.asarray(g)
            tp.grad = torch.tensor(g)
        ours.step()
        theirs.step()
    for p, tp in zip(params, theirs_params):
        np.testing.assert_allclose(backend.to_numpy(p.data), tp.detach().numpy(), rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("which", list(OPTIMISERS))
def test_step_never_modifies_grad(xp, which):
    params = make_params(xp)
    opt = OPTIMISERS[which][0](params)
    for step in range(3):
        grads = [xp.asarray(g) for g in gradients(step)]
        for p, g in zip(params, grads):
            p.grad = g
        before = [g.copy() for g in grads]
        opt.step()
        for p, g, b in zip(params, grads, before):
            assert bool((g == b).all()) and bool((p.grad == b).all())
            if not which.startswith("adam"):  # Adam moves .grad into its flat buffer, same values (minidae.speed)
                assert p.grad is g


@pytest.mark.parametrize("which", ["adam-wd", "sgd-momentum-wd"])
def test_state_dict_resumes_exactly(xp, which):
    make = OPTIMISERS[which][0]
    straight, split = make_params(xp), make_params(xp)
    opt = make(straight)
    first = second = make(split)  # ``second`` is replaced by a restored optimiser after step 10
    for step in range(20):
        for params, o in ((straight, opt), (split, first if step < 10 else second)):
            for p, g in zip(params, gradients(step)):
                p.grad = xp.asarray(g)
            o.step()
        if step == 9:
            state = optim.nested_state_dict({k: np.array(v) for k, v in  # as if through an npz file
                                             optim.flat_state_dict(first.state_dict()).items()})
            second = make(split)
            second.load_state_dict(state)
    for a, b in zip(straight, split):
        assert bool((a.data == b.data).all())


@pytest.mark.parametrize("make, message", [
    (lambda ps: optim.Adam(ps, lr=-1), "lr must be a non-negative number"),
    (lambda ps: optim.Adam(ps, betas=(1.0, 0.9)), "betas must be two numbers in"),
    (lambda ps: optim.SGD(ps, lr=0.1, weight_decay=-1), "weight_decay must be a non-negative number"),
    (lambda ps: optim.SGD(ps, lr=0.1, nesterov=True), "nesterov"),
    (lambda ps: optim.Adam([]), "empty parameter list"),
])
def test_bad_arguments_raise(make, message):
    with pytest.raises(ValueError, match=message):
        make(make_params(np))


def test_adam_flat_arrays_change_no_number(xp):
    """Adam's flat arrays (minidae.speed.cpu on the host, minidae.speed.cuda on a GPU) give bit for bit the
    numbers of the core per-parameter loop, also after the arrays are replaced between steps."""
    from minidae import speed
    runs = []
    for flat in (True, False):
        params = make_params(xp)
        opt = optim.Adam(params, lr=1e-2, weight_decay=1e-2)
        with speed.disabled() if not flat else _nothing():
            for step in range(4):
                if step == 2:  # as load_state_dict and Module.to do: new arrays, which Adam must pick up
                    for p in params:
                        p.data = p.data * 1
                opt.zero_grad(set_to_none=False)  # zeros, added to in place: the gradients stay the flat views
                for p, g in zip(params, gradients(step)):
                    grad = grad_of(p)  # as a backward adds: a zero gradient first where there is none
                    grad += xp.asarray(g)
                opt.step()
        if flat:  # the flat arrays were in use, not the per-parameter loop
            assert "_flat" in vars(opt)
        runs.append([backend.to_numpy(p.data) for p in params] +
                    [backend.to_numpy(b) for p in params for b in opt.state[p].values()])
    for a, b in zip(*runs):
        np.testing.assert_array_equal(a, b)


def _nothing():
    import contextlib
    return contextlib.nullcontext()


def test_a_parameter_listed_twice_is_refused(xp):
    params = make_params(xp)
    with pytest.raises(ValueError, match="appears more than once"):
        optim.Adam(params + params[:1])


def subnormal_count(a):
    a = backend.to_numpy(a)
    return int(((a != 0) & (np.abs(a) < np.finfo(a.dtype).tiny)).sum())


@pytest.mark.parametrize("plain", [False, True], ids=["flat arrays", "plain maths"])
@pytest.mark.parametrize("kind", ["Adam", "SGD"])
def test_tiny_values_an_optimiser_writes_are_flushed_to_zero(kind, plain):
    """The flush against subnormal slowdowns (optim.set_flush_denormal): at every 10th step, the float32 values of
    magnitude below 1e-30 (subnormals included) in the parameters and the optimiser's state become 0; float64 is
    left alone; with the switch off, the tiny values stay."""
    import minidae
    values = np.array([1e-39, -3e-39, 1e-31, 2e-30, 0.5, -0.25], dtype=np.float32)  # two subnormals first
    gradient = np.array([0, 0, 0, 0, 1e-20, 1e-20] if kind == "Adam" else [0, 0, 0, 0, 1e-35, 1e-35])
    for flush in (True, False):
        small, wide = nn.Parameter(values.copy()), nn.Parameter(values.astype(np.float64))
        opt = optim.Adam([small, wide], lr=1e-3) if kind == "Adam" else optim.SGD([small, wide], lr=1e-3,
                                                                                   momentum=0.9)
        previous = optim.set_flush_denormal(flush)
        try:
            with minidae.plain_maths() if plain else contextlib.nullcontext():
                for step in range(optim.optimizers.FLUSH_EVERY):
                    assert subnormal_count(small.data) == 2  # nothing flushed before the 10th step
                    for p in (small, wide):
                        p.grad = gradient.astype(p.data.dtype)  # Adam's v, SGD's momentum: subnormal
                    opt.step()
        finally:
            optim.set_flush_denormal(previous)
        state = [b for b in opt.state[small].values() if getattr(b, "ndim", 0) == 1]
        assert (wide.data[:3] == values[:3].astype(np.float64)).all()  # float64: never touched
        tiny = [int(((s != 0) & (np.abs(s) < 1e-30)).sum()) for s in state]  # Adam's v, SGD's momentum
        if flush:
            assert not small.data[:3].any() and small.data[3:].all()  # below 1e-30: 0; 2e-30 and above stay
            assert sum(tiny) == 0
        else:
            assert subnormal_count(small.data) == 2 and sum(tiny) == 2
    assert optim.set_flush_denormal(True) is True  # on by default
