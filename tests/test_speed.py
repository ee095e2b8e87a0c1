"""Every NumPy speed device (minidae.speed.cpu) against the core function it replaces: the same numbers, bit for
bit (col2im's assignments keep a -0.0 that the core's 0 + -0.0 makes 0.0; the two compare equal). The CuPy ones
are checked in tests/test_cuda.py. The binding itself (what runs, and the plain maths) is tested here too."""
import numpy as np
import pytest

import minidae
from minidae import backend, optim, speed
from minidae import nn
from minidae.nn import Parameter, functional as F
from minidae.nn import im2col as windows
from minidae.nn.im2col import conv_output_size
from minidae.speed import cpu

im2col, col2im = speed.core("im2col"), speed.core("col2im")

TESTED = {"im2col", "col2im", "correlate_transpose", "conv2d", "conv2d_backward", "max_winners", "matmul", "adam_step",
          "zero_grads", "resize_backward"}


def test_every_numpy_replacement_is_tested_here():
    assert set(speed.registered("numpy")) == TESTED


WINDOWS = [((2, 3, 7, 5), (3, 2), (2, 1), (1, 2), (1, 1)), ((4, 1, 28, 28), (3, 3), (2, 2), (2, 2), (1, 1)),
           ((3, 2, 4, 4), (3, 3), (3, 3), (2, 2), (1, 1)), ((1, 4, 5, 6), (2, 2), (2, 2), (0, 0), (1, 1)),
           ((5, 2, 8, 3), (1, 3), (1, 2), (0, 1), (1, 1)), ((0, 2, 5, 5), (3, 3), (1, 1), (1, 1), (1, 1)),
           ((2, 3, 9, 8), (3, 2), (2, 1), (1, 0), (2, 3)), ((2, 2, 7, 7), (2, 2), (3, 2), (1, 1), (3, 2)),
           ((2, 3, 6, 6), (3, 3), (1, 1), (1, 1), (1, 1)), ((2, 2, 6, 9), (3, 3), (3, 3), (0, 0), (1, 1))]


def layouts(x):
    """``x`` as plain NCHW memory and as the (C, H, W, N) memory the fast col2im returns."""
    return [x, np.ascontiguousarray(x.transpose(1, 2, 3, 0)).transpose(3, 0, 1, 2)]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape, kernel, stride, padding, dilation", WINDOWS)
def test_im2col_and_col2im_equal_their_core_loops(shape, kernel, stride, padding, dilation, dtype):
    rng = np.random.default_rng(0)
    x = rng.normal(size=shape).astype(dtype)
    out_hw = tuple(conv_output_size(s, k, st, p, d) for s, k, st, p, d in zip(shape[2:], kernel, stride, padding,
                                                                                 dilation))
    for fill in (0, -np.inf):
        expected = im2col(x, kernel, stride, padding, out_hw, dilation, fill)
        for layout in layouts(x):
            np.testing.assert_array_equal(cpu.im2col(layout, kernel, stride, padding, out_hw, dilation, fill),
                                          expected)
    cols = rng.normal(size=expected.shape).astype(dtype)
    cols[:, ::3] = 0.0
    cols[:1, 1:2] = -0.0  # where the fast col2im assigns, -0.0 stays -0.0 (the core's 0 + -0.0 is 0.0): equal numbers
    fast, core = (f(cols, shape, kernel, stride, padding, out_hw, dilation) for f in (cpu.col2im, col2im))
    assert fast.shape == core.shape == shape and fast.dtype == core.dtype
    np.testing.assert_array_equal(fast, core)


def test_the_fast_path_is_what_runs_and_disabled_runs_the_core():
    x = np.random.default_rng(1).normal(size=(2, 3, 5, 5))
    assert windows.col2im is cpu.col2im and F.col2im is cpu.col2im  # bound where the maths calls it
    cols = windows.im2col(x, (3, 3), (1, 1), (1, 1), (5, 5))
    dx = windows.col2im(cols, x.shape, (3, 3), (1, 1), (1, 1), (5, 5))
    assert dx.strides[0] == dx.itemsize  # the fast col2im's (C, H, W, N) memory: the batch innermost
    with speed.disabled("col2im"):
        assert windows.col2im is col2im and F.col2im is col2im and F.im2col is cpu.im2col
        core = windows.col2im(cols, x.shape, (3, 3), (1, 1), (1, 1), (5, 5))
        assert core.strides[3] == core.itemsize  # the core's (N, C, H, W) memory
        assert speed.is_disabled("col2im") and not speed.is_disabled("im2col")
    assert not speed.is_disabled("col2im") and F.col2im is cpu.col2im
    np.testing.assert_array_equal(dx, core)


def test_the_plain_maths_binds_every_core_function_and_back():
    hooks = sorted(speed.registered("numpy"))
    assert all(speed.bound(hook) is not speed.core(hook) for hook in hooks)
    with minidae.plain_maths():
        assert all(speed.bound(hook) is speed.core(hook) for hook in hooks)
        assert F.relu is speed.core("relu") and backend.matmul is speed.core("matmul")
        assert optim.optimizers.adam_step is speed.core("adam_step")
    assert all(speed.bound(hook) is not speed.core(hook) for hook in hooks)
    minidae.plain_maths(True)  # the switch, not only a block
    try:
        assert backend.matmul is speed.core("matmul")
    finally:
        minidae.plain_maths(False)
    assert backend.matmul is cpu.matmul


def test_the_environment_switch_starts_in_the_plain_maths(tmp_path):
    import os
    import subprocess
    import sys
    code = ("import minidae\nfrom minidae import speed, backend\n"
            "print(backend.matmul is speed.core('matmul'), minidae.nn.functional.im2col is speed.core('im2col'))")
    for value, expected in (("1", "True True"), ("", "False False")):
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                             env={**os.environ, "MINIDAE_PLAIN_MATHS": value}).stdout.strip()
        assert out == expected, value


def test_the_maths_imports_nothing_of_the_speed_devices():
    """The dependencies run one way, speed -> maths -> backend: no import circle through the seam."""
    import ast
    import pathlib
    root = pathlib.Path(minidae.__file__).parent
    for path in [root / "backend.py", *root.glob("nn/*.py"), *root.glob("optim/*.py")]:
        tree = ast.parse(path.read_text())
        imported = [node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)]
        imported += [alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names]
        assert not [name for name in imported if "speed" in name], path


def windows_with_ties_nans_and_infinities(seed=0):
    rng = np.random.default_rng(seed)
    windows = rng.integers(-2, 3, size=(3, 9, 40)).astype(np.float64)  # many ties
    windows[0, 4, 5] = windows[0, 7, 5] = np.nan  # two NaNs: the last wins
    windows[1, 2, 6] = np.nan
    windows[2, :, 7] = -np.inf  # all -inf: the first tap wins
    windows[2, 3, 8] = np.inf
    windows[1, :, 9] = np.nan
    return windows


def test_first_maximum_equals_the_argmax_rule():
    windows = windows_with_ties_nans_and_infinities()
    best = windows.max(axis=1)
    expected = speed.core("max_winners")(windows, best)
    assert expected.sum(axis=1).tolist() == np.ones((3, 40)).tolist()  # exactly one winner per window
    assert expected[0, 7, 5] and expected[1, 2, 6] and expected[2, 0, 7] and expected[2, 3, 8] and expected[1, 8, 9]
    np.testing.assert_array_equal(cpu.first_maximum(windows.copy(), best), expected)


def test_the_outer_product_equals_the_gemm_and_other_shapes_are_the_gemm():
    rng = np.random.default_rng(2)
    a, b = rng.normal(size=(7, 1)).astype(np.float32), rng.normal(size=(1, 5)).astype(np.float32)
    np.testing.assert_array_equal(cpu.matmul(a, b), speed.core("matmul")(a, b))
    a, b = rng.normal(size=(3, 2)), rng.normal(size=(2, 4))
    np.testing.assert_array_equal(cpu.matmul(a, b), a @ b)


@pytest.mark.parametrize("dtype, rtol", [(np.float32, 1e-5), (np.float64, 1e-13)])
@pytest.mark.parametrize("m, k, n", [(32, 1960, 576), (16, 3920, 128), (2, 100, 64), (1, 300, 288), (8, 50, 9)])
def test_a_weight_gradients_gemm_swapped_equals_the_gemm(m, k, n, dtype, rtol):
    """dY @ cols^T (cols row-major, so its transpose column-major) as (cols @ dY^T)^T: the same dot products,
    summed in another order: equal to float rounding."""
    rng = np.random.default_rng(3)
    dy, cols = rng.normal(size=(m, k)).astype(dtype), rng.normal(size=(n, k)).astype(dtype)
    got = cpu.matmul(dy, cols.T)
    assert got.shape == (m, n) and got.dtype == dtype
    np.testing.assert_allclose(got, dy.astype(np.float64) @ cols.T.astype(np.float64), rtol=rtol,
                               atol=rtol * np.sqrt(k))
    out = rng.normal(size=(m, n // 1)).astype(dtype)
    expected = out + dy @ cols.T
    speed.bound("matmul_add")(out, dy, cols.T)  # what a weight gradient's += goes through
    np.testing.assert_allclose(out, expected, rtol=rtol, atol=rtol * np.sqrt(k))


@pytest.mark.parametrize("dtype, rtol", [(np.float32, 1e-5), (np.float64, 1e-13)])
@pytest.mark.parametrize("layout", ["C", "F"])
@pytest.mark.parametrize("n, features_in, features_out", [(10, 256, 784), (2, 784, 256), (64, 128, 256)])
def test_a_linear_forward_swapped_equals_the_gemm_in_either_layout(n, features_in, features_out, layout, dtype, rtol):
    """x @ W^T (W row-major, so W^T column-major) as (W @ x^T)^T, with x in either layout (a Linear after a swapped
    Linear gets a column-major x): equal to float rounding. A tall left operand (a Linear's weight gradient dy^T @
    x, whose column-major product would slow the += into the gradient) is the GEMM itself, row-major."""
    rng = np.random.default_rng(4)
    x = np.asarray(rng.normal(size=(n, features_in)), dtype=dtype, order=layout)
    w = rng.normal(size=(features_out, features_in)).astype(dtype)
    got = cpu.matmul(x, w.T)
    assert got.shape == (n, features_out) and got.dtype == dtype and got.flags.f_contiguous  # the swapped product
    np.testing.assert_allclose(got, x.astype(np.float64) @ w.T.astype(np.float64), rtol=rtol,
                               atol=rtol * np.sqrt(features_in))
    dy_t, x_f = rng.normal(size=(n, features_out)).astype(dtype).T, np.asfortranarray(x)  # dy^T (out, n), tall
    np.testing.assert_array_equal(cpu.matmul(dy_t, x_f), dy_t @ x_f)
    assert cpu.matmul(dy_t, x_f).flags.c_contiguous


@pytest.mark.parametrize("dtype, rtol", [(np.float32, 1e-6), (np.float64, 1e-15)])
@pytest.mark.parametrize("x_hw, out_hw, mode", [((7, 7), (14, 14), "nearest"), ((14, 14), (28, 28), "nearest"),
                                               ((3, 5), (9, 10), "nearest"), ((4, 4), (10, 6), "nearest"),
                                               ((4, 4), (8, 8), "bilinear")])
def test_nearest_upsamplings_backward_by_block_sums_equals_the_gemms(x_hw, out_hw, mode, dtype, rtol):
    """Upsample's backward: by whole factors (7 -> 14, 3 x 5 -> 9 x 10) the sum of each block equals A_h^T dy A_w
    to float rounding; a factor that is not whole (4 -> 10) and bilinear go to the core function, unchanged."""
    rng = np.random.default_rng(5)
    a_h = F.interpolation_matrix(x_hw[0], out_hw[0], None, mode, False, dtype)
    a_w = F.interpolation_matrix(x_hw[1], out_hw[1], None, mode, False, dtype)
    dy = rng.normal(size=(3, 2, *out_hw)).astype(dtype)
    core = speed.core("resize_backward")(dy, a_h, a_w)
    got = cpu.resize_backward(dy, a_h, a_w)
    assert got.shape == core.shape == (3, 2, *x_hw) and got.dtype == dtype
    whole = mode == "nearest" and out_hw[0] % x_hw[0] == 0 and out_hw[1] % x_hw[1] == 0
    assert (cpu._whole_repeats(a_h) is not None and cpu._whole_repeats(a_w) is not None) == whole
    if whole:
        np.testing.assert_allclose(got, core, rtol=rtol, atol=rtol)
        dy[0, 0, 0, 0] = np.inf  # the block's sum is inf (the GEMM's 0 * inf spreads NaN along the row)
        assert np.isinf(cpu.resize_backward(dy, a_h, a_w)[0, 0, 0, 0])
    else:
        np.testing.assert_array_equal(got, core)


FLIPS = [((20, 32, 28, 28), 1, (3, 3), (1, 1)), ((10, 64, 14, 14), 32, (3, 3), (1, 1)), ((2, 5, 7, 6), 3, (3, 3), (0, 0)),
         ((2, 4, 9, 5), 1, (2, 2), (1, 1)), ((3, 3, 5, 5), 2, (3, 3), (2, 2)), ((2, 6, 6, 7), 2, (3, 2), (1, 0)),
         ((2, 4, 8, 8), 8, (3, 3), (1, 1)), ((2, 4, 9, 9), 2, (3, 3), (3, 3))]  # the last two: the core's cases


@pytest.mark.parametrize("dtype, rtol", [(np.float32, 1e-5), (np.float64, 1e-13)])
@pytest.mark.parametrize("x_shape, out_channels, kernel, padding", FLIPS)
def test_the_flipped_kernel_correlation_equals_col2im(x_shape, out_channels, kernel, padding, dtype, rtol):
    """W^T * z for a stride-1 correlation with fewer output than input channels, as z correlated with the flipped
    kernel, equals the core's col2im(W2^T @ z) to float rounding; elsewhere the core function runs."""
    rng = np.random.default_rng(4)
    n, c, h, w = x_shape
    out_hw = tuple(conv_output_size(s, k, 1, p) for s, k, p in zip((h, w), kernel, padding))
    weight = rng.normal(size=(out_channels, c, *kernel)).astype(dtype)
    z = rng.normal(size=(out_channels, out_hw[0] * out_hw[1] * n)).astype(dtype)
    args = (z, weight, out_hw, x_shape, (1, 1), padding, (1, 1), 1)
    got, expected = cpu.correlate_transpose(*args), speed.core("correlate_transpose")(*args)
    assert got.shape == expected.shape == x_shape and got.dtype == dtype
    np.testing.assert_allclose(got, expected, rtol=rtol, atol=rtol * np.abs(expected).max())


def test_flat_adam_and_zero_grad_equal_the_per_parameter_loop():
    """(tests/test_optim.py checks the same over steps with replaced arrays.)"""
    results = []
    for fast in (True, False):
        rng = np.random.default_rng(3)
        params = [Parameter(rng.normal(size=s).astype(np.float32)) for s in ((4, 3), (6,), (2, 2, 3, 3),
                                                                             (3, cpu.BLOCK - 5))]  # blocks cut it
        params[0].data[0, :3] = [1e-33, -5e-39, 2e-35]  # tiny and subnormal: flushed (optim.set_flush_denormal)
        opt = optim.Adam([{"params": params[:2], "weight_decay": 0.0}, {"params": params[2:], "lr": 1e-2}], lr=3e-3,
                         weight_decay=1e-4)
        for step in range(optim.optimizers.FLUSH_EVERY):  # the flush comes at the 10th step
            for p in params:
                p.grad = rng.normal(size=p.shape).astype(np.float32) + (0 if p.grad is None else p.grad)
            params[0].grad[0, :3] = 0  # dead units: only weight decay moves them
            if fast:
                assert cpu.adam_step(opt) is None and opt.__dict__.get("_flat") is not None
                cpu.zero_grads(opt, set_to_none=False)
            else:
                speed.core("adam_step")(opt)
                speed.core("zero_grads")(opt, False)
        assert all(not p.grad.any() for p in params) and not params[0].data[0, :3].any()
        results.append([p.data.copy() for p in params] + [s.copy() for p in params for s in opt.state[p].values()])
    for a, b in zip(*results):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("case", ["two dtypes", "a parameter without a gradient"])
def test_where_the_flat_arrays_cannot_serve_the_core_function_runs(case):
    params = [Parameter(np.ones(3, np.float32)), Parameter(np.ones(2, np.float64 if case == "two dtypes" else
                                                                  np.float32))]
    opt = optim.Adam(params, lr=0.1)
    for p in params[:2 if case == "two dtypes" else 1]:
        p.grad = np.ones_like(p.data)
    cpu.adam_step(opt)
    assert opt.__dict__.get("_flat") is None and np.allclose(params[0].data, 0.9)
    assert np.allclose(params[1].data, 0.9 if case == "two dtypes" else 1.0)  # no gradient: not moved


TAPS = [((20, 32, 28, 28), 1, (3, 3), (1, 1, 1, 1)), ((2, 5, 7, 6), 3, (3, 3), (0, 0, 0, 0)),
        ((2, 4, 9, 5), 2, (2, 2), (0, 1, 1, 0)), ((3, 6, 5, 5), 4, (3, 3), (2, 2, 2, 2)),
        ((2, 3, 6, 6), 5, (3, 3), (1, 1, 1, 1)), ((0, 3, 6, 6), 1, (3, 3), (1, 1, 1, 1))]  # the last two: the core's


@pytest.mark.parametrize("dtype, rtol", [(np.float32, 1e-5), (np.float64, 1e-13)])
@pytest.mark.parametrize("x_shape, out_channels, kernel, padding", TAPS)
def test_the_tap_wise_convolution_equals_im2col_and_its_backward_too(x_shape, out_channels, kernel, padding, dtype,
                                                                      rtol):
    """conv2d as a sum over kernel taps (stride 1, at most 4 output channels) and the backward from what it keeps:
    output, dL/dx, dL/dW and dL/db equal the core pair's to float rounding; elsewhere the core pair runs."""
    rng = np.random.default_rng(5)
    x = rng.normal(size=x_shape).astype(dtype)
    weight = rng.normal(size=(out_channels, x_shape[1], *kernel)).astype(dtype)
    bias = rng.normal(size=out_channels).astype(dtype)
    results, used_taps = [], None
    for forward, backward in ((cpu.conv2d, cpu.conv2d_backward), (speed.core("conv2d"), speed.core("conv2d_backward"))):
        y, saved = forward(x, weight, bias, (1, 1), padding, (1, 1), 1)
        dy = np.random.default_rng(6).normal(size=y.shape).astype(dtype)
        grads = [np.zeros_like(weight), np.zeros_like(bias)]
        dx = backward(dy, saved, weight, x.shape, (1, 1), padding, (1, 1), 1, *grads)
        results.append([y, dx, *grads])
        used_taps = used_taps if forward is not cpu.conv2d else isinstance(saved, cpu.Taps)
    assert used_taps == (out_channels <= 4 and x_shape[0] > 0)
    for got, expected in zip(*results):
        assert got.shape == expected.shape and got.dtype == dtype
        np.testing.assert_allclose(got, expected, rtol=rtol, atol=rtol * max(np.abs(expected).max(initial=0), 1))


def test_the_tap_wise_forward_runs_only_with_its_own_backward():
    """What the tap-wise conv2d keeps is not im2col's matrix: with its backward switched off, it leaves the forward
    to the core too, so the core backward always gets what it expects."""
    layer, x = nn.Conv2d(8, 1, 3, padding=1), np.ones((2, 8, 6, 6), np.float32)
    with speed.disabled("conv2d_backward"):
        y = layer(x)
        assert layer.backward(np.ones_like(y)).shape == x.shape
    y = layer(x)
    assert isinstance(layer._waiting[-1].ctx.cols, cpu.Taps) and layer.backward(np.ones_like(y)).shape == x.shape
