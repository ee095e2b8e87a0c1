"""The fast layers against the naive loops of minidae/nn/reference.py, and those loops against PyTorch.

The fast layers (im2col, one GEMM, col2im) and the references (one Python loop per output
position) share no code, so agreement over a grid of strides, paddings, dilations, groups and
output paddings checks both; PyTorch then checks the references on a few cases.
"""
import numpy as np
import pytest

from minidae import backend, nn
from minidae.nn import reference

TOLERANCE = 1e-12  # float64: the two differ only by the order of their additions


def assert_close(ours, expected, what):
    ours, expected = np.asarray(backend.to_numpy(ours)), np.asarray(expected)
    assert ours.shape == expected.shape, f"{what}: shape {ours.shape}, reference {expected.shape}"
    assert np.abs(expected).max() > 0, f"{what}: the reference is all zeros, which would check nothing"
    error = np.abs(ours - expected).max() / np.abs(expected).max()
    assert error <= TOLERANCE, f"{what}: relative error {error:.3g} against the reference"


def run_layer(layer, x, rng):
    """Forward and backward through a fast layer in float64 with a random upstream gradient:
    (y, dy, dx, {parameter name: grad}), all NumPy."""
    layer.to(np.float64)
    layer.zero_grad()
    y = layer(backend.xp.asarray(x))
    dy = rng.normal(size=y.shape)
    dx = layer.backward(backend.xp.asarray(dy))
    grads = {name: backend.to_numpy(p.grad) for name, p in layer.named_parameters()}
    return backend.to_numpy(y), dy, backend.to_numpy(dx), grads


def case_id(case):
    return "-".join(f"{k}{v}" for k, v in case.items()).replace(" ", "")


# n, c_in, c_out, hw, kernel; the rest as the layers' keyword arguments
CONV_CASES = [
    dict(n=1, c_in=1, c_out=1, hw=(3, 3), kernel=2),                                  # the worked example
    dict(n=2, c_in=3, c_out=4, hw=(7, 6), kernel=3, stride=2, padding=1),
    dict(n=2, c_in=2, c_out=3, hw=(5, 7), kernel=(2, 3), stride=(1, 2), padding=(2, 0)),
    dict(n=1, c_in=2, c_out=2, hw=(8, 7), kernel=3, dilation=2),
    dict(n=2, c_in=2, c_out=3, hw=(9, 8), kernel=(3, 2), stride=2, padding=(1, 2), dilation=(2, 3)),
    dict(n=2, c_in=4, c_out=6, hw=(5, 5), kernel=3, padding=1, groups=2),
    dict(n=1, c_in=4, c_out=8, hw=(6, 5), kernel=3, stride=2, padding=1, groups=4),  # depthwise, 2 per channel
    dict(n=2, c_in=6, c_out=3, hw=(7, 7), kernel=2, stride=2, padding=2, dilation=2, groups=3, bias=False),
    dict(n=2, c_in=3, c_out=2, hw=(7, 8), kernel=1, stride=3),
    dict(n=1, c_in=2, c_out=3, hw=(8, 9), kernel=2, stride=3, padding=1),                # gaps between windows
    dict(n=1, c_in=1, c_out=2, hw=(28, 28), kernel=3, stride=2, padding=2),              # the spec's conv1
]

CONV_TRANSPOSE_CASES = [
    dict(n=1, c_in=1, c_out=1, hw=(2, 2), kernel=2),
    dict(n=2, c_in=3, c_out=2, hw=(4, 3), kernel=3, stride=2, padding=1, output_padding=1),
    dict(n=2, c_in=2, c_out=3, hw=(3, 4), kernel=(2, 3), stride=(3, 2), padding=(0, 1), output_padding=(2, 0)),
    dict(n=1, c_in=2, c_out=2, hw=(4, 4), kernel=3, padding=1, output_padding=1, dilation=2),  # op < dilation
    dict(n=2, c_in=4, c_out=6, hw=(3, 3), kernel=3, stride=2, groups=2),
    dict(n=1, c_in=6, c_out=3, hw=(4, 3), kernel=2, stride=2, padding=1, dilation=(2, 1), groups=3, bias=False),
    dict(n=1, c_in=3, c_out=2, hw=(4, 4), kernel=3, stride=3, padding=2),              # the spec's conv4
    dict(n=1, c_in=2, c_out=2, hw=(5, 5), kernel=3, stride=3, padding=4),              # the spec's conv5
    dict(n=1, c_in=2, c_out=1, hw=(6, 6), kernel=3, stride=2, padding=3, output_padding=1),  # the spec's conv6
]

MAX_POOL_CASES = [
    dict(n=2, c=2, hw=(6, 7), kernel=2),
    dict(n=1, c=3, hw=(7, 7), kernel=3, stride=2, padding=1),
    dict(n=2, c=1, hw=(6, 7), kernel=(3, 2), stride=(1, 2)),
    dict(n=1, c=2, hw=(9, 8), kernel=3, stride=1, padding=1, dilation=2),
    dict(n=1, c=2, hw=(7, 8), kernel=3, stride=2, padding=1, ceil_mode=True),
    dict(n=2, c=1, hw=(8, 7), kernel=(2, 3), stride=(3, 2), dilation=(2, 1), ceil_mode=True),
    dict(n=1, c=2, hw=(6, 6), kernel=3, stride=1, padding=1, ties=True),            # integer inputs: ties
]

AVG_POOL_CASES = [
    dict(n=2, c=2, hw=(6, 7), kernel=2),
    dict(n=1, c=3, hw=(7, 7), kernel=3, stride=2, padding=1),
    dict(n=1, c=3, hw=(7, 7), kernel=3, stride=2, padding=1, count_include_pad=False),
    dict(n=2, c=1, hw=(6, 7), kernel=(3, 2), stride=(1, 2), padding=(1, 0)),
    dict(n=1, c=2, hw=(7, 8), kernel=3, stride=2, padding=1, ceil_mode=True),
    dict(n=1, c=2, hw=(8, 7), kernel=(2, 4), stride=(3, 2), padding=(1, 2), ceil_mode=True,
         count_include_pad=False),
]


def split_conv_case(case):
    """(n, c_in, c_out, hw, kernel, keyword arguments of the layer)."""
    options = {k: v for k, v in case.items() if k not in ("n", "c_in", "c_out", "hw", "kernel")}
    return case["n"], case["c_in"], case["c_out"], case["hw"], case["kernel"], options


@pytest.mark.parametrize("case", CONV_CASES, ids=case_id)
def test_conv2d_matches_the_reference(case, xp):
    n, c_in, c_out, hw, kernel, options = split_conv_case(case)
    rng = np.random.default_rng(0)
    layer = nn.Conv2d(c_in, c_out, kernel, **options)
    x = rng.normal(size=(n, c_in, *hw))
    y, dy, dx, grads = run_layer(layer, x, rng)
    weight = backend.to_numpy(layer.weight.data)
    bias = None if layer.bias is None else backend.to_numpy(layer.bias.data)
    geometry = {k: v for k, v in options.items() if k != "bias"}
    assert_close(y, reference.conv2d_forward(x, weight, bias, **geometry), "output")
    dx_ref, dweight_ref, dbias_ref = reference.conv2d_backward(dy, x, weight, **geometry)
    assert_close(dx, dx_ref, "input grad")
    assert_close(grads["weight"], dweight_ref, "weight grad")
    if bias is not None:
        assert_close(grads["bias"], dbias_ref, "bias grad")


@pytest.mark.parametrize("case", CONV_TRANSPOSE_CASES, ids=case_id)
def test_conv_transpose2d_matches_the_reference(case, xp):
    n, c_in, c_out, hw, kernel, options = split_conv_case(case)
    rng = np.random.default_rng(0)
    layer = nn.ConvTranspose2d(c_in, c_out, kernel, **options)
    x = rng.normal(size=(n, c_in, *hw))
    y, dy, dx, grads = run_layer(layer, x, rng)
    weight = backend.to_numpy(layer.weight.data)
    bias = None if layer.bias is None else backend.to_numpy(layer.bias.data)
    geometry = {k: v for k, v in options.items() if k not in ("bias", "output_padding")}
    expected = reference.conv_transpose2d_forward(x, weight, bias, output_padding=options.get("output_padding", 0),
                                                  **geometry)
    assert_close(y, expected, "output")
    dx_ref, dweight_ref, dbias_ref = reference.conv_transpose2d_backward(dy, x, weight, **geometry)
    assert_close(dx, dx_ref, "input grad")
    assert_close(grads["weight"], dweight_ref, "weight grad")
    if bias is not None:
        assert_close(grads["bias"], dbias_ref, "bias grad")


def pool_input(case, rng):
    shape = (case["n"], case["c"], *case["hw"])
    return rng.integers(0, 3, size=shape).astype(np.float64) if case.get("ties") else rng.normal(size=shape)


def pool_options(case):
    return {k: v for k, v in case.items() if k not in ("n", "c", "hw", "kernel", "ties")}


@pytest.mark.parametrize("case", MAX_POOL_CASES, ids=case_id)
def test_max_pool2d_matches_the_reference(case, xp):
    rng = np.random.default_rng(0)
    x, options = pool_input(case, rng), pool_options(case)
    y, dy, dx, _ = run_layer(nn.MaxPool2d(case["kernel"], **options), x, rng)
    assert_close(y, reference.max_pool2d_forward(x, case["kernel"], **options), "output")
    assert_close(dx, reference.max_pool2d_backward(dy, x, case["kernel"], **options), "input grad")


@pytest.mark.parametrize("case", AVG_POOL_CASES, ids=case_id)
def test_avg_pool2d_matches_the_reference(case, xp):
    rng = np.random.default_rng(0)
    x, options = pool_input(case, rng), pool_options(case)
    y, dy, dx, _ = run_layer(nn.AvgPool2d(case["kernel"], **options), x, rng)
    assert_close(y, reference.avg_pool2d_forward(x, case["kernel"], **options), "output")
    assert_close(dx, reference.avg_pool2d_backward(dy, x, case["kernel"], **options), "input grad")


def test_the_tie_case_has_ties():
    """The tie case means something only if some window's maximum occurs twice."""
    case = MAX_POOL_CASES[-1]
    x = pool_input(case, np.random.default_rng(0))
    windows = np.lib.stride_tricks.sliding_window_view(np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)),
                                                              constant_values=-np.inf), (3, 3), axis=(2, 3))
    assert ((windows == windows.max(axis=(-2, -1), keepdims=True)).sum(axis=(-2, -1)) > 1).any()


# -------------------------------------------------------------------------------------------------
# The references against PyTorch (float64, autograd for the gradients)

def torch_or_skip():
    return pytest.importorskip("torch", reason="PyTorch is the reference for parity tests: pip install -e .[test]")


def torch_run(function, x, params, dy):
    """(y, dL/dx, [dL/dparam]) of a torch.nn.functional call with upstream gradient dy."""
    torch = torch_or_skip()
    tensors = [torch.tensor(a, requires_grad=True) for a in (x, *params)]
    y = function(*tensors)
    y.backward(torch.tensor(dy))
    return y.detach().numpy(), tensors[0].grad.numpy(), [t.grad.numpy() for t in tensors[1:]]


TORCH_CONV_CASES = [dict(n=2, c_in=4, c_out=6, hw=(7, 6), kernel=3, stride=2, padding=1, dilation=2, groups=2),
                    dict(n=1, c_in=3, c_out=2, hw=(5, 6), kernel=(2, 3), stride=(1, 2), padding=(2, 1))]


@pytest.mark.parametrize("case", TORCH_CONV_CASES, ids=case_id)
def test_conv2d_reference_matches_torch(case):
    torch = torch_or_skip()
    n, c_in, c_out, hw, kernel, options = split_conv_case(case)
    kh, kw = reference._pair(kernel)
    rng = np.random.default_rng(1)
    x = rng.normal(size=(n, c_in, *hw))
    weight = rng.normal(size=(c_out, c_in // options.get("groups", 1), kh, kw))
    bias = rng.normal(size=c_out)
    y = reference.conv2d_forward(x, weight, bias, **options)
    dy = rng.normal(size=y.shape)
    y_t, dx_t, (dweight_t, dbias_t) = torch_run(
        lambda x, w, b: torch.nn.functional.conv2d(x, w, b, **options), x, (weight, bias), dy)
    assert_close(y, y_t, "output")
    for ours, theirs, what in zip(reference.conv2d_backward(dy, x, weight, **options), (dx_t, dweight_t, dbias_t),
                                  ("input grad", "weight grad", "bias grad")):
        assert_close(ours, theirs, what)


TORCH_CONV_TRANSPOSE_CASES = [
    dict(n=2, c_in=4, c_out=6, hw=(3, 4), kernel=3, stride=2, padding=1, output_padding=1, groups=2),
    dict(n=1, c_in=2, c_out=3, hw=(4, 3), kernel=(3, 2), padding=(1, 0), output_padding=(1, 0), dilation=(2, 1)),
]


@pytest.mark.parametrize("case", TORCH_CONV_TRANSPOSE_CASES, ids=case_id)
def test_conv_transpose2d_reference_matches_torch(case):
    torch = torch_or_skip()
    n, c_in, c_out, hw, kernel, options = split_conv_case(case)
    kh, kw = reference._pair(kernel)
    rng = np.random.default_rng(1)
    x = rng.normal(size=(n, c_in, *hw))
    weight = rng.normal(size=(c_in, c_out // options.get("groups", 1), kh, kw))
    bias = rng.normal(size=c_out)
    y = reference.conv_transpose2d_forward(x, weight, bias, **options)
    dy = rng.normal(size=y.shape)
    y_t, dx_t, (dweight_t, dbias_t) = torch_run(
        lambda x, w, b: torch.nn.functional.conv_transpose2d(x, w, b, **options), x, (weight, bias), dy)
    assert_close(y, y_t, "output")
    geometry = {k: v for k, v in options.items() if k != "output_padding"}
    for ours, theirs, what in zip(reference.conv_transpose2d_backward(dy, x, weight, **geometry),
                                  (dx_t, dweight_t, dbias_t), ("input grad", "weight grad", "bias grad")):
        assert_close(ours, theirs, what)


TORCH_POOL_CASES = [
    ("max", dict(n=2, c=2, hw=(9, 8), kernel=3, stride=2, padding=1, dilation=2, ceil_mode=True)),
    ("max", dict(n=1, c=2, hw=(6, 6), kernel=3, stride=1, padding=1, ties=True)),
    ("avg", dict(n=2, c=2, hw=(7, 8), kernel=3, stride=2, padding=1, ceil_mode=True)),
    ("avg", dict(n=1, c=2, hw=(8, 7), kernel=(2, 4), stride=(3, 2), padding=(1, 2), ceil_mode=True,
                 count_include_pad=False)),
]


@pytest.mark.parametrize("kind, case", TORCH_POOL_CASES, ids=[f"{k}-{case_id(c)}" for k, c in TORCH_POOL_CASES])
def test_pool_references_match_torch(kind, case):
    torch = torch_or_skip()
    rng = np.random.default_rng(1)
    x, options = pool_input(case, rng), pool_options(case)
    forward, backward = {"max": (reference.max_pool2d_forward, reference.max_pool2d_backward),
                         "avg": (reference.avg_pool2d_forward, reference.avg_pool2d_backward)}[kind]
    function = getattr(torch.nn.functional, f"{kind}_pool2d")
    y = forward(x, case["kernel"], **options)
    dy = rng.normal(size=y.shape)
    y_t, dx_t, _ = torch_run(lambda x: function(x, case["kernel"], **options), x, (), dy)
    assert_close(y, y_t, "output")
    assert_close(backward(dy, x, case["kernel"], **options), dx_t, "input grad")


EDGE_WINDOWS = {"NaNs": np.array([[[[np.nan, 1.0, 2.0], [np.nan, 0.0, np.nan], [3.0, np.nan, 1.0]]]]),
                "all -inf": np.full((1, 1, 3, 3), -np.inf)}


@pytest.mark.parametrize("kernel, stride, padding", [(2, 1, 1), (2, 2, 0), (3, 1, 1), (2, 1, 0)])
@pytest.mark.parametrize("name", list(EDGE_WINDOWS))
def test_max_pool_reference_picks_pytorchs_winner_in_edge_windows(name, kernel, stride, padding):
    """The loop's rule is PyTorch's: the last NaN of a window wins, and the padding never does, even where every
    real value is -inf."""
    torch = torch_or_skip()
    x = EDGE_WINDOWS[name]
    shape = tuple(torch.nn.functional.max_pool2d(torch.tensor(x), kernel, stride, padding).shape)
    dy = np.arange(1.0, 1 + np.prod(shape)).reshape(shape)
    tx = torch.tensor(x, requires_grad=True)
    torch.nn.functional.max_pool2d(tx, kernel, stride, padding).backward(torch.tensor(dy))
    np.testing.assert_array_equal(reference.max_pool2d_backward(dy, x, kernel, stride, padding), tx.grad.numpy())
    layer = nn.MaxPool2d(kernel, stride, padding)
    layer(x)
    dx = layer.backward(dy)
    if name == "all -inf" and padding:  # the fast layer's one known difference (MaxPool2d's docstring)
        assert dx.sum() < dy.sum()
    else:
        np.testing.assert_array_equal(dx, tx.grad.numpy())
