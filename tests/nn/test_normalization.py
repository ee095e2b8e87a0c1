"""BatchNorm2d and the buffer mechanism it needs: gradchecks in training and evaluation, PyTorch parity (output,
every gradient, running statistics and num_batches_tracked over several steps), buffers in state_dict / to() /
save / load / training checkpoints, and the errors."""
import numpy as np
import pytest

import minidae
from minidae import backend, gradcheck, models, nn, optim
from minidae.checkpoint import load_checkpoint, load_weights, save_checkpoint
from parity import TOLERANCE, relative_error

DTYPES = [np.float64, np.float32]
# keyword arguments of both BatchNorm2d's, by test id
CONFIGS = {"default": {}, "momentum-None": dict(momentum=None), "affine-False": dict(affine=False),
           "no-running-stats": dict(track_running_stats=False), "momentum-0.3-eps-1e-3": dict(momentum=0.3, eps=1e-3)}
BUFFERS = ("running_mean", "running_var", "num_batches_tracked")


def needs_torch():
    """torch, or a skip saying why (tests/test_without_torch.py runs this file with PyTorch hidden)."""
    return pytest.importorskip("torch", reason="PyTorch is the reference for parity tests: pip install -e .[test]")


def batch(seed, shape=(4, 3, 5, 6)):
    """Images whose channels have means and scales of their own (so normalising changes something)."""
    rng = np.random.default_rng(seed)
    c = (1, shape[1], 1, 1)
    return rng.normal(size=shape) * rng.uniform(0.5, 3, size=c) + rng.normal(size=c)


def with_random_state(layer, seed=0):
    """Non-trivial weight, bias and running statistics (PyTorch's initial ones would hide mistakes)."""
    rng = np.random.default_rng(seed)
    c = layer.num_features
    if layer.affine:
        layer.weight.data = backend.xp.asarray(rng.uniform(0.5, 1.5, c).astype(np.float32))
        layer.bias.data = backend.xp.asarray(rng.normal(size=c).astype(np.float32))
    if layer.track_running_stats:
        layer.running_mean[...] = backend.xp.asarray(rng.normal(size=c))
        layer.running_var[...] = backend.xp.asarray(rng.uniform(0.5, 2, c))
    return layer


class RunningStatsUnderRecord(nn.BatchNorm2d):
    """The evaluation formula (running statistics) in a call that records for a backward.

    minidae records nothing in eval mode, so no backward can follow an eval-mode forward (module docstring);
    to check the evaluation backward, this forward runs in eval mode while the call around it is in training
    mode and records."""

    def forward(self, ctx, x):
        self.train(False)
        try:
            return super().forward(ctx, x)
        finally:
            self.train(True)


class ForgetsThatTheStatisticsDependOnX(nn.BatchNorm2d):
    """The classic mistake: the training backward with mu and var taken as constants (the evaluation formula)."""

    def backprop(self, ctx, dy):
        ctx.saved = ctx.saved._replace(batch_stats=False)
        return super().backprop(ctx, dy)


# ------------------------------------------------------------------------------------------------ gradchecks

@pytest.mark.parametrize("config", ["default", "affine-False", "no-running-stats"])
def test_gradcheck_training(xp, config):
    layer = with_random_state(nn.BatchNorm2d(3, **CONFIGS[config]))
    result = gradcheck(layer, batch(1))
    assert result, str(result)
    assert set(result.per_tensor) == ({"input", "weight", "bias"} if layer.affine else {"input"})


@pytest.mark.parametrize("affine", [True, False], ids=["affine", "affine-False"])
def test_gradcheck_evaluation(xp, affine):
    layer = with_random_state(RunningStatsUnderRecord(3, affine=affine))
    result = gradcheck(layer, batch(2))
    assert result, str(result)


def test_gradcheck_catches_a_backward_that_treats_the_batch_statistics_as_constants(xp):
    result = gradcheck(with_random_state(ForgetsThatTheStatisticsDependOnX(3)), batch(3))
    assert not result and result.worst.tensor == "input", str(result)


# ------------------------------------------------------------------------------------------------ PyTorch parity

def torch_twin(config, dtype):
    torch = needs_torch()
    theirs = torch.nn.BatchNorm2d(3, **CONFIGS[config])
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        if theirs.affine:
            theirs.weight.uniform_(0.5, 1.5, generator=generator)
            theirs.bias.normal_(generator=generator)
    return theirs.to({np.float64: torch.float64, np.float32: torch.float32}[dtype])


def assert_same_buffers(ours, theirs, dtype, label):
    for name in BUFFERS:
        mine, reference = getattr(ours, name), getattr(theirs, name)
        if reference is None:
            assert mine is None, f"{label}: {name} should be None"
            continue
        if name == "num_batches_tracked":
            assert mine.dtype == np.int64 and mine.shape == () and int(mine) == int(reference), (label, mine)
        else:
            assert mine.dtype == dtype, f"{label}: {name} is {mine.dtype}"
            error = relative_error(mine, reference.numpy())
            assert error <= TOLERANCE[dtype], f"{label}: {name} differs from PyTorch by {error:.2e}"


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("config", list(CONFIGS))
def test_matches_torch_over_several_training_steps_then_in_evaluation(xp, torch_parity, config, dtype):
    """Each step: output, dL/dx, dL/dweight, dL/dbias (the parity helper), then the buffers; then eval mode."""
    torch = needs_torch()
    ours, theirs = nn.BatchNorm2d(3, **CONFIGS[config]), torch_twin(config, dtype)
    for step in range(4):
        theirs.zero_grad()
        # the first step copies PyTorch's state (weights and buffers) into ours; later ones let each evolve
        torch_parity(ours, theirs, batch(10 + step), dtype, label="BatchNorm2d", copy_weights=step == 0)
        assert_same_buffers(ours, theirs, dtype, f"{config}, step {step + 1}")
    ours.eval(), theirs.eval()
    x = batch(20).astype(dtype)
    y = ours(xp.asarray(x))
    with torch.no_grad():
        expected = theirs(torch.tensor(x)).numpy()
    assert y.dtype == dtype and relative_error(y, expected) <= TOLERANCE[dtype]
    assert_same_buffers(ours, theirs, dtype, f"{config}, after an eval-mode forward")


def test_momentum_none_is_the_cumulative_average_of_the_batches(xp):
    layer = nn.BatchNorm2d(3, momentum=None).to(np.float64)
    batches = [batch(seed) for seed in range(5)]
    with minidae.no_grad():  # training-mode forwards without a backward: the statistics move all the same
        for x in batches:
            layer(xp.asarray(x))
    means = [x.mean(axis=(0, 2, 3)) for x in batches]
    variances = [x.var(axis=(0, 2, 3), ddof=1) for x in batches]  # the running variance is the unbiased one
    np.testing.assert_allclose(backend.to_numpy(layer.running_mean), np.mean(means, axis=0), rtol=1e-12)
    np.testing.assert_allclose(backend.to_numpy(layer.running_var), np.mean(variances, axis=0), rtol=1e-12)
    assert int(layer.num_batches_tracked) == 5


def test_buffers_change_in_training_mode_only_in_place_and_also_under_no_grad(xp):
    import minidae
    layer = nn.BatchNorm2d(3)
    mean, var, count = layer.running_mean, layer.running_var, layer.num_batches_tracked
    layer.eval()
    layer(xp.asarray(batch(0), np.float32))
    assert float(abs(mean).max()) == 0 and int(count) == 0, "an eval-mode forward must not touch the buffers"
    layer.train()
    with minidae.no_grad():  # as in PyTorch: no_grad does not change training, statistics still update
        layer(xp.asarray(batch(0), np.float32))
    assert float(abs(mean).max()) > 0 and int(count) == 1
    assert layer.running_mean is mean and layer.running_var is var and layer.num_batches_tracked is count, \
        "buffers must be updated in place (a replayed CUDA graph repeats in-place updates only)"


# ------------------------------------------------------------------------------------------------ buffers

def trained(layer, steps=3):
    for step in range(steps):
        layer(backend.xp.asarray(batch(30 + step), np.float32))
    return layer


@pytest.mark.parametrize("config", list(CONFIGS))
def test_state_dict_keys_order_and_dtypes_are_torchs(config):
    torch = needs_torch()
    ours = nn.Sequential(nn.Conv2d(2, 3, 3), nn.BatchNorm2d(3, **CONFIGS[config]))
    theirs = torch.nn.Sequential(torch.nn.Conv2d(2, 3, 3), torch.nn.BatchNorm2d(3, **CONFIGS[config]))
    mine, reference = ours.state_dict(), theirs.state_dict()
    assert list(mine) == list(reference)
    for key, value in reference.items():
        assert mine[key].shape == tuple(value.shape) and mine[key].dtype == value.numpy().dtype, key


def test_buffers_are_not_parameters_and_the_optimiser_never_sees_them(xp):
    model = nn.Sequential(nn.Conv2d(1, 3, 3), nn.BatchNorm2d(3))
    assert [name for name, _ in model.named_parameters()] == ["0.weight", "0.bias", "1.weight", "1.bias"]
    assert [name for name, _ in model.named_buffers()] == ["1.running_mean", "1.running_var",
                                                          "1.num_batches_tracked"]
    assert models.parameter_count(model) == 3 * 9 + 3 + 3 + 3
    opt = optim.Adam(model.parameters(), lr=0.1, weight_decay=0.1)
    y = model(xp.asarray(np.random.default_rng(0).random((2, 1, 5, 5)), np.float32))
    before = {k: v.copy() for k, v in model.state_dict().items() if "running" in k or "batches" in k}
    model.backward(xp.ones_like(y))
    opt.step()
    after = model.state_dict()
    assert all(np.array_equal(after[k], v) for k, v in before.items()), "the optimiser changed a buffer"


def test_state_dict_loads_both_ways_with_torch(xp):
    torch = needs_torch()
    ours, theirs = trained(nn.BatchNorm2d(3)), torch.nn.BatchNorm2d(3)
    theirs.load_state_dict({k: torch.from_numpy(v) for k, v in ours.state_dict().items()})  # minidae -> PyTorch
    assert int(theirs.num_batches_tracked) == 3 and theirs.num_batches_tracked.dtype == torch.int64
    for key, value in ours.state_dict().items():
        np.testing.assert_array_equal(theirs.state_dict()[key].numpy(), value)
    theirs.train()(torch.tensor(batch(40), dtype=torch.float32))  # PyTorch moves on one step ...
    fresh = nn.BatchNorm2d(3)
    fresh.load_state_dict({k: v.numpy() for k, v in theirs.state_dict().items()})  # ... PyTorch -> minidae
    for key, value in theirs.state_dict().items():
        np.testing.assert_array_equal(fresh.state_dict()[key], value.numpy())
    assert fresh.num_batches_tracked.dtype == np.int64 and int(fresh.num_batches_tracked) == 4


def test_load_state_dict_fills_buffers_in_place_and_refuses_missing_ones(xp):
    layer = nn.BatchNorm2d(3)
    state, mean = trained(nn.BatchNorm2d(3)).state_dict(), layer.running_mean
    layer.load_state_dict(state)
    assert layer.running_mean is mean and np.array_equal(backend.to_numpy(mean), state["running_mean"])
    del state["running_var"]
    with pytest.raises(KeyError, match=r"missing keys \['running_var'\]"):
        layer.load_state_dict(state)
    state["running_var"] = np.ones(4, np.float32)
    with pytest.raises(ValueError, match=r"running_var has shape \(4,\), the module expects \(3,\)"):
        layer.load_state_dict(state)


def test_to_casts_floating_buffers_and_keeps_the_counter_int64(xp):
    layer = trained(nn.BatchNorm2d(3))
    before = layer.state_dict()
    layer.to(np.float64)
    assert layer.running_mean.dtype == layer.running_var.dtype == layer.weight.data.dtype == np.float64
    assert layer.num_batches_tracked.dtype == np.int64 and int(layer.num_batches_tracked) == 3
    assert all(backend.array_module(a) is xp for _, a in layer.named_buffers())
    np.testing.assert_array_equal(backend.to_numpy(layer.running_var), before["running_var"].astype(np.float64))
    y = layer(xp.asarray(batch(0)))  # float64 through, no dtype complaint
    assert y.dtype == np.float64
    layer.to(np.float32)
    assert layer.running_var.dtype == np.float32 and layer.num_batches_tracked.dtype == np.int64


def test_save_and_load_safetensors_both_ways_with_torch(tmp_path):
    torch = needs_torch()
    import safetensors.torch
    ours = nn.Sequential(nn.Conv2d(1, 3, 3), trained(nn.BatchNorm2d(3)))
    path = tmp_path / "weights.safetensors"
    ours.save(path)
    theirs = torch.nn.Sequential(torch.nn.Conv2d(1, 3, 3), torch.nn.BatchNorm2d(3))
    theirs.load_state_dict(safetensors.torch.load_file(path))  # a 0-d counter, not shape (1,)
    assert int(theirs[1].num_batches_tracked) == 3
    safetensors.torch.save_file(theirs.state_dict(), path)
    again = nn.Sequential(nn.Conv2d(1, 3, 3), nn.BatchNorm2d(3)).load(path)
    for key, value in ours.state_dict().items():
        np.testing.assert_array_equal(again.state_dict()[key], value)


def test_training_checkpoint_round_trip(tmp_path):
    def build():
        return nn.Sequential(nn.Conv2d(1, 3, 3), nn.BatchNorm2d(3), nn.BatchNorm2d(3, momentum=None, affine=False))
    model = build()
    for step in range(3):
        model(backend.xp.asarray(batch(50 + step, (2, 1, 6, 6)), np.float32))
    config = dict(dataset="mnist", seed=0, noise="gaussian", noise_level=0.5, batch_size=64, lr=1e-3,
                  weight_decay=1e-5, epochs=1, backend="numpy")
    path = tmp_path / "checkpoint.npz"
    save_checkpoint(path, model, optim.Adam(model.parameters()), 1, 0, [0.1], [0.1], config)
    state = load_checkpoint(path)
    assert state["model"]["2.num_batches_tracked"].dtype == np.int64  # an integer buffer is not refused
    fresh = load_weights(build(), state["model"], path)
    for key, value in model.state_dict().items():
        np.testing.assert_array_equal(fresh.state_dict()[key], value)
        assert fresh.state_dict()[key].dtype == value.dtype, key
    assert int(fresh[2].num_batches_tracked) == 3


def test_register_buffer(xp):
    class Counter(nn.Module):
        def __init__(self):
            super().__init__()
            self.register_buffer("count", xp.zeros((), np.int64))
            self.register_buffer("absent", None)

        def forward(self, ctx, x):
            self.count += 1
            return x

    layer = Counter()
    layer(xp.zeros(2, np.float32)), layer(xp.zeros(2, np.float32))
    assert layer.parameters() == [] and list(layer.state_dict()) == ["count"] and int(layer.state_dict()["count"]) == 2
    layer.absent = xp.ones(2)  # assigning to a registered name keeps it a buffer
    assert list(layer.state_dict()) == ["count", "absent"]
    for name in ("_hidden", "a.b", 3):
        with pytest.raises(ValueError, match="the name must be a public attribute name"):
            layer.register_buffer(name, xp.zeros(1))


# ------------------------------------------------------------------------------------------------ errors

@pytest.mark.parametrize("make, shape, message", [
    (lambda: nn.BatchNorm2d(3), (2, 4, 5, 5), r"BatchNorm2d: expected a floating-point input of shape \(N, 3, H, W\) "
                                              r"\(num_features=3\), got \(2, 4, 5, 5\)"),
    (lambda: nn.BatchNorm2d(3), (3, 5, 5), r"expected a floating-point input of shape \(N, 3, H, W\) .*got \(3, 5, 5\)"),
    (lambda: nn.BatchNorm2d(3), (2, 3), r"expected a floating-point input of shape \(N, 3, H, W\) .*got \(2, 3\)"),
    (lambda: nn.BatchNorm2d(3), (1, 3, 1, 1), r"more than 1 value per channel .* \(1, 3, 1, 1\)"),
    (lambda: nn.BatchNorm2d(3, track_running_stats=False).eval(), (1, 3, 1, 1), "more than 1 value per channel"),
    (lambda: nn.BatchNorm2d(3, affine=False), (2, 3, 4, 4), "the input is float64 but the buffers are float32"),
])
def test_bad_inputs_raise(make, shape, message):
    with pytest.raises(ValueError, match=message):
        make()(np.ones(shape, np.float32 if "float64" not in message else np.float64))


@pytest.mark.parametrize("kwargs, message", [
    (dict(num_features=0), "num_features .* must be a positive integer, got 0"),
    (dict(num_features=2.5), "num_features .* must be a positive integer, got 2.5"),
    (dict(num_features=3, eps=-1e-5), "eps must be a finite number >= 0"),
    (dict(num_features=3, momentum=1.5), r"momentum must be a number in \[0, 1\], or None"),
])
def test_bad_arguments_raise(kwargs, message):
    with pytest.raises(ValueError, match=message):
        nn.BatchNorm2d(**kwargs)
