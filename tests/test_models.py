"""The spec network: shapes, whole-network gradcheck and PyTorch parity (training parity: tests/test_zoo.py)."""
import numpy as np
import pytest

from minidae import gradcheck, models


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


# Training parity (every preset, conv_dae included, 20 steps in float64): tests/test_zoo.py.


def test_summary_runs_in_eval_mode_and_restores_the_mode():
    """A summary runs zeros through the layers: it must not move BatchNorm2d's running statistics or draw
    dropout masks, and it leaves the model in the mode it found."""
    from minidae import nn

    model = models.Chain([("conv", nn.Conv2d(1, 2, 3, padding=1)), ("bn", nn.BatchNorm2d(2)), nn.Dropout(0.5),
                          nn.Conv2d(2, 1, 1)], code_after=2)
    model.bn.running_mean[...] = 0.25
    before = {k: v.copy() for k, v in model.state_dict().items()}
    rows = models.summary(model)
    assert [r[1] for r in rows] == [(1, 2, 28, 28), (1, 2, 28, 28), (1, 2, 28, 28), (1, 1, 28, 28)]
    for key, value in model.state_dict().items():
        np.testing.assert_array_equal(value, before[key], err_msg=key)
    assert model.training and model.bn.training
    model.eval()
    models.summary(model)
    assert not model.training and not model.bn.training
