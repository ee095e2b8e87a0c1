"""The spec network: shapes, whole-network gradcheck, and training parity with PyTorch."""
import numpy as np
import pytest

from minidae import gradcheck, models, nn, optim
from parity import copy_torch_weights, relative_error


def torch_conv_dae():
    pytest.importorskip("torch", reason="PyTorch is the reference: pip install -e .[test]")
    from torch_reference import TorchConvDAE
    return TorchConvDAE()


def test_layer_shapes_follow_the_size_rule(xp):
    net = models.conv_dae()
    x = xp.zeros((3, 1, 28, 28), dtype=xp.float32)
    shapes = []
    for layer in net.layers:
        x = layer(x)
        shapes.append(tuple(x.shape[1:]))
    assert shapes[0] == (16, 15, 15)  # not the spec table's 16 x 16: see ConvDAE's docstring
    assert [shapes[i] for i in (2, 4, 7, 8, 10, 12, 14)] == [
        (32, 8, 8), (64, 4, 4), (256,), (1024,), (32, 8, 8), (16, 16, 16), (1, 28, 28)]
    assert x.dtype == xp.float32 and float(x.min()) >= 0 and float(x.max()) <= 1


def test_whole_network_gradcheck(xp):
    x = np.random.default_rng(0).uniform(size=(2, 1, 28, 28))
    result = gradcheck(models.conv_dae(), x, max_elements=12)
    assert result, str(result)
    assert set(result.per_tensor) == {"input"} | {k for k, _ in models.conv_dae().named_parameters()}


def test_forward_matches_torch(xp, torch_parity):
    x = np.random.default_rng(0).uniform(size=(4, 1, 28, 28))
    for dtype in (np.float64, np.float32):
        torch_parity(models.conv_dae(), torch_conv_dae(), x, dtype, label="conv_dae")


def test_training_matches_torch_for_30_adam_steps(xp):
    torch = pytest.importorskip("torch")
    theirs = torch_conv_dae().double()
    ours = models.conv_dae()
    copy_torch_weights(ours, theirs)
    ours.to(np.float64)
    recipe = dict(lr=1e-3, betas=(0.9, 0.999), weight_decay=1e-5)
    our_opt, their_opt = optim.Adam(ours.parameters(), **recipe), torch.optim.Adam(theirs.parameters(), **recipe)
    criterion, rng = nn.MSELoss(), np.random.default_rng(0)
    for step in range(30):
        clean = rng.uniform(size=(16, 1, 28, 28))
        noisy = np.clip(clean + 0.5 * rng.normal(size=clean.shape), 0, 1)
        our_opt.zero_grad()
        loss = criterion(ours(xp.asarray(noisy)), xp.asarray(clean))
        ours.backward(criterion.backward())
        our_opt.step()
        their_opt.zero_grad()
        their_loss = torch.nn.functional.mse_loss(theirs(torch.tensor(noisy)), torch.tensor(clean))
        their_loss.backward()
        their_opt.step()
        assert abs(float(loss) - their_loss.item()) <= 1e-8 * their_loss.item(), f"step {step}"
    their_params = dict(theirs.named_parameters())
    errors = {name: relative_error(p.data, their_params[name].detach().numpy()) for name, p in ours.named_parameters()}
    assert max(errors.values()) < 1e-8, errors
