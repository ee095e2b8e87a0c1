"""gradcheck itself: it passes correct layers and names the element where a wrong one fails."""
import numpy as np

from minidae import gradcheck, nn


class WrongBiasGrad(nn.Linear):
    """A Linear whose backward forgets to sum the bias gradient over the batch."""

    def backprop(self, ctx, dy):
        dx = super().backprop(ctx, dy)
        self.bias.grad -= dy[1:].sum(axis=0)  # leaves only the first sample's contribution
        return dx


class WrongInputGrad(nn.Sigmoid):
    def backprop(self, ctx, dy):
        return dy * ctx.y  # missing the (1 - y) factor


def test_passes_a_correct_layer(xp):
    result = gradcheck(nn.Linear(3, 2), np.random.default_rng(0).normal(size=(4, 3)))
    assert result and result.checked == 4 * 3 + 6 + 2
    assert "passed" in str(result)


def test_names_the_wrong_parameter(xp):
    result = gradcheck(WrongBiasGrad(3, 2), np.random.default_rng(0).normal(size=(4, 3)))
    assert not result
    assert result.worst.tensor == "bias"
    assert result.per_tensor["weight"].score <= 1 and result.per_tensor["input"].score <= 1
    assert "FAILED" in str(result) and "bias[" in str(result.worst)


def test_names_the_wrong_input_gradient(xp):
    result = gradcheck(WrongInputGrad(), np.random.default_rng(0).normal(size=(2, 3)))
    assert not result and result.worst.tensor == "input"
    assert abs(result.worst.analytic - result.worst.numeric) == result.worst.abs_error > 0.01


def test_sampling_checks_at_most_max_elements_per_tensor(xp):
    result = gradcheck(nn.Linear(30, 20), np.random.default_rng(0).normal(size=(5, 30)), max_elements=7)
    assert result and result.checked == 7 * 3


def test_leaves_the_callers_module_untouched(xp):
    layer = nn.Linear(3, 2)
    before = {k: v.copy() for k, v in layer.state_dict().items()}
    gradcheck(layer, np.ones((2, 3)))
    assert layer.weight.data.dtype == np.float32 and layer.weight.grad is None
    assert all((before[k] == v).all() for k, v in layer.state_dict().items())
