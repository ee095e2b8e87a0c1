"""Linear, activations, pooling, upsampling and reshaping layers: PyTorch parity and gradchecks."""
import numpy as np
import pytest

from minidae import gradcheck, nn

DTYPES = [np.float64, np.float32]


def off_kink(x):
    """Move values at least 0.05 away from 0, where ReLU's derivative jumps."""
    return np.sign(x) * (0.05 + np.abs(x))


class _Torch:
    """torch.nn, imported only when a parity test builds a twin (gradchecks run without PyTorch)."""

    def __getattr__(self, name):
        def make(*args, **kwargs):
            import torch
            return getattr(torch.nn, name)(*args, **kwargs)
        return make


def cases():
    """(label, minidae layer factory, torch layer factory, input shape, input transform)."""
    torch = type("torch", (), {"nn": _Torch()})
    return [
        ("Linear", lambda: nn.Linear(7, 5), lambda: torch.nn.Linear(7, 5), (4, 7), None),
        ("Linear-nobias", lambda: nn.Linear(3, 6, bias=False), lambda: torch.nn.Linear(3, 6, bias=False), (2, 3), None),
        ("ReLU", nn.ReLU, torch.nn.ReLU, (3, 2, 4, 5), off_kink),
        ("Sigmoid", nn.Sigmoid, torch.nn.Sigmoid, (3, 2, 4, 5), lambda x: 8 * x),
        ("MaxPool2d", lambda: nn.MaxPool2d(2), lambda: torch.nn.MaxPool2d(2), (2, 3, 6, 7), None),
        ("MaxPool2d-overlap", lambda: nn.MaxPool2d((3, 2), stride=(1, 2)),
         lambda: torch.nn.MaxPool2d((3, 2), stride=(1, 2)), (2, 2, 6, 5), None),
        ("Upsample", lambda: nn.Upsample(scale_factor=2), lambda: torch.nn.Upsample(scale_factor=2), (2, 3, 3, 4),
         None),
        ("Upsample-rect", lambda: nn.Upsample(scale_factor=(2, 3)), lambda: torch.nn.Upsample(scale_factor=(2, 3)),
         (1, 2, 3, 2), None),
        ("Flatten", nn.Flatten, torch.nn.Flatten, (3, 2, 4, 5), None),
        ("Unflatten", lambda: nn.Unflatten((2, 3, 4)), lambda: torch.nn.Unflatten(1, (2, 3, 4)), (5, 24), None),
    ]


CASE_IDS = ["Linear", "Linear-nobias", "ReLU", "Sigmoid", "MaxPool2d", "MaxPool2d-overlap", "Upsample",
            "Upsample-rect", "Flatten", "Unflatten"]


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("index", range(len(CASE_IDS)), ids=CASE_IDS)
def test_matches_torch(xp, torch_parity, index, dtype):
    label, ours, theirs, shape, transform = cases()[index]
    x = np.random.default_rng(index).normal(size=shape)
    torch_parity(ours(), theirs(), transform(x) if transform else x, dtype, label=label.split("-")[0])


@pytest.mark.parametrize("index", range(len(CASE_IDS)), ids=CASE_IDS)
def test_gradcheck(xp, index):
    label, ours, _, shape, transform = cases()[index]
    x = np.random.default_rng(index).normal(size=shape)
    result = gradcheck(ours(), transform(x) if transform else x)
    assert result, str(result)


@pytest.mark.filterwarnings("error")
def test_sigmoid_is_finite_and_silent_at_extremes(xp):
    x = xp.asarray([-1000.0, -50.0, 0.0, 50.0, 1000.0])
    with np.errstate(over="raise", divide="raise", invalid="raise"):  # exp(-1000) = 0 is a correct underflow
        layer = nn.Sigmoid()
        y = layer(x)
        dx = layer.backward(xp.ones_like(x))
    assert bool(xp.isfinite(y).all()) and bool(xp.isfinite(dx).all())
    np.testing.assert_allclose(np.asarray(y.tolist()), [0.0, 1.9287498479639178e-22, 0.5, 1.0, 1.0], rtol=1e-15)


def test_maxpool_ties_go_to_the_first_position(xp):
    layer = nn.MaxPool2d(2)
    y = layer(xp.ones((1, 1, 2, 2)))
    dx = layer.backward(xp.ones_like(y))
    assert dx.tolist() == [[[[1.0, 0.0], [0.0, 0.0]]]]


@pytest.mark.parametrize("make, shape, message", [
    (lambda: nn.Linear(4, 3), (2, 5), r"Linear: expected a floating-point input of shape \(\*, 4\), got \(2, 5\)"),
    (lambda: nn.Unflatten((2, 3)), (4, 5), r"Unflatten: expected input of shape \(N, 6\)"),
    (lambda: nn.MaxPool2d(3), (1, 1, 2, 5), r"MaxPool2d: input \(1, 1, 2, 5\) is too small for kernel \(3, 3\)"),
    (lambda: nn.Upsample(scale_factor=2), (2, 3), r"Upsample: expected a floating-point input of shape "
                                                  r"\(N, C, H, W\), got \(2, 3\)"),
])
def test_bad_inputs_raise(make, shape, message):
    with pytest.raises(ValueError, match=message):
        make()(np.zeros(shape, np.float32))


@pytest.mark.parametrize("make, message", [
    (lambda: nn.Upsample(scale_factor=-1.5), "scale_factor must be a positive number"),
    (lambda: nn.Upsample(scale_factor=2, mode="bicubic"), "bicubic is not implemented"),
    (lambda: nn.Upsample(), "exactly one of size and scale_factor"),
    (lambda: nn.Upsample(size=4, scale_factor=2), "exactly one of size and scale_factor"),
    (lambda: nn.Upsample(scale_factor=2, align_corners=True), "align_corners can only be set"),
    (lambda: nn.MaxPool2d(0), "must be positive"),
    (lambda: nn.MaxPool2d(3, padding=2), r"padding \(2, 2\) must be non-negative and at most half"),
    (lambda: nn.AvgPool2d(2, divisor_override=0), "divisor_override must be a non-zero integer"),
    (lambda: nn.Linear(0, 3), "feature counts must be positive"),
])
def test_bad_arguments_raise(make, message):
    with pytest.raises(ValueError, match=message):
        make()


@pytest.mark.parametrize("kernel, stride", [(2, 2), (3, 2), (3, 1)])
def test_maxpool_ties_and_nans_pick_pytorchs_winner(kernel, stride):
    """Ties (the zeros a ReLU leaves) go to the first position, a window with NaNs to its last NaN:
    outputs, indices and input gradients equal PyTorch's, overlapping windows included."""
    torch = pytest.importorskip("torch", reason="PyTorch parity needs torch")
    rng = np.random.default_rng(0)
    x = np.maximum(rng.normal(size=(2, 3, 9, 9)), 0)
    x[rng.uniform(size=x.shape) < 0.05] = np.nan
    dy_shape = torch.nn.functional.max_pool2d(torch.from_numpy(x), kernel, stride).shape
    dy = rng.normal(size=tuple(dy_shape))
    layer = nn.MaxPool2d(kernel, stride, return_indices=True)
    y, indices = layer(x)
    dx = layer.backward(dy)
    tx = torch.from_numpy(x).requires_grad_()
    ty, tindices = torch.nn.functional.max_pool2d(tx, kernel, stride, return_indices=True)
    ty.backward(torch.from_numpy(dy))
    np.testing.assert_array_equal(y, ty.detach().numpy())  # NaN where PyTorch has NaN
    np.testing.assert_array_equal(indices, tindices.numpy())
    np.testing.assert_allclose(dx, tx.grad.numpy(), rtol=0, atol=1e-12)
