"""Conv2d and ConvTranspose2d: PyTorch parity over a random grid, gradchecks, argument errors, init."""
import math

import numpy as np
import pytest

from minidae import gradcheck, nn


def random_configs(count, transpose, seed):
    """Random layer geometries: non-square inputs, rectangular kernels, strides 1-3,
    paddings 0-4 (often beyond kernel // 2), output_padding < stride, bias on and off."""
    rng = np.random.default_rng(seed)
    configs = []
    while len(configs) < count:
        kernel = tuple(int(k) for k in rng.integers(1, 5, size=2))
        stride = tuple(int(s) for s in rng.integers(1, 4, size=2))
        padding = tuple(int(p) for p in rng.integers(0, 5, size=2))
        hw = tuple(int(s) for s in rng.integers(1, 11, size=2))
        cfg = dict(n=int(rng.integers(1, 4)), c_in=int(rng.integers(1, 5)), c_out=int(rng.integers(1, 5)),
                   hw=hw, kernel=kernel, stride=stride, padding=padding, bias=bool(rng.integers(0, 2)))
        if transpose:
            cfg["output_padding"] = tuple(int(rng.integers(0, s)) for s in stride)
            out = [(i - 1) * s - 2 * p + k + op for i, s, p, k, op in
                   zip(hw, stride, padding, kernel, cfg["output_padding"])]
            if min(out) < 1:
                continue
        elif any(i + 2 * p < k for i, p, k in zip(hw, padding, kernel)):
            continue
        configs.append(cfg)
    return configs


SPEC_ENCODER = [dict(n=2, c_in=1, c_out=16, hw=(28, 28), kernel=(3, 3), stride=(2, 2), padding=(2, 2), bias=True),
                dict(n=2, c_in=16, c_out=32, hw=(15, 15), kernel=(3, 3), stride=(2, 2), padding=(1, 1), bias=True),
                dict(n=2, c_in=32, c_out=64, hw=(8, 8), kernel=(3, 3), stride=(2, 2), padding=(1, 1), bias=True)]
SPEC_DECODER = [dict(n=2, c_in=64, c_out=32, hw=(4, 4), kernel=(3, 3), stride=(3, 3), padding=(2, 2),
                     output_padding=(0, 0), bias=True),
                dict(n=2, c_in=32, c_out=16, hw=(8, 8), kernel=(3, 3), stride=(3, 3), padding=(4, 4),
                     output_padding=(0, 0), bias=True),
                dict(n=2, c_in=16, c_out=1, hw=(16, 16), kernel=(3, 3), stride=(2, 2), padding=(3, 3),
                     output_padding=(1, 1), bias=True)]
CONV_GRID = random_configs(36, transpose=False, seed=2) + SPEC_ENCODER
CONVT_GRID = random_configs(36, transpose=True, seed=3) + SPEC_DECODER
DTYPES = [np.float64, np.float32]


def build(cfg, transpose):
    import torch
    args = (cfg["c_in"], cfg["c_out"], cfg["kernel"])
    kwargs = dict(stride=cfg["stride"], padding=cfg["padding"], bias=cfg["bias"])
    if transpose:
        kwargs["output_padding"] = cfg["output_padding"]
        return nn.ConvTranspose2d(*args, **kwargs), torch.nn.ConvTranspose2d(*args, **kwargs)
    return nn.Conv2d(*args, **kwargs), torch.nn.Conv2d(*args, **kwargs)


def config_id(cfg):
    return "-".join(f"{k}{v}" for k, v in cfg.items()).replace(" ", "")


GRID = [(False, cfg) for cfg in CONV_GRID] + [(True, cfg) for cfg in CONVT_GRID]
GRID_IDS = [("ConvTranspose2d-" if transpose else "Conv2d-") + config_id(cfg) for transpose, cfg in GRID]


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("transpose, cfg", GRID, ids=GRID_IDS)
def test_matches_torch(xp, torch_parity, transpose, cfg, dtype):
    ours, theirs = build(cfg, transpose)
    x = np.random.default_rng(0).normal(size=(cfg["n"], cfg["c_in"], *cfg["hw"]))
    torch_parity(ours, theirs, x, dtype)


def test_grid_covers_what_the_issue_asks():
    for grid in (CONV_GRID, CONVT_GRID):
        assert len(grid) >= 30
        assert any(c["hw"][0] != c["hw"][1] for c in grid)
        assert any(c["kernel"][0] != c["kernel"][1] for c in grid)
        assert {s for c in grid for s in c["stride"]} == {1, 2, 3}
        assert any(p > k // 2 for c in grid for p, k in zip(c["padding"], c["kernel"]))
        assert max(p for c in grid for p in c["padding"]) == 4
        assert {c["bias"] for c in grid} == {True, False}
    assert any(op > 0 for c in CONVT_GRID for op in c["output_padding"])


@pytest.mark.parametrize("layer", [
    nn.Conv2d(2, 3, (3, 2), stride=(2, 1), padding=(1, 2)),
    nn.ConvTranspose2d(2, 3, (2, 3), stride=(3, 2), padding=(1, 2), output_padding=(2, 1)),
], ids=["Conv2d", "ConvTranspose2d"])
def test_gradcheck(xp, layer):
    x = np.random.default_rng(0).normal(size=(2, 2, 5, 4))
    result = gradcheck(layer.to(), x)
    assert result, str(result)


@pytest.mark.parametrize("make, message", [
    (lambda: nn.Conv2d(1, 1, 3, padding=-1), "padding must be non-negative"),
    (lambda: nn.ConvTranspose2d(1, 1, 3, padding=-1), "padding must be non-negative"),
    (lambda: nn.ConvTranspose2d(1, 1, 3, stride=2, output_padding=2), "output_padding"),
    (lambda: nn.ConvTranspose2d(1, 1, 3, stride=1, output_padding=1), "smaller than either stride"),
    (lambda: nn.Conv2d(1, 1, 3, stride=0), "stride and dilation must be positive"),
    (lambda: nn.Conv2d(1, 1, (3, 3, 3)), "kernel_size must be an int or an"),
    (lambda: nn.Conv2d(0, 1, 3), "channel counts must be positive"),
])
def test_bad_arguments_raise(make, message):
    with pytest.raises(ValueError, match=message):
        make()


@pytest.mark.parametrize("layer, shape, message", [
    (nn.Conv2d(3, 4, 5), (2, 3, 4, 4), r"Conv2d: kernel \(5, 5\) \(dilation \(1, 1\)\) is larger than the padded "
                                       r"input \(4, 4\)"),
    (nn.Conv2d(3, 4, 3), (2, 2, 8, 8), r"Conv2d: expected a floating-point input of shape \(N, 3, H, W\) or "
                                       r"\(3, H, W\), got \(2, 2, 8, 8\)"),
    (nn.Conv2d(3, 4, 3), (2, 8, 8), r"Conv2d: expected .* \(N, 3, H, W\) or \(3, H, W\), got \(2, 8, 8\)"),
    (nn.Conv2d(3, 4, 3), (8, 8), r"Conv2d: expected .* got \(8, 8\)"),
    (nn.ConvTranspose2d(3, 4, 3), (2, 4, 5, 5), r"ConvTranspose2d: expected a floating-point input of shape \(N, 3, H, W\)"),
    (nn.ConvTranspose2d(3, 4, 3, padding=4), (1, 3, 2, 2), r"ConvTranspose2d: input \(1, 3, 2, 2\) gives a "
                                                           r"non-positive output size"),
])
def test_bad_inputs_raise(layer, shape, message):
    with pytest.raises(ValueError, match=message):
        layer(np.zeros(shape, np.float32))


def test_integer_input_is_refused():
    with pytest.raises(ValueError, match=r"Conv2d: expected a floating-point input .* uint8"):
        nn.Conv2d(1, 1, 3)(np.zeros((1, 1, 5, 5), np.uint8))


@pytest.mark.parametrize("layer, fan_in", [(nn.Conv2d(6, 8, (3, 5)), 6 * 15),
                                           (nn.ConvTranspose2d(6, 8, (3, 5)), 8 * 15)])
def test_default_init_matches_torch_bounds(layer, fan_in):
    """kaiming_uniform(a=sqrt(5)) and the bias rule both give U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
    bound = 1 / math.sqrt(fan_in)
    for param in (layer.weight, layer.bias):
        values = np.asarray(param.data)
        assert values.dtype == np.float32
        assert np.abs(values).max() <= bound and np.abs(values).max() > 0.8 * bound
