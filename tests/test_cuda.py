"""The CuPy speed devices (minidae/speed/cuda.py) against the core functions they replace. Needs a CUDA GPU.

Each must compute what the core function computes on NumPy: im2col exactly, col2im to the last bit (the same
sums in the same order), Adam to float rounding (the same operations, but 1 - b^t from the device's pow), GEMMs
and reductions to float rounding, and a training step replayed as a CUDA graph exactly as the same step run
eagerly.
"""
import numpy as np
import pytest

from minidae import backend, models, nn, optim, speed
from minidae.nn import im2col as ops  # the size rules

pytestmark = pytest.mark.skipif(not backend.available("cupy"), reason="the CuPy fast path needs a CUDA GPU and CuPy")


@pytest.fixture
def cp():
    backend.use("cupy", seed_value=0)
    import cupy
    yield cupy
    backend.use("numpy", seed_value=0)


WINDOWS = [((2, 3, 7, 5), (3, 2), (2, 1), (1, 2), (1, 1)), ((4, 1, 28, 28), (3, 3), (2, 2), (2, 2), (1, 1)),
           ((3, 2, 4, 4), (3, 3), (3, 3), (2, 2), (1, 1)), ((1, 4, 5, 6), (2, 2), (2, 2), (0, 0), (1, 1)),
           ((5, 2, 8, 3), (1, 3), (1, 2), (0, 1), (1, 1)), ((0, 2, 5, 5), (3, 3), (1, 1), (1, 1), (1, 1)),
           ((2, 3, 9, 8), (3, 2), (2, 1), (1, 0), (2, 3)), ((2, 2, 7, 7), (2, 2), (3, 2), (1, 1), (3, 2))]


def layouts(cp, x):
    """``x`` on the device as plain NCHW memory and as minidae's (C, H, W, N) memory."""
    return [cp.asarray(x), cp.asarray(np.ascontiguousarray(x.transpose(1, 2, 3, 0))).transpose(3, 0, 1, 2)]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape, kernel, stride, padding, dilation", WINDOWS)
def test_im2col_and_col2im_kernels_match_the_numpy_loops(cp, shape, kernel, stride, padding, dilation, dtype):
    from minidae.speed import cuda
    rng = np.random.default_rng(0)
    x = rng.normal(size=shape).astype(dtype)
    out_hw = tuple(ops.conv_output_size(s, k, st, p, d)
                   for s, k, st, p, d in zip(shape[2:], kernel, stride, padding, dilation))
    fill = -np.inf if dilation != (1, 1) else 0  # max pooling pads with -inf
    expected_cols = speed.core("im2col")(x, kernel, stride, padding, out_hw, dilation, fill)
    cols = rng.normal(size=expected_cols.shape).astype(dtype)
    expected_dx = speed.core("col2im")(cols, shape, kernel, stride, padding, out_hw, dilation)
    for device_x in layouts(cp, x):
        np.testing.assert_array_equal(cuda.im2col(device_x, kernel, stride, padding, out_hw, dilation, fill).get(),
                                      expected_cols)
    dx = cuda.col2im(cp.asarray(cols), shape, kernel, stride, padding, out_hw, dilation)
    assert dx.shape == shape and dx.transpose(1, 2, 3, 0).flags.c_contiguous
    np.testing.assert_array_equal(dx.get(), expected_dx)  # same sums in the same order


@pytest.mark.parametrize("dtype, rtol", [(np.float32, 1e-5), (np.float64, 1e-13)])
@pytest.mark.parametrize("m, k, n", [(16, 9, 300), (64, 1024, 256), (1, 7, 5), (5, 7, 1), (3, 0, 4), (0, 3, 4)])
def test_matmul_matches_numpy_for_every_layout(cp, m, k, n, dtype, rtol):
    from minidae.speed import cuda
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(m, k)).astype(dtype), rng.normal(size=(k, n)).astype(dtype)
    expected = a.astype(np.float64) @ b.astype(np.float64)
    wide = cp.asarray(rng.normal(size=(m, k + 3)).astype(dtype))
    wide[:, 1:k + 1] = cp.asarray(a)  # a strided view with leading dimension k + 3
    candidates_a = [cp.asarray(a), cp.asarray(np.ascontiguousarray(a.T)).T, wide[:, 1:k + 1]]
    candidates_b = [cp.asarray(b), cp.asarray(np.ascontiguousarray(b.T)).T, cp.asarray(b[::-1])[::-1]]
    for da in candidates_a:
        for db in candidates_b:
            got = cuda.matmul(da, db)
            assert got.shape == (m, n) and got.dtype == dtype
            np.testing.assert_allclose(got.get(), expected, rtol=rtol, atol=rtol * max(1.0, np.abs(expected).max(initial=0)))


def test_matmul_add_accumulates_in_place_and_leaves_what_it_cannot_to_the_core(cp):
    from minidae.speed import cuda
    rng = np.random.default_rng(6)
    a, b = rng.normal(size=(4, 9)).astype(np.float32), rng.normal(size=(9, 6)).astype(np.float32)
    grad = cp.asarray(rng.normal(size=(4, 2, 3)).astype(np.float32))  # any shape holding the (4, 6) product
    start, before = grad.get(), grad.data.ptr
    assert cuda.matmul_add(grad, cp.asarray(a), cp.asarray(b)) is None and grad.data.ptr == before
    np.testing.assert_allclose(grad.get(), start + (a @ b).reshape(4, 2, 3), rtol=1e-5, atol=1e-5)
    for out in (grad.astype(np.float64), cp.zeros((6, 4), np.float32).T):  # mixed dtypes; not contiguous
        start = out.get()
        cuda.matmul_add(out, cp.asarray(a), cp.asarray(b))  # the core function adds the product
        np.testing.assert_allclose(out.get(), start + (a @ b).reshape(start.shape), rtol=1e-5, atol=1e-5)


def test_matmul_rejects_mismatched_shapes(cp):
    from minidae.speed import cuda
    with pytest.raises(ValueError, match=r"\(2, 3\) and \(4, 5\)"):
        cuda.matmul(cp.zeros((2, 3), np.float32), cp.zeros((4, 5), np.float32))


def test_every_cupy_replacement_is_tested_here(cp):
    assert set(speed.registered("cupy")) == {"im2col", "col2im", "matmul", "matmul_add", "add_row_sums", "adam_step",
                                             "zero_grads", "relu", "sigmoid", "sigmoid_backward", "mse_loss",
                                             "mse_loss_backward", "graphed"}


@pytest.mark.parametrize("dtype, rtol", [(np.float32, 1e-5), (np.float64, 1e-13)])
def test_row_sums_and_the_mse_terms_match_their_core_functions(cp, dtype, rtol):
    from minidae.speed import cuda
    rng = np.random.default_rng(8)
    for rows, length in ((16, 14400), (256, 64), (1, 5), (3, 0)):
        a, out = rng.normal(size=(rows, length)).astype(dtype), rng.normal(size=rows).astype(dtype)
        expected = out.copy()
        speed.core("add_row_sums")(expected, a)
        device = cp.asarray(out)
        assert cuda.add_row_sums(device, cp.asarray(a)) is None
        np.testing.assert_allclose(device.get(), expected, rtol=rtol, atol=rtol * (1 + np.abs(a).sum(axis=1).max(initial=0)))
        assert cuda.add_row_sums(device, cp.asarray(a).T.copy().T) is None  # a column-major view: read in place
    for size in (1, 255, 256 * 128 + 3, 64 * 784):
        p, t = rng.uniform(size=size).astype(dtype), rng.uniform(size=size).astype(dtype)
        for got, expected in zip(cuda.mse_loss(cp.asarray(p), cp.asarray(t)), speed.core("mse_loss")(p, t)):
            assert got.shape == (size,) and got.dtype == dtype
            np.testing.assert_array_equal(got.get(), expected)  # one subtraction and one product: exact


@pytest.mark.parametrize("dtype, rtol", [(np.float32, 1e-6), (np.float64, 1e-14)])
def test_fused_adam_matches_the_numpy_optimiser(cp, dtype, rtol):
    shapes = [(3, 4), (5,), (2, 3, 2, 2)]
    rng = np.random.default_rng(2)
    start = [rng.normal(size=s).astype(dtype) for s in shapes]
    host = [nn.Parameter(a.copy()) for a in start]
    device = [nn.Parameter(cp.asarray(a)) for a in start]
    settings = dict(lr=1e-2, betas=(0.8, 0.99), eps=1e-6, weight_decay=1e-2)
    ours, reference = optim.Adam(device, **settings), optim.Adam(host, **settings)
    for step in range(12):
        grads = [rng.normal(size=s).astype(dtype) for s in shapes]
        for p, q, g in zip(device, host, grads):
            nn.module.grad_of(p)[...] = cp.asarray(g)  # in place: the gradient stays a view of the flat buffer
            nn.module.grad_of(q)[...] = g
        if step == 6:
            device[1].data = device[1].data.copy()  # a user replaces .data: the optimiser re-packs
        ours.step()
        reference.step()
    assert ours.step_count == reference.step_count == 12
    for p, q in zip(device, host):
        np.testing.assert_allclose(p.data.get(), q.data, rtol=rtol, atol=rtol)
    for index, key in ((0, "exp_avg"), (2, "exp_avg_sq"), (1, "step")):
        np.testing.assert_allclose(ours.state_dict()["state"][index][key], reference.state_dict()["state"][index][key],
                                   rtol=rtol, atol=rtol)
    assert ours._flat.arrays["data"].size == sum(int(np.prod(s)) for s in shapes)


def spec_step(model, optimizer):
    criterion = nn.MSELoss()

    def step(noisy, clean):
        optimizer.zero_grad()
        loss = criterion(model(noisy), clean)
        model.backward(criterion.backward())
        optimizer.step()
        return loss
    return step


def batches(cp, count, size=16):
    rng = np.random.default_rng(3)
    for _ in range(count):
        clean = rng.uniform(size=(size, 1, 28, 28)).astype(np.float32)
        yield cp.asarray(np.clip(clean + 0.5 * rng.normal(size=clean.shape), 0, 1).astype(np.float32)), cp.asarray(clean)


def test_graph_replay_trains_exactly_as_eager_steps(cp):
    from minidae.speed import cuda
    results = {}
    for mode in ("eager", "graph"):
        backend.seed(5)
        model = models.conv_dae()
        optimizer = optim.Adam(model.parameters(), lr=1e-3, weight_decay=1e-5)
        step = spec_step(model, optimizer)
        runner = cuda.GraphedStep(step, model.parameters()) if mode == "graph" else step
        losses = [float(runner(noisy, clean)) for noisy, clean in batches(cp, 8)]
        results[mode] = (losses, model.state_dict(), optimizer.step_count)
        if mode == "graph":
            assert runner.failed is None and runner.replays == 7  # the first batch runs eagerly
            graph = next(iter(runner.graphs.values()))
            assert graph.kernels.get("kernel", 0) > 20
    assert results["graph"][0] == results["eager"][0]
    assert results["graph"][2] == results["eager"][2] == 8
    for key, value in results["eager"][1].items():
        np.testing.assert_array_equal(results["graph"][1][key], value)


def test_graph_capture_failure_falls_back_to_eager_with_a_notice(cp):
    from minidae.speed import cuda
    backend.seed(5)
    model = models.conv_dae()
    optimizer = optim.SGD(model.parameters(), lr=0.1)
    step = spec_step(model, optimizer)

    def step_that_reads_the_loss(noisy, clean):
        loss = step(noisy, clean)
        if float(loss) > 1e9:  # a host read: cannot be captured
            raise AssertionError
        return loss

    notices = []
    runner = cuda.GraphedStep(step_that_reads_the_loss, model.parameters(), notice=notices.append)
    for noisy, clean in batches(cp, 4):
        runner(noisy, clean)
    assert len(notices) == 1 and "running eagerly" in notices[0] and runner.failed
    assert optimizer.step_count == 4  # every batch trained once: the failed capture ran nothing


def test_graph_recaptures_when_parameters_are_replaced(cp):
    from minidae.speed import cuda
    backend.seed(5)
    model = models.conv_dae()
    optimizer = optim.Adam(model.parameters())
    runner = cuda.GraphedStep(spec_step(model, optimizer), model.parameters())
    data = list(batches(cp, 6))
    for noisy, clean in data[:3]:
        runner(noisy, clean)
    first = next(iter(runner.graphs.values()))
    model.to(np.float32)  # new .data and .grad arrays everywhere
    for noisy, clean in data[3:]:
        runner(noisy, clean)
    assert next(iter(runner.graphs.values())) is not first and optimizer.step_count == 6


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_fused_elementwise_kernels_match_their_numpy_formulas(cp, dtype):
    from minidae.speed import cuda
    rng = np.random.default_rng(4)
    x = np.concatenate([rng.normal(scale=5, size=997), [0.0, -0.0, 1000.0, -1000.0, 88.0, -88.0]]).astype(dtype)
    dy, t = rng.normal(size=x.shape).astype(dtype), rng.uniform(size=x.shape).astype(dtype)
    with np.errstate(over="ignore"):  # exp(1000) = inf gives the exact limit 0
        y = 1 / (1 + np.exp(-x.astype(np.float64)))  # reference in float64
    close = dict(rtol=4 * np.finfo(dtype).eps, atol=np.finfo(dtype).tiny)  # subnormals may flush to zero
    for ours, reference in zip(cuda.relu(cp.asarray(x)), speed.core("relu")(x)):
        assert ours.dtype == reference.dtype
        np.testing.assert_array_equal(ours.get(), reference)
    assert bool(cp.isnan(cuda.relu(cp.asarray(np.array([np.nan], dtype)))[0])[0])
    y_ours, saved = cuda.sigmoid(cp.asarray(x))
    assert saved is y_ours
    np.testing.assert_allclose(y_ours.get(), y, **close)
    np.testing.assert_allclose(y_ours.get(), speed.core("sigmoid")(x)[0], **close)
    np.testing.assert_allclose(cuda.sigmoid_backward(cp.asarray(dy), cp.asarray(y.astype(dtype))).get(),
                               speed.core("sigmoid_backward")(dy, y.astype(dtype)), rtol=0, atol=close["atol"])
    diff = (y.astype(dtype) - t).astype(dtype)
    np.testing.assert_array_equal(cuda.mse_loss_backward(1.0 / diff.size, cp.asarray(diff)).get(),
                                  speed.core("mse_loss_backward")(1.0 / diff.size, diff))
    dl = rng.normal(size=diff.shape).astype(dtype)  # reduction "none": an array, the core function's
    np.testing.assert_array_equal(cuda.mse_loss_backward(cp.asarray(dl), cp.asarray(diff)).get(),
                                  speed.core("mse_loss_backward")(dl, diff))


@pytest.mark.parametrize("name", ["fc_dae", "dense_ae", "fc_ae", "conv_ae_pool", "conv_denoiser"])
def test_every_zoo_model_is_captured_and_replays_as_eager(cp, name):
    """Each preset's step (its model, optimiser and loss) captures as a graph and trains as the eager step does."""
    from minidae.speed import cuda
    from minidae import train
    config = train.TrainConfig.from_preset(name)
    results = []
    for graph in (False, True):
        backend.seed(7)
        model = models.build(name)
        optimizer = train.make_optimizer(config, model.parameters())
        step = spec_step(model, optimizer)
        runner = cuda.GraphedStep(step, model.parameters()) if graph else step
        losses = [float(runner(noisy, clean)) for noisy, clean in batches(cp, 5, size=config.batch_size)]
        results.append((losses, model.state_dict()))
        if graph:
            assert runner.failed is None and runner.replays == 4
    assert results[0][0] == results[1][0]
    for key, value in results[0][1].items():
        np.testing.assert_array_equal(results[1][1][key], value)


def test_a_changed_learning_rate_takes_effect_in_the_captured_step(cp):
    """The graph reads Adam's hyperparameters from device memory, refreshed before every replay: a new lr after
    capture gives the eager step's numbers with that lr, not the captured one's."""
    from minidae.speed import cuda
    results = []
    for graph in (False, True):
        backend.seed(5)
        model = models.conv_dae()
        optimizer = optim.Adam(model.parameters(), lr=1e-3, weight_decay=1e-5)
        step = spec_step(model, optimizer)
        runner = cuda.GraphedStep(step, model.parameters()) if graph else step
        losses = []
        for index, (noisy, clean) in enumerate(batches(cp, 6)):
            if index == 4:
                optimizer.param_groups[0]["lr"] = 0.05  # a manual schedule (a stale lr would train on at 1e-3)
            losses.append(float(runner(noisy, clean)))
        results.append((losses, model.state_dict()))
        if graph:
            assert runner.replays == 5
    assert results[0][0] == results[1][0]
    for key, value in results[0][1].items():
        np.testing.assert_array_equal(results[1][1][key], value)


def test_dropout_and_batch_norm_inside_a_captured_step(cp):
    """BatchNorm2d's running statistics and Dropout's masks advance at every replay as in eager steps."""
    from minidae.speed import cuda
    results = []
    for graph in (False, True):
        backend.use("cupy", seed_value=11)
        model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Dropout2d(0.2),
                              nn.Conv2d(4, 1, 3, padding=1), nn.BatchNorm2d(1, momentum=None), nn.Dropout(0.1),
                              nn.Sigmoid())
        optimizer = optim.Adam(model.parameters(), lr=1e-3)
        step = spec_step(model, optimizer)
        runner = cuda.GraphedStep(step, model.parameters()) if graph else step
        losses = [float(runner(noisy, clean)) for noisy, clean in batches(cp, 6, size=8)]
        results.append((losses, model.state_dict()))
        if graph:
            assert runner.failed is None and runner.replays == 5
    assert results[0][0] == results[1][0]
    for key, value in results[0][1].items():
        np.testing.assert_array_equal(results[1][1][key], value)


def test_schedulers_param_groups_and_adamw_take_effect_in_the_captured_step(cp):
    """Two parameter groups (one frozen part, one AdamW group with its own lr) and a StepLR that changes both lrs
    every two steps: the graphed steps train exactly as the eager ones."""
    from minidae.speed import cuda
    results = []
    for graph in (False, True):
        backend.seed(5)
        model = models.conv_dae()
        model.conv1.requires_grad_(False)
        decoder = [p for name, p in model.named_parameters() if name.startswith(("conv4", "conv5", "conv6"))]
        rest = [p for p in model.parameters() if all(p is not q for q in decoder)]
        optimizer = optim.AdamW([{"params": rest}, {"params": decoder, "lr": 3e-3}], lr=1e-3)
        scheduler = optim.lr_scheduler.StepLR(optimizer, step_size=2, gamma=0.5)
        step = spec_step(model, optimizer)
        runner = cuda.GraphedStep(step, model.parameters()) if graph else step
        losses = []
        for noisy, clean in batches(cp, 7):
            losses.append(float(runner(noisy, clean)))
            scheduler.step()
        results.append((losses, model.state_dict()))
        if graph:
            assert runner.failed is None and runner.replays == 6
    assert results[0][0] == results[1][0]
    for key, value in results[0][1].items():
        np.testing.assert_array_equal(results[1][1][key], value)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_the_flat_adam_kernel_flushes_tiny_values_as_the_numpy_optimiser(cp, dtype):
    """optim.set_flush_denormal: at every 10th step the float32 values below 1e-30 of the parameters and moments
    become 0, on the device as on the host (the step count read on the device); float64 is left alone."""
    values = np.array([[1e-33, -2e-39, 3e-31, 0.5], [0.25, -1e-35, 2e-29, -0.75]], dtype=dtype)
    host, device = nn.Parameter(values.copy()), nn.Parameter(cp.asarray(values))
    ours, reference = optim.Adam([device], lr=1e-3), optim.Adam([host], lr=1e-3)
    for step in range(10):
        nn.module.grad_of(device)[...] = 0
        nn.module.grad_of(host)[...] = 0
        ours.step()
        reference.step()
        if step == 8:  # before the 10th step nothing was flushed
            assert float(cp.abs(device.data).min()) > 0
    np.testing.assert_array_equal(device.data.get(), host.data)
    tiny = np.abs(values) < 1e-30
    if dtype == np.float32:
        assert not device.data.get()[tiny].any() and device.data.get()[~tiny].all()
    else:
        assert device.data.get().all()
