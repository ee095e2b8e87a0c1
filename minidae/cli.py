"""``python -m minidae`` / ``minidae``: train, eval, denoise and gradcheck from the command line."""
import argparse
import json
import os
import sys

import numpy

from . import backend

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
    add("--preset", choices=list(PRESETS), default=DEFAULT_PRESET,
        help=f"a reference's whole recipe (default: %(default)s); flags below override it. Presets: {presets}")
    add("--model", choices=list(MODELS), default=None, help="the network (default: the preset's)")
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
    add("--seed", type=int, default=0, help="seed for init, shuffling and noise (default: %(default)s)")
    add("--train-samples", type=int, default=None, metavar="N", help="train on the first N images only (quick runs)")
    add("--test-samples", type=int, default=None, metavar="N", help="evaluate on the first N test images only")
    add("--dataset", choices=sorted(LOADERS), default="mnist", help="data set (default: %(default)s)")
    add("--data-dir", default=None, metavar="DIR",
        help="data root, or a directory holding the four IDX files (default: $MINIDAE_DATA or the user cache)")
    add("--out", default=None, metavar="DIR", help="output directory (default: runs/<timestamp>, or the "
                                                    "checkpoint's directory with --resume)")
    add("--resume", default=None, metavar="CHECKPOINT",
        help="continue a run from its checkpoint.npz (its recipe is kept; --epochs may extend it)")
    add("--no-progress", action="store_true", help="no progress bars (summary lines only)")
    add("--no-cuda-graph", action="store_true",
        help="with --backend cupy, run every step eagerly instead of replaying it as a CUDA graph")
    return parser


RECIPE_FLAGS = ("model", "epochs", "batch_size", "optimizer", "lr", "momentum", "weight_decay", "loss", "noise",
                "noise_level", "clip")


def config_from_args(args):
    """The preset's recipe, with every flag given explicitly on top."""
    from .train import TrainConfig
    overrides = {k: getattr(args, k) for k in RECIPE_FLAGS if getattr(args, k) is not None}
    overrides.update(backend=args.backend, seed=args.seed, train_samples=args.train_samples,
                     test_samples=args.test_samples, dataset=args.dataset, data_dir=args.data_dir, out=args.out,
                     resume=args.resume, progress=not args.no_progress, cuda_graph=not args.no_cuda_graph)
    if args.resume and args.epochs is None:
        overrides["epochs"] = None  # the checkpoint's
    return TrainConfig.from_preset(args.preset, **overrides)


def run_train(args):
    from .data import DatasetUnavailable
    from .train import TrainingDiverged, train
    try:
        train(config_from_args(args))
    except KeyboardInterrupt as exc:
        print(f"\n{exc or 'interrupted'}", file=sys.stderr)
        return 130
    except (TrainingDiverged, DatasetUnavailable, backend.BackendUnavailable, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


def _load_model(path):
    """(the checkpoint's model, rebuilt by name with its weights, its config); CheckpointError if it cannot be."""
    from . import models
    from .checkpoint import CheckpointError, load_checkpoint, load_weights
    state = load_checkpoint(path)
    name = state["config"].get("model", "conv_dae")  # checkpoints from before the zoo hold the spec network
    if name not in models.MODELS:
        raise CheckpointError(f"{path}: it holds an unknown model {name!r} (this minidae knows "
                              f"{', '.join(models.MODELS)})")
    return load_weights(models.build(name), state["model"], path), state["config"]


def run_eval(args):
    from . import plots
    from .train import evaluate, load_split
    backend.use(args.backend, seed_value=0)
    model, config = _load_model(args.checkpoint)
    images, _ = load_split(config["dataset"], "test", args.data_dir or config.get("data_dir"), args.test_samples)
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
    out = args.out or os.path.dirname(os.path.abspath(args.checkpoint))
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "eval.json"), "w") as f:
        json.dump({"checkpoint": os.path.abspath(args.checkpoint), "test_images": len(images), "rows": rows}, f,
                  indent=2)
    plots.psnr_vs_level(os.path.join(out, "psnr_vs_noise.png"), rows)
    print(f"wrote {out}/eval.json and {out}/psnr_vs_noise.png (trained on {config['noise']} "
          f"{config['noise_level']})")
    return 0


def run_denoise(args):
    """Denoise one image: read as grayscale, resize to 28 x 28 (the network's input), denoise, write."""
    from PIL import Image
    if args.size is not None and args.size < 1:
        raise ValueError(f"--size must be a positive number of pixels, got {args.size}")
    backend.use(args.backend)
    model, _ = _load_model(args.checkpoint)
    model.eval()  # inference: BatchNorm2d's running statistics, no dropout
    with Image.open(args.input) as image:
        gray = image.convert("L").resize((28, 28), Image.Resampling.LANCZOS)
    pixels = numpy.asarray(gray, dtype=numpy.float32) / 255
    if args.invert:
        pixels = 1 - pixels
    output = backend.to_numpy(model(backend.xp.asarray(pixels[None, None])))[0, 0]
    if args.invert:
        output = 1 - output
    result = Image.fromarray(numpy.round(output * 255).astype(numpy.uint8), mode="L")
    if args.size:
        result = result.resize((args.size, args.size), Image.Resampling.NEAREST)
    result.save(args.output)
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
    from . import models
    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be at least 1, got {args.batch_size}")
    print(models.format_summary(args.model, args.batch_size))
    return 0


def run_export(args):
    model, _ = _load_model(args.checkpoint)
    model.save(args.out)
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


def main(argv=None):
    """Parse ``argv`` (default: the command line), run the subcommand, return its exit code."""
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
                          help="data root (default: the checkpoint's, else $MINIDAE_DATA or the user cache)")
    evaluate.add_argument("--backend", choices=["numpy", "cupy"], default="numpy",
                          help="array backend (default: %(default)s)")
    evaluate.add_argument("--out", default=None, metavar="DIR", help="default: the checkpoint's directory")
    commands.add_parser("models", help="the networks minidae can train, with their parameter counts",
                        description="Lists every model of minidae.models with its parameter count and reference.")
    summary = commands.add_parser("summary", help="a model's per-layer table (output shape, parameters, "
                                                  "multiply-adds)",
                                  description="Runs a batch of zeros through the model and prints each layer's "
                                              "output shape, parameter count and forward multiply-adds.")
    summary.add_argument("model", choices=list(MODELS), help="the model")
    summary.add_argument("--batch-size", type=int, default=1, help="the batch the shapes and counts are for "
                                                                    "(default: %(default)s)")
    export = commands.add_parser("export", help="write a checkpoint's weights as safetensors (for PyTorch)",
                                 description="Writes the model weights of a checkpoint to a .safetensors file "
                                             "with PyTorch's key names: safetensors.torch.load_file(OUT) then "
                                             "load_state_dict loads them into the PyTorch twin.")
    export.add_argument("checkpoint", help="a checkpoint.npz written by training")
    export.add_argument("out", help="the .safetensors file to write")
    denoise = commands.add_parser("denoise", help="denoise one grayscale image (resized to 28x28)",
                                  description="Reads any image as grayscale, resizes it to the network's 28x28 "
                                              "input (Lanczos), denoises it and writes the 28x28 result (or a "
                                              "nearest-neighbour enlargement with --size). MNIST digits are light "
                                              "on dark: pass --invert for dark-on-light images.")
    denoise.add_argument("checkpoint")
    denoise.add_argument("input")
    denoise.add_argument("output")
    denoise.add_argument("--invert", action="store_true", help="invert before and after (dark-on-light images)")
    denoise.add_argument("--size", type=int, default=None, help="enlarge the output to SIZE x SIZE pixels")
    denoise.add_argument("--backend", choices=["numpy", "cupy"], default="numpy")
    check = commands.add_parser("gradcheck", help="finite-difference checks of every layer, as a table")
    check.add_argument("--max-elements", type=int, default=20, help="elements checked per tensor (default: 20)")
    check.add_argument("--backend", choices=["numpy", "cupy"], default="numpy")
    args = parser.parse_args(argv)
    from .data import DatasetUnavailable
    try:
        return {"train": run_train, "eval": run_eval, "denoise": run_denoise, "gradcheck": run_gradcheck,
                "export": run_export, "models": run_models, "summary": run_summary}[args.command](args)
    except (backend.BackendUnavailable, DatasetUnavailable, ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
