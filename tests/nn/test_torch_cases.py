"""PyTorch's own test cases for the layers minidae has, replayed against minidae.

The installed torch ships its module tests in torch/testing/_internal: ``common_nn.module_tests``,
``get_new_module_tests()`` and ``criterion_tests`` (dicts: constructor, input size), and
``common_modules.module_db`` (ModuleInfo objects whose ``module_inputs_func`` yields constructor
and forward arguments). Every 2-D case of a layer minidae has runs here: the torch module is
built as PyTorch's test builds it, minidae's twin is built from its attributes (same weights),
both run on the same float64 input and upstream gradient, and the output, input gradient and
parameter gradients must agree to 1e-10. A case minidae cannot take skips with
"unsupported: <what>"; the run's summary counts cases run, passed and skipped per layer.
"""
import collections
import functools

import numpy as np
import pytest

from minidae import backend, nn
from parity import REPLAY, relative_error

torch = pytest.importorskip("torch", reason="PyTorch's test cases need PyTorch: pip install -e .[test]")
try:
    from torch.testing._internal import common_modules, common_nn
except ImportError as exc:  # common_utils needs expecttest (in the test extra)
    pytest.skip(f"torch.testing._internal is not importable here ({exc})", allow_module_level=True)

F = torch.nn.functional
LAYERS = {"Conv2d", "ConvTranspose2d", "MaxPool2d", "AvgPool2d", "Upsample", "Linear", "ReLU", "LeakyReLU",
          "Sigmoid", "Tanh", "Flatten", "Unflatten", "MSELoss", "L1Loss", "BCELoss", "BCEWithLogitsLoss"}
SPATIAL = {"Conv2d", "ConvTranspose2d", "MaxPool2d", "AvgPool2d", "Upsample"}


class Unsupported(Exception):
    pass


def functional_kwargs(module):
    """(function, kwargs) of a common_nn ``wrap_functional`` module, read from its closure."""
    forward = type(module).forward
    cells = dict(zip(forward.__code__.co_freevars, (c.cell_contents for c in forward.__closure__ or ())))
    return cells.get("fn"), cells.get("kwargs", {})


def layer_name(module):
    if type(module).__name__ == "FunctionalModule":
        fn, _ = functional_kwargs(module)
        return "Upsample" if fn is F.interpolate else None
    name = type(module).__name__
    return name if name in LAYERS else None


def twin(module):
    """minidae's layer with the torch module's settings; Unsupported names what it cannot take."""
    t = torch.nn
    if type(module).__name__ == "FunctionalModule":
        _, kwargs = functional_kwargs(module)
        if kwargs.get("mode") not in ("nearest", "bilinear"):
            raise Unsupported(f"unsupported: interpolation mode {kwargs.get('mode')!r}")
        if kwargs.get("antialias"):
            raise Unsupported("unsupported: antialias")
        return nn.Upsample(size=kwargs.get("size"), scale_factor=kwargs.get("scale_factor"), mode=kwargs["mode"],
                           align_corners=kwargs.get("align_corners"),
                           recompute_scale_factor=kwargs.get("recompute_scale_factor"))
    if isinstance(module, t.Conv2d):
        return nn.Conv2d(module.in_channels, module.out_channels, module.kernel_size, module.stride, module.padding,
                         module.dilation, module.groups, module.bias is not None, module.padding_mode)
    if isinstance(module, t.ConvTranspose2d):
        return nn.ConvTranspose2d(module.in_channels, module.out_channels, module.kernel_size, module.stride,
                                  module.padding, module.output_padding, module.groups, module.bias is not None,
                                  module.dilation, module.padding_mode)
    if isinstance(module, t.MaxPool2d):
        return nn.MaxPool2d(module.kernel_size, module.stride, module.padding, module.dilation,
                            module.return_indices, module.ceil_mode)
    if isinstance(module, t.AvgPool2d):
        return nn.AvgPool2d(module.kernel_size, module.stride, module.padding, module.ceil_mode,
                            module.count_include_pad, module.divisor_override)
    if isinstance(module, t.Upsample):
        if module.mode not in ("nearest", "bilinear"):
            raise Unsupported(f"unsupported: interpolation mode {module.mode!r}")
        return nn.Upsample(module.size, module.scale_factor, module.mode, module.align_corners,
                           module.recompute_scale_factor)
    if isinstance(module, t.Linear):
        return nn.Linear(module.in_features, module.out_features, module.bias is not None)
    if isinstance(module, t.LeakyReLU):
        return nn.LeakyReLU(module.negative_slope)
    if isinstance(module, (t.ReLU, t.Sigmoid, t.Tanh)):
        return getattr(nn, type(module).__name__)()
    if isinstance(module, t.Flatten):
        return nn.Flatten(module.start_dim, module.end_dim)
    if isinstance(module, t.Unflatten):
        if not all(isinstance(s, int) for s in module.unflattened_size):
            raise Unsupported("unsupported: Unflatten with named dimensions")
        return nn.Unflatten(module.dim, tuple(module.unflattened_size))
    if isinstance(module, (t.MSELoss, t.L1Loss)):
        return getattr(nn, type(module).__name__)(reduction=module.reduction)
    if isinstance(module, t.BCELoss):
        weight = None if module.weight is None else module.weight.detach().double().numpy()
        return nn.BCELoss(weight=weight, reduction=module.reduction)
    if isinstance(module, t.BCEWithLogitsLoss):
        weight = None if module.weight is None else module.weight.detach().double().numpy()
        pos = None if module.pos_weight is None else module.pos_weight.detach().double().numpy()
        return nn.BCEWithLogitsLoss(weight=weight, reduction=module.reduction, pos_weight=pos)
    raise Unsupported(f"unsupported: {type(module).__name__}")


def double(value):
    return value.detach().double() if isinstance(value, torch.Tensor) else value


def dict_cases():
    """(id, layer, build) for every case of common_nn's lists that belongs to a layer minidae has."""
    cases = []
    torch.manual_seed(0)
    tests = [(t, False) for t in common_nn.module_tests + common_nn.get_new_module_tests()]
    tests += [(t, True) for t in common_nn.criterion_tests]
    for index, (test, is_criterion) in enumerate(tests):
        name = test.get("fullname") or test["module_name"] + ("_" + test["desc"] if "desc" in test else "")
        try:
            module = make_dict_module(test)
        except Exception:
            continue
        layer = layer_name(module)
        if layer is None:
            continue
        if layer in SPATIAL and "input_size" in test and len(test["input_size"]) not in (3, 4):
            continue  # 1-D or 3-D convolutions and interpolations
        if layer == "Upsample" and len(test.get("input_size", ())) != 4:
            continue
        criterion = is_criterion or "target_size" in test or "target_fn" in test
        cases.append((f"common_nn-{name}", layer, functools.partial(build_dict_case, test, criterion)))
    return cases


def make_dict_module(test):
    if "constructor" in test:
        return test["constructor"](*test.get("constructor_args", ()))
    return getattr(torch.nn, test["module_name"])(*test.get("constructor_args", ()))


def build_dict_case(test, criterion):
    torch.manual_seed(0)
    module = make_dict_module(test).double()
    x = test["input_fn"]() if "input_fn" in test else torch.randn(test["input_size"])
    inputs = [double(x)]
    if criterion:
        target = test["target_fn"]() if "target_fn" in test else torch.randn(test["target_size"])
        inputs.append(double(target))
    return module, inputs, {}


def db_cases():
    """(id, layer, build) for every ModuleInput of common_modules.module_db for a layer minidae has."""
    cases = []
    for info in common_modules.module_db:
        layer = info.module_cls.__name__
        if layer not in LAYERS:
            continue
        inputs = info.module_inputs_func(info, device="cpu", dtype=torch.float64, requires_grad=False, training=True)
        for index, module_input in enumerate(inputs):
            args = module_input.forward_input.args
            if layer in SPATIAL and args and getattr(args[0], "ndim", 4) not in (3, 4):
                continue
            cases.append((f"module_db-{layer}-{index}-{module_input.desc or 'default'}", layer,
                          functools.partial(build_db_case, info, module_input)))
    return cases


def build_db_case(info, module_input):
    torch.manual_seed(0)
    module = info.module_cls(*module_input.constructor_input.args, **module_input.constructor_input.kwargs).double()
    inputs = [double(a) for a in module_input.forward_input.args]
    return module, inputs, dict(module_input.forward_input.kwargs)


CASES = dict_cases() + db_cases()
COUNTS = collections.Counter(layer for _, layer, _ in CASES)


@pytest.mark.parametrize("layer, build", [(layer, build) for _, layer, build in CASES],
                         ids=[case_id for case_id, _, _ in CASES])
def test_pytorch_case(layer, build):
    backend.use("numpy")
    theirs, inputs, kwargs = build()
    if "input" in kwargs:  # module_db passes some inputs by keyword
        inputs = [double(kwargs.pop("input"))] + inputs
    REPLAY[layer]["cases"] += 1
    try:
        ours = twin(theirs)
    except Unsupported as exc:
        REPLAY[layer][str(exc)] += 1
        pytest.skip(str(exc))
    module = isinstance(ours, nn.Module)  # losses are plain callables with a backward
    if module:
        ours.to(np.float64)
        if ours.parameters():
            ours.load_state_dict({k: v.detach().numpy() for k, v in theirs.state_dict().items()})
        ours.zero_grad()
    x = inputs[0].clone().requires_grad_(True)
    out = theirs(x, *inputs[1:], **kwargs)
    y_torch, indices_torch = (out if isinstance(out, tuple) else (out, None))
    upstream = torch.randn(y_torch.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    y_torch.backward(upstream)

    rest = [r.numpy() for r in inputs[1:]]
    mine = ours(x.detach().numpy(), *rest, **kwargs)
    y, indices = (mine if isinstance(mine, tuple) else (mine, None))
    scalar_loss = isinstance(ours, nn.loss._Loss) and ours.reduction != "none"
    dx = ours.backward(float(upstream) if scalar_loss else upstream.numpy())
    if indices_torch is not None:
        np.testing.assert_array_equal(indices, indices_torch.numpy())
    errors = {"output": relative_error(np.asarray(y), y_torch.detach().numpy()),
              "input grad": relative_error(np.asarray(dx), x.grad.numpy())}
    if layer in ("Tanh", "Sigmoid"):
        # dy (1 - y^2) and dy y (1 - y) cancel where |x| is large: one ulp of difference between
        # NumPy's and PyTorch's tanh/sigmoid then shows as up to 1e-9 of a tiny derivative. Measure
        # the error on the scale of the upstream gradient instead (normwise, as everywhere else).
        scale = max(np.abs(x.grad.numpy()).max(initial=0), np.abs(upstream.numpy()).max(initial=0))
        errors["input grad"] = float(np.abs(np.asarray(dx) - x.grad.numpy()).max(initial=0) / scale)
    params = dict(theirs.named_parameters())
    for name, p in (ours.named_parameters() if module else ()):
        errors[name] = relative_error(p.grad, params[name].grad.numpy())
    bad = {k: v for k, v in errors.items() if not v <= 1e-10}
    assert not bad, f"{layer} differs from PyTorch: {bad}"
    REPLAY[layer]["passed"] += 1


def test_every_layer_has_pytorch_cases():
    """The replay reaches every layer the issue names (so a change in torch's lists cannot empty it)."""
    assert {"Conv2d", "ConvTranspose2d", "MaxPool2d", "AvgPool2d", "Upsample", "Linear", "ReLU", "LeakyReLU",
            "Sigmoid", "Tanh", "MSELoss", "L1Loss", "BCELoss", "BCEWithLogitsLoss"} <= set(COUNTS)
    assert sum(COUNTS.values()) >= 100
