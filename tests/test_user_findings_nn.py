"""What a careful PyTorch user met using minidae's nn and optim, each compared with PyTorch in float64: a defect
found, a test that failed, and the smallest fix."""
import numpy as np
import pytest

from minidae import nn, optim

torch = pytest.importorskip("torch", reason="these findings are compared with PyTorch: pip install -e .[test]")


class _Two(nn.Module):
    def __init__(self):
        super().__init__()
        self.body, self.head = nn.Linear(3, 2), nn.Linear(2, 2)
        self.register_buffer("scale", np.ones(2, np.float32))


def test_del_unregisters_a_submodule_parameter_or_buffer_as_torch():
    ours = _Two()
    del ours.head                       # keep the body only, as for feature extraction
    del ours.body.bias
    del ours.scale
    assert list(ours.state_dict()) == ["body.weight"]
    assert len(ours.parameters()) == 1 and list(ours.named_buffers()) == []
    assert [name for name, _ in ours.named_modules()] == ["", "body"]
    with pytest.raises(AttributeError):
        ours.head


def test_an_array_assigned_to_a_parameter_or_a_number_to_a_submodule_is_refused_as_torch():
    ours, theirs = _Two(), torch.nn.Linear(3, 2)
    with pytest.raises(TypeError):
        theirs.weight = torch.ones(2, 3)
    with pytest.raises(TypeError, match=r"weight.*Parameter.*\.data"):
        ours.body.weight = np.ones((2, 3), np.float32)   # was: silently no longer a parameter, forward then failed
    with pytest.raises(TypeError, match="head"):
        ours.head = np.ones(2)
    assert list(ours.state_dict()) == ["scale", "body.weight", "body.bias", "head.weight", "head.bias"]
    ours.body.bias = None                                # None stays allowed, as in PyTorch
    ours.head = nn.Identity()
    assert list(ours.state_dict()) == ["scale", "body.weight"]


@pytest.mark.parametrize("key", ["keys", "train", "forward", "backward"])
def test_a_module_dict_key_that_would_hide_a_method_is_refused_as_torch(key):
    if key != "backward":  # minidae's own method; PyTorch's modules have none
        with pytest.raises(KeyError, match="already exists"):
            torch.nn.ModuleDict({key: torch.nn.ReLU()})
    with pytest.raises(KeyError, match=f"{key}.*already exists"):  # was: md.keys() called the ReLU
        nn.ModuleDict({key: nn.ReLU()})
    with pytest.raises(KeyError, match="already exists"):
        nn.Module().add_module("train", nn.ReLU())
    heads = nn.ModuleDict({"a": nn.ReLU()})
    heads["a"] = nn.Tanh()                                      # replacing a module stays allowed
    assert heads.keys() == ["a"] and isinstance(heads["a"], nn.Tanh)


def test_a_loaded_optimiser_state_brings_initial_lr_back_so_a_scheduler_can_resume_as_torch():
    def run(nn_module, optim_module):
        layer = nn_module.Linear(2, 2)
        opt = optim_module.SGD(layer.parameters(), lr=0.1)
        scheduler = optim_module.lr_scheduler.StepLR(opt, 2, gamma=0.5)
        for _ in range(3):
            opt.step()                       # no gradients: changes nothing
            scheduler.step()
        saved = opt.state_dict()
        resumed = optim_module.SGD(layer.parameters(), lr=0.1)
        resumed.load_state_dict(saved)       # was: initial_lr dropped, so the next line raised a KeyError
        again = optim_module.lr_scheduler.StepLR(resumed, 2, gamma=0.5, last_epoch=scheduler.last_epoch)
        resumed.step()
        again.step()
        return resumed.param_groups[0]["initial_lr"], again.get_last_lr()
    assert run(nn, optim) == run(torch.nn, torch.optim)


def twins(seed=0):
    """Linear-Tanh-Linear in minidae and PyTorch, float64, same weights."""
    torch.manual_seed(seed)
    theirs = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 2)).double()
    ours = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)).to(np.float64)
    ours.load_state_dict(theirs.state_dict())
    return ours, theirs


def step_both(ours, theirs, our_opt, their_opt, steps=3, seed=1, zero=lambda opt: opt.zero_grad()):
    rng = np.random.default_rng(seed)
    our_loss = nn.MSELoss()
    for _ in range(steps):
        x, t = rng.normal(size=(5, 3)), rng.normal(size=(5, 2))
        zero(our_opt)
        our_loss(ours(x), t)
        ours.backward(our_loss.backward())
        our_opt.step()
        zero(their_opt)
        torch.nn.functional.mse_loss(theirs(torch.tensor(x)), torch.tensor(t)).backward()
        their_opt.step()


def assert_same_weights(ours, theirs):
    for key, value in theirs.state_dict().items():
        np.testing.assert_allclose(ours.state_dict()[key], value.numpy(), rtol=0, atol=1e-13, err_msg=key)


def test_pytorchs_sgd_momentum_state_loads_and_training_goes_on_as_in_torch():
    ours, theirs = twins()
    their_opt = torch.optim.SGD(theirs.parameters(), lr=0.1, momentum=0.9, nesterov=True)
    step_both(ours, theirs, optim.SGD(ours.parameters(), lr=0.1), their_opt)
    ours.load_state_dict(theirs.state_dict())
    our_opt = optim.SGD(ours.parameters(), lr=0.1, momentum=0.9, nesterov=True)
    our_opt.load_state_dict(their_opt.state_dict())   # PyTorch's SGD keeps no "step": was a KeyError at step()
    step_both(ours, theirs, our_opt, their_opt)
    assert_same_weights(ours, theirs)


def test_zero_grad_without_set_to_none_leaves_a_parameter_no_backward_reached_alone_as_torch():
    ours, theirs = twins()
    our_head, their_head = nn.Linear(2, 2).to(np.float64), torch.nn.Linear(2, 2).double()  # never used
    our_head.load_state_dict(their_head.state_dict())
    our_opt = optim.AdamW(ours.parameters() + our_head.parameters(), lr=0.1)
    their_opt = torch.optim.AdamW(list(theirs.parameters()) + list(their_head.parameters()), lr=0.1)
    step_both(ours, theirs, our_opt, their_opt, zero=lambda opt: opt.zero_grad(set_to_none=False))
    assert our_head.weight.grad is None and their_head.weight.grad is None  # was: zeros, so AdamW decayed it
    assert_same_weights(our_head, their_head)
    assert_same_weights(ours, theirs)
    ours.zero_grad(set_to_none=False)
    assert all((p.grad == 0).all() for p in ours.parameters())


def test_a_forward_hook_that_raises_leaves_no_forward_waiting():
    ours, _ = twins()
    skip = [True]

    def check(module, inputs, output):  # a check that skips a batch by raising, caught by the training loop
        if skip[0]:
            raise FloatingPointError("skip this batch")
    ours.register_forward_hook(check)
    with pytest.raises(FloatingPointError):
        ours(np.ones((5, 3)))
    skip[0] = False
    y = ours(np.ones((5, 3)))
    assert ours.backward(np.ones_like(y)).shape == (5, 3)  # was: refused, two forwards waited


def test_a_forward_hook_that_returns_a_new_output_is_refused_not_ignored():
    theirs = torch.nn.Linear(2, 2)
    theirs.register_forward_hook(lambda module, inputs, output: output * 0)
    assert (theirs(torch.ones(1, 2)) == 0).all()          # PyTorch uses what the hook returns
    ours = nn.Linear(2, 2)
    ours.register_forward_hook(lambda module, inputs, output: output * 0)
    with pytest.raises(TypeError, match="hook.*returned"):  # was: ignored, the output unchanged
        ours(np.ones((1, 2), np.float32))
    assert not ours._waiting


@pytest.mark.parametrize("layer", [nn.Dropout(0.3), nn.Dropout2d(0.3)])
def test_dropout_runs_in_a_float16_model(layer):
    x = np.ones((4, 3, 2, 2), np.float16)
    y = layer(x)                              # was: TypeError: Unsupported dtype dtype('float16') for random
    kept = y[y != 0]
    assert y.dtype == np.float16 and 0 < kept.size < y.size
    np.testing.assert_allclose(kept, 1 / 0.7, rtol=1e-3)
    assert layer.backward(np.ones_like(y)).dtype == np.float16


@pytest.mark.parametrize("dtype", [np.uint8, np.int64, np.complex64])
def test_batch_norm_refuses_an_input_that_is_not_floating_point_naming_itself(dtype):
    with pytest.raises(ValueError, match="BatchNorm2d: expected a floating-point input"):  # was: uint8 images
        nn.BatchNorm2d(2)(np.ones((2, 2, 3, 3), dtype))                                  # gave float64 silently


def test_a_sequentials_items_are_replaced_and_deleted_as_torch():
    def edit(module):
        model = module.Sequential(module.Linear(3, 4), module.ReLU(), module.Linear(4, 2), module.Tanh())
        model[-2] = module.Linear(4, 5)        # a new head (was: 'Sequential' object does not support item assignment)
        del model[-1]                          # and no last activation
        del model[:1]
        return list(model.state_dict()), [type(m).__name__ for m in model]
    assert edit(nn) == edit(torch.nn) == (["1.weight", "1.bias"], ["ReLU", "Linear"])
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    model[-1] = nn.Linear(4, 5)
    assert model(np.ones((2, 3), np.float32)).shape == (2, 5)
    with pytest.raises(TypeError, match="not a minidae Module"):
        model[0] = torch.nn.Linear(3, 4)


def test_a_list_given_as_the_gradient_is_named_a_list_not_a_scalar():
    layer = nn.Linear(2, 2)
    y = layer(np.ones((2, 2), np.float32))
    with pytest.raises(TypeError, match=r"Linear.backward: got a list where an array of shape \(2, 2\)"):
        layer.backward(y.tolist())                      # was: "got a scalar where dL/dy of shape (2, 2) is needed"
    assert layer.backward(np.ones_like(y)).shape == (2, 2)


# ------------------------------------------------------------------ the container and Module surface users reach for

def _names(container):
    return [(key, type(module).__name__) for key, module in container._modules.items()]


@pytest.mark.parametrize("kind", ["Sequential", "ModuleList"])
def test_sequential_and_module_list_insert_pop_extend_as_torch(kind):
    def edit(module):
        make = getattr(module.nn, kind)
        seq = make([module.nn.ReLU(), module.nn.Tanh()] if kind == "ModuleList" else module.nn.ReLU())
        if kind == "Sequential":
            seq.append(module.nn.Tanh())
        returned = [seq.insert(0, module.nn.Sigmoid()), seq.insert(len(seq) - 1, module.nn.Identity())]
        returned = [value is seq if value is not None else None for value in returned]  # self, or None
        popped = [type(seq.pop(1)).__name__, type(seq.pop(-1)).__name__]   # was: no pop (AttributeError)
        returned.append(seq.extend(make([module.nn.ReLU()]) if kind == "ModuleList" else make(module.nn.ReLU())) is seq)
        sliced = seq.pop(slice(0, 1))
        return returned, popped, type(sliced).__name__, _names(sliced), _names(seq)
    assert edit(__import__("minidae")) == edit(torch)
    ours = getattr(nn, kind)([nn.ReLU()]) if kind == "ModuleList" else nn.Sequential(nn.ReLU())
    with pytest.raises(IndexError):                    # PyTorch's Sequential refuses it too (its ModuleList breaks)
        ours.insert(3, nn.Tanh())
    assert ours.insert(-1, nn.Tanh()) in (ours, None) and ours.pop(0).__class__ is nn.Tanh  # as list.insert
    with pytest.raises(TypeError, match="not a minidae Module"):
        ours.insert(0, torch.nn.Tanh())
    with pytest.raises(TypeError, match="use append"):
        ours.extend(nn.Tanh())
    assert _names(ours) == [("0", "ReLU")]


def test_a_sequential_grown_by_insert_and_extend_runs_and_goes_back_as_torch():
    ours, theirs = nn.Sequential(nn.Linear(3, 4)), torch.nn.Sequential(torch.nn.Linear(3, 4)).double()
    ours.to(np.float64).load_state_dict(theirs.state_dict())
    ours.extend([nn.Tanh(), nn.Linear(4, 2).double()])
    theirs.extend([torch.nn.Tanh(), torch.nn.Linear(4, 2).double()])
    ours[2].load_state_dict(theirs[2].state_dict())
    ours.insert(1, nn.Identity())
    theirs.insert(1, torch.nn.Identity())
    assert list(ours.state_dict()) == list(theirs.state_dict()) == ["0.weight", "0.bias", "3.weight", "3.bias"]
    x = np.random.default_rng(0).normal(size=(5, 3))
    tx = torch.tensor(x, requires_grad=True)
    ty = theirs(tx)
    ty.sum().backward()
    np.testing.assert_allclose(ours(x), ty.detach().numpy(), rtol=1e-12)
    np.testing.assert_allclose(ours.backward(np.ones((5, 2))), tx.grad.numpy(), rtol=1e-12)


def test_module_dict_clear_pop_update_as_torch():
    def edit(module):
        heads = module.nn.ModuleDict({"a": module.nn.ReLU(), "b": module.nn.Tanh()})
        popped = type(heads.pop("a")).__name__
        heads.update([("c", module.nn.Sigmoid()), ("b", module.nn.ReLU())])
        before = [(key, type(value).__name__) for key, value in heads.items()]
        cleared = heads.clear()                       # was: no clear (AttributeError)
        return popped, before, list(heads.keys()), len(heads), cleared
    assert edit(__import__("minidae")) == edit(torch) == ("ReLU", [("b", "ReLU"), ("c", "Sigmoid")], [], 0, None)


class _Net:
    """The same small net in both frameworks: a linear body, a BatchNorm2d, a tied head, a buffer of its own."""

    @staticmethod
    def make(module):
        net = module.nn.Module()
        net.body = module.nn.Linear(3, 3)
        net.block = module.nn.Sequential(module.nn.BatchNorm2d(3), module.nn.ReLU())
        net.head = module.nn.Linear(3, 3)
        net.head.weight = net.body.weight
        net.register_buffer("scale", np.ones(3, np.float32) if module is not torch else torch.ones(3))
        net.alias = net.block                      # one module registered twice
        return net


def test_parameters_buffers_and_modules_take_pytorchs_prefix_recurse_and_remove_duplicate():
    import minidae
    ours, theirs = _Net.make(minidae), _Net.make(torch)

    def names(net):
        return {
            "named_parameters": [k for k, _ in net.named_parameters()],
            "prefix": [k for k, _ in net.named_parameters(prefix="net")],
            "not recursive": [k for k, _ in net.named_parameters(recurse=False)],
            "all": [k for k, _ in net.named_parameters(remove_duplicate=False)],
            "positional": [k for k, _ in net.named_parameters("p", True, False)],
            "head only": [k for k, _ in net.head.named_parameters("head", False)],
            "parameters": len(list(net.parameters())), "own parameters": len(list(net.parameters(recurse=False))),
            "body's own": len(list(net.body.parameters(False))),
            "named_buffers": [k for k, _ in net.named_buffers()],
            "buffers prefix": [k for k, _ in net.named_buffers(prefix="m", recurse=True)],
            "own buffers": [k for k, _ in net.named_buffers(recurse=False)],
            "all buffers": [k for k, _ in net.named_buffers(remove_duplicate=False)],
            "buffers": len(list(net.buffers())), "block buffers": len(list(net.block.buffers(recurse=False))),
            "modules": [k for k, _ in net.named_modules(prefix="net")],
            "modules positional": [k for k, _ in net.named_modules(None, "m", False)],
            "memo": [k for k, _ in net.named_modules(memo={net.body})],
        }
    assert names(ours) == names(theirs)    # was: TypeError (no recurse=, no prefix= for buffers, no buffers())
    assert [v is w for v, w in zip(ours.buffers(), [ours.scale, *ours.block[0].buffers()])] == [True] * 4


def test_float_double_half_cast_parameters_and_floating_buffers_as_torch():
    import minidae
    ours, theirs = _Net.make(minidae), _Net.make(torch)
    for method, dtype in [("double", np.float64), ("half", np.float16), ("float", np.float32)]:
        assert getattr(ours, method)() is ours and getattr(theirs, method)() is theirs   # was: AttributeError
        assert [str(v.dtype) for v in ours.state_dict().values()] == \
            [str(v.dtype).replace("torch.", "") for v in theirs.state_dict().values()]
        assert ours.body.weight.dtype == dtype and ours.block[0].num_batches_tracked.dtype == np.int64


@pytest.mark.parametrize("given", [torch.float64, torch.device("cpu")])
def test_to_a_torch_dtype_or_device_names_it_and_the_numpy_way(given):
    with pytest.raises(TypeError, match=rf"Linear.to: got {given}, a torch .*numpy.float64.*backend.use"):
        nn.Linear(2, 2).to(given)                      # was: "expected a floating-point dtype ..., got None"
    with pytest.raises(ValueError, match=r"got 5;"):
        nn.Linear(2, 2).to(5)                          # was: "got None" too


# ------------------------------------------------------------------ layers without parameters name themselves

_NO_PARAMETERS = [("ReLU", ()), ("LeakyReLU", ()), ("Tanh", ()), ("Sigmoid", ()), ("Softmax", (1,)),
                  ("LogSoftmax", (1,)), ("Flatten", ()), ("Unflatten", (1, (2, 1))), ("Dropout", ()),
                  ("Dropout2d", ())]


@pytest.mark.parametrize("name, args", _NO_PARAMETERS)
@pytest.mark.parametrize("given", [[[1.0, 2.0]], None, True, 3, 2.5])
def test_a_layer_without_parameters_given_no_array_names_itself_and_what_it_got(name, args, given):
    with pytest.raises((TypeError, AttributeError)):   # PyTorch refuses it too ("relu(): argument 'input' must be
        getattr(torch.nn, name)(*args)(given)          # Tensor, not list", "'list' object has no attribute 'dim'")
    what = "None" if given is None else f"a {type(given).__name__}"
    with pytest.raises(TypeError, match=rf"^{name}: expected an array, got {what}"):
        getattr(nn, name)(*args)(given)                # was: "'>' not supported between 'list' and 'int'", "'int'
    layer = nn.Sequential(nn.Identity(), getattr(nn, name)(*args))  # object has no attribute 'shape'", or an output
    with pytest.raises(TypeError, match=rf"^{name}: expected an array"):
        layer(given)                                   # inside a container too
    assert nn.Identity()(given) is given               # Identity takes anything, as PyTorch's


def test_a_layer_without_parameters_still_takes_a_numpy_scalar_and_its_arrays_pay_no_check():
    assert nn.Tanh()(np.float64(0.0)) == 0.0 and nn.ReLU()(np.float32(-1)) == 0
    checked = []
    layer = nn.ReLU()
    layer._check_input = checked.append                # the ndarray path does not go through it
    layer(np.ones(3))
    assert checked == []


@pytest.mark.parametrize("name", ["Softmax", "LogSoftmax"])
@pytest.mark.parametrize("dim", [2, -3])
def test_softmax_with_a_dim_the_input_lacks_names_the_layer_and_the_inputs_ndim(name, dim):
    with pytest.raises(IndexError, match=r"expected to be in range of \[-2, 1\]"):
        getattr(torch.nn, name)(dim)(torch.zeros(2, 3))
    with pytest.raises(IndexError, match=rf"^{name}: dim={dim} is out of range for an input of 2 dimensions, shape "
                                         rf"\(2, 3\) \(dim must be in \[-2, 1\]\)"):
        getattr(nn, name)(dim)(np.zeros((2, 3)))       # was: numpy's AxisError "axis 2 is out of bounds ..."
    np.testing.assert_allclose(getattr(nn, name)(dim + 1 if dim < 0 else dim - 1)(np.zeros((2, 3))),
                               getattr(torch.nn, name)(dim + 1 if dim < 0 else dim - 1)(torch.zeros(2, 3)).numpy())


# ------------------------------------------------------------------ one array returned by two calls

def test_two_calls_that_returned_the_same_array_are_named_as_such_with_the_ways_to_tell_them_apart():
    identity, x, dy = nn.Identity(), np.ones(3), np.full(3, 2.0)
    y1, y2 = identity(x), identity(x)
    assert y1 is y2 is x
    with pytest.raises(RuntimeError, match=r"Identity.backward: 2 waiting calls of Identity returned this very array, "
                                           r"so output= cannot tell them apart.*x.copy\(\).*before the next forward.*"
                                           r"module of your own.*ctx.calls"):
        identity.backward(dy, output=y1)    # was: "2 forwards ... wait ... Name the forward by the array it returned:
    with pytest.raises(RuntimeError, match="2 forwards of Identity wait"):  # net.backward(dy, output=y)", which it
        identity.backward(dy)                                              # had just done
    identity = nn.Identity()                # the fixes: forward, backward, forward, backward ...
    assert identity.backward(dy, output=identity(x)) is dy and identity.backward(dy, output=identity(x)) is dy
    y1, y2 = identity(x), identity(x.copy())                         # ... or an array of its own for each call
    assert identity.backward(dy, output=y2) is dy and identity.backward(dy, output=y1) is dy

class _Twice(nn.Module):
    """y = f(x) + f(x), with f an Identity called twice on the same x."""

    def __init__(self, by_output):
        super().__init__()
        self.f, self.by_output = nn.Identity(), by_output

    def forward(self, ctx, x):
        ctx.y1 = self.f(x)
        ctx.y2 = self.f(x)
        return ctx.y1 + ctx.y2

    def backprop(self, ctx, dy):
        if self.by_output:
            return self.f.backward(dy, output=ctx.y1) + self.f.backward(dy, output=ctx.y2)
        return ctx.calls[1].backward(dy) + ctx.calls[0].backward(dy)


def test_inside_a_backprop_two_calls_that_returned_one_array_point_to_ctx_calls_which_pairs_them_as_torch():
    x, dy = np.arange(3.0), np.ones(3)
    ours = _Twice(by_output=True)
    ours(x)
    with pytest.raises(RuntimeError, match=r"returned this very array.*inside _Twice.backprop, go back through "
                                           r"ctx.calls .*ctx.calls\[i\].backward\(dy\)"):
        ours.backward(dy)
    ours = _Twice(by_output=False)
    y = ours(x)
    tx = torch.tensor(x, requires_grad=True)
    identity = torch.nn.Identity()
    (identity(tx) + identity(tx)).backward(torch.tensor(dy))
    np.testing.assert_array_equal(y, 2 * x)
    np.testing.assert_array_equal(ours.backward(dy), tx.grad.numpy())
