"""PyTorch's 2-D argument surface: every new argument in a random parity grid (float64 and float32),
gradchecks, empty batches, unbatched inputs, and the errors PyTorch raises."""
import numpy as np
import pytest

from minidae import backend, gradcheck, nn
from minidae.nn.functional import correlate, correlate_transpose
from minidae.nn.im2col import col2im, conv_output_size, im2col

DTYPES = [np.float64, np.float32]
MODES = ["zeros", "reflect", "replicate", "circular"]


def conv_configs(count=40, seed=11):
    rng = np.random.default_rng(seed)
    configs = []
    while len(configs) < count:
        groups = int(rng.choice([1, 1, 2, 3]))
        cfg = dict(n=int(rng.integers(1, 3)), c_in=groups * int(rng.integers(1, 3)),
                   c_out=groups * int(rng.integers(1, 3)), hw=tuple(int(s) for s in rng.integers(3, 10, 2)),
                   kernel=tuple(int(k) for k in rng.integers(1, 4, 2)), dilation=tuple(int(d) for d in rng.integers(1, 3, 2)),
                   groups=groups, bias=bool(rng.integers(0, 2)), padding_mode=MODES[len(configs) % 4])
        kind = rng.integers(0, 3)
        if kind == 0:
            cfg.update(padding="same", stride=(1, 1))
        else:
            cfg.update(padding="valid" if kind == 1 and rng.integers(0, 2) else
                       tuple(int(p) for p in rng.integers(0, 3, 2)), stride=tuple(int(s) for s in rng.integers(1, 3, 2)))
        pads = (cfg["padding"] if isinstance(cfg["padding"], tuple) else
                [0, 0] if cfg["padding"] == "valid" else [d * (k - 1) - d * (k - 1) // 2
                                                           for d, k in zip(cfg["dilation"], cfg["kernel"])])
        if any(p >= s for p, s in zip(pads, cfg["hw"])):  # reflect needs padding < size
            continue
        if any(s + 2 * p < d * (k - 1) + 1 for s, p, d, k in zip(cfg["hw"], pads, cfg["dilation"], cfg["kernel"])):
            continue
        configs.append(cfg)
    return configs


def convt_configs(count=30, seed=12):
    rng = np.random.default_rng(seed)
    configs = []
    while len(configs) < count:
        groups = int(rng.choice([1, 2, 3]))
        stride, dilation = tuple(int(s) for s in rng.integers(1, 4, 2)), tuple(int(d) for d in rng.integers(1, 3, 2))
        cfg = dict(n=int(rng.integers(1, 3)), c_in=groups * int(rng.integers(1, 3)),
                   c_out=groups * int(rng.integers(1, 3)), hw=tuple(int(s) for s in rng.integers(1, 7, 2)),
                   kernel=tuple(int(k) for k in rng.integers(1, 4, 2)), stride=stride, dilation=dilation,
                   padding=tuple(int(p) for p in rng.integers(0, 3, 2)), groups=groups, bias=bool(rng.integers(0, 2)),
                   output_padding=tuple(int(rng.integers(0, max(s, d))) for s, d in zip(stride, dilation)),
                   by_size=bool(rng.integers(0, 2)))
        out = [(i - 1) * s - 2 * p + d * (k - 1) + op + 1 for i, s, p, d, k, op in
               zip(cfg["hw"], stride, cfg["padding"], dilation, cfg["kernel"], cfg["output_padding"])]
        if min(out) < 1 or (cfg["by_size"] and any(op >= s for op, s in zip(cfg["output_padding"], stride))):
            continue  # PyTorch accepts an output_size only up to stride - 1 beyond the smallest
        cfg["out"] = tuple(out)
        configs.append(cfg)
    return configs


def torch_nn():
    import torch
    return torch.nn


def build_conv(cfg, torch_too=True):
    kwargs = dict(stride=cfg["stride"], padding=cfg["padding"], dilation=cfg["dilation"], groups=cfg["groups"],
                  bias=cfg["bias"], padding_mode=cfg["padding_mode"])
    args = (cfg["c_in"], cfg["c_out"], cfg["kernel"])
    return nn.Conv2d(*args, **kwargs), torch_nn().Conv2d(*args, **kwargs) if torch_too else None


def build_convt(cfg, torch_too=True):
    kwargs = dict(stride=cfg["stride"], padding=cfg["padding"], dilation=cfg["dilation"], groups=cfg["groups"],
                  bias=cfg["bias"], output_padding=(0, 0) if cfg["by_size"] else cfg["output_padding"])
    args = (cfg["c_in"], cfg["c_out"], cfg["kernel"])
    return nn.ConvTranspose2d(*args, **kwargs), torch_nn().ConvTranspose2d(*args, **kwargs) if torch_too else None


CONV = conv_configs()
CONVT = convt_configs()


def ident(cfg):
    return "-".join(f"{k}{v}" for k, v in cfg.items()).replace(" ", "")


def test_grids_cover_every_new_argument():
    assert {c["padding_mode"] for c in CONV} == set(MODES)
    assert {"same", "valid"} <= {c["padding"] for c in CONV if isinstance(c["padding"], str)}
    assert any(c["groups"] > 1 for c in CONV) and any(max(c["dilation"]) > 1 for c in CONV)
    assert any(c["padding"] == "same" and any(d * (k - 1) % 2 for d, k in zip(c["dilation"], c["kernel"]))
               for c in CONV)  # an uneven "same" split
    assert any(c["groups"] > 1 for c in CONVT) and any(max(c["dilation"]) > 1 for c in CONVT)
    assert any(c["by_size"] and max(c["output_padding"]) > 0 for c in CONVT)
    assert any(op >= s for c in CONVT for op, s in zip(c["output_padding"], c["stride"]))  # allowed by dilation


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("cfg", CONV, ids=[ident(c) for c in CONV])
def test_conv2d_surface_matches_torch(xp, torch_parity, cfg, dtype):
    ours, theirs = build_conv(cfg)
    x = np.random.default_rng(0).normal(size=(cfg["n"], cfg["c_in"], *cfg["hw"]))
    torch_parity(ours, theirs, x, dtype, label="Conv2d")


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("cfg", CONVT, ids=[ident(c) for c in CONVT])
def test_conv_transpose2d_surface_matches_torch(xp, torch_parity, cfg, dtype):
    ours, theirs = build_convt(cfg)
    x = np.random.default_rng(0).normal(size=(cfg["n"], cfg["c_in"], *cfg["hw"]))
    call = (lambda m, v: m(v, output_size=cfg["out"])) if cfg["by_size"] else None
    torch_parity(ours, theirs, x, dtype, label="ConvTranspose2d", call=call)


@pytest.mark.parametrize("cfg", CONV[:12] + [dict(c, by_size=False) for c in CONVT[:0]], ids=[ident(c) for c in CONV[:12]])
def test_conv2d_surface_gradcheck(xp, cfg):
    ours, _ = build_conv(cfg, torch_too=False)
    x = np.random.default_rng(1).normal(size=(cfg["n"], cfg["c_in"], *cfg["hw"]))
    result = gradcheck(ours, x, max_elements=30)
    assert result, str(result)


@pytest.mark.parametrize("cfg", CONVT[:10], ids=[ident(c) for c in CONVT[:10]])
def test_conv_transpose2d_surface_gradcheck(xp, cfg):
    ours, _ = build_convt(cfg, torch_too=False)
    x = np.random.default_rng(1).normal(size=(cfg["n"], cfg["c_in"], *cfg["hw"]))
    result = gradcheck(ours, x, max_elements=30)
    assert result, str(result)


@pytest.mark.parametrize("groups, dilation, stride, padding", [(2, (2, 1), (1, 2), (2, 0)), (3, (1, 3), (2, 1), (1, 3)),
                                                               (1, (2, 2), (3, 1), (0, 1))])
def test_im2col_and_conv_stay_adjoint_with_dilation_and_groups(xp, groups, dilation, stride, padding):
    rng = np.random.default_rng(3)
    x = xp.asarray(rng.normal(size=(2, 3 * groups, 9, 8)))
    kernel = (3, 2)
    out_hw = tuple(conv_output_size(s, k, st, p, d) for s, k, st, p, d in zip((9, 8), kernel, stride, padding, dilation))
    cols = im2col(x, kernel, stride, padding, out_hw, dilation)
    c = xp.asarray(rng.normal(size=cols.shape))
    assert np.isclose(float((cols * c).sum()),
                      float((x * col2im(c, x.shape, kernel, stride, padding, out_hw, dilation)).sum()))
    weight = xp.asarray(rng.normal(size=(2 * groups, 3, *kernel)))
    Y, _ = correlate(x, weight, stride, padding, dilation, groups, out_hw)
    dY = xp.asarray(rng.normal(size=Y.shape))
    dx = correlate_transpose(dY, weight, out_hw, x.shape, stride, padding, dilation, groups)
    assert np.isclose(float((Y * dY).sum()), float((x * dx).sum()))


# ------------------------------------------------------------------------------------------ pooling

def pool_configs(count, seed, average):
    rng = np.random.default_rng(seed)
    configs = []
    while len(configs) < count:
        kernel = tuple(int(k) for k in rng.integers(1, 5, 2))
        cfg = dict(kernel_size=kernel, stride=tuple(int(s) for s in rng.integers(1, 4, 2)),
                   padding=tuple(int(rng.integers(0, k // 2 + 1)) for k in kernel), ceil_mode=bool(rng.integers(0, 2)))
        if average:
            cfg.update(count_include_pad=bool(rng.integers(0, 2)),
                       divisor_override=[None, None, 3][len(configs) % 3])
        else:
            cfg.update(dilation=tuple(int(d) for d in rng.integers(1, 3, 2)), return_indices=bool(rng.integers(0, 2)))
        hw = tuple(int(s) for s in rng.integers(3, 10, 2))
        try:
            (nn.AvgPool2d if average else nn.MaxPool2d)(**cfg)(np.zeros((1, 1, *hw)))
        except ValueError:
            continue  # a geometry refused (as PyTorch refuses it: checked by the parity tests' torch twins)
        configs.append((cfg, hw))
    return configs


POOLS = [("MaxPool2d", c, hw) for c, hw in pool_configs(30, 13, False)] + \
        [("AvgPool2d", c, hw) for c, hw in pool_configs(30, 14, True)]


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("name, cfg, hw", POOLS, ids=[f"{n}-{ident(c)}-{hw}" for n, c, hw in POOLS])
def test_pooling_surface_matches_torch(xp, torch_parity, name, cfg, hw, dtype):
    import torch
    x = np.random.default_rng(2).normal(size=(2, 3, *hw))
    torch_parity(getattr(nn, name)(**cfg), getattr(torch.nn, name)(**cfg), x, dtype, label=name)


def test_pool_grid_covers_every_argument():
    maxes = [c for n, c, _ in POOLS if n == "MaxPool2d"]
    avgs = [c for n, c, _ in POOLS if n == "AvgPool2d"]
    assert any(c["ceil_mode"] for c in maxes) and any(max(c["dilation"]) > 1 for c in maxes)
    assert any(c["return_indices"] for c in maxes) and any(max(c["padding"]) > 0 for c in maxes)
    assert any(c["ceil_mode"] and max(c["padding"]) > 0 for c in avgs)
    assert {c["count_include_pad"] for c in avgs} == {True, False} and any(c["divisor_override"] for c in avgs)


@pytest.mark.parametrize("name, cfg, hw", POOLS[::6], ids=[f"{n}-{ident(c)}" for n, c, _ in POOLS[::6]])
def test_pooling_surface_gradcheck(xp, name, cfg, hw):
    cfg = {k: v for k, v in cfg.items() if k != "return_indices"}
    x = np.random.default_rng(2).normal(size=(2, 2, *hw))
    result = gradcheck(getattr(nn, name)(**cfg), x)
    assert result, str(result)


# ------------------------------------------------------------------------------------------ upsampling

UPSAMPLE = [dict(scale_factor=2), dict(scale_factor=(2, 3)), dict(scale_factor=1.5), dict(scale_factor=(0.5, 2.5)),
            dict(size=(5, 7)), dict(size=3), dict(scale_factor=2, mode="bilinear"),
            dict(scale_factor=(1.5, 0.7), mode="bilinear"), dict(size=(7, 4), mode="bilinear"),
            dict(scale_factor=2, mode="bilinear", align_corners=True),
            dict(size=(9, 1), mode="bilinear", align_corners=True), dict(size=(1, 6), mode="bilinear"),
            dict(scale_factor=1.7, mode="bilinear", recompute_scale_factor=True)]


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("cfg", UPSAMPLE, ids=[ident(c) for c in UPSAMPLE])
def test_upsample_surface_matches_torch(xp, torch_parity, cfg, dtype):
    import torch
    x = np.random.default_rng(4).normal(size=(2, 3, 4, 5))
    torch_parity(nn.Upsample(**cfg), torch.nn.Upsample(**cfg), x, dtype, label="Upsample")


@pytest.mark.parametrize("cfg", UPSAMPLE[::2], ids=[ident(c) for c in UPSAMPLE[::2]])
def test_upsample_surface_gradcheck(xp, cfg):
    result = gradcheck(nn.Upsample(**cfg), np.random.default_rng(4).normal(size=(2, 2, 3, 4)))
    assert result, str(result)


# ------------------------------------------------------------------------------------------ the rest

def other_cases():
    torch = type("torch", (), {"nn": type("nn", (), {"__getattr__": lambda self, name: (
        lambda *args, **kwargs: getattr(torch_nn(), name)(*args, **kwargs))})()})
    return [
        ("Linear-3d", lambda: nn.Linear(4, 3), lambda: torch.nn.Linear(4, 3), (2, 5, 4)),
        ("Linear-1d", lambda: nn.Linear(4, 3), lambda: torch.nn.Linear(4, 3), (4,)),
        ("LeakyReLU", nn.LeakyReLU, torch.nn.LeakyReLU, (3, 4, 5)),
        ("LeakyReLU-0.2", lambda: nn.LeakyReLU(0.2), lambda: torch.nn.LeakyReLU(0.2), (3, 4, 5)),
        ("Tanh", nn.Tanh, torch.nn.Tanh, (3, 4, 5)),
        ("Conv2d-unbatched", lambda: nn.Conv2d(3, 2, 3, padding=1), lambda: torch.nn.Conv2d(3, 2, 3, padding=1),
         (3, 6, 5)),
        ("ConvTranspose2d-unbatched", lambda: nn.ConvTranspose2d(3, 2, 3, stride=2),
         lambda: torch.nn.ConvTranspose2d(3, 2, 3, stride=2), (3, 4, 5)),
        ("MaxPool2d-unbatched", lambda: nn.MaxPool2d(2), lambda: torch.nn.MaxPool2d(2), (3, 6, 5)),
        ("AvgPool2d-unbatched", lambda: nn.AvgPool2d(3, 2, 1), lambda: torch.nn.AvgPool2d(3, 2, 1), (3, 6, 5)),
    ]


OTHER_IDS = ["Linear-3d", "Linear-1d", "LeakyReLU", "LeakyReLU-0.2", "Tanh", "Conv2d-unbatched",
             "ConvTranspose2d-unbatched", "MaxPool2d-unbatched", "AvgPool2d-unbatched"]


def test_upsample_takes_batches_only_as_torch():
    """PyTorch reads a 3-D input to Upsample as (N, C, L), a 1-D signal, not as one unbatched image."""
    with pytest.raises(ValueError, match=r"Upsample: expected a floating-point input of shape \(N, C, H, W\), "
                                         r"got \(3, 4, 5\)"):
        nn.Upsample(scale_factor=2)(np.zeros((3, 4, 5)))


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("index", range(len(OTHER_IDS)), ids=OTHER_IDS)
def test_other_layers_match_torch(xp, torch_parity, index, dtype):
    label, ours, theirs, shape = other_cases()[index]
    x = np.random.default_rng(index).normal(size=shape)
    x = np.sign(x) * (0.05 + np.abs(x))  # away from LeakyReLU's kink
    torch_parity(ours(), theirs(), x, dtype, label=label.split("-")[0])


@pytest.mark.parametrize("index", range(len(OTHER_IDS)), ids=OTHER_IDS)
def test_other_layers_gradcheck(xp, index):
    _, ours, _, shape = other_cases()[index]
    x = np.random.default_rng(index).normal(size=shape)
    result = gradcheck(ours(), np.sign(x) * (0.05 + np.abs(x)))
    assert result, str(result)


EMPTY = [("Conv2d", lambda m: m.Conv2d(2, 3, 3, padding=1), (0, 2, 5, 5)),
         ("Conv2d-groups", lambda m: m.Conv2d(4, 2, 3, groups=2, padding_mode="reflect", padding=1), (0, 4, 5, 5)),
         ("ConvTranspose2d", lambda m: m.ConvTranspose2d(2, 3, 3, stride=2), (0, 2, 4, 4)),
         ("MaxPool2d", lambda m: m.MaxPool2d(2), (0, 2, 4, 4)),
         ("AvgPool2d", lambda m: m.AvgPool2d(2), (0, 2, 4, 4)),
         ("Upsample", lambda m: m.Upsample(scale_factor=2), (0, 2, 3, 3)),
         ("Upsample-bilinear", lambda m: m.Upsample(scale_factor=2, mode="bilinear"), (0, 2, 3, 3)),
         ("Linear", lambda m: m.Linear(3, 2), (0, 3)),
         ("ReLU", lambda m: m.ReLU(), (0, 3)), ("Sigmoid", lambda m: m.Sigmoid(), (0, 3)),
         ("Tanh", lambda m: m.Tanh(), (0, 3)), ("LeakyReLU", lambda m: m.LeakyReLU(), (0, 3)),
         ("Flatten", lambda m: m.Flatten(), (0, 2, 3)), ("Unflatten", lambda m: m.Unflatten((2, 3)), (0, 6)),
         ("BatchNorm2d", lambda m: m.BatchNorm2d(2), (0, 2, 3, 3)), ("Dropout", lambda m: m.Dropout(), (0, 3)),
         ("Dropout2d", lambda m: m.Dropout2d(), (0, 2, 3, 3))]


@pytest.mark.parametrize("make, shape", [(m, s) for _, m, s in EMPTY], ids=[n for n, _, _ in EMPTY])
def test_empty_batches_work_as_in_torch(xp, make, shape):
    torch = pytest.importorskip("torch")
    ours = make(nn)
    theirs = make(torch.nn) if not isinstance(ours, nn.Unflatten) else torch.nn.Unflatten(1, (2, 3))
    if ours.parameters():
        ours.load_state_dict({k: v.detach().numpy() for k, v in theirs.state_dict().items()})
    x = xp.zeros(shape, np.float32)
    y = ours(x)
    expected = theirs(torch.zeros(shape, dtype=torch.float32))
    assert tuple(y.shape) == tuple(expected.shape)
    dx = ours.backward(xp.zeros(y.shape, np.float32))
    assert tuple(dx.shape) == shape
    assert all(not bool(p.grad.any()) for p in ours.parameters())


# ------------------------------------------------------------------------------------------ losses

LOSSES = [(name, reduction, extra) for name in ("MSELoss", "L1Loss", "BCELoss", "BCEWithLogitsLoss")
          for reduction in ("mean", "sum", "none") for extra in ({}, {"weight": True})
          if not (extra and name in ("MSELoss", "L1Loss"))] + \
         [("BCEWithLogitsLoss", "mean", {"pos_weight": True}), ("BCEWithLogitsLoss", "none", {"pos_weight": True,
                                                                                             "weight": True})]


@pytest.mark.parametrize("dtype, rtol", [(np.float64, 1e-12), (np.float32, 1e-5)])
@pytest.mark.parametrize("name, reduction, extra", LOSSES, ids=[f"{n}-{r}-{'-'.join(e)}" for n, r, e in LOSSES])
def test_losses_match_torch(xp, name, reduction, extra, dtype, rtol):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(5)
    shape = (3, 2, 4)
    pred = (rng.normal(size=shape) * 3 if name == "BCEWithLogitsLoss" else rng.uniform(0.02, 0.98, size=shape))
    pred, target = pred.astype(dtype), rng.uniform(size=shape).astype(dtype)
    kwargs = {}
    if "weight" in extra:
        kwargs["weight"] = rng.uniform(0.5, 2, size=(2, 1)).astype(dtype)  # broadcasts
    if "pos_weight" in extra:
        kwargs["pos_weight"] = rng.uniform(0.5, 3, size=(4,)).astype(dtype)
    ours = getattr(nn, name)(reduction=reduction, **{k: xp.asarray(v) for k, v in kwargs.items()})
    theirs = getattr(torch.nn, name)(reduction=reduction, **{k: torch.tensor(v) for k, v in kwargs.items()})
    p = torch.tensor(pred, requires_grad=True)
    expected = theirs(p, torch.tensor(target))
    upstream = rng.normal(size=shape).astype(dtype) if reduction == "none" else None
    expected.backward(torch.tensor(upstream) if upstream is not None else None)
    loss = ours(xp.asarray(pred), xp.asarray(target))
    grad = ours.backward(None if upstream is None else xp.asarray(upstream))
    assert loss.dtype == dtype and grad.dtype == dtype
    np.testing.assert_allclose(backend.to_numpy(loss), expected.detach().numpy(), rtol=rtol, atol=rtol)
    np.testing.assert_allclose(backend.to_numpy(grad), p.grad.numpy(), rtol=rtol, atol=rtol * np.abs(p.grad.numpy()).max())


@pytest.mark.filterwarnings("error")
def test_bce_with_logits_is_finite_and_silent_at_extreme_logits(xp):
    x, t = xp.asarray([-1000.0, -30.0, 0.0, 30.0, 1000.0]), xp.asarray([1.0, 0.0, 0.5, 1.0, 0.0])
    with np.errstate(over="raise", divide="raise", invalid="raise", under="ignore"):
        loss = nn.BCEWithLogitsLoss(reduction="none")
        values = loss(x, t)
        grad = loss.backward(xp.ones_like(x))
    assert bool(xp.isfinite(values).all()) and bool(xp.isfinite(grad).all())
    np.testing.assert_allclose(backend.to_numpy(values)[[0, 4]], [1000.0, 1000.0])
    np.testing.assert_allclose(backend.to_numpy(grad)[[0, 4]], [-1.0, 1.0])


@pytest.mark.parametrize("name", ["L1Loss", "BCEWithLogitsLoss"])
def test_new_losses_gradcheck(xp, name):
    rng = np.random.default_rng(6)
    pred, target = rng.uniform(0.05, 0.95, size=(3, 4)), rng.uniform(0, 1, size=(3, 4))
    result = gradcheck(getattr(nn, name)(), pred + (0.3 if name == "L1Loss" else 0), target=target)
    assert result, str(result)


def test_loss_backward_checks_its_upstream_gradient():
    loss = nn.MSELoss(reduction="none")
    with pytest.raises(ValueError, match=r"MSELoss.backward needs dL/dy, the gradient of the loss with respect to "
                                         r"this module's output \(an array of shape \(2, 3\)\)"):
        loss(np.zeros((2, 3)), np.ones((2, 3)))
        loss.backward()
    with pytest.raises(RuntimeError, match="L1Loss.backward: no forward is waiting for its backward"):
        nn.L1Loss().backward()
    with pytest.raises(ValueError, match="reduction must be one of mean, sum, none, got 'avg'"):
        nn.BCELoss(reduction="avg")


# ------------------------------------------------------------------------------------------ errors

@pytest.mark.parametrize("make, message", [
    (lambda: nn.Conv2d(4, 4, 3, groups=3), "groups must be a positive integer dividing in_channels and out_channels"),
    (lambda: nn.Conv2d(2, 4, 3, padding="same", stride=2), "padding='same' is not supported for strided"),
    (lambda: nn.Conv2d(2, 4, 3, padding="full"), "padding must be an int, a pair, 'same' or 'valid'"),
    (lambda: nn.Conv2d(2, 4, 3, padding_mode="mirror"), "padding_mode must be one of zeros, reflect"),
    (lambda: nn.Conv2d(2, 4, 3, dilation=0), "dilation must be positive"),
    (lambda: nn.ConvTranspose2d(2, 4, 3, stride=2, dilation=3, output_padding=3), "smaller than either stride"),
    (lambda: nn.ConvTranspose2d(2, 4, 3, padding_mode="reflect"), "only padding_mode='zeros'"),
    (lambda: nn.ConvTranspose2d(2, 4, 3, groups=4), "groups must be a positive integer dividing"),
])
def test_bad_arguments_raise_like_torch(make, message):
    with pytest.raises(ValueError, match=message):
        make()


@pytest.mark.parametrize("layer, shape, message", [
    (nn.Conv2d(1, 1, 3, padding=3, padding_mode="reflect"), (1, 1, 3, 3), "too large for reflect padding"),
    (nn.Conv2d(1, 1, 3, dilation=3), (1, 1, 6, 6), r"kernel \(3, 3\) \(dilation \(3, 3\)\) is larger than the padded"),
    (nn.MaxPool2d(3, dilation=2), (1, 1, 4, 4), "too small for kernel"),
])
def test_bad_inputs_raise_like_torch(layer, shape, message):
    with pytest.raises(ValueError, match=message):
        layer(np.zeros(shape, np.float32))


def test_conv_transpose_output_size_outside_the_valid_range_raises():
    layer = nn.ConvTranspose2d(1, 1, 3, stride=2)
    with pytest.raises(ValueError, match=r"requested an output size of \(12, 9\), but valid sizes range from "
                                         r"\(9, 9\) to \(10, 10\)"):
        layer(np.zeros((1, 1, 4, 4), np.float32), output_size=(1, 1, 12, 9))
