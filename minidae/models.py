"""Ready-made networks: the specification's DAE and every system of the reference material.

Each maps (N, 1, 28, 28) images in [0, 1] to (N, 1, 28, 28); the fully connected ones flatten
and unflatten inside. Every builder takes a channel count, ``channels=3`` for colour pictures (N, 3, 28, 28):
the first layer then takes and the last gives that many channels, and nothing else changes (the spec network
has 572,675 parameters with 3, 578 more than with 1). ``MODELS`` maps each name to its builder; ``minidae models`` lists them
and ``minidae summary NAME`` prints the per-layer table that each docstring shows. Where a
reference leaves something open, the docstring says what minidae chose (docs/results.md too).
"""
import hashlib
import importlib
import importlib.util
import math
import os
import shlex
import sys
from dataclasses import dataclass

from collections import Counter, OrderedDict

import numpy

from . import nn
from .nn.module import evaluating

__all__ = ["Chain", "ConvDAE", "conv_dae", "fc_dae", "dense_ae", "fc_ae", "conv_ae_pool", "conv_denoiser", "MODELS",
           "build", "Factory", "import_factory", "load_factory", "for_checkpoint", "check_spec",
           "is_factory_spec", "resolve_spec", "parameter_count", "summary", "format_summary"]


class Chain(nn.Sequential):
    """A Sequential of layers for (N, C, 28, 28) images whose first ``code_after`` layers are the encoder
    (``channels`` = C: 1 for grayscale, 3 for colour).

    ``layers`` are (name, module) pairs, or modules: a layer with parameters is named as the reference's PyTorch
    code names it (conv1, fc1, ...), so that state_dict keys read alike; the others get their class's name and
    place (relu1, relu2, ..., flatten, sigmoid). A module may appear several times (one MaxPool2d for every
    pooling): its later places are named pool_2, pool_3. Every layer is a registered sub-module, so ``eval()``,
    ``to()`` and ``apply()`` reach all of them, Dropout included. ``encode(x)`` is the output of the encoder's
    last layer (the code, the bottleneck) and ``decode(z)`` runs the rest; both are calls of the model, so
    ``model.backward`` goes back through what they ran. ``model.layers`` lists the layers in order.
    """

    code_after = None  # layers in the encoder; each model sets it

    def __init__(self, layers, code_after, channels=1):
        super().__init__(_named_layers(layers))
        self.code_after, self.channels = code_after, channels

    @property
    def layers(self):
        """The layers in the order the forward runs them (a shared one at each of its places)."""
        return list(self._modules.values())

    def forward(self, ctx, x, part=None):
        """(N, C, 28, 28) images through every layer in order; ``part="encoder"`` runs the first ``code_after``
        layers only, ``part="decoder"`` the rest (from a code)."""
        layers = self.layers
        if part == "decoder":
            layers = layers[self.code_after:]
        else:
            self._check_images(x)
            layers = layers[:self.code_after] if part == "encoder" else layers
        for layer in layers:
            x = layer(x)
        return x

    def encode(self, x):
        """The code of images x (N, C, 28, 28): the output of the encoder's last layer (``code_after``)."""
        return self(x, part="encoder")

    def decode(self, z):
        """Images (N, C, 28, 28) from codes z (as :meth:`encode` gives them): the decoder's layers."""
        return self(z, part="decoder")

    def _check_images(self, x):
        expected = (self.channels, 28, 28)
        if getattr(x, "ndim", 0) != 4 or tuple(x.shape[1:]) != expected:
            kind = "grayscale" if self.channels == 1 else f"{self.channels}-channel"
            raise ValueError(f"{type(self).__name__}: expected images of shape (N, {self.channels}, 28, 28), got "
                             f"{tuple(getattr(x, 'shape', ()))}; the network is built for 28 x 28 {kind} images: "
                             f"resize yours first (as `minidae denoise` does) and add the batch and channel axes"
                             + ("; build it with channels=3 for colour images" if self.channels == 1 and
                                getattr(x, "ndim", 0) == 4 and x.shape[1] == 3 else ""))


def _named_layers(layers):
    """Chain's layers as an OrderedDict: (name, layer) pairs keep their name, a bare layer gets its class's
    (numbered where the class comes several times: relu1, relu2), and a layer's later places get _2, _3."""
    unnamed = Counter(type(item).__name__.lower() for item in layers if not isinstance(item, tuple))
    named, numbers = OrderedDict(), Counter()
    for item in layers:
        name, layer = item if isinstance(item, tuple) else (type(item).__name__.lower(), item)
        if not isinstance(item, tuple) and unnamed[name] > 1:
            numbers[name] += 1
            name = f"{name}{numbers[name]}"
        place, count = name, 1
        while place in named:
            count += 1
            place = f"{name}_{count}"
        named[place] = layer
    return named


class ConvDAE(Chain):
    """The specification's convolutional denoising autoencoder (docs/spec.md). 572,097 parameters; with
    ``channels=3`` (colour: conv1 Conv2d(3, 16, ...), conv6 ConvTranspose2d(16, 3, ...)) 572,675.

    ==========  ===================================================  ==================
    layer       definition                                           output shape
    ==========  ===================================================  ==================
    conv1+ReLU  Conv2d(1, 16, 3, stride=2, padding=2)                (N, 16, 15, 15)
    conv2+ReLU  Conv2d(16, 32, 3, stride=2, padding=1)               (N, 32, 8, 8)
    conv3+ReLU  Conv2d(32, 64, 3, stride=2, padding=1)               (N, 64, 4, 4)
    flatten     Flatten()                                            (N, 1024)
    l1          Linear(1024, 256)                                    (N, 256)
    l2          Linear(256, 1024)                                    (N, 1024)
    unflatten   Unflatten((64, 4, 4))                                (N, 64, 4, 4)
    conv4+ReLU  ConvTranspose2d(64, 32, 3, stride=3, padding=2)      (N, 32, 8, 8)
    conv5+ReLU  ConvTranspose2d(32, 16, 3, stride=3, padding=4)      (N, 16, 16, 16)
    conv6+Sigm  ConvTranspose2d(16, 1, 3, stride=2, padding=3,       (N, 1, 28, 28)
                output_padding=1)
    ==========  ===================================================  ==================

    Note: the specification's table gives conv1 an output of 16 x 16, but the convolution
    size rule gives floor((28 + 2*2 - 3) / 2) + 1 = 15, which is what PyTorch computes and
    what this network does; conv2 maps 15 x 15 to 8 x 8 all the same, so every later shape
    matches the table. l1 and l2 have no activation (a linear bottleneck of 256).
    """

    def __init__(self, channels=1):
        super().__init__([("conv1", nn.Conv2d(channels, 16, 3, stride=2, padding=2)), nn.ReLU(),
                          ("conv2", nn.Conv2d(16, 32, 3, stride=2, padding=1)), nn.ReLU(),
                          ("conv3", nn.Conv2d(32, 64, 3, stride=2, padding=1)), nn.ReLU(), nn.Flatten(),
                          ("l1", nn.Linear(1024, 256)), ("l2", nn.Linear(256, 1024)), nn.Unflatten((64, 4, 4)),
                          ("conv4", nn.ConvTranspose2d(64, 32, 3, stride=3, padding=2)), nn.ReLU(),
                          ("conv5", nn.ConvTranspose2d(32, 16, 3, stride=3, padding=4)), nn.ReLU(),
                          ("conv6", nn.ConvTranspose2d(16, channels, 3, stride=2, padding=3, output_padding=1)),
                          nn.Sigmoid()],
                         code_after=8, channels=channels)  # through l1: the 256 numbers of the linear bottleneck


def conv_dae(channels=1):
    """A freshly initialised :class:`ConvDAE` for images of ``channels`` channels (PyTorch's default init, from
    ``backend.seed``)."""
    return ConvDAE(channels)


class _Dense(Chain):
    """A fully connected autoencoder: Flatten, Linear layers with ReLU between, Sigmoid, Unflatten. ``sizes``
    start and end with 784, the pixels of one channel: with ``channels`` C, the first and last layers take and
    give C x 784 numbers."""

    def __init__(self, names, sizes, channels=1):
        sizes = [sizes[0] * channels, *sizes[1:-1], sizes[-1] * channels]
        layers = [nn.Flatten()]
        for index, (name, (n_in, n_out)) in enumerate(zip(names, zip(sizes, sizes[1:]))):
            layers += [(name, nn.Linear(n_in, n_out)), nn.ReLU() if index < len(names) - 1 else nn.Sigmoid()]
        super().__init__(layers + [nn.Unflatten((channels, 28, 28))], channels=channels,
                         code_after=1 + 2 * (len(names) // 2))  # through the middle layer and its ReLU


def fc_dae(channels=1):
    """Fully connected DAE of references/fc_dae_article.txt (PyTorch): 784-512-256-128-256-512-784.

    ======  =================  ============  ==========
    layer   definition         output shape  parameters
    ======  =================  ============  ==========
    fc1     Linear(784, 512)   (N, 512)      401,920
    fc2     Linear(512, 256)   (N, 256)      131,328
    fc3     Linear(256, 128)   (N, 128)      32,896
    fc4     Linear(128, 256)   (N, 256)      33,024
    fc5     Linear(256, 512)   (N, 512)      131,584
    fc6     Linear(512, 784)   (N, 784)      402,192
    ======  =================  ============  ==========

    ReLU after every layer but the last, Sigmoid out; 1,132,944 parameters; PyTorch's default init.
    Recipe (preset ``fc_dae``): input = clean + N(0, 1) noise, not clipped; MSE against the clean
    image; Adam lr 1e-2; batch 128; 10 epochs.
    """
    return _Dense(["fc1", "fc2", "fc3", "fc4", "fc5", "fc6"], [784, 512, 256, 128, 256, 512, 784], channels)


def dense_ae(channels=1):
    """Dense AE of references/dense_ae_article.txt (Keras): 784-128-64-32-64-128-784, He-normal init.

    ======  =================  ============  ==========
    layer   definition         output shape  parameters
    ======  =================  ============  ==========
    fc1     Linear(784, 128)   (N, 128)      100,480
    fc2     Linear(128, 64)    (N, 64)       8,256
    fc3     Linear(64, 32)     (N, 32)       2,080
    fc4     Linear(32, 64)     (N, 64)       2,112
    fc5     Linear(64, 128)    (N, 128)      8,320
    fc6     Linear(128, 784)   (N, 784)      101,136
    ======  =================  ============  ==========

    ReLU after every layer but the last, Sigmoid out; 222,384 parameters. Weights He-normal,
    N(0, 2 / fan_in) (the article's fix for a sigmoid that saturated into NaN under plain normal
    init; Keras's HeNormal also truncates at two standard deviations, minidae does not), biases
    zero as in Keras. The article names neither the loss nor the noise nor the batch size: minidae
    chooses MSE, the specification's Gaussian noise (std 0.5, clipped) and Keras's default batch of
    32, with Adam lr 1e-3 for 200 epochs (preset ``dense_ae``).
    """
    model = _Dense(["fc1", "fc2", "fc3", "fc4", "fc5", "fc6"], [784, 128, 64, 32, 64, 128, 784], channels)
    for _, layer in model.named_modules():
        if isinstance(layer, nn.Linear):
            nn.init.kaiming_normal_(layer.weight, mode="fan_in", nonlinearity="relu")
            layer.bias.data = layer.bias.data * 0
    return model


def fc_ae(channels=1):
    """FC autoencoder of references/fc_ae_and_conv_ae_pool_report.txt (part 1): 784-256-128-256-784.

    ==========  =================  ============  ==========
    layer       definition         output shape  parameters
    ==========  =================  ============  ==========
    fcEncoder1  Linear(784, 256)   (N, 256)      200,960
    fcEncoder2  Linear(256, 128)   (N, 128)      32,896
    fcDecoder1  Linear(128, 256)   (N, 256)      33,024
    fcDecoder2  Linear(256, 784)   (N, 784)      201,488
    ==========  =================  ============  ==========

    ReLU after every layer but the last, Sigmoid out: exactly 468,368 parameters (encoder 233,856,
    decoder 234,512, as the report counts). Recipe (preset ``fc_ae``): a plain autoencoder (no
    noise), MSE, SGD lr 1.0, batch 10, 10 epochs.
    """
    return _Dense(["fcEncoder1", "fcEncoder2", "fcDecoder1", "fcDecoder2"], [784, 256, 128, 256, 784], channels)


class ConvAEPool(Chain):
    """Conv autoencoder with max-pooling and upsampling, references/fc_ae_and_conv_ae_pool_report.txt (part 2).

    ==============  ===============================  ==============  ==========
    layer           definition                       output shape    parameters
    ==============  ===============================  ==============  ==========
    conv1+ReLU      Conv2d(1, 32, 3, padding=1)      (N, 32, 28, 28) 320
    pool            MaxPool2d(2)                     (N, 32, 14, 14)
    conv2+ReLU      Conv2d(32, 64, 3, padding=1)     (N, 64, 14, 14) 18,496
    pool            MaxPool2d(2)                     (N, 64, 7, 7)
    conv3+ReLU      Conv2d(64, 64, 3, padding=1)     (N, 64, 7, 7)   36,928
    up              Upsample(scale_factor=2)         (N, 64, 14, 14)
    conv4+ReLU      Conv2d(64, 32, 3, padding=1)     (N, 32, 14, 14) 18,464
    up              Upsample(scale_factor=2)         (N, 32, 28, 28)
    conv5+Sigmoid   Conv2d(32, 1, 3, padding=1)      (N, 1, 28, 28)  289
    ==============  ===============================  ==============  ==========

    Exactly 74,497 parameters (encoder conv1-conv2 18,816, decoder conv3-conv5 55,681, as the
    report counts). The report's Upsample has no mode: nearest, PyTorch's default. Recipe (preset
    ``conv_ae_pool``): no noise, MSE, SGD lr 1.0, batch 10, 10 epochs.
    """

    def __init__(self, channels=1):
        pool, up = ("pool", nn.MaxPool2d(2)), ("up", nn.Upsample(scale_factor=2))
        super().__init__([("conv1", nn.Conv2d(channels, 32, 3, padding=1)), nn.ReLU(), pool,
                          ("conv2", nn.Conv2d(32, 64, 3, padding=1)), nn.ReLU(), pool,
                          ("conv3", nn.Conv2d(64, 64, 3, padding=1)), nn.ReLU(), up,
                          ("conv4", nn.Conv2d(64, 32, 3, padding=1)), nn.ReLU(), up,
                          ("conv5", nn.Conv2d(32, channels, 3, padding=1)), nn.Sigmoid()],
                         code_after=6, channels=channels)  # through the second pooling: (N, 64, 7, 7)


def conv_ae_pool(channels=1):
    """A freshly initialised :class:`ConvAEPool` for images of ``channels`` channels."""
    return ConvAEPool(channels)


class ConvDenoiser(Chain):
    """The conv denoiser of references/conv_denoiser_notes.md (Udacity's ConvDenoiser). 9,585 parameters.

    ==============  ====================================  ==============  ==========
    layer           definition                            output shape    parameters
    ==============  ====================================  ==============  ==========
    conv1+ReLU      Conv2d(1, 32, 3, padding=1)           (N, 32, 28, 28) 320
    pool            MaxPool2d(2, 2)                       (N, 32, 14, 14)
    conv2+ReLU      Conv2d(32, 16, 3, padding=1)          (N, 16, 14, 14) 4,624
    pool            MaxPool2d(2, 2)                       (N, 16, 7, 7)
    conv3+ReLU      Conv2d(16, 8, 3, padding=1)           (N, 8, 7, 7)    1,160
    pool            MaxPool2d(2, 2)                       (N, 8, 3, 3)
    t_conv1+ReLU    ConvTranspose2d(8, 8, 3, stride=2)    (N, 8, 7, 7)    584
    t_conv2+ReLU    ConvTranspose2d(8, 16, 2, stride=2)   (N, 16, 14, 14) 528
    t_conv3+ReLU    ConvTranspose2d(16, 32, 2, stride=2)  (N, 32, 28, 28) 2,080
    conv_out+Sigm   Conv2d(32, 1, 3, padding=1)           (N, 1, 28, 28)  289
    ==============  ====================================  ==============  ==========

    One MaxPool2d object serves all three poolings, as in the reference. Recipe (preset
    ``conv_denoiser``): input = clip(clean + 0.5 N(0, 1), 0, 1), MSE, Adam lr 1e-3, batch 20, 20
    epochs. The reference does not shuffle its training batches; minidae's pipeline does.
    """

    def __init__(self, channels=1):
        pool = ("pool", nn.MaxPool2d(2, 2))
        super().__init__([("conv1", nn.Conv2d(channels, 32, 3, padding=1)), nn.ReLU(), pool,
                          ("conv2", nn.Conv2d(32, 16, 3, padding=1)), nn.ReLU(), pool,
                          ("conv3", nn.Conv2d(16, 8, 3, padding=1)), nn.ReLU(), pool,
                          ("t_conv1", nn.ConvTranspose2d(8, 8, 3, stride=2)), nn.ReLU(),
                          ("t_conv2", nn.ConvTranspose2d(8, 16, 2, stride=2)), nn.ReLU(),
                          ("t_conv3", nn.ConvTranspose2d(16, 32, 2, stride=2)), nn.ReLU(),
                          ("conv_out", nn.Conv2d(32, channels, 3, padding=1)), nn.Sigmoid()],
                         code_after=9, channels=channels)  # through the third pooling: (N, 8, 3, 3)


def conv_denoiser(channels=1):
    """A freshly initialised :class:`ConvDenoiser` for images of ``channels`` channels."""
    return ConvDenoiser(channels)


MODELS = {"conv_dae": conv_dae, "fc_dae": fc_dae, "dense_ae": dense_ae, "fc_ae": fc_ae, "conv_ae_pool": conv_ae_pool,
          "conv_denoiser": conv_denoiser}


def is_factory_spec(name):
    """True for a model given as ``FILE.py:FACTORY`` or ``package.module:factory`` rather than by name."""
    return isinstance(name, str) and ":" in name and name not in MODELS


def resolve_spec(name):
    """``name`` with a factory file's path made absolute (what a checkpoint records, so that eval, denoise,
    export and --resume find the file from any directory); a preset name as it is."""
    if not is_factory_spec(name):
        return name
    where, _, factory = name.rpartition(":")
    return f"{os.path.abspath(where)}:{factory}" if where.endswith(".py") else name


def check_spec(spec):
    """ValueError, in one line, where ``spec`` is neither a preset's name nor of the form ``FILE.py:FACTORY`` (of a
    file that exists) or ``package.module:factory``. Imports nothing."""
    if not is_factory_spec(spec):
        if spec not in MODELS:
            raise ValueError(f"unknown model {spec!r}: choose from {', '.join(MODELS)}, or give FILE.py:FACTORY or "
                             f"package.module:factory (a function returning a minidae Module)")
        return
    where, _, attribute = spec.rpartition(":")
    if not where or not attribute.isidentifier():
        raise ValueError(f"--model {spec!r}: expected a preset name ({', '.join(MODELS)}) or FILE.py:FACTORY or "
                         f"package.module:factory")
    if where.endswith(".py") and not os.path.isfile(where):
        raise ValueError(f"--model {spec}: no such file {where}")


@dataclass(frozen=True)
class Factory:
    """A model factory of one's own, imported (once): ``spec`` as a checkpoint records it (a file's path made
    absolute), ``function`` the factory, ``path`` the file its code came from and ``sha256`` the SHA-256 of that
    file's bytes (None for a module without a file)."""
    spec: str
    function: object
    path: str = None
    sha256: str = None


def _file_sha256(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def import_factory(spec):
    """Import the factory ``spec`` names, once: ``FILE.py:FACTORY`` (the file's bytes are read once, hashed and
    run as a module of its own) or ``package.module:factory`` (an importable module; its file is hashed). Returns
    a :class:`Factory`; ValueError, in one line, where it cannot be found or its import fails.

    This runs the file's code: call it only for a factory the user named (never for one a checkpoint names)."""
    check_spec(spec)
    where, _, attribute = spec.rpartition(":")
    try:
        if where.endswith(".py"):
            path = os.path.abspath(where)
            with open(path, "rb") as f:
                source = f.read()
            digest = hashlib.sha256(source).hexdigest()
            module_spec = importlib.util.spec_from_file_location(f"minidae_user_model_{digest[:16]}", path)
            module = importlib.util.module_from_spec(module_spec)
            exec(compile(source, path, "exec"), module.__dict__)  # the very bytes that were hashed
            spec = f"{path}:{attribute}"
        else:
            module = importlib.import_module(where)
            path = getattr(module, "__file__", None)
            digest = _file_sha256(path) if path and os.path.isfile(path) else None
    except Exception as exc:  # an error in the user's file, or a module that is not there
        raise ValueError(f"--model {spec}: importing {where} failed ({type(exc).__name__}: {exc})") from None
    function = getattr(module, attribute, None)
    if not callable(function):
        defined = [n for n, v in vars(module).items() if callable(v) and not n.startswith("_")]
        raise ValueError(f"--model {spec}: {where} defines no function {attribute!r} (it defines: "
                         f"{', '.join(defined) or 'none'})")
    return Factory(spec, function, path, digest)


def load_factory(spec):
    """The function ``spec`` names (:func:`import_factory`, which runs its file)."""
    return import_factory(spec).function


def for_checkpoint(config, path, given=None):
    """What rebuilds the model of the checkpoint at ``path`` (``config`` is its config): the preset's name, or the
    :class:`Factory` of ``given``, the factory the user named on the command line (``--model``).

    A checkpoint's record of a factory never makes minidae import anything: without ``given``, a ValueError in
    one line names the recorded factory and the flag that would run it. Where the checkpoint records the SHA-256
    of the factory's file and the named file differs, one line on stderr says so and the named file is used."""
    recorded = config.get("model", "conv_dae")  # checkpoints from before the zoo hold the spec network
    if not is_factory_spec(recorded):
        if recorded not in MODELS:
            raise ValueError(f"{path}: it holds an unknown model {recorded!r} (this minidae knows "
                             f"{', '.join(MODELS)})")
        return recorded
    if given is None or not is_factory_spec(given):
        raise ValueError(f"{path}: its model is built by {recorded}, code of one's own, which minidae runs only "
                         f"when you name it: if you trust that file, add --model {shlex.quote(recorded)}")
    factory = import_factory(given)
    trained = config.get("model_sha256")
    if trained is None:
        print(f"minidae: {path} records no SHA-256 of its factory's file (a checkpoint of an older minidae): "
              f"whether {factory.path or given} is the code it was trained with cannot be checked", file=sys.stderr)
    elif factory.sha256 != trained:
        print(f"minidae: --model {given}: {factory.path} differs from the file {path} was trained with (SHA-256 "
              f"{trained[:12]}... then, {str(factory.sha256)[:12]}... now); going on with the file as it is now",
              file=sys.stderr)
    return factory


def build(name, channels=1):
    """A freshly initialised model: a preset by name (one of MODELS) for images of ``channels`` channels, or what
    a factory of one's own returns (a :class:`Factory`, or ``FILE.py:FACTORY`` or ``package.module:factory``,
    imported here: a function taking no argument and returning a minidae Module, built for the channels it
    takes; ``channels`` is not passed to it)."""
    if isinstance(name, Factory) or is_factory_spec(name):
        factory = name if isinstance(name, Factory) else import_factory(name)
        try:
            model = factory.function()
        except Exception as exc:
            raise ValueError(f"--model {factory.spec}: the factory raised {type(exc).__name__}: {exc}") from None
        if not isinstance(model, nn.Module):
            raise ValueError(f"--model {factory.spec}: the factory returned {type(model).__name__}, not a minidae "
                             f"Module")
        return model
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}: choose from {', '.join(MODELS)}, or give FILE.py:FACTORY")
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 (grayscale) or 3 (RGB colour), got {channels!r}")
    return MODELS[name](channels) if channels != 1 else MODELS[name]()


def parameter_count(model):
    """The number of trainable numbers."""
    return sum(math.prod(p.data.shape) for p in model.parameters())


def multiply_adds(layer, x, y):
    """Forward multiply-adds of one layer call, as its GEMMs count them (0 for layers without weights)."""
    if isinstance(layer, nn.Conv2d):  # every output element: C/G * KH * KW products
        return y.size * (layer.in_channels // layer.groups) * math.prod(layer.kernel_size)
    if isinstance(layer, nn.ConvTranspose2d):  # every input element scatters O/G * KH * KW products
        return x.size * (layer.out_channels // layer.groups) * math.prod(layer.kernel_size)
    if isinstance(layer, nn.Linear):
        return (x.size // layer.in_features) * layer.in_features * layer.out_features
    return 0


def summary(model, batch_size=1, input_shape=(1, 28, 28)):
    """[(layer name, output shape, parameters, multiply-adds)] of a model (or its name or factory) at
    ``batch_size``, for inputs of ``input_shape`` (C, H, W), as torchinfo's summary.

    A Chain's layers are listed in their order, one row per call; any other model's layers (its modules
    without sub-modules) in the order its forward calls them, seen through forward hooks. A layer registered
    as an attribute is named by it (conv1, pool, 0); others by their class (ReLU). Computed by running zeros
    through the model in eval mode (running statistics and dropout untouched).
    """
    model = build(model) if isinstance(model, str) else model
    names = {id(module): name for name, module in model.named_modules() if name}
    x = numpy.zeros((batch_size, *input_shape), dtype=numpy.float32)
    rows = []

    def row(layer, x, y):
        y = y[0] if isinstance(y, tuple) else y
        params = sum(math.prod(p.data.shape) for p in layer.parameters())
        name = names.get(id(layer))
        name = type(layer).__name__ if name is None else name if not name.split(".")[-1].isdigit() else \
            f"{name} {type(layer).__name__}"
        rows.append((name, tuple(y.shape), params, multiply_adds(layer, x, y)))
    with evaluating(model):
        if hasattr(model, "layers"):
            for layer in model.layers:
                y = layer(x)
                row(layer, x, y)
                x = y
        else:
            leaves = [m for m in model.modules() if not m.children()] or [model]
            handles = [m.register_forward_hook(lambda m, inputs, output: row(m, inputs[0], output)) for m in leaves]
            try:
                model(x)
            finally:
                for handle in handles:
                    handle.remove()
    return rows


def format_summary(name, batch_size=1, input_shape=(1, 28, 28), model=None):
    """The table ``minidae summary`` prints for a preset name, a factory, or a given ``model`` (named ``name``)."""
    rows = summary(name if model is None else model, batch_size, input_shape)
    width = max([12] + [len(r[0]) + 2 for r in rows])
    lines = [f"{name} (batch {batch_size}, input {tuple(input_shape)})",
             f"{'layer':<{width}}{'output shape':<22}{'parameters':>12}{'multiply-adds':>16}"]
    for layer, shape, params, macs in rows:
        lines.append(f"{layer:<{width}}{str(shape):<22}{params:>12,}{macs:>16,}")
    lines.append(f"{'total':<{width}}{'':<22}{sum(r[2] for r in rows):>12,}{sum(r[3] for r in rows):>16,}")
    return "\n".join(lines)
