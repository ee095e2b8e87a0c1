"""Module bookkeeping: registration, state dicts, modes, dtype moves and Sequential."""
import numpy as np
import pytest

from minidae import backend, models, nn
from parity import relative_error


def test_state_dict_keys_match_torch():
    torch = pytest.importorskip("torch")
    ours = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(2, 4))
    theirs = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(2, 4))
    assert list(ours.state_dict()) == list(theirs.state_dict())
    assert all(isinstance(v, np.ndarray) for v in ours.state_dict().values())


def test_load_state_dict_round_trip_and_errors():
    a, b = models.conv_dae(), models.conv_dae()
    b.load_state_dict(a.state_dict())
    assert all((a.state_dict()[k] == v).all() for k, v in b.state_dict().items())
    state = a.state_dict()
    state["conv1.weight"] = state["conv1.weight"][:1]
    with pytest.raises(ValueError, match=r"conv1.weight has shape \(1, 1, 3, 3\), the module expects \(16, 1, 3, 3\)"):
        b.load_state_dict(state)
    del state["conv1.weight"]
    with pytest.raises(KeyError, match="missing keys.*conv1.weight"):
        b.load_state_dict(state)


def test_state_dict_is_a_copy():
    layer = nn.Linear(2, 2)
    state = layer.state_dict()
    state["weight"][...] = 5
    assert not (layer.weight.data == 5).any()


def test_zero_grad_train_eval_and_dtype_move():
    net = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 1))
    out = net(np.ones((2, 3), dtype=np.float32))
    net.backward(np.ones_like(out))
    assert any(np.abs(p.grad).sum() > 0 for p in net.parameters())
    net.zero_grad(set_to_none=False)
    assert all((p.grad == 0).all() for p in net.parameters())
    net.zero_grad()  # PyTorch's default: no gradient at all
    assert all(p.grad is None for p in net.parameters())
    assert not any(m.training for _, m in net.eval().named_modules())
    assert all(m.training for _, m in net.train().named_modules())
    net.to(np.float64)
    assert all(p.data.dtype == np.float64 and p.grad is None for p in net.parameters())
    net.backward(np.ones((2, 1)), output=net(np.ones((2, 3))))
    assert all(p.grad.dtype == np.float64 for p in net.parameters())
    assert len(net) == 3 and isinstance(net[1], nn.ReLU)


def test_an_input_of_another_float_dtype_is_refused_as_in_torch():
    """It used to run the whole network in float64 silently (13 -> 23 ms a step) and accumulate float64
    gradients into float32 .grad; PyTorch refuses the mismatch."""
    layer = nn.Conv2d(1, 2, 3)
    with pytest.raises(ValueError, match=r"Conv2d: the input is float64 but the parameters are float32; convert "
                                         r"the input \(x.astype\(numpy.float32\)\) or the model "
                                         r"\(model.to\(numpy.float64\)\)"):
        layer(np.ones((1, 1, 5, 5)))
    relu = nn.ReLU()  # no parameters: the input's dtype passes through
    assert relu(np.ones(3)).dtype == np.float64 and relu(np.ones(3, np.float32)).dtype == np.float32
    assert layer.to(np.float64)(np.ones((1, 1, 5, 5))).dtype == np.float64


def test_parameters_are_assignable():
    layer = nn.Linear(2, 1)
    layer.weight.data = np.full((1, 2), 2.0, dtype=np.float32)
    layer.bias.data = np.zeros(1, dtype=np.float32)
    assert layer(np.ones((1, 2), dtype=np.float32)).tolist() == [[4.0]]


def test_grad_follows_data_in_dtype_shape_and_backend(xp):
    """A new Parameter has no gradient (None, as PyTorch's); assigning .data of another dtype, shape or backend leaves
    none; one of the same kind keeps it; a mismatched .grad is refused; a backward makes a matching one."""
    backend.use("numpy")
    p = nn.Parameter(np.zeros((3, 2), np.float32))
    assert p.grad is None and p.numel() == 6 and p.shape == (3, 2) and p.ndim == 2 and p.dtype == np.float32
    p.grad = np.ones((3, 2), np.float32)
    p.data = xp.ones((3, 2))  # float64, on the test's backend
    assert p.grad is None
    assert nn.module.grad_of(p).dtype == np.float64 and backend.array_module(p.grad) is xp
    assert not bool(p.grad.any())
    p.data = xp.ones(5)
    assert p.grad is None and nn.module.grad_of(p).shape == (5,)
    kept = p.grad
    p.data = xp.zeros(5)  # same shape, dtype and backend: the gradient (and what it holds) stays
    assert p.grad is kept
    with pytest.raises(ValueError, match=r"the gradient must match the data: got numpy float32 \(5,\)"):
        p.grad = np.zeros(5, np.float32)
    p.zero_grad()
    assert p.grad is None and nn.module.grad_of(p) is kept  # a new gradient in the old one's memory


def test_float64_data_in_a_float32_layer_gives_float64_gradients_as_torch(xp):
    """The defect: after p.data = float64 array, .grad stayed float32 and parity fell to ~1e-7."""
    torch = pytest.importorskip("torch")
    theirs = torch.nn.Conv2d(2, 3, 3, padding=1).double()
    ours = nn.Conv2d(2, 3, 3, padding=1)  # float32 parameters, then float64 data assigned by hand
    for name, p in ours.named_parameters():
        p.data = xp.asarray(theirs.state_dict()[name].numpy())
    x = np.random.default_rng(0).normal(size=(2, 2, 5, 4))
    upstream = np.random.default_rng(1).normal(size=(2, 3, 5, 4))
    x_torch = torch.tensor(x, requires_grad=True)
    theirs(x_torch).backward(torch.tensor(upstream))
    ours(xp.asarray(x))
    ours.backward(xp.asarray(upstream))
    for name, p in ours.named_parameters():
        assert p.grad.dtype == np.float64
        assert relative_error(p.grad, dict(theirs.named_parameters())[name].grad.numpy()) < 1e-12


def test_evaluating_gives_every_submodule_its_own_mode_back():
    import minidae
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.ReLU())
    model[1].eval()  # a frozen BatchNorm2d inside a model that trains
    with minidae.evaluating(model):
        assert not any(m.training for _, m in model.named_modules())
    assert model.training and model[0].training and not model[1].training


def test_load_state_dict_writes_nothing_when_a_shape_does_not_fit():
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2))
    before = model.state_dict()
    state = {key: value + 1 for key, value in before.items()}
    state["1.running_var"] = np.ones(3, np.float32)  # the last entry is wrong: the others must stay as they were
    with pytest.raises(ValueError, match=r"1.running_var has shape \(3,\)"):
        model.load_state_dict(state)
    for key, value in model.state_dict().items():
        np.testing.assert_array_equal(value, before[key], err_msg=key)


def test_register_buffer_wants_an_array_or_none():
    module = nn.Module()
    with pytest.raises(ValueError, match="'scale' must be an array"):
        module.register_buffer("scale", 3.0)
    module.register_buffer("scale", None)
    assert dict(module.named_buffers()) == {}
