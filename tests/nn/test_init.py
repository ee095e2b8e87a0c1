"""Initialisation: PyTorch's fan rules and the He distributions' statistics."""
import math

import numpy as np
import pytest

from minidae import backend, nn
from minidae.nn import init


@pytest.mark.parametrize("shape, fans", [((8, 3), (3, 8)), ((16, 4, 3, 5), (60, 240)), ((4, 16, 3, 3), (144, 36))])
def test_fans_follow_torch(shape, fans):
    assert init.fans(shape) == fans
    torch = pytest.importorskip("torch")
    assert torch.nn.init._calculate_fan_in_and_fan_out(torch.empty(shape)) == fans


def test_kaiming_normal_std_and_mean(xp):
    param = nn.Parameter(xp.zeros((400, 250, 3, 3), dtype=xp.float32))
    init.kaiming_normal_(param)
    values = backend.to_numpy(param.data).astype(np.float64)
    std = math.sqrt(2.0) / math.sqrt(250 * 9)
    assert param.data.dtype == np.float32
    assert abs(values.std() / std - 1) < 0.01 and abs(values.mean()) < 0.01 * std


def test_kaiming_uniform_bound_and_variance(xp):
    param = nn.Parameter(xp.zeros((500, 400), dtype=xp.float64))
    init.kaiming_uniform_(param, a=0, nonlinearity="relu")
    values = backend.to_numpy(param.data)
    bound = math.sqrt(2.0) * math.sqrt(3.0 / 400)
    assert np.abs(values).max() <= bound and np.abs(values).max() > 0.99 * bound
    assert abs(values.var() / (bound ** 2 / 3) - 1) < 0.01 and param.data.dtype == np.float64


def test_same_seed_same_weights():
    backend.seed(11)
    first = nn.Conv2d(2, 3, 3).state_dict()
    backend.seed(11)
    assert all(np.array_equal(v, first[k]) for k, v in nn.Conv2d(2, 3, 3).state_dict().items())


def test_bad_arguments():
    with pytest.raises(ValueError, match="at least 2 dimensions"):
        init.fans((5,))
    with pytest.raises(ValueError, match="unsupported nonlinearity 'gelu'"):
        init.calculate_gain("gelu")
