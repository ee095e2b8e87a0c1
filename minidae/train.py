"""Training and evaluation of the denoising autoencoder: the work behind the example and the CLI.

``train(TrainConfig(...))`` runs the spec's recipe (docs/spec.md: MSE against the clean image, Adam with
L2 weight decay) on noisy MNIST, shows a progress bar per epoch and a summary line after
it, evaluates on the test set, and leaves in ``out``: loss_vs_iters.png, denoising.png,
metrics.json (strict JSON) and checkpoint.npz (rewritten after every epoch), each written atomically.
A new run never replaces another's files: an ``out`` holding a run is refused unless ``force``.

Interruptions lose nothing: Ctrl-C, SIGTERM or SIGHUP (the terminal or the ssh session closed; ignored under
nohup) finishes the current step, saves a checkpoint that
records the position inside the epoch, and exits; ``--resume`` replays the epoch's
shuffling and noise up to that position, so the resumed run ends with the same weights as
an uninterrupted one. A NaN or infinite loss, test loss or weight stops the run, naming the
iteration, and leaves the last good checkpoint in place: non-finite weights are never saved.
"""
import contextlib
import dataclasses
import hashlib
import itertools
import math
import os
import platform
import signal
import sys
import tempfile
import threading
import time
import warnings
from dataclasses import dataclass

import numpy

from . import __version__, backend, metrics, models, nn, optim
from .checkpoint import (CheckpointError, NonFiniteState, check_optimizer_state, load_checkpoint, load_weights,
                         save_checkpoint)
from .data import NoisyBatches, load_fashion_mnist, load_images, load_mnist
from .data.datasets import CLASS_NAMES
from .diagnostics import Diagnostics, plot_layers
from .data.loader import epoch_seed
from .data.images import unit_images
from .data.noise import apply_noise, check_noise
from .files import FolderInUse, FolderLock, atomic_path, remove_temporaries, write_json
from .nn.module import evaluating
from .presets import PRESETS

__all__ = ["TrainConfig", "TrainingDiverged", "Interrupted", "train", "evaluate", "load_split", "denoise_examples",
           "example_index"]

LOADERS = {"mnist": load_mnist, "fashion-mnist": load_fashion_mnist}
EVAL_STREAM = 1_000_000  # the noise stream of evaluation, apart from every training epoch's
CHECK_EVERY = 25  # iterations between host reads of the loss (progress bar, NaN check)


@dataclass
class TrainConfig:
    """The run's settings; the defaults are the specification's recipe (preset ``conv_dae``).

    ``TrainConfig.from_preset(name, **overrides)`` starts from another row of minidae.presets.PRESETS.
    """
    backend: str = "numpy"
    epochs: int = 10
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 1e-5
    noise: str = "gaussian"
    noise_level: float = 0.5
    seed: int = 0
    model: str = "conv_dae"
    optimizer: str = "adam"
    momentum: float = 0.0
    loss: str = "mse"
    clip: bool = True
    preset: str = "conv_dae"
    train_samples: int = None
    test_samples: int = None
    dataset: str = "mnist"
    data_dir: str = None
    data: str = None  # images of one's own (a folder of pictures, a .npy/.npz or an IDX file) instead of the dataset
    test_data: str = None  # their test images; without it, a fraction of ``data`` is held out
    test_fraction: float = None  # the fraction of ``data`` held out for testing (0.1 unless given), fixed by the seed
    image_size: int = 28  # pictures are brought to image_size x image_size (minidae.data.images states the rule)
    channels: int = 1  # pictures of one's own made grayscale (1) or kept in colour (3, RGB); the model takes as many
    model_sha256: str = None  # the SHA-256 of a factory's file (recorded by train; checked by eval, --resume, ...)
    diagnostics: bool = True  # per-layer statistics every CHECK_EVERY iterations (metrics.json "layers", layers.png)
    out: str = None
    resume: str = None
    force: bool = False  # a new run may replace the run in ``out`` (its files go when it saves its first checkpoint)
    progress: bool = True
    cuda_graph: bool = True  # CuPy: replay the training step as a CUDA graph (minidae.speed.cuda.GraphedStep)

    @classmethod
    def from_preset(cls, name, **overrides):
        """The recipe of preset ``name`` with ``overrides`` (any TrainConfig field) on top."""
        if name not in PRESETS:
            raise ValueError(f"unknown preset {name!r}: choose from {', '.join(PRESETS)}")
        recipe = {k: v for k, v in PRESETS[name].items() if k != "source"}
        return cls(preset=name, **{**recipe, **overrides})

    def check(self):
        """Raise ValueError for settings that cannot work, before any data is loaded."""
        if not (self.model is None and self.resume):  # None: a resumed run's own model (a preset's, or refused)
            models.check_spec(self.model)  # imports nothing: a factory is imported once, by train()
        for name in ("data", "test_data"):
            path = getattr(self, name)
            if path is not None and not os.path.exists(path):
                raise ValueError(f"--{name.replace('_', '-')} {path}: no such file or folder")
        if self.test_data is not None and self.data is None:
            raise ValueError("--test-data needs --data (the training images of one's own)")
        if self.test_fraction is not None and (self.data is None or self.test_data is not None
                                               or not 0 < self.test_fraction < 1):
            raise ValueError(f"--test-fraction {self.test_fraction}: a fraction in (0, 1) of --data's images, held out "
                             f"when no --test-data is given")
        if not isinstance(self.image_size, int) or not 8 <= self.image_size <= 1024:
            raise ValueError(f"--image-size must be a whole number of pixels in 8..1024, got {self.image_size!r}")
        if self.image_size != 28 and self.data is None and not self.resume:  # (an older checkpoint may record one)
            raise ValueError(f"--image-size {self.image_size} needs --data (pictures of one's own): {self.dataset}'s "
                             f"images are 28 x 28")
        if self.channels not in (1, 3):
            raise ValueError(f"--channels must be 1 (grayscale) or 3 (RGB colour), got {self.channels!r}")
        if self.channels != 1 and self.data is None:
            raise ValueError(f"--channels {self.channels} needs --data (pictures of one's own): {self.dataset} is "
                             f"grayscale")
        if self.optimizer not in OPTIMIZERS or self.loss not in LOSSES:
            raise ValueError(f"optimizer must be one of {', '.join(OPTIMIZERS)} and loss one of {', '.join(LOSSES)}, "
                             f"got {self.optimizer!r} and {self.loss!r}")
        if not (math.isfinite(self.momentum) and 0 <= self.momentum < 1):
            raise ValueError(f"momentum must lie in [0, 1), got {self.momentum}")
        for name in ("epochs", "batch_size"):
            if name == "epochs" and self.epochs is None and self.resume:
                continue  # a resumed run keeps its checkpoint's epoch count
            if getattr(self, name) is None or getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"--seed must be a whole number >= 0, got {self.seed!r}")
        for name in ("train_samples", "test_samples"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if not (math.isfinite(self.lr) and self.lr > 0) or not (math.isfinite(self.weight_decay)
                                                                 and self.weight_decay >= 0):
            raise ValueError(f"lr must be a positive number and weight_decay a non-negative one, got lr={self.lr}, "
                             f"weight_decay={self.weight_decay}")
        check_noise(self.noise, self.noise_level)
        if self.dataset not in LOADERS:
            raise ValueError(f"unknown dataset {self.dataset!r}: choose from {', '.join(LOADERS)}")
        if self.resume is not None and not os.path.isfile(self.resume):
            raise ValueError(f"--resume: no checkpoint at {self.resume}")


# Settings a resumed run takes from its checkpoint: changing them would make it another run.
RECIPE = ("model", "optimizer", "momentum", "loss", "clip", "preset", "batch_size", "lr", "weight_decay", "noise",
          "noise_level", "seed", "train_samples", "test_samples", "dataset", "data", "test_data", "test_fraction",
          "image_size", "channels")
LOSSES = {"mse": nn.MSELoss, "bce": nn.BCELoss}
OPTIMIZERS = ("adam", "sgd")


def make_optimizer(config, params):
    """The recipe's optimiser: Adam (betas 0.9, 0.999, L2 weight decay) or SGD (momentum, weight decay)."""
    if config.optimizer == "adam":
        return optim.Adam(params, lr=config.lr, betas=(0.9, 0.999), weight_decay=config.weight_decay)
    return optim.SGD(params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)


def _check_optimizer_entries(optimizer):
    """ValueError naming the first parameter whose loaded state lacks an entry its optimiser's step reads ("step",
    and Adam's moments): a hand-edited checkpoint would otherwise fail at the first step of the resumed run."""
    needed = ("step", *getattr(optimizer, "buffer_names", ()))
    for index, p in enumerate(optimizer.params):
        entry = optimizer.state.get(p)
        missing = [key for key in needed if entry is not None and key not in entry]
        if missing:
            raise ValueError(f"the state of parameter {index} lacks {', '.join(missing)} (each parameter's state holds "
                           f"{', '.join(needed)})")


class OutOfMemory(MemoryError):
    """A MemoryError with what to do about it, ``hint``, which depends on where it struck (the data, the steps,
    the evaluation)."""

    def __init__(self, message, hint):
        super().__init__(message)
        self.hint = hint


@contextlib.contextmanager
def _memory_hint(hint):
    """Turn a MemoryError in the block into an OutOfMemory with ``hint`` (one raised deeper keeps its own)."""
    try:
        yield
    except OutOfMemory:
        raise
    except MemoryError as exc:
        raise OutOfMemory(str(exc) or "MemoryError", hint) from None


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite."""


def load_split(dataset, split, data_dir=None, samples=None, progress=True):
    """(images uint8 (N, 28, 28), labels) of a data set split, the first ``samples`` if given."""
    if dataset not in LOADERS:
        raise ValueError(f"unknown dataset {dataset!r}: choose from {', '.join(LOADERS)}")
    images, labels = LOADERS[dataset](split, root=data_dir, progress=progress)
    if samples is not None:
        if not 0 < samples <= len(images):
            raise ValueError(f"{split} samples must lie in 1..{len(images)}, got {samples}")
        images, labels = images[:samples], labels[:samples]
    return images, labels


def load_data(config, progress=True):
    """(training images, their labels, test images, their labels, {"train": ..., "test": ...} saying where they
    came from); labels are None where the data has none. The data set's splits, or ``config.data`` (and
    ``config.test_data``, or a held-out fraction chosen by the seed), each cut to ``train_samples`` /
    ``test_samples`` where given, read with ``config.channels`` channels. Where the data name their classes
    (MNIST's digits, Fashion-MNIST's garments, a folder's class sub-folders) the dict also holds ``classes``:
    {"train": names or None, "test": names or None}, label k being names[k]."""
    channels = getattr(config, "channels", 1)
    if config.data is None:
        train, train_labels = load_split(config.dataset, "train", config.data_dir, config.train_samples, progress)
        test, labels = load_split(config.dataset, "test", config.data_dir, config.test_samples, progress)
        name = {"mnist": "MNIST", "fashion-mnist": "Fashion-MNIST"}[config.dataset]
        names = list(CLASS_NAMES[config.dataset])
        return train, train_labels, test, labels, {"train": f"the {name} training set", "test": f"the {name} test set",
                                                   "classes": {"train": names, "test": names}}
    found = load_images(config.data, config.image_size, progress, channels=channels)
    if config.test_data is not None:
        train, test = found, load_images(config.test_data, config.image_size, progress, channels=channels)
    else:
        fraction = 0.1 if config.test_fraction is None else config.test_fraction
        count = max(1, round(len(found) * fraction))
        if count >= len(found):
            raise ValueError(f"--data {config.data}: too few images ({len(found)}) to hold out a fraction of "
                             f"{fraction:g} for testing; add images, or give --test-data")
        order = numpy.random.default_rng(config.seed).permutation(len(found))
        test = found.subset(order[:count], f"held out of them: test fraction {fraction:g}, seed {config.seed}")
        train = found.subset(order[count:], f"{found.source}, less {count} held out")
    parts = []
    for part, samples, kind in ((train, config.train_samples, "train"), (test, config.test_samples, "test")):
        if samples is not None and samples > len(part):  # as the data sets' splits (load_split)
            there = f"there is 1 {kind} image" if len(part) == 1 else f"there are {len(part)} {kind} images"
            raise ValueError(f"--{kind}-samples {samples}: {there} ({part.source}); give at most {len(part)}, or "
                             f"leave --{kind}-samples out")
        parts.append(part if samples is None else
                     part.subset(slice(0, samples), f"the first {samples}: {part.source}"))
    train, test = parts
    sources = {"train": train.source, "test": test.source, "colour": _colour_kept(train, channels)}
    if train.classes or test.classes:
        sources["classes"] = {"train": train.classes, "test": test.classes}
    return train.images, train.labels, test.images, test.labels, sources


def _colour_kept(found, channels):
    """What became of the images' colour, in words (metrics.json's data.colour)."""
    if not found.pictures:
        return f"arrays of {channels} channel{'s' * (channels > 1)}, as stored"
    return "pictures made grayscale" if channels == 1 else "pictures kept in colour (RGB)"


def colour_line(sources, channels):
    """The start of a run's first line: what became of the colour of one's own pictures and how to change it ("" for
    a public data set, which is grayscale, and for arrays, which are taken as they are)."""
    kept = sources.get("colour")
    if kept is None or not kept.startswith("pictures"):
        return ""  # a public set is grayscale; arrays are taken as they are (metrics.json's data.colour says so)
    if channels == 1:
        return f"{kept} (--channels 1, the default; --channels 3 keeps their colour); "
    return f"{kept} (--channels 3; --channels 1 makes them grayscale); "


def shared_images_line(config, train, test):
    """A warning line where test images (``config.test_data``) are training images too, byte for byte (the same
    folder or the same files): the test loss then measures memorisation; "" where none are."""
    seen = {hashlib.blake2b(image.tobytes(), digest_size=16).digest() for image in train}
    shared = sum(hashlib.blake2b(image.tobytes(), digest_size=16).digest() in seen for image in test)
    if not shared:
        return ""
    if shared == len(test):
        what = "its one image is a training image" if shared == 1 else f"its {shared} images are all training images"
    else:
        what = f"{shared} of its {len(test)} images " + ("is also a training image" if shared == 1 else
                                                         "are also training images")
    return (f"warning: --test-data {config.test_data}: {what} (--data {config.data}), so the test loss measures "
            f"memorisation, not the denoising of unseen pictures; give --test-data pictures the run does not train "
            f"on, or leave it out to hold out a fraction of --data")


def image_shape(config):
    """(H, W) of a run's images: the data set's 28 x 28, or ``image_size`` square for data of one's own (a
    TrainConfig, or a checkpoint's config as a dict)."""
    get = config.get if isinstance(config, dict) else lambda key, default=None: getattr(config, key, default)
    size = 28 if get("data") is None else get("image_size", 28)
    return (size, size)


def check_fits(model, image_shape, name, channels=1):
    """ValueError, in one line, unless ``model`` maps a batch of images of ``channels`` channels and
    ``image_shape`` (H, W) to one of the same shape, as a denoiser must: checked on two blank images before any
    training."""
    x = backend.xp.zeros((2, channels, *image_shape), dtype=model.parameters()[0].data.dtype if model.parameters()
                         else numpy.float32)
    kind = "" if channels == 1 else f" {channels}-channel (colour)"
    try:
        with evaluating(model):
            y = model(x)
    except Exception as exc:
        raise ValueError(f"the model {name} cannot take{kind} {image_shape[0]}x{image_shape[1]} images "
                         f"({type(exc).__name__}: {exc}); build it for that size"
                         + (" and channel count, or give --channels 1" if channels != 1 else ", or give --image-size")
                         ) from None
    if tuple(y.shape) != tuple(x.shape):
        raise ValueError(f"the model {name} maps images of shape {tuple(x.shape[1:])} to {tuple(y.shape[1:])}; a "
                         f"denoiser must give back the shape it takes (build it for {image_shape[0]}x"
                         f"{image_shape[1]} images of {channels} channel{'s' * (channels > 1)}, or give "
                         f"--image-size or --channels)")


def evaluate(model, images, noise, level, seed, batch_size=500, clip=True):
    """Mean MSE / PSNR / SSIM of noisy and denoised test images against clean ones, in eval mode.

    The noise comes from a fixed stream of ``seed``, so every evaluation sees the same inputs.
    """
    xp = backend.xp
    rng = xp.random.default_rng(epoch_seed(seed, EVAL_STREAM))
    images = xp.asarray(images)  # onto the device once, not once per batch
    totals = {}
    for start in range(0, len(images), batch_size):
        clean = unit_images(images[start:start + batch_size])
        noisy = apply_noise(noise, clean, level, rng=rng, clip=clip)
        with evaluating(model):  # eval mode, and records nothing for a backward
            denoised = model(noisy)
        for key, value in metrics.sums(noisy, denoised, clean).items():
            totals[key] = totals[key] + value if key in totals else value  # summed on the device
    return {key: float(value) / len(images) for key, value in totals.items()}  # one read back at the end


def example_index(images, labels, count=10):
    """The test images denoising.png shows: the first of each class, in class order (at most 20 classes); where
    there are fewer than ``count`` classes, the next of each class in turn until there are ``count`` (grouped
    by class); the first ``count`` where there are no labels."""
    if labels is None:
        return list(range(min(count, len(images))))
    labels = numpy.asarray(labels)
    members = [numpy.flatnonzero(labels == c) for c in numpy.unique(labels)][:20]
    taken = [1] * len(members)
    while sum(taken) < count and any(t < len(m) for t, m in zip(taken, members)):
        for k, chosen in enumerate(members):
            if sum(taken) < count and taken[k] < len(chosen):
                taken[k] += 1
    return [int(i) for chosen, t in zip(members, taken) for i in chosen[:t]]


def denoise_examples(model, images, labels, noise, level, seed, clip=True):
    """(noisy, denoised, clean) host arrays for the images :func:`example_index` chooses (eval mode): (N, H, W) for
    grayscale images, (N, C, H, W) for colour."""
    clean = unit_images(images[example_index(images, labels)])
    noisy = apply_noise(noise, clean, level, seed=seed, clip=clip)
    with evaluating(model):
        denoised = model(noisy)
    return tuple(backend.to_numpy(a)[:, 0] if a.shape[1] == 1 else backend.to_numpy(a)
                 for a in (noisy, denoised, clean))


HANGUP = getattr(signal, "SIGHUP", None)  # the terminal or the ssh session closed (Windows has none)


class Interrupted(KeyboardInterrupt):
    """Ctrl-C, SIGTERM or SIGHUP stopped a run; the message says what was saved and how to continue.

    ``exit_code`` is the shell's: 128 + the signal number (130 for Ctrl-C, 143 for SIGTERM, 129 for SIGHUP)."""

    def __init__(self, message, signum=signal.SIGINT):
        super().__init__(message)
        self.exit_code = 128 + int(signum)


class _Signals:
    """Ctrl-C (SIGINT), SIGTERM and SIGHUP during a run. While ``deferred`` (the training loop), the first one only
    sets ``pending``, checked between steps, so that a checkpoint can be written at a step boundary; a
    second one, or any outside the loop (data loading, the final plots), raises KeyboardInterrupt at once."""

    def __init__(self):
        self.deferred, self.pending, self.signum = False, None, signal.SIGINT

    def handler(self, signum, frame):
        """The signal handler."""
        self.signum = signum
        if self.deferred and self.pending is None:
            self.pending = signum
            return
        raise KeyboardInterrupt

    def stop(self, what):
        """An Interrupted exception for the last signal, its message ``what`` (where it struck, what was saved)."""
        how = {signal.SIGTERM: "stopped by SIGTERM",
               HANGUP: "stopped by SIGHUP (the terminal or session closed)"}.get(self.signum, "interrupted")
        return Interrupted(f"{how} {what}", self.signum)


@contextlib.contextmanager
def _signals():
    """A _Signals handling SIGINT, SIGTERM and SIGHUP for the duration (in the main thread; elsewhere none can
    arrive). A SIGHUP that is ignored (nohup) stays ignored."""
    state = _Signals()
    if threading.current_thread() is not threading.main_thread():
        yield state
        return
    handled = [signal.SIGINT, signal.SIGTERM]
    if HANGUP is not None and signal.getsignal(HANGUP) is not signal.SIG_IGN:
        handled.append(HANGUP)
    previous = {signum: signal.signal(signum, state.handler) for signum in handled}
    try:
        yield state
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


# The files a run writes into --out, and those `minidae eval` adds beside its checkpoint.
RUN_FILES = ("checkpoint.npz", "metrics.json", "loss_vs_iters.png", "denoising.png", "layers.png", "eval.json",
             "psnr_vs_noise.png")


def _make_dirs(path):
    """os.makedirs(path); returns the directories it created, outermost first."""
    created, head = [], os.path.abspath(path)
    while not os.path.lexists(head):
        created.insert(0, head)
        head = os.path.dirname(head)
    os.makedirs(path, exist_ok=True)
    return created


def _prepare_out(config):
    """A new run never replaces another run's files: a directory that holds one is refused unless
    ``force`` (then they stay until the new run writes its first checkpoint); the default name,
    runs/<timestamp>, gets a suffix (-2, -3, ...) where another run took it. Checks that the directory
    is writable, locks it (FolderLock: a folder another live run holds is refused, naming it) and removes the
    temporaries a killed process left there. Returns (directory, created, replaced, the lock)."""
    in_place = config.resume and os.path.dirname(os.path.abspath(config.resume))
    if config.out is not None and os.path.exists(config.out) and not os.path.isdir(config.out):
        raise ValueError(f"--out {config.out} is a file, not a directory; choose another --out")
    target = config.out or in_place or "runs"
    for flag, folder in (("--data", config.data), ("--test-data", config.test_data)):
        root = folder and os.path.isdir(folder) and os.path.realpath(folder)
        if root and os.path.commonpath([root, os.path.realpath(target)]) == root:
            shown = config.out or f"{os.path.abspath(target)}/ (the default)"
            raise ValueError(f"--out {shown} lies inside {flag} {folder}: the run's plots would become pictures of "
                             f"the next run on that folder; choose an --out outside it")
    try:
        if config.out is None and config.resume:
            out, created = in_place, []
        elif config.out is None:
            base = os.path.join("runs", time.strftime("%Y%m%d-%H%M%S"))
            created = _make_dirs("runs")
            for count in itertools.count(1):
                out = base if count == 1 else f"{base}-{count}"
                with contextlib.suppress(FileExistsError):
                    os.mkdir(out)  # atomic: two runs started in the same second get two directories
                    break
            created.append(os.path.abspath(out))
        else:
            out, created = config.out, _make_dirs(config.out)
    except OSError as exc:
        where = config.out or "runs"
        raise ValueError(f"--out {where}: cannot create the directory ({exc.strerror or exc}: {exc.filename}); "
                         f"choose another --out") from None
    try:
        handle, probe = tempfile.mkstemp(dir=out, prefix=f".checkpoint-{os.getpid()}-", suffix=".npz")
        os.close(handle)
        os.remove(probe)
        lock = FolderLock(out, "--out").acquire()  # held until train() ends, however it ends
    except FolderInUse:
        _remove_empty(created)
        raise
    except OSError as exc:
        _remove_empty(created)
        raise ValueError(f"--out {out}: cannot write there ({exc.strerror or exc}); choose a directory you can "
                         f"write to") from None
    previous = [name for name in RUN_FILES if os.path.lexists(os.path.join(out, name))]
    if os.path.abspath(out) == in_place:
        previous = []  # the run being resumed: its own files
    if previous and not config.force:
        lock.release()
        _remove_empty(created)
        raise ValueError(f"--out {out} already holds a run ({', '.join(previous)}); continue it with --resume "
                         f"{os.path.join(out, 'checkpoint.npz')}, replace it with --force, or choose another --out")
    remove_temporaries(out, RUN_FILES)  # those a killed process left; never another live process's
    return out, created, previous, lock


def _remove_empty(directories):
    """Remove the directories a failed run made, innermost first, where they are still empty."""
    for directory in reversed(directories):
        try:
            os.rmdir(directory)
        except OSError:
            return

def _versions():
    versions = {"minidae": __version__, "python": platform.python_version(), "numpy": numpy.__version__}
    if backend.name == "cupy":
        versions["cupy"] = backend.xp.__version__
    return versions


class _Run:
    """One training run's state: model, optimiser, data, history and where it writes."""

    def __init__(self, config, out, replaced=()):
        self.config = config
        self.replaced = list(replaced)  # the previous run's files (--force), removed at the first save
        state = load_checkpoint(config.resume) if config.resume else None
        given = config.model  # the model named on the command line (None: the checkpoint's preset)
        if state:
            for key in RECIPE:
                setattr(config, key, state["config"].get(key, getattr(config, key)))
            # the checkpoint's factory is imported only where the command line names it (models.for_checkpoint)
            source = models.for_checkpoint(state["config"], config.resume, given)
        else:
            source = models.import_factory(given) if models.is_factory_spec(given) else given
        if isinstance(source, models.Factory):  # imported once, here; the checkpoints record its file's hash
            config.model, config.model_sha256 = source.spec, source.sha256
        else:
            config.model, config.model_sha256 = source, None
        if state:
            if config.epochs is None:  # finish the run the checkpoint belongs to, unless told otherwise
                config.epochs = state["config"].get("epochs", 10)
            begun = state["epoch"] + (state["iteration"] > 0)  # epochs done, and the one under way
            if config.epochs < begun:
                done = f"{state['epoch']} epoch{'s' * (state['epoch'] != 1)}"
                raise ValueError(f"--epochs {config.epochs}: {config.resume} has trained {done} already"
                                 f"{' and part of the next' if state['iteration'] else ''}; give --epochs {begun} or "
                                 f"more, or leave --epochs out")
            try:
                config.check()  # the checkpoint's recipe, as a recipe given on the command line is checked
            except ValueError as exc:
                raise CheckpointError(f"{config.resume}: its recipe cannot be run ({exc})") from None
            saved_backend = state["config"].get("backend", "numpy")
            if saved_backend != config.backend:
                warnings.warn(f"resuming a checkpoint written on backend {saved_backend!r} with backend "
                              f"{config.backend!r}: the weights and optimiser state carry over, but the two "
                              f"backends' random generators differ, so the rest of the run's shuffling and noise "
                              f"differ from those of an uninterrupted {saved_backend} run", stacklevel=3)
        backend.use(config.backend, seed_value=config.seed)
        if state and state["rng_state"] is not None and config.backend == "numpy":
            backend.set_rng_state(state["rng_state"])  # the dropout masks continue as in an uninterrupted run
        backend.tune_host_allocator()
        self.out = out
        self.checkpoint_path = os.path.join(self.out, "checkpoint.npz")
        self.model = models.build(source, channels=config.channels)
        self.optimizer = make_optimizer(config, self.model.parameters())
        self.criterion = LOSSES[config.loss]()
        self.epoch, self.iteration, self.train_losses, self.test_losses = 0, 0, [], []
        self.epoch_seconds = []  # each completed epoch's training time (NaN where an older checkpoint had none)
        self.partial_seconds = 0.0  # the time already spent in the epoch under way (a resumed one), NaN if unknown
        self.saved = None  # (epoch, iteration) of the checkpoint at checkpoint_path that this run stands on
        self.started_at = (0, 0)  # (epoch, iteration) where this run started
        self._graphed = None
        if state:  # before the data: a checkpoint that does not fit is refused at once
            load_weights(self.model, state["model"], config.resume)
            check_optimizer_state(state["optim"], config.resume, self.model.parameters()[0].data.dtype)
            try:
                self.optimizer.load_state_dict(state["optim"])
                _check_optimizer_entries(self.optimizer)
            except (KeyError, ValueError, TypeError, IndexError) as exc:
                raise CheckpointError(f"{config.resume}: its optimiser state does not fit the {config.optimizer} "
                                      f"optimiser ({type(exc).__name__}: {exc}), so the run cannot be resumed "
                                      f"(eval, denoise and export can still use its weights)") from None
            self.epoch, self.iteration = state["epoch"], state["iteration"]
            self.train_losses, self.test_losses = state["train_losses"], state["test_losses"]
            seconds = state["epoch_seconds"] or []
            self.epoch_seconds = (seconds + [math.nan] * self.epoch)[:self.epoch]
            if self.iteration:
                self.partial_seconds = seconds[self.epoch] if len(seconds) > self.epoch else math.nan
            self.started_at = (self.epoch, self.iteration)  # where this run took the checkpoint up
            if os.path.abspath(config.resume) == os.path.abspath(self.checkpoint_path):
                self.saved = (self.epoch, self.iteration)
        self.diagnostics = Diagnostics(self.model, CHECK_EVERY) if config.diagnostics else None
        if self.diagnostics is not None and state:
            try:
                self.diagnostics.restore(state["diagnostics"])
            except ValueError as exc:
                raise CheckpointError(f"{config.resume}: its diagnostics are not minidae's per-layer records "
                                      f"({exc}); resume with --no-diagnostics to leave them out") from None
        shape = image_shape(config)
        check_fits(self.model, shape, config.model, config.channels)  # before any image is read
        with _memory_hint("use fewer images (--train-samples, --test-samples) or a smaller --image-size"):
            self.train_images, _, self.test_images, self.test_labels, self.sources = load_data(config,
                                                                                               config.progress)
        if tuple(self.train_images.shape[-2:]) != shape:
            check_fits(self.model, self.train_images.shape[-2:], config.model, config.channels)
        self.batches = NoisyBatches(self.train_images, config.batch_size, config.noise, config.noise_level,
                                    seed=config.seed, clip=config.clip)
        if self.diagnostics is not None:
            self.diagnostics.last = config.epochs * len(self.batches) - 1  # a record at the run's last step too
        if config.test_data is not None:
            warning = shared_images_line(config, self.train_images, self.test_images)
            if warning:
                print(warning, file=sys.stderr, flush=True)
        print(f"{colour_line(self.sources, config.channels)}training on {len(self.train_images)} "
              f"image{'s' * (len(self.train_images) != 1)} "
              f"({self.sources['train']}), testing on "
              f"{len(self.test_images)} ({self.sources['test']})", flush=True)

    def unsaved(self):
        """What an interruption at once loses, in words: "the step under way", or the steps since the checkpoint
        this run stands on (or since it started), which a whole epoch's training may be."""
        steps = len(self.batches)
        done = self.epoch * steps + self.iteration
        epoch, iteration = self.saved if self.saved is not None else self.started_at
        base = epoch * steps + iteration
        lost = done - base
        if lost <= 0:
            return "the step under way was not saved"
        since = "the last checkpoint" if self.saved is not None or self.config.resume else "the start"
        return (f"{'its' if lost < steps else 'all'} {lost} step{'s' * (lost != 1)} since {since} "
                f"{'were' if lost != 1 else 'was'} not saved")

    def last_good(self):
        """Where the run can be taken up again: a sentence naming a checkpoint that exists, or saying none does."""
        if self.saved is not None:
            epoch, iteration = self.saved
            return (f"The last good checkpoint is {self.checkpoint_path} (epoch {epoch}"
                    + (f", iteration {iteration}" if iteration else "") + ")")
        if self.config.resume:
            return f"The checkpoint it resumed, {self.config.resume}, is unchanged"
        return "No checkpoint was written"

    def save(self):
        """Write the checkpoint, unless the model's or the optimiser's state is no longer finite (then stop)."""
        recipe = dataclasses.asdict(self.config)
        seconds = self.epoch_seconds + ([self.partial_seconds] if self.iteration else [])
        try:
            save_checkpoint(self.checkpoint_path, self.model, self.optimizer, self.epoch, self.iteration,
                            self.train_losses, self.test_losses, recipe, backend.rng_state(),
                            None if self.diagnostics is None else self.diagnostics.as_dict(), seconds)
        except NonFiniteState as exc:
            epoch = self.epoch if self.iteration == 0 else self.epoch + 1
            raise TrainingDiverged(f"the weights or optimiser state became nan or inf in epoch {epoch} ({exc.key}); "
                                   f"stopped without saving them. {self.last_good()}. Try a smaller --lr.") from None
        self.saved = (self.epoch, self.iteration)
        for name in self.replaced:  # the new run has a checkpoint: the old run's other files go
            if name != os.path.basename(self.checkpoint_path):
                with contextlib.suppress(FileNotFoundError):
                    os.remove(os.path.join(self.out, name))
        self.replaced = []

    def step(self, noisy, clean):
        """One training step; on CuPy replayed as a CUDA graph (see backend.graphed)."""
        if self._graphed is None:
            self._graphed = (backend.graphed(self._step, self.model.parameters()) if self.config.cuda_graph
                             else self._step)
        return self._graphed(noisy, clean)

    def _step(self, noisy, clean):
        self.optimizer.zero_grad(set_to_none=False)  # the gradients zeroed in place: one fill of the flat array
        loss = self.criterion(self.model(noisy), clean)
        self.model.backward(self.criterion.backward(), input_grad=False)  # nobody needs dL/d(noisy)
        self.optimizer.step()
        return loss

    def run_epoch(self, signals):
        from tqdm import tqdm
        config = self.config
        pending = []  # losses still on the device, read back every CHECK_EVERY steps
        start = time.perf_counter()
        with tqdm(total=len(self.batches), initial=self.iteration, desc=f"epoch {self.epoch + 1}/{config.epochs}",
                  disable=not config.progress, leave=False, dynamic_ncols=True) as bar:
            for index, (noisy, clean) in enumerate(self.batches.epoch(self.epoch)):
                if index < self.iteration:
                    continue  # resumed inside this epoch: replay the shuffling and noise up to here
                iteration = self.epoch * len(self.batches) + index  # counted over the whole run
                if self.diagnostics is not None:
                    self.diagnostics.before_step(iteration)
                pending.append(self.step(noisy, clean))
                if self.diagnostics is not None:  # outside the step: on a GPU the captured graph stays one
                    self.diagnostics.after_step(iteration, noisy)
                if len(pending) == CHECK_EVERY or index == len(self.batches) - 1 or signals.pending:
                    self._flush(pending, index)
                    bar.update(len(pending))
                    bar.set_postfix(loss=f"{numpy.mean(self.train_losses[-50:]):.5f}")
                    pending = []
                self.iteration = index + 1
                if signals.pending:
                    self.partial_seconds += time.perf_counter() - start
                    start = time.perf_counter()
                    self.save()
                    raise signals.stop(f"in epoch {self.epoch + 1} after iteration {self.iteration}; checkpoint "
                                       f"saved to {self.checkpoint_path}; continue with --resume "
                                       f"{self.checkpoint_path}")
        seconds, self.partial_seconds = self.partial_seconds + time.perf_counter() - start, 0.0
        return seconds, float(numpy.mean(self.train_losses[-len(self.batches):]))

    def _flush(self, pending, index):
        values = backend.to_numpy(backend.xp.stack(pending)).astype(numpy.float64).tolist()
        for offset, value in enumerate(values):
            if not math.isfinite(value):
                iteration = self.epoch * len(self.batches) + index - len(values) + offset + 2
                raise TrainingDiverged(f"the training loss became {value} at iteration {iteration} (epoch "
                                       f"{self.epoch + 1}); stopped. {self.last_good()}. Try a smaller --lr.")
        self.train_losses.extend(values)


def train(config=None, **overrides):
    """Train (or resume) a run; returns the metrics dictionary that metrics.json holds.

    Raises TrainingDiverged where the loss, the test loss or the weights stop being finite (the last good
    checkpoint stays), Interrupted after Ctrl-C, SIGTERM or SIGHUP (saying what was saved), ValueError for settings
    or an --out that cannot be used, CheckpointError (a ValueError) for a checkpoint that cannot be resumed.
    A failed run leaves no empty directory behind."""
    config = dataclasses.replace(config or TrainConfig(), **overrides)
    config.check()
    config.data, config.test_data = (None if path is None else os.path.abspath(path)
                                     for path in (config.data, config.test_data))  # likewise the data's paths
    out, created, replaced, lock = _prepare_out(config)
    try:
        # A diverging run overflows: it is reported as such (TrainingDiverged), not as NumPy's warnings.
        with _signals() as signals, numpy.errstate(over="ignore", invalid="ignore"):
            try:
                run = _Run(config, out, replaced)
            except KeyboardInterrupt:
                raise signals.stop("while loading the data; nothing was saved") from None
            started = time.perf_counter()
            _train_epochs(run, signals)
            return _finish(run, time.perf_counter() - started, signals)
    except BaseException:
        lock.release()
        _remove_empty(created)
        raise
    finally:
        lock.release()


def _train_epochs(run, signals):
    config = run.config
    signals.deferred = True
    current = run.epoch + 1  # the epoch worked on: its steps, then its evaluation and its checkpoint
    try:
        while run.epoch < config.epochs:
            current = run.epoch + 1
            with _memory_hint("choose a smaller --batch-size"):
                seconds, train_loss = run.run_epoch(signals)
            with _memory_hint("evaluate on fewer test images (--test-samples)"):
                test = evaluate(run.model, run.test_images, config.noise, config.noise_level, config.seed,
                                clip=config.clip)
            if not math.isfinite(test["mse_denoised"]):
                raise TrainingDiverged(f"the test loss became {test['mse_denoised']} after epoch {run.epoch + 1}; "
                                       f"stopped without saving. {run.last_good()}. Try a smaller --lr.")
            run.test_losses.append(test["mse_denoised"])
            run.epoch, run.iteration = run.epoch + 1, 0
            run.epoch_seconds.append(seconds)
            run.save()
            samples = min(len(run.train_images), len(run.batches) * config.batch_size)
            print(f"epoch {run.epoch}/{config.epochs}: train loss {train_loss:.5f}, test loss {test['mse_denoised']:.5f}, "
                  f"{seconds:.1f} s, {samples / seconds:.0f} samples/s", flush=True)
            if signals.pending:  # it came during the evaluation: the checkpoint just written holds the epoch
                rest = ("metrics.json and the plots were not written; --resume " + run.checkpoint_path +
                        " writes them" if run.epoch == config.epochs else
                        f"continue with --resume {run.checkpoint_path}")
                raise signals.stop(f"after epoch {run.epoch}; checkpoint saved to {run.checkpoint_path}; {rest}")
    except KeyboardInterrupt as exc:
        if isinstance(exc, Interrupted):
            raise
        raise signals.stop(f"at once (a second signal) in epoch {current}; {run.unsaved()}. {run.last_good()}"
                           + (f"; continue with --resume {run.checkpoint_path}" if run.saved else "")) from None
    finally:
        signals.deferred = False


def _finish(run, wall_seconds, signals):
    from . import plots
    config = run.config
    written = [os.path.basename(run.checkpoint_path)]
    try:
        with _memory_hint("evaluate on fewer test images (--test-samples)"):
            final = evaluate(run.model, run.test_images, config.noise, config.noise_level, config.seed, clip=config.clip)
        recipe = {key: getattr(config, key) for key in RECIPE + ("epochs",)}
        if config.optimizer == "adam":
            recipe["betas"] = [0.9, 0.999]
        result = {"model": config.model, **({"model_sha256": config.model_sha256} if config.model_sha256 else {}),
                  "parameters": models.parameter_count(run.model), "recipe": recipe,
                  "backend": config.backend, "versions": _versions(), "seed": config.seed,
                  "epochs": [{"epoch": e + 1,
                              "train_loss": float(numpy.mean(run.train_losses[e * len(run.batches):
                                                                              (e + 1) * len(run.batches)])),
                              "test_loss": run.test_losses[e]} for e in range(len(run.test_losses))],
                  "epoch_seconds": run.epoch_seconds, "wall_seconds": wall_seconds,
                  "train_images": len(run.train_images), "test_images": len(run.test_images), "data": run.sources,
                  "test": final}
        if run.diagnostics is not None:
            result["layers"] = run.diagnostics.as_dict()
        write_json(os.path.join(run.out, "metrics.json"), result)
        written.append("metrics.json")
        with atomic_path(os.path.join(run.out, "loss_vs_iters.png")) as temporary:
            plots.loss_vs_iterations(temporary, run.train_losses, run.test_losses, len(run.batches))
        written.append("loss_vs_iters.png")
        examples = denoise_examples(run.model, run.test_images, run.test_labels, config.noise, config.noise_level,
                                    config.seed, clip=config.clip)
        index = example_index(run.test_images, run.test_labels)
        names = (None if run.test_labels is None else
                 plots.class_names(numpy.asarray(run.test_labels)[index],
                                   run.sources.get("classes", {}).get("test")))
        name = os.path.basename(config.model)  # a factory of one's own by its file's name, not its whole path
        with atomic_path(os.path.join(run.out, "denoising.png")) as temporary:
            plots.denoising_grid(temporary, *examples, names=names,
                                 title=f"{name}: " + ("no noise (a plain autoencoder)" if config.noise == "none"
                                                      else f"{config.noise} noise, level {config.noise_level}"
                                                      + ("" if config.clip else ", unclipped")))
        written.append("denoising.png")
        if run.diagnostics is not None and run.diagnostics.iterations:
            with atomic_path(os.path.join(run.out, "layers.png")) as temporary:
                plot_layers(temporary, result["layers"],
                            title=f"{name}: per-layer diagnostics, every {CHECK_EVERY} iterations and the last")
            written.append("layers.png")
    except KeyboardInterrupt:
        missing = [name for name in ("metrics.json", "loss_vs_iters.png", "denoising.png", "layers.png")
                   if name not in written]
        raise signals.stop(f"while writing the results: {run.out} holds {', '.join(written)} (training is "
                           f"complete); {', '.join(missing)} not written: --resume {run.checkpoint_path} writes "
                           f"them") from None
    print(f"test set ({len(run.test_images)} image{'s' * (len(run.test_images) != 1)}): MSE noisy "
          f"{final['mse_noisy']:.5f} -> denoised "
          f"{final['mse_denoised']:.5f}, PSNR {final['psnr_noisy']:.2f} -> {final['psnr_denoised']:.2f} dB, "
          f"SSIM {final['ssim_noisy']:.3f} -> {final['ssim_denoised']:.3f}", flush=True)
    print(f"wrote {run.out}/: {', '.join(written)}", flush=True)
    return result
