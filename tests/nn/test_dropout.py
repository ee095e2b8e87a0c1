"""Dropout and Dropout2d: gradchecks with a fixed mask, PyTorch parity with the same mask, the masks' statistics,
eval mode, p = 0 and p = 1, and the errors.

"The same mask" means: the same kept positions M (1 = kept, 0 = zeroed; for Dropout2d one value per channel of
each sample) and PyTorch's own arithmetic for the rest, which is, in at::native's ``_dropout_impl``,

    noise = M in the input's dtype;  noise.div_(1 - p);  y = x * noise;   and dL/dx = dL/dy * noise,

so the scale is 1 / (1 - p) rounded to the input's dtype and y must equal PyTorch's output bit for bit. The
tests check both directions: PyTorch's mask imposed on minidae's layer, and minidae's mask (read from its
output on an input without zeros) put through PyTorch's formula.
"""
import numpy as np
import pytest

from minidae import backend, gradcheck, nn

DTYPES = [np.float64, np.float32]
LAYERS = {"Dropout": (nn.Dropout, (3, 4, 5, 6)), "Dropout2d": (nn.Dropout2d, (6, 8, 3, 4))}


def no_zeros(shape, seed=0):
    x = np.random.default_rng(seed).normal(size=shape)
    return np.sign(x) * (0.05 + np.abs(x))  # no element is 0, so y == 0 exactly where the mask dropped


def expected_mask_shape(name, shape):
    return shape if name == "Dropout" else shape[:2] + (1, 1)


class Reseeded:
    """Mixin: reseed the backend's generator before every forward, so every call draws the same mask (what
    gradcheck needs: it calls the forward many times and compares)."""

    def forward(self, ctx, x):
        backend.seed(0)
        return super().forward(ctx, x)


class ReseededDropout(Reseeded, nn.Dropout):
    pass


class ReseededDropout2d(Reseeded, nn.Dropout2d):
    pass


class ForgetsTheScale(nn.Dropout):
    """A backward that routes the gradient through the kept positions but forgets the 1 / (1 - p)."""

    def backprop(self, ctx, dy):
        return dy * (ctx.scale != 0)


# ------------------------------------------------------------------------------------------------ gradchecks

@pytest.mark.parametrize("p", [0.0, 0.3, 0.5, 1.0])
@pytest.mark.parametrize("make", [ReseededDropout, ReseededDropout2d], ids=["Dropout", "Dropout2d"])
def test_gradcheck_with_the_mask_fixed_by_reseeding(xp, make, p):
    result = gradcheck(make(p), no_zeros((3, 4, 3, 3)))
    assert result, str(result)


def test_gradcheck_with_an_imposed_mask(xp):
    layer = nn.Dropout(0.4)
    mask = np.random.default_rng(5).random((2, 3, 4)) < 0.6
    layer._draw_mask = lambda shape, dtype: xp.asarray(mask)  # every forward gets this very mask
    result = gradcheck(layer, no_zeros((2, 3, 4)))
    assert result, str(result)


def test_gradcheck_fails_without_a_fixed_mask_and_for_a_backward_without_the_scale(xp):
    # Without reseeding, every forward draws a new mask and the finite differences mean nothing: the check
    # must notice (this is why the tests above fix the mask).
    assert not gradcheck(nn.Dropout(0.5), no_zeros((3, 4, 5)))
    layer = ForgetsTheScale(0.5)
    layer._draw_mask = lambda shape, dtype: xp.asarray(np.arange(np.prod(shape)).reshape(shape) % 3 != 0)
    assert not gradcheck(layer, no_zeros((3, 4, 5)))


# ------------------------------------------------------------------------------------------------ parity

@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("p", [0.1, 0.45, 0.5, 0.9])
@pytest.mark.parametrize("name", list(LAYERS))
def test_torchs_mask_imposed_on_ours_gives_torchs_numbers_exactly(xp, name, p, dtype):
    torch = pytest.importorskip("torch", reason="PyTorch is the reference for parity tests: pip install -e .[test]")
    make, shape = LAYERS[name]
    torch.manual_seed(0)
    x = no_zeros(shape).astype(dtype)
    upstream = np.random.default_rng(1).normal(size=shape).astype(dtype)
    x_torch = torch.tensor(x, requires_grad=True)
    y_torch = getattr(torch.nn, name)(p).train()(x_torch)
    y_torch.backward(torch.tensor(upstream))
    kept = (y_torch != 0).numpy()
    if name == "Dropout2d":
        kept = kept[:, :, :1, :1]  # one value per channel of each sample
        assert (((y_torch != 0).numpy()) == kept).all(), "PyTorch's Dropout2d zeroed part of a channel"
    asked = []

    def torchs_mask(mask_shape, mask_dtype):
        asked.append((tuple(mask_shape), np.dtype(mask_dtype)))
        return xp.asarray(kept)

    ours = make(p)
    ours._draw_mask = torchs_mask
    y = ours(xp.asarray(x))
    dx = ours.backward(xp.asarray(upstream))
    assert asked == [(expected_mask_shape(name, shape), np.dtype(dtype))]
    assert y.dtype == dtype and dx.dtype == dtype
    np.testing.assert_array_equal(backend.to_numpy(y), y_torch.detach().numpy())
    np.testing.assert_array_equal(backend.to_numpy(dx), x_torch.grad.numpy())


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("p", [0.1, 0.45, 0.9])
@pytest.mark.parametrize("name", list(LAYERS))
def test_our_mask_through_torchs_formula_gives_our_numbers_exactly(xp, name, p, dtype):
    torch = pytest.importorskip("torch", reason="PyTorch is the reference for parity tests: pip install -e .[test]")
    make, shape = LAYERS[name]
    x = no_zeros(shape).astype(dtype)
    upstream = np.random.default_rng(1).normal(size=shape).astype(dtype)
    ours = make(p)
    y = backend.to_numpy(ours(xp.asarray(x)))  # the mask from backend.rng()
    dx = backend.to_numpy(ours.backward(xp.asarray(upstream)))
    kept = y != 0
    if name == "Dropout2d":
        assert (kept == kept[:, :, :1, :1]).all(), "Dropout2d must keep or zero whole channels"
        kept = kept[:, :, :1, :1]
    noise = torch.tensor(kept).to(getattr(torch, np.dtype(dtype).name))  # PyTorch's _dropout_impl, step by step
    noise.div_(1 - p)
    np.testing.assert_array_equal(y, (torch.tensor(x) * noise).numpy())
    np.testing.assert_array_equal(dx, (torch.tensor(upstream) * noise).numpy())


# ------------------------------------------------------------------------------------------------ the masks

@pytest.mark.parametrize("p", [0.2, 0.5, 0.8])
@pytest.mark.parametrize("name", list(LAYERS))
def test_masks_keep_one_minus_p_and_are_new_at_every_call_and_repeat_after_reseeding(xp, name, p):
    make, _ = LAYERS[name]
    shape = (200, 250, 2, 2) if name == "Dropout2d" else (100, 1000)
    draws = 200 * 250 if name == "Dropout2d" else 100 * 1000
    layer, x = make(p), xp.ones(shape, np.float32)
    backend.seed(3)
    first = backend.to_numpy(layer(x))
    kept = (first != 0).mean()
    assert abs(kept - (1 - p)) < 5 * np.sqrt(p * (1 - p) / draws), f"kept {kept:.4f} of the elements for p={p}"
    assert set(np.unique(first)) == {np.float32(0), np.float32(1) / np.float32(1 - p)}
    second = backend.to_numpy(layer(x))
    assert not np.array_equal(first, second), "a new mask at every call"
    backend.seed(3)
    assert np.array_equal(first, backend.to_numpy(layer(x))), "the masks come from backend.rng()"


@pytest.mark.parametrize("name", list(LAYERS))
def test_eval_mode_is_the_identity_and_p_0_and_p_1_are_torchs(xp, name):
    make, shape = LAYERS[name]
    x = xp.asarray(no_zeros(shape), np.float32)
    layer = make(0.5).eval()
    assert layer(x) is x
    dy = xp.ones_like(x)
    assert layer.backward(dy) is dy  # in eval mode the identity, backward too (as PyTorch)
    layer = make(0.0)
    assert layer(x) is x and layer.backward(x) is x
    layer = make(1.0)
    y = layer(x)
    assert y.dtype == np.float32 and not bool(y.any()) and not bool(layer.backward(xp.ones_like(x)).any())


@pytest.mark.parametrize("p", [-0.1, 1.5, float("nan"), "0.5", True, None])
@pytest.mark.parametrize("make", [nn.Dropout, nn.Dropout2d], ids=["Dropout", "Dropout2d"])
def test_p_out_of_range_raises(make, p):
    with pytest.raises(ValueError, match=rf"{make.__name__}: p, the probability of zeroing, must be a number in "
                                         rf"\[0, 1\], got"):
        make(p)


@pytest.mark.parametrize("shape", [(3, 4, 5), (2, 3), (1, 2, 3, 4, 5)])
def test_dropout2d_refuses_inputs_that_are_not_4d(shape):
    for layer in (nn.Dropout2d(), nn.Dropout2d().eval()):
        with pytest.raises(ValueError, match=r"Dropout2d: expected an input of shape \(N, C, H, W\), got "
                                             + str(shape).replace("(", r"\(").replace(")", r"\)")):
            layer(np.ones(shape, np.float32))
