"""Training and evaluation of the denoising autoencoder: the work behind the example and the CLI.

``train(TrainConfig(...))`` runs the spec's recipe (docs/spec.md: MSE against the clean image, Adam with
L2 weight decay) on noisy MNIST, shows a progress bar per epoch and a summary line after
it, evaluates on the test set, and leaves in ``out``: loss_vs_iters.png, denoising.png,
metrics.json and checkpoint.npz (rewritten atomically after every epoch).

Interruptions lose nothing: Ctrl-C finishes the current step, saves a checkpoint that
records the position inside the epoch, and exits; ``--resume`` replays the epoch's
shuffling and noise up to that position, so the resumed run ends with the same weights as
an uninterrupted one. A NaN or infinite loss stops the run, naming the iteration, and
leaves the last good checkpoint in place.
"""
import contextlib
import dataclasses
import json
import math
import os
import platform
import signal
import threading
import time
import warnings
from dataclasses import dataclass

import numpy

from . import __version__, backend, metrics, models, nn, optim
from .checkpoint import load_checkpoint, load_weights, save_checkpoint
from .data import NoisyBatches, load_fashion_mnist, load_mnist
from .data.loader import epoch_seed, unit_images
from .data.noise import apply_noise, check_noise
from .nn.module import evaluating
from .presets import PRESETS

__all__ = ["TrainConfig", "TrainingDiverged", "train", "evaluate", "load_split", "denoise_examples"]

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
    out: str = None
    resume: str = None
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
        if self.model not in models.MODELS:
            raise ValueError(f"unknown model {self.model!r}: choose from {', '.join(models.MODELS)}")
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
          "noise_level", "seed", "train_samples", "test_samples", "dataset")
LOSSES = {"mse": nn.MSELoss, "bce": nn.BCELoss}
OPTIMIZERS = ("adam", "sgd")


def make_optimizer(config, params):
    """The recipe's optimiser: Adam (betas 0.9, 0.999, L2 weight decay) or SGD (momentum, weight decay)."""
    if config.optimizer == "adam":
        return optim.Adam(params, lr=config.lr, betas=(0.9, 0.999), weight_decay=config.weight_decay)
    return optim.SGD(params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)


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


def denoise_examples(model, images, labels, noise, level, seed, clip=True):
    """(noisy, denoised, clean) host arrays for the first test image of each class, in class order (eval mode)."""
    labels = numpy.asarray(labels)
    index = [int(numpy.flatnonzero(labels == c)[0]) for c in numpy.unique(labels)]
    clean = unit_images(images[index])
    noisy = apply_noise(noise, clean, level, seed=seed, clip=clip)
    with evaluating(model):
        denoised = model(noisy)
    return tuple(backend.to_numpy(a)[:, 0] for a in (noisy, denoised, clean))


@contextlib.contextmanager
def _deferred_interrupt():
    """Turn the first Ctrl-C into a flag checked between steps (a second one interrupts at once)."""
    state = {"requested": False}
    if threading.current_thread() is threading.main_thread():
        def handler(signum, frame):
            if state["requested"]:
                raise KeyboardInterrupt
            state["requested"] = True
        previous = signal.signal(signal.SIGINT, handler)
        try:
            yield state
        finally:
            signal.signal(signal.SIGINT, previous)
    else:
        yield state


def _versions():
    versions = {"minidae": __version__, "python": platform.python_version(), "numpy": numpy.__version__}
    if backend.name == "cupy":
        versions["cupy"] = backend.xp.__version__
    return versions


class _Run:
    """One training run's state: model, optimiser, data, history and where it writes."""

    def __init__(self, config):
        self.config = config
        state = load_checkpoint(config.resume) if config.resume else None
        if state:
            for key in RECIPE:
                setattr(config, key, state["config"].get(key, getattr(config, key)))
            if config.epochs is None:  # finish the run the checkpoint belongs to, unless told otherwise
                config.epochs = state["config"].get("epochs", 10)
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
        default_out = os.path.dirname(os.path.abspath(config.resume)) if config.resume else \
            os.path.join("runs", time.strftime("%Y%m%d-%H%M%S"))
        self.out = config.out or default_out
        os.makedirs(self.out, exist_ok=True)
        self.checkpoint_path = os.path.join(self.out, "checkpoint.npz")
        self.model = models.build(config.model)
        self.optimizer = make_optimizer(config, self.model.parameters())
        self.criterion = LOSSES[config.loss]()
        self.epoch, self.iteration, self.train_losses, self.test_losses = 0, 0, [], []
        self.epoch_seconds = []
        self._graphed = None
        if state:  # before the data: a checkpoint that does not fit is refused at once
            load_weights(self.model, state["model"], config.resume)
            self.optimizer.load_state_dict(state["optim"])
            self.epoch, self.iteration = state["epoch"], state["iteration"]
            self.train_losses, self.test_losses = state["train_losses"], state["test_losses"]
        self.train_images, _ = load_split(config.dataset, "train", config.data_dir, config.train_samples,
                                          config.progress)
        self.test_images, self.test_labels = load_split(config.dataset, "test", config.data_dir,
                                                        config.test_samples, config.progress)
        self.batches = NoisyBatches(self.train_images, config.batch_size, config.noise, config.noise_level,
                                    seed=config.seed, clip=config.clip)

    def save(self):
        recipe = dataclasses.asdict(self.config)
        save_checkpoint(self.checkpoint_path, self.model, self.optimizer, self.epoch, self.iteration,
                        self.train_losses, self.test_losses, recipe, backend.rng_state())

    def step(self, noisy, clean):
        """One training step; on CuPy replayed as a CUDA graph (see backend.graphed)."""
        if self._graphed is None:
            self._graphed = (backend.graphed(self._step, self.model.parameters()) if self.config.cuda_graph
                             else self._step)
        return self._graphed(noisy, clean)

    def _step(self, noisy, clean):
        self.optimizer.zero_grad()
        loss = self.criterion(self.model(noisy), clean)
        self.model.backward(self.criterion.backward())
        self.optimizer.step()
        return loss

    def run_epoch(self, interrupt):
        from tqdm import tqdm
        config = self.config
        pending = []  # losses still on the device, read back every CHECK_EVERY steps
        start = time.perf_counter()
        with tqdm(total=len(self.batches), initial=self.iteration, desc=f"epoch {self.epoch + 1}/{config.epochs}",
                  disable=not config.progress, leave=False, dynamic_ncols=True) as bar:
            for index, (noisy, clean) in enumerate(self.batches.epoch(self.epoch)):
                if index < self.iteration:
                    continue  # resumed inside this epoch: replay the shuffling and noise up to here
                pending.append(self.step(noisy, clean))
                if len(pending) == CHECK_EVERY or index == len(self.batches) - 1 or interrupt["requested"]:
                    self._flush(pending, index)
                    bar.update(len(pending))
                    bar.set_postfix(loss=f"{numpy.mean(self.train_losses[-50:]):.5f}")
                    pending = []
                self.iteration = index + 1
                if interrupt["requested"]:
                    self.save()
                    raise KeyboardInterrupt(f"interrupted in epoch {self.epoch + 1} after iteration "
                                            f"{self.iteration}; checkpoint saved to {self.checkpoint_path}; "
                                            f"continue with --resume {self.checkpoint_path}")
        seconds = time.perf_counter() - start
        return seconds, float(numpy.mean(self.train_losses[-len(self.batches):]))

    def _flush(self, pending, index):
        values = backend.to_numpy(backend.xp.stack(pending)).astype(numpy.float64).tolist()
        for offset, value in enumerate(values):
            if not math.isfinite(value):
                iteration = self.epoch * len(self.batches) + index - len(values) + offset + 2
                raise TrainingDiverged(
                    f"the training loss became {value} at iteration {iteration} (epoch {self.epoch + 1}); "
                    f"stopped. The last good checkpoint is {self.checkpoint_path}"
                    + ("" if os.path.exists(self.checkpoint_path) else " (none was written yet)")
                    + ". Try a smaller --lr.")
        self.train_losses.extend(values)


def train(config=None, **overrides):
    """Train (or resume) a run; returns the metrics dictionary that metrics.json holds."""
    config = dataclasses.replace(config or TrainConfig(), **overrides)
    config.check()
    run = _Run(config)
    started = time.perf_counter()
    with _deferred_interrupt() as interrupt:
        while run.epoch < config.epochs:
            seconds, train_loss = run.run_epoch(interrupt)
            test = evaluate(run.model, run.test_images, config.noise, config.noise_level, config.seed,
                            clip=config.clip)
            run.test_losses.append(test["mse_denoised"])
            run.epoch, run.iteration = run.epoch + 1, 0
            run.epoch_seconds.append(seconds)
            run.save()
            samples = min(len(run.train_images), len(run.batches) * config.batch_size)
            print(f"epoch {run.epoch}/{config.epochs}: train loss {train_loss:.5f}, test loss {test['mse_denoised']:.5f}, "
                  f"{seconds:.1f} s, {samples / seconds:.0f} samples/s", flush=True)
    return _finish(run, time.perf_counter() - started)


def _finish(run, wall_seconds):
    from . import plots
    config = run.config
    final = evaluate(run.model, run.test_images, config.noise, config.noise_level, config.seed, clip=config.clip)
    recipe = {key: getattr(config, key) for key in RECIPE + ("epochs",)}
    if config.optimizer == "adam":
        recipe["betas"] = [0.9, 0.999]
    result = {"model": config.model, "parameters": models.parameter_count(run.model), "recipe": recipe,
              "backend": config.backend, "versions": _versions(), "seed": config.seed,
              "epochs": [{"epoch": e + 1, "train_loss": float(numpy.mean(run.train_losses[e * len(run.batches):
                                                                                        (e + 1) * len(run.batches)])),
                          "test_loss": run.test_losses[e]} for e in range(len(run.test_losses))],
              "epoch_seconds": run.epoch_seconds, "wall_seconds": wall_seconds,
              "test_images": len(run.test_images), "test": final}
    with open(os.path.join(run.out, "metrics.json"), "w") as f:
        json.dump(result, f, indent=2)
    plots.loss_vs_iterations(os.path.join(run.out, "loss_vs_iters.png"), run.train_losses, run.test_losses,
                             len(run.batches))
    examples = denoise_examples(run.model, run.test_images, run.test_labels, config.noise, config.noise_level,
                                config.seed, clip=config.clip)
    plots.denoising_grid(os.path.join(run.out, "denoising.png"), *examples,
                         title=f"{config.model}: " + ("no noise (a plain autoencoder)" if config.noise == "none" else
                                                      f"{config.noise} noise, level {config.noise_level}"
                                                      + ("" if config.clip else ", unclipped")))
    print(f"test set ({len(run.test_images)} images): MSE noisy {final['mse_noisy']:.5f} -> denoised "
          f"{final['mse_denoised']:.5f}, PSNR {final['psnr_noisy']:.2f} -> {final['psnr_denoised']:.2f} dB, "
          f"SSIM {final['ssim_noisy']:.3f} -> {final['ssim_denoised']:.3f}", flush=True)
    print(f"wrote {run.out}/: loss_vs_iters.png, denoising.png, metrics.json, checkpoint.npz", flush=True)
    return result
