"""``python -m minidae`` / ``minidae``: train, eval, denoise and gradcheck from the command line."""
import argparse
import contextlib
import errno
import math
import os
import re
import sys

import numpy

from . import backend
from .nn.module import evaluating as minidae_evaluating

__all__ = ["main", "add_train_arguments", "config_from_args"]

DEFAULT_LEVELS = {"gaussian": [0.1, 0.2, 0.3, 0.5, 0.7], "mask": [0.1, 0.3, 0.5, 0.7],
                  "salt_and_pepper": [0.05, 0.1, 0.2, 0.4], "speckle": [0.25, 0.5, 1.0, 2.0]}


def add_train_arguments(parser):
    """The training options, shared by ``minidae train`` and examples/train_conv_dae.py.

    ``--preset`` picks a row of minidae.presets.PRESETS (default: the specification's recipe, docs/spec.md);
    every recipe flag given explicitly overrides that row.
    """
    from .data.noise import NOISES
    from .models import MODELS
    from .presets import DEFAULT_PRESET, PRESETS
    from .train import LOADERS, LOSSES, OPTIMIZERS
    add = parser.add_argument
    presets = "; ".join(f"{name}: {row['model']}, {row['optimizer']} lr {row['lr']}, batch {row['batch_size']}, "
                        f"{row['epochs']} epochs, noise {row['noise']} {row['noise_level']}"
                        f"{'' if row['clip'] else ' unclipped'} ({row['source']})" for name, row in PRESETS.items())
    add("--preset", choices=list(PRESETS), default=None,
        help=f"a reference's whole recipe (default: {DEFAULT_PRESET}); flags below override it. Presets: {presets}")
    add("--model", default=None, metavar="MODEL",
        help=f"the network: one of {', '.join(MODELS)} (default: the preset's), or a model of one's own as "
             f"FILE.py:FACTORY or package.module:factory, a function that returns a minidae Module (the checkpoint "
             f"records it and its file's SHA-256; eval, denoise, export, inspect, summary and --resume run it only "
             f"when --model names it again)")
    add("--backend", choices=["numpy", "cupy"], default="numpy", help="array backend (default: %(default)s)")
    add("--epochs", type=int, default=None,
        help="passes over the training set (default: the preset's; with --resume, the checkpoint's)")
    add("--batch-size", type=int, default=None, help="images per step (default: the preset's)")
    add("--optimizer", choices=list(OPTIMIZERS), default=None, help="adam or sgd (default: the preset's)")
    add("--lr", type=float, default=None, help="learning rate (default: the preset's)")
    add("--momentum", type=float, default=None, help="SGD momentum (default: the preset's, 0)")
    add("--weight-decay", type=float, default=None,
        help="L2 penalty added to the gradient, as torch.optim does (default: the preset's)")
    add("--loss", choices=list(LOSSES), default=None, help="mse or bce against the clean image (default: the preset's)")
    add("--noise", choices=sorted(NOISES), default=None, help="corruption model, or none (default: the preset's)")
    add("--noise-level", type=float, default=None,
        help="std for gaussian/speckle, fraction of pixels for mask/salt_and_pepper (default: the preset's; the "
             "specification adds torch.randn() noise and leaves its scale open, so 0.5, clipped to [0, 1], is "
             "minidae's choice)")
    add("--no-clip", dest="clip", action="store_const", const=False, default=None,
        help="leave Gaussian/speckle-noised inputs outside [0, 1] unclipped (as the fc_dae reference)")
    add("--seed", type=int, default=None, help="seed for init, shuffling and noise (default: 0)")
    add("--train-samples", type=int, default=None, metavar="N", help="train on the first N images only (quick runs)")
    add("--test-samples", type=int, default=None, metavar="N", help="evaluate on the first N test images only")
    add("--dataset", choices=sorted(LOADERS), default=None, help="data set (default: mnist)")
    add("--data", default=None, metavar="PATH",
        help="train on images of one's own instead: a folder of PNG/JPEG/BMP/TIFF/GIF files (sub-folders as "
             "classes), a .npy/.npz array (N, H, W), (N, 1, H, W) or, with --channels 3, (N, 3, H, W) of uint8 or "
             "floats in [0, 1], or an IDX file; pictures are made grayscale (or kept in colour with --channels 3), "
             "centre-cropped and resized to --image-size (minidae.data.images states the rule)")
    add("--test-data", default=None, metavar="PATH", help="the test images for --data (default: a held-out fraction)")
    add("--test-fraction", type=float, default=None, metavar="F",
        help="the fraction of --data held out for testing, chosen by the seed (default: 0.1)")
    add("--image-size", type=int, default=None, metavar="S",
        help="bring --data's pictures to S x S pixels (default: 28); the model must be built for that size")
    add("--channels", type=int, choices=[1, 3], default=None,
        help="1: make --data's pictures grayscale (the default); 3: keep their colour (RGB), with a preset built "
             "for 3 channels in and out (a model of one's own must take them)")
    add("--no-diagnostics", action="store_true",
        help="no per-layer statistics (layers.png, metrics.json's 'layers'; they cost one forward every 25 steps)")
    add("--data-dir", default=None, metavar="DIR",
        help="data root, or a directory holding the four IDX files (default: $MINIDAE_DATA or the user cache)")
    add("--out", default=None, metavar="DIR", help="output directory (default: a new runs/<timestamp>, or the "
                                                    "checkpoint's directory with --resume); one that holds a run "
                                                    "is refused unless --force")
    add("--force", action="store_true", help="let a new run replace the run in --out (its files stay until the "
                                             "new run writes its first checkpoint)")
    add("--resume", default=None, metavar="CHECKPOINT",
        help="continue a run from its checkpoint.npz (its recipe is kept: recipe flags that differ from it are "
             "refused; --epochs may extend it)")
    add("--no-progress", action="store_true", help="no progress bars (summary lines only)")
    add("--no-cuda-graph", action="store_true",
        help="with --backend cupy, run every step eagerly instead of replaying it as a CUDA graph")
    return parser


RECIPE_FLAGS = ("model", "epochs", "batch_size", "optimizer", "lr", "momentum", "weight_decay", "loss", "noise",
                "noise_level", "clip")
# Flags a resumed run takes from its checkpoint instead (minidae.train.RECIPE), and their defaults.
RESUME_FLAGS = {"preset": None, "seed": 0, "train_samples": None, "test_samples": None, "dataset": "mnist",
                "data": None, "test_data": None, "test_fraction": None, "image_size": 28, "channels": 1}


def config_from_args(args):
    """The preset's recipe, with every flag given explicitly on top."""
    from .presets import DEFAULT_PRESET
    from .train import TrainConfig
    overrides = {k: getattr(args, k) for k in RECIPE_FLAGS if getattr(args, k) is not None}
    overrides.update({k: default if getattr(args, k) is None else getattr(args, k)
                      for k, default in RESUME_FLAGS.items() if k != "preset"})
    overrides.update(backend=args.backend, data_dir=args.data_dir, out=args.out, force=args.force,
                     resume=args.resume, progress=not args.no_progress, cuda_graph=not args.no_cuda_graph,
                     diagnostics=not args.no_diagnostics)
    if args.resume and args.epochs is None:
        overrides["epochs"] = None  # the checkpoint's
    if args.resume:
        overrides["model"] = args.model  # None: the checkpoint's preset; its factory only when named here
    return TrainConfig.from_preset(args.preset or DEFAULT_PRESET, **overrides)


def check_resume_flags(args):
    """With --resume, refuse recipe flags given explicitly that differ from the checkpoint's recipe (which the
    resumed run keeps), naming each with both values."""
    from .checkpoint import load_checkpoint
    saved = load_checkpoint(args.resume)["config"]
    differ = []
    for key in [k for k in RECIPE_FLAGS if k != "epochs"] + list(RESUME_FLAGS):
        given = getattr(args, key)
        if key in ("data", "test_data") and given is not None:
            given = os.path.abspath(given)  # the checkpoint holds absolute paths
        if key == "model" and given is not None:
            from .models import is_factory_spec, resolve_spec
            if is_factory_spec(given) and is_factory_spec(saved.get(key)):
                continue  # the factory the checkpoint records, named where it is now (models.for_checkpoint)
            given = resolve_spec(given)
        if given is not None and key in saved and given != saved[key]:
            flag = f"--{key.replace('_', '-')}"
            has = (f"no {flag}" if saved[key] is None else "clipped noisy inputs" if key == "clip" else
                   f"{flag} {saved[key]}")
            differ.append(("--no-clip", f"{has} (not --no-clip)") if key == "clip" else (flag, f"{has} (not {given})"))
    if differ:
        flags, recipe = (_listed(part) for part in zip(*differ))
        raise ValueError(f"--resume {args.resume} continues a run whose recipe has {recipe}; leave {flags} out (with "
                         f"--resume, only --epochs may change), or start a new run without --resume")


def _listed(items):
    """"a", "a and b", "a, b and c"."""
    return " and ".join([", ".join(items[:-1]), items[-1]] if len(items) > 1 else items)


def os_error_line(exc):
    """One line for an OSError: the file, the reason and what to do."""
    code = exc.errno
    if code is None:  # an error that quotes the operating system's (safetensors: "... (os error 28)")
        found = re.search(r"os error (\d+)", str(exc))
        code = int(found.group(1)) if found else None
    hint = {errno.ENOSPC: "free some disk space and try again", errno.EDQUOT: "free some disk space and try again",
            errno.EACCES: "choose a location you may write to", errno.EPERM: "choose a location you may write to",
            errno.EROFS: "choose a location on a writable file system",
            errno.ENOENT: "check the path (its directory must exist)",
            errno.ENOTDIR: "a part of the path is a file, not a directory",
            errno.EISDIR: "name a file, not a directory"}.get(code)
    where = f"{exc.filename}: " if exc.filename is not None else ""
    return f"{where}{exc.strerror or exc}" + (f"; {hint}" if hint else "")


def run_train(args):
    """``minidae train`` (and examples/train_conv_dae.py): one line and a non-zero exit for every failure."""
    from .data import DatasetUnavailable
    from .train import TrainingDiverged, train
    try:
        if args.resume:
            check_resume_flags(args)
        train(config_from_args(args))
    except KeyboardInterrupt as exc:
        print(str(exc) or "interrupted", file=sys.stderr)
        return getattr(exc, "exit_code", 130)
    except (TrainingDiverged, DatasetUnavailable, backend.BackendUnavailable, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"error: {os_error_line(exc)}", file=sys.stderr)
        return 1
    except MemoryError as exc:  # train.OutOfMemory says what to do where it struck
        hint = getattr(exc, "hint", "close other programs, or train on less (--train-samples, --batch-size)")
        print(f"error: out of memory ({exc or 'MemoryError'}); {hint}", file=sys.stderr)
        return 1
    return 0


def _load_model(path, given=None):
    """(the checkpoint's model, rebuilt by name (for the run's channel count) or by its factory with its weights,
    its config); CheckpointError if it cannot be. ``given`` is the factory named on the command line
    (``--model``): a checkpoint's own record of a factory is never imported (models.for_checkpoint)."""
    from . import models
    from .checkpoint import CheckpointError, load_checkpoint, load_weights
    state = load_checkpoint(path)
    recorded = state["config"].get("model", "conv_dae")  # checkpoints from before the zoo hold the spec network
    if given is not None and not models.is_factory_spec(recorded) and given != recorded:
        raise CheckpointError(f"--model {given}: {path} holds the built-in model {recorded!r}, which needs no "
                              f"--model; drop it")
    try:
        model = models.build(models.for_checkpoint(state["config"], path, given),
                             channels=state["config"].get("channels", 1))
    except ValueError as exc:
        if str(exc).startswith(f"{path}: "):
            raise
        raise CheckpointError(f"{path}: its model cannot be rebuilt ({exc})") from None
    return load_weights(model, state["model"], path), state["config"]


def _output_folder(out):
    """``out`` (eval's and inspect's --out), checked before any work: ValueError where it is a file (os.makedirs
    would say only "File exists", after minutes of evaluation)."""
    if os.path.exists(out) and not os.path.isdir(out):
        raise ValueError(f"--out {out} is a file, not a folder; choose another --out")
    return out


def _test_images(config, args, model):
    """(training images, labels, test images, labels, sources) of a checkpoint's run (minidae.train.load_data): its
    own data's, or the data set's from --data-dir / MINIDAE_DATA (never a directory written in the checkpoint).
    A model that cannot take the run's image size is refused first, before any image is read."""
    from .train import TrainConfig, check_fits, image_shape, load_data
    check_fits(model, image_shape(config), config.get("model", "conv_dae"), config.get("channels", 1))
    run = TrainConfig(dataset=config["dataset"], data_dir=args.data_dir, data=config.get("data"),
                      test_data=config.get("test_data"), test_fraction=config.get("test_fraction"),
                      image_size=config.get("image_size", 28), channels=config.get("channels", 1), seed=config["seed"],
                      train_samples=getattr(args, "train_samples", None), test_samples=args.test_samples)
    return load_data(run, progress=False)


def run_eval(args):
    from . import plots
    from .files import atomic_path, write_json
    from .train import evaluate
    backend.use(args.backend, seed_value=0)
    model, config = _load_model(args.checkpoint, args.factory)
    out = _output_folder(args.out or os.path.dirname(os.path.abspath(args.checkpoint)))
    _, _, images, _, _ = _test_images(config, args, model)
    rows = []
    print(f"{'noise':<16}{'level':>7}{'MSE noisy':>12}{'MSE denoised':>14}{'PSNR noisy':>12}{'PSNR denoised':>15}"
          f"{'SSIM noisy':>12}{'SSIM denoised':>15}")
    for noise in args.noises:
        for level in DEFAULT_LEVELS[noise]:
            result = dict(noise=noise, level=level, **evaluate(model, images, noise, level, config["seed"]))
            rows.append(result)
            print(f"{noise:<16}{level:>7.2f}{result['mse_noisy']:>12.5f}{result['mse_denoised']:>14.5f}"
                  f"{result['psnr_noisy']:>12.2f}{result['psnr_denoised']:>15.2f}{result['ssim_noisy']:>12.3f}"
                  f"{result['ssim_denoised']:>15.3f}", flush=True)
    os.makedirs(out, exist_ok=True)
    write_json(os.path.join(out, "eval.json"),
               {"checkpoint": os.path.abspath(args.checkpoint), "test_images": len(images), "rows": rows})
    try:
        with atomic_path(os.path.join(out, "psnr_vs_noise.png")) as temporary:
            plots.psnr_vs_level(temporary, rows)
    except KeyboardInterrupt:
        raise KeyboardInterrupt(f"interrupted: eval wrote {out}/eval.json but not psnr_vs_noise.png") from None
    print(f"wrote {out}/eval.json and {out}/psnr_vs_noise.png (trained on {config['noise']} "
          f"{config['noise_level']})")
    return 0


def _refuse_overwriting(output, inputs):
    """ValueError where writing ``output`` would destroy one of ``inputs`` or a minidae checkpoint."""
    from .checkpoint import is_checkpoint
    for path in inputs:
        if os.path.abspath(output) == os.path.abspath(path) or (
                os.path.exists(output) and os.path.exists(path) and os.path.samefile(output, path)):
            raise ValueError(f"{output}: that is the input file {path}, which writing it would destroy; choose "
                             f"another output file")
    if is_checkpoint(output):
        raise ValueError(f"{output}: that is a minidae checkpoint, which writing it would destroy; choose another "
                         f"output file")


def run_denoise(args):
    """Denoise one picture: read by the rule ``train --data`` reads its pictures with (minidae.data.images:
    grayscale, or colour for a run with --channels 3; centre-cropped and resized to the run's image size),
    denoise, write."""
    from PIL import Image
    from .data.budget import MAX_PICTURE_PIXELS
    from .data.images import read_picture
    from .files import atomic_path
    from .train import image_shape
    largest = math.isqrt(MAX_PICTURE_PIXELS)  # the most pixels a picture minidae reads may have
    if args.size is not None and args.size < 1:
        raise ValueError(f"--size must be a positive number of pixels, got {args.size}")
    if args.size is not None and args.size > largest:
        raise ValueError(f"--size {args.size}: the output may be 1..{largest} pixels a side ({MAX_PICTURE_PIXELS:,} "
                         f"pixels, the most a picture minidae reads may have); choose a smaller --size")
    _refuse_overwriting(args.output, [args.input, args.checkpoint])
    if os.path.isdir(args.output):
        raise ValueError(f"{args.output}: a folder; name the picture file to write, such as "
                         f"{os.path.join(args.output, 'denoised.png')}")
    suffix = os.path.splitext(args.output)[1].lower()
    if Image.registered_extensions().get(suffix) not in Image.SAVE:
        what = f"{suffix} names no picture format Pillow can write" if suffix else "no suffix names its format"
        raise ValueError(f"{args.output}: {what}; end the name with .png, .jpg, .bmp, .tif or .gif")
    backend.use(args.backend)
    model, config = _load_model(args.checkpoint, args.factory)
    (size, _), channels = image_shape(config), config.get("channels", 1)
    pixels = read_picture(args.input, size, channels).astype(numpy.float32) / 255
    pixels = pixels[None] if channels == 1 else pixels  # (C, S, S)
    if args.invert:
        pixels = 1 - pixels
    with minidae_evaluating(model):  # inference: BatchNorm2d's running statistics, no dropout, nothing kept
        output = backend.to_numpy(model(backend.xp.asarray(pixels[None])))[0]
    if args.invert:
        output = 1 - output
    levels = numpy.round(numpy.clip(output, 0, 1) * 255).astype(numpy.uint8)
    result = Image.fromarray(levels[0], mode="L") if channels == 1 else Image.fromarray(levels.transpose(1, 2, 0),
                                                                                       mode="RGB")
    if args.size:
        result = result.resize((args.size, args.size), Image.Resampling.NEAREST)
    with atomic_path(args.output) as temporary:
        result.save(temporary)  # the temporary keeps the output's suffix, which names the format
    print(f"wrote {args.output} ({result.size[0]}x{result.size[1]})")
    return 0


def run_models(args):
    from . import models
    from .presets import PRESETS
    print(f"{'model':<16}{'parameters':>12}  reference")
    for name in models.MODELS:
        print(f"{name:<16}{models.parameter_count(models.build(name)):>12,}  {PRESETS[name]['source']}")
    return 0


def run_summary(args):
    """The per-layer table of a preset, a factory of one's own (FILE.py:FACTORY) or a checkpoint's model."""
    from . import models
    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be at least 1, got {args.batch_size}")
    if args.model.lower().endswith(".npz"):  # a checkpoint, or a line saying why it is not one
        if args.channels is not None:
            raise ValueError(f"summary {args.model}: --channels is for a preset; a checkpoint's model has its run's")
        from .train import image_shape
        model, config = _load_model(args.model, args.factory)
        (size, _), channels = image_shape(config), config.get("channels", 1)
    elif models.is_factory_spec(args.model) or args.model in models.MODELS:
        if args.factory is not None:
            raise ValueError(f"summary {args.model}: --model names the factory of a checkpoint; give the model "
                             f"itself as the argument instead")
        if args.channels is not None and args.model not in models.MODELS:
            raise ValueError(f"summary {args.model}: --channels is for a preset; a factory builds its model for the "
                             f"channels it takes (give --input-shape)")
        channels = args.channels or 1
        model, size = models.build(args.model, channels=channels), 28
    else:
        raise ValueError(f"summary {args.model}: not a preset ({', '.join(models.MODELS)}), a FILE.py:FACTORY or a "
                         f"checkpoint .npz")
    shape = tuple(args.input_shape) if args.input_shape else (channels, size, size)
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError(f"--input-shape takes C H W, three positive numbers, got {' '.join(map(str, shape))}")
    try:
        table = models.format_summary(args.model, args.batch_size, shape, model=model)
    except MemoryError:
        raise
    except Exception as exc:  # a layer refusing the shape (a ValueError), or a model of one's own failing otherwise
        given = f"--input-shape {' '.join(map(str, shape))}" if args.input_shape else "the default; give --input-shape"
        reason = str(exc) if isinstance(exc, ValueError) else f"{type(exc).__name__}: {exc}"
        raise ValueError(f"summary {args.model}: the model cannot take an input of shape "
                         f"{' x '.join(map(str, shape))} ({given}): {reason}") from None
    print(table)
    return 0


def run_inspect(args):
    """``minidae inspect``: latent.png, interpolation.png, filters.png, feature_maps.png and inspect.json."""
    from . import inspection
    from .files import write_json
    for flag, value in (("--pairs", args.pairs), ("--probe-epochs", args.probe_epochs)):
        if value < 1:
            raise ValueError(f"{flag} must be at least 1, got {value}")
    backend.use(args.backend, seed_value=0)
    model, config = _load_model(args.checkpoint, args.factory)
    out = _output_folder(args.out or os.path.dirname(os.path.abspath(args.checkpoint)))
    train, train_labels, test, labels, sources = _test_images(config, args, model)
    os.makedirs(out, exist_ok=True)
    written = []  # the files complete so far, for the line an interruption prints
    try:
        name = os.path.basename(str(config.get("model", "conv_dae")))  # a factory by its file's name
        result = inspection.inspect_model(model, (train, train_labels), (test, labels), out, pairs=args.pairs,
                                          probe_epochs=args.probe_epochs, title=f"{name}: test codes",
                                          written=written, classes=sources.get("classes"), name=name,
                                          kind="digit" if config.get("data") is None and
                                          config.get("dataset", "mnist") == "mnist" else "class")
        result.update(checkpoint=os.path.abspath(args.checkpoint), data=sources)
        write_json(os.path.join(out, "inspect.json"), result)
    except KeyboardInterrupt:
        if not written:
            raise KeyboardInterrupt("interrupted: inspect wrote nothing") from None
        raise KeyboardInterrupt(f"interrupted: inspect wrote {', '.join(written)} into {out} (each complete), but "
                                f"not inspect.json") from None
    if "probe_accuracy_code" in result:
        print(f"linear probe (a linear classifier on the codes): test accuracy {result['probe_accuracy_code']:.4f} "
              f"from the {result['code_size']}-number code, {result['probe_accuracy_pixels']:.4f} from the raw pixels")
    for what, why in result["skipped"].items():
        print(f"no {what}: {why}")
    print(f"wrote {out}/: {', '.join(result['written'])}, inspect.json")
    return 0


def run_export(args):
    from safetensors import SafetensorError
    from .files import atomic_path
    _refuse_overwriting(args.out, [args.checkpoint])
    model, _ = _load_model(args.checkpoint, args.factory)
    with atomic_path(args.out) as temporary:
        try:
            model.save(temporary)
        except SafetensorError as exc:  # not an OSError, though it mostly reports one
            raise OSError(None, f"could not write it ({exc})", args.out) from None
    print(f"wrote {args.out} ({len(model.state_dict())} tensors, safetensors)")
    return 0


def run_gradcheck(args):
    from . import nn
    from .gradcheck import gradcheck
    from .models import conv_dae
    backend.use(args.backend, seed_value=0)
    rng = numpy.random.default_rng(0)
    away_from_zero = lambda x: numpy.sign(x) * (0.05 + numpy.abs(x))
    cases = [("Conv2d", nn.Conv2d(2, 3, (3, 2), stride=(2, 1), padding=(1, 2)), rng.normal(size=(2, 2, 5, 4))),
             ("ConvTranspose2d", nn.ConvTranspose2d(2, 3, (2, 3), stride=(3, 2), padding=(1, 2), output_padding=(2, 1)),
              rng.normal(size=(2, 2, 4, 3))),
             ("Linear", nn.Linear(6, 4), rng.normal(size=(3, 6))),
             ("ReLU", nn.ReLU(), away_from_zero(rng.normal(size=(2, 3, 4)))),
             ("Sigmoid", nn.Sigmoid(), 4 * rng.normal(size=(2, 3, 4))),
             ("MaxPool2d", nn.MaxPool2d(2), rng.normal(size=(2, 2, 4, 6))),
             ("Upsample", nn.Upsample(scale_factor=2), rng.normal(size=(2, 2, 3, 3))),
             ("Flatten", nn.Flatten(), rng.normal(size=(2, 2, 3, 3))),
             ("Unflatten", nn.Unflatten((2, 3)), rng.normal(size=(2, 6))),
             ("conv_dae (sampled)", conv_dae(), rng.uniform(size=(2, 1, 28, 28)))]
    losses = [("MSELoss", nn.MSELoss()), ("BCELoss", nn.BCELoss())]
    print(f"{'layer':<20}{'checked':>9}{'worst abs err':>15}{'worst rel err':>15}  worst element")
    failed = 0
    for name, module, x in cases + [(n, m, rng.uniform(0.05, 0.95, size=(3, 4))) for n, m in losses]:
        target = rng.uniform(size=x.shape) if name.endswith("Loss") else None
        result = gradcheck(module, x, target=target, max_elements=args.max_elements)
        worst = max(result.per_tensor.values(), key=lambda m: m.abs_error)
        failed += not result
        print(f"{name:<20}{result.checked:>9}{worst.abs_error:>15.2e}{max(m.rel_error for m in result.per_tensor.values()):>15.2e}"
              f"  {'ok  ' if result else 'FAIL'} {result.worst.tensor}{list(result.worst.index)}", flush=True)
    print("all layers pass" if not failed else f"{failed} layer(s) FAILED")
    return 1 if failed else 0


class _Output:
    """sys.stdout or sys.stderr while a command runs. Once the terminal or pipe it writes to has gone away (a write
    raising EIO after a hangup, EPIPE after the reader closed, or the stream closed), its output goes to
    os.devnull, as Python's documentation on SIGPIPE does it, instead of ending the command with a traceback: a
    run still writes its checkpoint and exits with its own code."""

    def __init__(self, stream):
        self.stream = stream

    def __getattr__(self, name):
        return getattr(self.stream, name)

    def write(self, text):
        return self._tolerate(self.stream.write, text) or len(text)

    def flush(self):
        self._tolerate(self.stream.flush)

    def _tolerate(self, call, *args):
        try:
            return call(*args)
        except OSError as exc:
            if exc.errno not in (errno.EIO, errno.EPIPE):
                raise
        except ValueError:
            if not self.stream.closed:  # (a UnicodeEncodeError, say)
                raise
        with contextlib.suppress(OSError, ValueError):  # its fd onto os.devnull: later writes and flushes succeed
            fd, devnull = self.stream.fileno(), os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, fd)
            os.close(devnull)


@contextlib.contextmanager
def _tolerant_output():
    """sys.stdout and sys.stderr as _Output for the duration, flushed at its end (where a gone terminal is found)."""
    streams = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = (None if stream is None else _Output(stream) for stream in streams)
    try:
        yield
    finally:
        for stream in (sys.stdout, sys.stderr):
            if stream is not None:
                stream.flush()
        sys.stdout, sys.stderr = streams


def main(argv=None):
    """Parse ``argv`` (default: the command line), run the subcommand, return its exit code."""
    with _tolerant_output():
        return _main(argv)


def _main(argv):
    from .models import MODELS
    parser = argparse.ArgumentParser(prog="minidae", description="minidae: a denoising autoencoder built from "
                                                                 "hand-written layers on NumPy or CuPy")
    commands = parser.add_subparsers(dest="command", required=True)
    add_train_arguments(commands.add_parser("train", help="train a model (defaults: the specification's recipe; "
                                                          "--preset NAME for another reference's)"))
    evaluate = commands.add_parser("eval", help="metrics per noise type and level for a checkpoint",
                                   description="Runs a trained checkpoint on the test set under every noise model "
                                               "at several levels and prints MSE, PSNR and SSIM of the noisy and "
                                               "the denoised images; writes eval.json and psnr_vs_noise.png.")
    evaluate.add_argument("checkpoint", help="a checkpoint.npz written by training")
    evaluate.add_argument("--noises", nargs="+", choices=sorted(DEFAULT_LEVELS), default=list(DEFAULT_LEVELS),
                          help="noise models to evaluate (default: all)")
    evaluate.add_argument("--test-samples", type=int, default=None, metavar="N",
                          help="evaluate on the first N test images (default: all 10,000)")
    evaluate.add_argument("--data-dir", default=None, metavar="DIR",
                          help="data root (default: $MINIDAE_DATA or the user cache)")
    evaluate.add_argument("--backend", choices=["numpy", "cupy"], default="numpy",
                          help="array backend (default: %(default)s)")
    evaluate.add_argument("--out", default=None, metavar="DIR", help="default: the checkpoint's directory")
    commands.add_parser("models", help="the networks minidae can train, with their parameter counts",
                        description="Lists every model of minidae.models with its parameter count and reference.")
    summary = commands.add_parser("summary", help="a model's per-layer table (output shape, parameters, "
                                                  "multiply-adds)",
                                  description="Runs a batch of zeros through the model and prints each layer's "
                                              "output shape, parameter count and forward multiply-adds.")
    summary.add_argument("model", help=f"a preset ({', '.join(MODELS)}), a model of one's own as FILE.py:FACTORY "
                                       f"or package.module:factory, or a checkpoint .npz")
    summary.add_argument("--input-shape", type=int, nargs=3, default=None, metavar=("C", "H", "W"),
                         help="one input's shape (default: --channels 28 28, or the checkpoint's channels and image "
                              "size)")
    summary.add_argument("--batch-size", type=int, default=1, help="the batch the shapes and counts are for "
                                                                    "(default: %(default)s)")
    summary.add_argument("--channels", type=int, choices=[1, 3], default=None,
                         help="a preset built for images of 1 (the default) or 3 (colour) channels")
    export = commands.add_parser("export", help="write a checkpoint's weights as safetensors (for PyTorch)",
                                 description="Writes the model weights of a checkpoint to a .safetensors file "
                                             "with PyTorch's key names: safetensors.torch.load_file(OUT) then "
                                             "load_state_dict loads them into the PyTorch twin.")
    export.add_argument("checkpoint", help="a checkpoint.npz written by training")
    export.add_argument("out", help="the .safetensors file to write (never the checkpoint itself)")
    denoise = commands.add_parser("denoise", help="denoise one picture (brought to the run's size, 28x28 unless "
                                                  "it trained at another)",
                                  description="Reads a picture by the rule train --data reads its pictures with "
                                              "(minidae.data.images): grayscale, or colour for a run trained with "
                                              "--channels 3; transparent pixels laid on the paper that shows the "
                                              "ink (white behind dark ink, black behind light ink); "
                                              "floating-point TIFFs hold levels in [0, 1]; centre-cropped to a "
                                              "square and resized to the network's input (Lanczos). Denoises it "
                                              "and writes the result at that size (or a nearest-neighbour "
                                              "enlargement with --size). MNIST digits are light on dark: pass "
                                              "--invert for dark-on-light images.")
    denoise.add_argument("checkpoint")
    denoise.add_argument("input")
    denoise.add_argument("output")
    denoise.add_argument("--invert", action="store_true", help="invert before and after (dark-on-light images)")
    denoise.add_argument("--size", type=int, default=None,
                         help="enlarge the output to SIZE x SIZE pixels (at most 8000)")
    denoise.add_argument("--backend", choices=["numpy", "cupy"], default="numpy")
    inspect = commands.add_parser("inspect", help="look inside a trained model: its code, interpolations, filters",
                                  description="Writes latent.png (the test set's codes, PCA to 2-D, by class), "
                                              "interpolation.png (decoded between two test images' codes), "
                                              "filters.png, "
                                              "feature_maps.png and inspect.json (the linear-probe accuracy of the "
                                              "codes beside the raw pixels').")
    inspect.add_argument("checkpoint", help="a checkpoint.npz written by training")
    inspect.add_argument("--out", default=None, metavar="DIR", help="default: the checkpoint's directory")
    inspect.add_argument("--data-dir", default=None, metavar="DIR",
                         help="data root (default: $MINIDAE_DATA or the user cache)")
    inspect.add_argument("--train-samples", type=int, default=None, metavar="N",
                         help="train the probe on the first N training images (default: all 60,000)")
    inspect.add_argument("--test-samples", type=int, default=None, metavar="N",
                         help="test it, and plot, on the first N test images (default: all 10,000)")
    inspect.add_argument("--pairs", type=int, default=4, help="interpolation rows (default: %(default)s)")
    inspect.add_argument("--probe-epochs", type=int, default=10, help="the probe's epochs (default: %(default)s)")
    inspect.add_argument("--backend", choices=["numpy", "cupy"], default="numpy")
    check = commands.add_parser("gradcheck", help="finite-difference checks of every layer, as a table")
    check.add_argument("--max-elements", type=int, default=20, help="elements checked per tensor (default: 20)")
    check.add_argument("--backend", choices=["numpy", "cupy"], default="numpy")
    for command in (evaluate, summary, export, denoise, inspect):
        command.add_argument("--model", dest="factory", default=None, metavar="FILE.py:FACTORY",
                             help="for a checkpoint of a model of one's own: its factory (FILE.py:FACTORY or "
                                  "package.module:factory), which is imported (runs) only when named here, never "
                                  "because a checkpoint records it")
    args = parser.parse_args(argv)
    from .data import DatasetUnavailable
    try:
        return {"train": run_train, "eval": run_eval, "denoise": run_denoise, "gradcheck": run_gradcheck,
                "export": run_export, "models": run_models, "summary": run_summary,
                "inspect": run_inspect}[args.command](args)
    except (backend.BackendUnavailable, DatasetUnavailable, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"error: {os_error_line(exc)}", file=sys.stderr)
        return 1
    except MemoryError as exc:
        hint = {"summary": "choose a smaller --batch-size", "eval": "evaluate fewer images (--test-samples)",
                "inspect": "use fewer images (--train-samples, --test-samples)"}
        print(f"error: out of memory ({exc or 'MemoryError'}); {hint.get(args.command, 'close other programs')}",
              file=sys.stderr)
        return 1
    except KeyboardInterrupt as exc:
        print(str(exc) or f"interrupted: {args.command} wrote nothing", file=sys.stderr)
        return 130
