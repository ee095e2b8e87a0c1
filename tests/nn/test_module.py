"""Module bookkeeping: registration, state dicts, modes, dtype moves and Sequential."""
import numpy as np
import pytest

from minidae import models, nn


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
    net.zero_grad()
    assert all((p.grad == 0).all() for p in net.parameters())
    assert not any(m.training for _, m in net.eval().named_modules())
    assert all(m.training for _, m in net.train().named_modules())
    net.to(np.float64)
    assert all(p.data.dtype == np.float64 and p.grad.dtype == np.float64 for p in net.parameters())
    assert len(net) == 3 and isinstance(net[1], nn.ReLU)


def test_float64_input_computes_in_float64_with_float32_weights():
    layer = nn.Conv2d(1, 2, 3)
    y = layer(np.ones((1, 1, 5, 5)))
    assert y.dtype == np.float64 and layer.backward(np.ones_like(y)).dtype == np.float64
    assert layer.weight.grad.dtype == np.float32


def test_parameters_are_assignable():
    layer = nn.Linear(2, 1)
    layer.weight.data = np.full((1, 2), 2.0, dtype=np.float32)
    layer.bias.data = np.zeros(1, dtype=np.float32)
    assert layer(np.ones((1, 2), dtype=np.float32)).tolist() == [[4.0]]
